-- Refunds of settled payments. What was refunded of each payment so far, so that the total
-- can never exceed the payment (the CHECK holds even if the code were wrong) and repeated
-- partial refunds claw back by the running total. member_id first in every key.
CREATE TABLE points.payment_refunds (
    member_id           text        NOT NULL,
    payment_id          text        NOT NULL,
    currency            text        NOT NULL,
    payment_minor       bigint      NOT NULL CHECK (payment_minor > 0),
    refunded_minor      bigint      NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0),
    -- everything the refunds of this payment should have taken back (collected or not)
    points_clawed_back  bigint      NOT NULL DEFAULT 0 CHECK (points_clawed_back >= 0),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (member_id, payment_id),
    CONSTRAINT refunds_within_payment CHECK (refunded_minor <= payment_minor)
);

-- A refund finds the lot its payment created.
CREATE INDEX lots_by_txn ON points.lots (member_id, txn_id);
