-- Referral bonuses (services/points/referrals.py). The settlement transaction of a referred
-- member's first payment records the bonus as DUE (the primary key makes it once per
-- referee, whatever the retries); the `referral_bonus` job pays both sides later, each in
-- its own member's ledger, so a settlement never locks a second member.
CREATE TABLE points.referral_bonuses (
    member_id        text        NOT NULL PRIMARY KEY,  -- the referee
    referrer_id      text        NOT NULL,
    payment_id       text        NOT NULL,  -- the first settled payment
    rule_version     bigint      NOT NULL,  -- the rules the bonuses are paid under
    state            text        NOT NULL DEFAULT 'DUE' CHECK (state IN ('DUE', 'PAID')),
    -- what each side received (0: skipped, the member was not ACTIVE when paid)
    referee_points   bigint,
    referrer_points  bigint,
    created_at       timestamptz NOT NULL DEFAULT now(),
    paid_at          timestamptz,
    CONSTRAINT paid_when_paid CHECK ((state = 'PAID') = (paid_at IS NOT NULL))
);

CREATE INDEX referral_bonuses_due ON points.referral_bonuses (created_at, member_id)
    WHERE state = 'DUE';
