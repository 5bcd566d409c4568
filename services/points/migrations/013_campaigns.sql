-- Campaigns: time-boxed earning rules (issue 15), their versions, their budgets and what
-- they gave (domain/campaigns.py, docs/decisions/points.md "Campaigns").
--
-- A campaign's terms live in campaign_versions (one row per version, never changed once the
-- campaign ran); points.campaigns holds its lifecycle. A settlement records each campaign
-- version that gave it points in settlement_campaigns.
CREATE TABLE points.campaigns (
    campaign_id  text        NOT NULL PRIMARY KEY,
    state        text        NOT NULL CHECK (state IN ('DRAFT', 'ACTIVE', 'ENDED')),
    version      bigint      NOT NULL CHECK (version > 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    activated_at timestamptz,
    ended_at     timestamptz
);
CREATE INDEX campaigns_by_state ON points.campaigns (state, campaign_id);

CREATE TABLE points.campaign_versions (
    campaign_id text        NOT NULL REFERENCES points.campaigns (campaign_id),
    version     bigint      NOT NULL CHECK (version > 0),
    spec        jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, version)
);

-- Raised in every transaction that changes which campaigns run (activate, a new version,
-- end): a settlement batch reads it with its member locks and reloads the running campaigns
-- only when it moved, so a batch pays nothing for campaigns that did not change.
CREATE TABLE points.campaign_epoch (
    one   boolean NOT NULL PRIMARY KEY DEFAULT true CHECK (one),
    epoch bigint  NOT NULL
);
INSERT INTO points.campaign_epoch (one, epoch) VALUES (true, 1);

-- A shared budget (the whole campaign, or one local day of it) split into slices, so that
-- concurrent batches take different rows instead of all updating one counter: a batch locks
-- a few free slices (FOR UPDATE SKIP LOCKED) and writes back what it gave
-- (store/campaign_budgets.py). NULL: that limit does not apply.
CREATE TABLE points.campaign_budget_slices (
    campaign_id text   NOT NULL REFERENCES points.campaigns (campaign_id),
    period      text   NOT NULL,  -- 'total' or a local day 'YYYY-MM-DD'
    slice       integer NOT NULL CHECK (slice >= 0),
    points_left bigint CHECK (points_left >= 0),
    awards_left bigint CHECK (awards_left >= 0),
    PRIMARY KEY (campaign_id, period, slice)
);

-- What each member got of a campaign with a per-member budget, changed only under the
-- member's balance lock. member_id first in the key (distributed by member under Citus).
CREATE TABLE points.campaign_member_usage (
    member_id   text   NOT NULL,
    campaign_id text   NOT NULL,
    points      bigint NOT NULL CHECK (points >= 0),
    awards      bigint NOT NULL CHECK (awards >= 0),
    PRIMARY KEY (member_id, campaign_id)
);

-- The campaign versions that gave a settlement points, and how many.
CREATE TABLE points.settlement_campaigns (
    member_id       text    NOT NULL,
    txn_id          bigint  NOT NULL,
    campaign_id     text    NOT NULL,
    version         bigint  NOT NULL,
    points          bigint  NOT NULL CHECK (points > 0),
    tier_qualifying boolean NOT NULL,
    occurred_at     timestamptz NOT NULL,
    PRIMARY KEY (member_id, txn_id, campaign_id)
);
CREATE INDEX settlement_campaigns_by_campaign
    ON points.settlement_campaigns (campaign_id, occurred_at);
