-- The rewards catalogue and per-member redemption counts.
--
-- points.rewards is a small reference table synced from the catalogue file
-- (program_rules/rewards.toml) at start. `stock` is what is left and lives only here:
-- redemptions take from it with a conditional UPDATE (never below 0); a reload of the file
-- changes it only by what the file's total changed (`stock_loaded`), so consumed stock is
-- never reset. One row per sku is a hot row for a popular reward: inherent to finite stock.
CREATE TABLE points.rewards (
    sku               text        NOT NULL PRIMARY KEY,
    name              text        NOT NULL,
    points_cost       bigint      NOT NULL CHECK (points_cost > 0),
    -- units left; NULL = unlimited
    stock             bigint      CHECK (stock >= 0),
    -- the file's stock at the last sync (NULL = unlimited)
    stock_loaded      bigint      CHECK (stock_loaded >= 0),
    -- most units one member may redeem in all; NULL = no limit
    per_member_limit  bigint      CHECK (per_member_limit > 0),
    min_tier          text        NOT NULL,
    active            boolean     NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT stock_iff_finite CHECK ((stock IS NULL) = (stock_loaded IS NULL))
);

-- Units of each reward a member redeemed, for the per-member limit. Changed only under the
-- member's balance lock, in the transaction of the redemption. member_id first in the key.
CREATE TABLE points.reward_redemptions (
    member_id  text        NOT NULL,
    sku        text        NOT NULL,
    units      bigint      NOT NULL CHECK (units > 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (member_id, sku)
);
