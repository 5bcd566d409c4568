-- Campaigns: time-boxed earning rules (issue 15), their versions, their budgets and what
-- they gave (domain/campaigns.py, docs/decisions/points.md "Campaigns").
--
-- A campaign's terms live in campaign_versions (one row per version, never changed once the
-- campaign ran); points.campaigns holds its lifecycle. A settlement's explanation names
-- each campaign version that gave it points, and the points that do not count toward tiers
-- (domain/settlement.explanation_json): the record is the transaction row itself.
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

-- What each campaign gave, in slices like the budgets (a batch adds its totals to one slice
-- per campaign, so concurrent batches rarely meet on a row); GetCampaign sums them.
CREATE TABLE points.campaign_results (
    campaign_id text    NOT NULL REFERENCES points.campaigns (campaign_id),
    slice       integer NOT NULL CHECK (slice >= 0),
    points      bigint  NOT NULL CHECK (points >= 0),
    awards      bigint  NOT NULL CHECK (awards >= 0),
    PRIMARY KEY (campaign_id, slice)
);

-- A settlement batch's claim of budget slices, in one round trip
-- (services/points/settlement_campaigns.py): up to `per_budget` free non-empty slices of
-- each budget (FOR UPDATE SKIP LOCKED, from `first_slice` on, so batches spread); when they
-- do not cover what the batch may give (`wanted_*`; NULL in a slice: that bound does not
-- apply), the subtransaction is rolled back, which releases them, and every non-empty slice
-- of those budgets is locked in (campaign, period, slice) order, waiting for its holders.
-- A holder of free slices never waits, and waiters lock in one order: no cycle of waits.
-- A budget with no non-empty slice left counts as covered (it gives nothing): it does not
-- send every batch down the waiting path. `cut_*`: the slices of day budgets, created first
-- when that day has none (ON CONFLICT DO NOTHING: another batch may cut them at once).
CREATE FUNCTION points.claim_campaign_budgets(
    campaign_ids text[], periods text[], wanted_points bigint[], wanted_awards bigint[],
    first_slice integer, per_budget integer,
    cut_c text[], cut_p text[], cut_s integer[], cut_pl bigint[], cut_al bigint[])
RETURNS TABLE (campaign_id text, period text, slice integer, points_left bigint,
               awards_left bigint)
LANGUAGE plpgsql AS $$
DECLARE
    got_c text[]; got_p text[]; got_s integer[]; got_pl bigint[]; got_al bigint[];
    covered boolean;
BEGIN
    -- only for days without slices: ON CONFLICT alone would wait for every batch that
    -- holds (and so has updated) a slice of an existing day
    INSERT INTO points.campaign_budget_slices AS s
        (campaign_id, period, slice, points_left, awards_left)
    SELECT n.c, n.p, n.i, n.pl, n.al FROM unnest(cut_c, cut_p, cut_s, cut_pl, cut_al)
           AS n(c, p, i, pl, al)
     WHERE NOT EXISTS (SELECT 1 FROM points.campaign_budget_slices e
                        WHERE e.campaign_id = n.c AND e.period = n.p)
    ON CONFLICT DO NOTHING;
    BEGIN
        SELECT array_agg(k.c), array_agg(k.p), array_agg(f.slice), array_agg(f.points_left),
               array_agg(f.awards_left)
          INTO got_c, got_p, got_s, got_pl, got_al
          FROM unnest(campaign_ids, periods) AS k(c, p)
          CROSS JOIN LATERAL (
              SELECT s.slice, s.points_left, s.awards_left
                FROM points.campaign_budget_slices s
               WHERE s.campaign_id = k.c AND s.period = k.p
                 AND (s.points_left IS NULL OR s.points_left > 0)
                 AND (s.awards_left IS NULL OR s.awards_left > 0)
               ORDER BY (s.slice - first_slice + 16) % 16
               LIMIT per_budget
                 FOR UPDATE SKIP LOCKED) AS f;
        SELECT coalesce(bool_and(ok), true) INTO covered FROM (
            SELECT (count(g.c) > 0
                    AND (bool_or(g.c IS NOT NULL AND g.pl IS NULL)
                         OR coalesce(sum(g.pl), 0) >= w.wp)
                    AND (bool_or(g.c IS NOT NULL AND g.al IS NULL)
                         OR coalesce(sum(g.al), 0) >= w.wa))
                   OR NOT EXISTS (
                       SELECT 1 FROM points.campaign_budget_slices e
                        WHERE e.campaign_id = w.c AND e.period = w.p
                          AND (e.points_left IS NULL OR e.points_left > 0)
                          AND (e.awards_left IS NULL OR e.awards_left > 0)) AS ok
              FROM unnest(campaign_ids, periods, wanted_points, wanted_awards)
                   AS w(c, p, wp, wa)
              LEFT JOIN unnest(got_c, got_p, got_pl, got_al) AS g(c, p, pl, al)
                     ON g.c = w.c AND g.p = w.p
             GROUP BY w.c, w.p, w.wp, w.wa) AS per_budget_covered;
        IF NOT covered THEN
            RAISE EXCEPTION 'the free budget slices fall short';
        END IF;
    EXCEPTION WHEN raise_exception THEN
        SELECT array_agg(x.campaign_id), array_agg(x.period), array_agg(x.slice),
               array_agg(x.points_left), array_agg(x.awards_left)
          INTO got_c, got_p, got_s, got_pl, got_al
          FROM (SELECT s.campaign_id, s.period, s.slice, s.points_left, s.awards_left
                  FROM points.campaign_budget_slices s
                  JOIN unnest(campaign_ids, periods) AS k(c, p)
                    ON s.campaign_id = k.c AND s.period = k.p
                 WHERE (s.points_left IS NULL OR s.points_left > 0)
                   AND (s.awards_left IS NULL OR s.awards_left > 0)
                 ORDER BY s.campaign_id, s.period, s.slice
                   FOR UPDATE OF s) AS x;
    END;
    RETURN QUERY SELECT * FROM unnest(got_c, got_p, got_s, got_pl, got_al);
END;
$$;

-- Coupons a coupon campaign gave settlements, issued by the `campaign_coupons` job (the
-- template's stock and limits are the issue's business, not the settlement's). Written in
-- the settlement batch's statement; `done_at` once issued or refused (`refused`: the reason).
CREATE TABLE points.campaign_coupons_due (
    member_id   text        NOT NULL,
    campaign_id text        NOT NULL,
    payment_id  text        NOT NULL,
    template_id text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    done_at     timestamptz,
    refused     text,
    PRIMARY KEY (member_id, campaign_id, payment_id)
);
CREATE INDEX campaign_coupons_pending ON points.campaign_coupons_due (created_at)
    WHERE done_at IS NULL;
