-- Data-subject requests (PIPL Art. 44-50), their timeline, fulfilment steps, exports and
-- the register of erased members.
--
-- Not distributed under Citus: a few requests per thousand members a year, read by id from
-- the officers' queue; they stay on the coordinator like the audit log (deploy/citus).

CREATE TABLE privacy.data_requests (
    id                    text        PRIMARY KEY,
    member_id             text        NOT NULL,
    type                  text        NOT NULL CHECK (type IN ('ACCESS', 'PORTABILITY',
        'CORRECTION', 'DELETION', 'EXPLANATION', 'RESTRICTION', 'CONSENT_WITHDRAWAL')),
    channel               text        NOT NULL,
    state                 text        NOT NULL CHECK (state IN ('RECEIVED', 'IDENTITY_VERIFIED',
        'IN_PROGRESS', 'COMPLETED', 'REJECTED', 'CANCELLED')),
    create_request_id     text        NOT NULL UNIQUE,
    create_request_hash   bytea       NOT NULL,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    -- the deadline (services/privacy/deadlines.py), re-derived on every extension
    received_on           date        NOT NULL,
    initial_working_days  integer     NOT NULL,
    working_days          integer     NOT NULL,
    due_date              date        NOT NULL,
    due_at                timestamptz NOT NULL,
    deadline_provisional  boolean     NOT NULL,
    extensions            jsonb       NOT NULL DEFAULT '[]',
    -- the type's own input: purposes (CONSENT_WITHDRAWAL), transaction ids (EXPLANATION),
    -- the changes of a CORRECTION encrypted under the member's data key
    purposes              text[]      NOT NULL DEFAULT '{}',
    transactions          text[]      NOT NULL DEFAULT '{}',
    correction_fields     text[]      NOT NULL DEFAULT '{}',
    correction_ciphertext bytea,
    -- identity: a one-time code kept only as a keyed hash, or the wallet's attestation
    code_hash             bytea,
    code_expires_at       timestamptz,
    code_attempts_left    integer     NOT NULL DEFAULT 0,
    codes_issued          integer     NOT NULL DEFAULT 0,
    verification_method   text        NOT NULL DEFAULT '',
    attestation_method    text        NOT NULL DEFAULT '',
    attestation_reference text        NOT NULL DEFAULT '',
    verified_at           timestamptz,
    -- fulfilment
    approve_request_id    text,
    steps                 jsonb       NOT NULL DEFAULT '[]',
    next_attempt_at       timestamptz,
    attempts              integer     NOT NULL DEFAULT 0,
    rejection_reason      text        NOT NULL DEFAULT '',
    deletion_outcome      text        NOT NULL DEFAULT '',
    explanation           jsonb,
    closed_at             timestamptz
);
-- the officers' queue: open first, soonest deadline first (ListDataRequests' order)
CREATE INDEX data_requests_queue
    ON privacy.data_requests ((closed_at IS NOT NULL), due_at, id);
CREATE INDEX data_requests_by_member ON privacy.data_requests (member_id, created_at);
CREATE INDEX data_requests_to_resume ON privacy.data_requests (next_attempt_at)
    WHERE state = 'IN_PROGRESS';

-- The timeline: append-only, like the audit log it mirrors (the audit log is the proof,
-- this is what the officer and the member read).
CREATE TABLE privacy.data_request_events (
    data_request_id  text        NOT NULL REFERENCES privacy.data_requests (id),
    seq              bigint      GENERATED ALWAYS AS IDENTITY,
    state            text        NOT NULL,
    action           text        NOT NULL,
    actor            text        NOT NULL,
    note             text        NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL,
    PRIMARY KEY (data_request_id, seq)
);

-- Idempotency of deadline extensions.
CREATE TABLE privacy.data_request_extensions (
    data_request_id  text        NOT NULL REFERENCES privacy.data_requests (id),
    request_id       text        NOT NULL,
    request_hash     bytea       NOT NULL,
    PRIMARY KEY (data_request_id, request_id)
);

-- Export bundles of ACCESS / PORTABILITY requests: a ZIP archive encrypted under the
-- member's data key (so erasing the member shreds it too), downloadable a limited number of
-- times until it expires, then purged (the ciphertext is dropped, the row stays as record).
CREATE TABLE privacy.data_exports (
    data_request_id      text        PRIMARY KEY REFERENCES privacy.data_requests (id),
    member_id            text        NOT NULL,
    archive_ciphertext   bytea,
    archive_size_bytes   bigint      NOT NULL,
    archive_sha256       bytea       NOT NULL,
    downloads_remaining  integer     NOT NULL CHECK (downloads_remaining >= 0),
    created_at           timestamptz NOT NULL,
    expires_at           timestamptz NOT NULL,
    purged_at            timestamptz
);
CREATE INDEX data_exports_to_purge ON privacy.data_exports (expires_at)
    WHERE purged_at IS NULL;
CREATE INDEX data_exports_by_member ON privacy.data_exports (member_id);

-- One download in progress: the parts after the first are fetched with its token.
CREATE TABLE privacy.export_downloads (
    token_nonce      bytea       PRIMARY KEY,
    data_request_id  text        NOT NULL REFERENCES privacy.data_exports (data_request_id),
    started_at       timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL
);
CREATE INDEX export_downloads_by_request ON privacy.export_downloads (data_request_id);

-- Members whose personal information was erased, with what the ledger keeps and why.
-- Also appended to the erasure journal outside the database, so that erasures survive the
-- restore of an older backup (services/privacy/erasure_journal.py).
CREATE TABLE privacy.erasures (
    member_id           text        PRIMARY KEY,
    data_request_id     text        NOT NULL,
    legal_basis         text        NOT NULL,
    retention_end_at    timestamptz NOT NULL,
    created_at          timestamptz NOT NULL
);
