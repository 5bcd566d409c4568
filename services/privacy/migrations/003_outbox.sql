-- Privacy's transactional outbox: events for other services, written in the transaction of
-- the change they announce and delivered at least once by a relay (runtime/outbox_relay.py).
-- Today: pauses of settling a member's payments (points ApplyProcessingEvents).
CREATE TABLE privacy.outbox (
    event_id      bigserial   PRIMARY KEY,
    member_id     text        NOT NULL,
    cause         text        NOT NULL
        CHECK (cause IN ('CONSENT_WITHDRAWN', 'RESTRICTION_REQUESTED')),
    paused        boolean     NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_unpublished ON privacy.outbox (event_id) WHERE published_at IS NULL;
