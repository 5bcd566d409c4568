-- The points ledger. Member-scoped tables carry member_id first in their primary key and in
-- every unique constraint (distributable and co-located by member_id); program_rules is a
-- small reference table. Program-side totals are never materialised (no hot rows): they are
-- sums over transfers.

-- Members as accounts' outbox tells them (never fetched on the settlement path).
CREATE TABLE points.members (
    member_id      text        NOT NULL PRIMARY KEY,
    state          text        NOT NULL CHECK (state IN ('ACTIVE', 'FROZEN', 'CLOSED', 'ERASED')),
    referred_by    text,
    -- the newest accounts outbox event applied; older redeliveries are skipped
    last_event_id  bigint      NOT NULL,
    registered_at  timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Versioned program rules: the document as loaded, and its digest.
CREATE TABLE points.program_rules (
    version    bigint      NOT NULL PRIMARY KEY,
    digest     text        NOT NULL UNIQUE,
    document   jsonb       NOT NULL,
    loaded_at  timestamptz NOT NULL DEFAULT now()
);

-- Materialised per-member balances, changed in the same transaction as the transfers.
CREATE TABLE points.balances (
    member_id        text        NOT NULL PRIMARY KEY,
    available        bigint      NOT NULL DEFAULT 0,
    pending          bigint      NOT NULL DEFAULT 0 CHECK (pending >= 0),
    held             bigint      NOT NULL DEFAULT 0 CHECK (held >= 0),
    lifetime_earned  bigint      NOT NULL DEFAULT 0 CHECK (lifetime_earned >= 0),
    -- how far `available` may go below zero: 0, or negative under the allow_negative policy
    available_floor  bigint      NOT NULL DEFAULT 0 CHECK (available_floor <= 0),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT available_within_policy CHECK (available >= available_floor)
);

CREATE SEQUENCE points.ledger_ids;

-- One ledger transaction per business event; its idempotency key (e.g. `payment:<id>`) is
-- unique per member and written in the same transaction as the balance change.
CREATE TABLE points.transactions (
    member_id        text        NOT NULL,
    txn_id           bigint      NOT NULL,
    kind             text        NOT NULL,
    idempotency_key  text        NOT NULL,
    request_hash     bytea       NOT NULL,
    rule_version     bigint      NOT NULL,
    points           bigint      NOT NULL,
    -- the answer given to the first request, returned to repeats
    result           jsonb       NOT NULL,
    -- each step of the computation, for ExplainTransaction
    explanation      jsonb       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (member_id, txn_id),
    CONSTRAINT one_transaction_per_key UNIQUE (member_id, idempotency_key)
);

-- Double entry: every movement takes `amount` from one account and gives it to another.
-- Accounts are `member:available|pending|held` (of this member) or
-- `program:issued|redeemed|expired|uncollectable|adjustment`. Append-only.
CREATE TABLE points.transfers (
    member_id     text        NOT NULL,
    transfer_id   bigint      NOT NULL,
    txn_id        bigint      NOT NULL,
    from_account  text        NOT NULL,
    to_account    text        NOT NULL,
    amount        bigint      NOT NULL CHECK (amount > 0),
    lot_id        bigint,
    rule_version  bigint      NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (member_id, transfer_id),
    CONSTRAINT distinct_accounts CHECK (from_account <> to_account)
);
CREATE INDEX transfers_by_txn ON points.transfers (member_id, txn_id);

-- Each earning is a lot with its own expiry; spending takes the soonest-expiring lot first.
CREATE TABLE points.lots (
    member_id     text        NOT NULL,
    lot_id        bigint      NOT NULL,
    txn_id        bigint      NOT NULL,
    state         text        NOT NULL
        CHECK (state IN ('PENDING', 'AVAILABLE', 'EXPIRED', 'CANCELLED')),
    points        bigint      NOT NULL CHECK (points > 0),
    remaining     bigint      NOT NULL CHECK (remaining >= 0),
    earned_at     timestamptz NOT NULL,
    available_at  timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    rule_version  bigint      NOT NULL,
    PRIMARY KEY (member_id, lot_id),
    CONSTRAINT remaining_within_lot CHECK (remaining <= points)
);
CREATE INDEX lots_spend_order ON points.lots (member_id, expires_at, lot_id)
    WHERE state = 'AVAILABLE' AND remaining > 0;
CREATE INDEX lots_maturing ON points.lots (available_at) WHERE state = 'PENDING';
CREATE INDEX lots_expiring ON points.lots (expires_at) WHERE state = 'AVAILABLE' AND remaining > 0;

-- Points earned per member and day, for the daily cap.
CREATE TABLE points.daily_earnings (
    member_id  text   NOT NULL,
    day        date   NOT NULL,
    points     bigint NOT NULL CHECK (points >= 0),
    PRIMARY KEY (member_id, day)
);
