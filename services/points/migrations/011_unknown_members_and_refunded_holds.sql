-- Issue 12: payments that race a registration, refunds that reach held points, and lots
-- closed at their expiry even when nothing is left in them.

-- Member ids points was asked about before the accounts outbox told it of them. A write
-- for such a member is answered UNAVAILABLE (retry) for a grace period counted from the
-- first refusal, then FAILED_PRECONDITION (the id most likely is wrong). Rows go when the
-- member arrives or, once past the grace, after the purge job's retention.
CREATE TABLE points.unknown_members (
    member_id      text        PRIMARY KEY,
    first_seen_at  timestamptz NOT NULL,
    last_seen_at   timestamptz NOT NULL,
    refusals       bigint      NOT NULL DEFAULT 1 CHECK (refusals > 0),
    -- the first final refusal; logged once, counted by the metrics
    given_up_at    timestamptz
);
CREATE INDEX unknown_members_by_last_seen ON points.unknown_members (last_seen_at);

-- A refund takes back points a hold still holds (services/points/refunds.py): the hold
-- then holds fewer (`points` is what it holds now), and one that loses all of them is
-- CLAWED_BACK, closed, with nothing left to capture or release.
ALTER TABLE points.holds ADD COLUMN clawed_back_points bigint NOT NULL DEFAULT 0
    CHECK (clawed_back_points >= 0);
ALTER TABLE points.holds DROP CONSTRAINT holds_state_check;
ALTER TABLE points.holds ADD CONSTRAINT holds_state_check
    CHECK (state IN ('HELD', 'CAPTURED', 'RELEASED', 'EXPIRED', 'CLAWED_BACK'));
ALTER TABLE points.holds DROP CONSTRAINT holds_points_check;
ALTER TABLE points.holds ADD CONSTRAINT holds_points_check
    CHECK (points > 0 OR (state = 'CLAWED_BACK' AND points = 0));

-- The expiry job closes every AVAILABLE lot past its expiry, spent or held ones too.
DROP INDEX points.lots_expiring;
CREATE INDEX lots_expiring ON points.lots (expires_at) WHERE state = 'AVAILABLE';
