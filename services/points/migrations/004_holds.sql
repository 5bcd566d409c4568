-- Holds of points for redemptions in progress (HoldPoints / CapturePoints / ReleaseHold).
-- member_id first in every key (distributable and co-located by member_id). Redemptions
-- need no table of their own: their transaction (key `redeem:<request_id>`) and transfers,
-- one per lot with its lot_id, are the record.

CREATE TABLE points.holds (
    member_id        text        NOT NULL,
    hold_id          text        NOT NULL,
    state            text        NOT NULL
        CHECK (state IN ('HELD', 'CAPTURED', 'RELEASED', 'EXPIRED')),
    points           bigint      NOT NULL CHECK (points > 0),
    captured_points  bigint      NOT NULL DEFAULT 0 CHECK (captured_points >= 0),
    -- a hold still HELD at this instant is released by the hold_expiry job
    expires_at       timestamptz NOT NULL,
    -- the rules the hold was made under; its release and expiry record the same version
    rule_version     bigint      NOT NULL,
    -- the transaction that made the hold, and the one of its latest change
    hold_txn_id      bigint      NOT NULL,
    last_txn_id      bigint      NOT NULL,
    created_at       timestamptz NOT NULL,
    closed_at        timestamptz,
    PRIMARY KEY (member_id, hold_id),
    CONSTRAINT capture_within_hold CHECK (captured_points <= points),
    CONSTRAINT captured_only_when_captured CHECK (state = 'CAPTURED' OR captured_points = 0),
    CONSTRAINT closed_when_not_held CHECK ((state = 'HELD') = (closed_at IS NULL))
);
CREATE INDEX holds_expiring ON points.holds (expires_at) WHERE state = 'HELD';

-- Which lots a hold took its points from, so a capture, release or expiry settles exactly
-- those lots. Written once with the hold; never changed.
CREATE TABLE points.hold_lots (
    member_id  text   NOT NULL,
    hold_id    text   NOT NULL,
    lot_id     bigint NOT NULL,
    points     bigint NOT NULL CHECK (points > 0),
    PRIMARY KEY (member_id, hold_id, lot_id)
);
