-- Coupons (issue 15): templates, and the coupons issued from them (domain/coupons.py,
-- docs/decisions/points.md "Coupons").
--
-- A template's terms are JSON (domain/coupons.TemplateSpec); `stock_left` is what may still
-- be issued (NULL: unlimited), taken by a conditional UPDATE, never below 0.
CREATE TABLE points.coupon_templates (
    template_id text        NOT NULL PRIMARY KEY,
    spec        jsonb       NOT NULL,
    stock_left  bigint      CHECK (stock_left >= 0),
    active      boolean     NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- A member's coupons. `code` is 128 random bits, unique per member: every lookup is by
-- (member, code), so a code alone finds nothing. `issue_key` makes an issue idempotent per
-- member (the admin's request id, a reward redemption's key). A reservation names its
-- payment; the payment's settlement redeems the coupon (in the batch's statement); a
-- reservation that lapsed keeps the payment's id (state ISSUED again), so a settlement that
-- arrives late still redeems the coupon it was given for.
CREATE TABLE points.coupons (
    member_id           text        NOT NULL,
    coupon_id           bigint      NOT NULL,
    code                text        NOT NULL,
    template_id         text        NOT NULL REFERENCES points.coupon_templates (template_id),
    state               text        NOT NULL
        CHECK (state IN ('ISSUED', 'RESERVED', 'REDEEMED', 'EXPIRED', 'REVOKED')),
    issue_key           text        NOT NULL,
    issued_at           timestamptz NOT NULL,
    valid_from          timestamptz NOT NULL,
    expires_at          timestamptz NOT NULL,
    reserved_payment_id text,
    reserved_until      timestamptz,
    redeemed_payment_id text,
    redeemed_at         timestamptz,
    PRIMARY KEY (member_id, coupon_id),
    CONSTRAINT one_code_per_member UNIQUE (member_id, code),
    CONSTRAINT one_coupon_per_issue UNIQUE (member_id, issue_key),
    CONSTRAINT reserved_for_a_payment CHECK (
        state <> 'RESERVED' OR (reserved_payment_id IS NOT NULL AND reserved_until IS NOT NULL))
);
-- a member's wallet, soonest-expiring first
CREATE INDEX coupons_wallet ON points.coupons (member_id, expires_at, coupon_id);
-- the per-member limit of a template
CREATE INDEX coupons_by_template ON points.coupons (member_id, template_id);
-- the settlement's redemption of the coupon reserved for its payment
CREATE INDEX coupons_reserved ON points.coupons (member_id, reserved_payment_id)
    WHERE reserved_payment_id IS NOT NULL AND state IN ('RESERVED', 'ISSUED');
-- the expiry job: coupons past their end, and reservations past theirs
CREATE INDEX coupons_expiring ON points.coupons (expires_at) WHERE state IN ('ISSUED', 'RESERVED');
CREATE INDEX coupons_reservation_lapsing ON points.coupons (reserved_until)
    WHERE state = 'RESERVED';

-- A reward may be a coupon: redeeming it issues a coupon of this template per unit, in the
-- redemption's transaction (services/points/rewards.py). The template is checked when the
-- reward is redeemed (the catalogue file may name one created later).
ALTER TABLE points.rewards ADD COLUMN coupon_template text;
