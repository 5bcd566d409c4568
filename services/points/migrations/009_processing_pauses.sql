-- Settling a member's payments paused by privacy: a withdrawn `payment_records` consent or
-- a restriction request (PIPL Art. 15, 44). One row per member and cause, kept when resumed
-- (paused = false) so that a late, older event cannot undo a newer one.
CREATE TABLE points.processing_pauses (
    member_id      text        NOT NULL,
    cause          text        NOT NULL
        CHECK (cause IN ('CONSENT_WITHDRAWN', 'RESTRICTION_REQUESTED')),
    paused         boolean     NOT NULL,
    last_event_id  bigint      NOT NULL,
    changed_at     timestamptz NOT NULL,
    PRIMARY KEY (member_id, cause)
);
