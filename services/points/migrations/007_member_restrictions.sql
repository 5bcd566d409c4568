-- Restriction of processing (PIPL Art. 44, 47 ¶2): after erasure the ledger stays, keyed by
-- the member id only, and is used for nothing but storage, reconciliation and legal export.
-- `members.restricted` is the flag the hot path reads with the member's state (one column of
-- a row it already reads); the restriction's record is its own row.
ALTER TABLE points.members ADD COLUMN restricted boolean NOT NULL DEFAULT false;

CREATE TABLE points.member_restrictions (
    member_id      text        NOT NULL PRIMARY KEY,
    legal_basis    text        NOT NULL CHECK (length(legal_basis) BETWEEN 1 AND 2000),
    retention_end  timestamptz NOT NULL,
    request_id     text        NOT NULL,
    -- what makes a repeat the same request
    request_hash   bytea       NOT NULL,
    restricted_at  timestamptz NOT NULL DEFAULT now()
);
