-- Accepted settlement webhooks by their signature, with the answer given: a replay of the
-- same signed delivery gets that answer again without reaching the points service.
CREATE TABLE gateway.webhook_deliveries (
    client_id        text        NOT NULL,
    signature        text        NOT NULL,
    kind             text        NOT NULL,
    response_status  integer     NOT NULL,
    response_body    bytea       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, signature)
);
CREATE INDEX webhook_deliveries_by_age ON gateway.webhook_deliveries (created_at);
