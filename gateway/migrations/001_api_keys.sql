-- API keys of the gateway's callers (wallet backends, the settlement system, officers,
-- administrators). Only a hash of each key's secret is stored: the key itself is shown once,
-- when it is created. Keys are never deleted, only revoked, so the table keeps who had access
-- when. A small reference table: it is looked up by key_id, never per member.

CREATE TABLE gateway.api_keys (
    -- the public part of the key (`wm_<key_id>_<secret>`): safe to log and to show in lists
    key_id        text        NOT NULL PRIMARY KEY CHECK (key_id ~ '^[a-z2-7]{16}$'),
    name          text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    role          text        NOT NULL
        CHECK (role IN ('wallet-backend', 'settlement', 'officer', 'admin')),
    -- which hash `secret_hash` is, so a later scheme (say, HMAC with a server-side key) can
    -- be introduced next to this one without invalidating issued keys
    hash_scheme   text        NOT NULL CHECK (hash_scheme IN ('sha256-v1')),
    secret_hash   bytea       NOT NULL CHECK (octet_length(secret_hash) = 32),
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz,
    revoked_at    timestamptz,
    -- coarse on purpose: written at most once a minute per key, never on every request
    last_used_at  timestamptz,
    CONSTRAINT expires_after_creation CHECK (expires_at IS NULL OR expires_at > created_at)
);

CREATE INDEX api_keys_by_created ON gateway.api_keys (created_at, key_id);
