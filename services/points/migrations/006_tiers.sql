-- Tiers (services/points/tiers.py). member_id first in every key (distributable and
-- co-located by member_id).

-- Qualifying points per member and calendar day (the program's time zone) of the payment
-- that earned them, net of the refunds of those payments. A tier's window sum is a range
-- query over these rows; written in the same statement as the settlement.
CREATE TABLE points.qualifying_days (
    member_id  text   NOT NULL,
    day        date   NOT NULL,
    points     bigint NOT NULL CHECK (points >= 0),
    PRIMARY KEY (member_id, day)
);

-- Payments settled before this table existed count as they were earned (their refunds
-- before now are not netted: there was no tier to lose yet).
INSERT INTO points.qualifying_days (member_id, day, points)
SELECT member_id, day, points FROM points.daily_earnings WHERE points > 0;

-- A member's tier; no row is the first (base) tier. `review_at` is when the tier is next
-- reviewed (NULL for the base tier, which cannot fall); `grace_until` is set when a review
-- found too few points and the tier is kept until then. `rule_version` is the rules the
-- tier was set under, which the review applies.
CREATE TABLE points.member_tiers (
    member_id     text        NOT NULL PRIMARY KEY,
    tier_code     text        NOT NULL,
    since         timestamptz NOT NULL,
    review_at     timestamptz,
    grace_until   timestamptz,
    rule_version  bigint      NOT NULL,
    CONSTRAINT grace_after_review CHECK (grace_until IS NULL OR review_at IS NOT NULL)
);
CREATE INDEX member_tiers_due ON points.member_tiers ((COALESCE(grace_until, review_at)))
    WHERE review_at IS NOT NULL;
