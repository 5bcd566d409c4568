-- Members with personal information stored only as ciphertext (plus display masks),
-- blind-index lookups, referral codes, status history, idempotency keys and the outbox.
-- Member-scoped tables carry member_id in their primary key (distributable by member_id);
-- lookup tables are keyed by what they look up (distributable by that key).

CREATE TABLE accounts.members (
    member_id            text        NOT NULL PRIMARY KEY,
    status               text        NOT NULL
        CHECK (status IN ('ACTIVE', 'FROZEN', 'CLOSED', 'ERASED')),
    phone_ct             bytea,
    email_ct             bytea,
    display_name_ct      bytea,
    phone_masked         text        NOT NULL DEFAULT '',
    email_masked         text        NOT NULL DEFAULT '',
    display_name_masked  text        NOT NULL DEFAULT '',
    referral_code        text        NOT NULL DEFAULT '',
    referred_by          text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    erased_at            timestamptz,
    CONSTRAINT erased_holds_nothing CHECK (
        status <> 'ERASED'
        OR (phone_ct IS NULL AND email_ct IS NULL AND display_name_ct IS NULL
            AND phone_masked = '' AND email_masked = '' AND display_name_masked = '')
    ),
    CONSTRAINT live_has_phone CHECK (status = 'ERASED' OR phone_ct IS NOT NULL)
);

CREATE INDEX members_by_created ON accounts.members (created_at, member_id);
CREATE INDEX members_by_status ON accounts.members (status, created_at, member_id);
CREATE INDEX members_by_referrer ON accounts.members (referred_by) WHERE referred_by IS NOT NULL;

-- Blind index (HMAC of the normalised value) -> member; unique among non-erased members
-- because erasure deletes the entries.
CREATE TABLE accounts.member_lookup (
    kind       text  NOT NULL CHECK (kind IN ('phone', 'email')),
    digest     bytea NOT NULL,
    member_id  text  NOT NULL,
    PRIMARY KEY (kind, digest)
);
CREATE INDEX member_lookup_by_member ON accounts.member_lookup (member_id);

CREATE TABLE accounts.referral_codes (
    code       text NOT NULL PRIMARY KEY,
    member_id  text NOT NULL
);
CREATE INDEX referral_codes_by_member ON accounts.referral_codes (member_id);

CREATE TABLE accounts.member_status_changes (
    member_id    text        NOT NULL,
    seq          bigint      GENERATED ALWAYS AS IDENTITY,
    from_status  text        NOT NULL,
    to_status    text        NOT NULL,
    reason       text        NOT NULL,
    actor        text        NOT NULL,
    changed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (member_id, seq)
);

-- RegisterMember's idempotency keys: the member id is not known before the first call.
-- Erasure keeps the row as a tombstone (request_hash, a keyed hash of the personal data,
-- and snapshot, the masked member, both NULL) so that a retry of the registration is
-- refused instead of registering the erased person again.
CREATE TABLE accounts.registration_requests (
    request_id    text        NOT NULL PRIMARY KEY,
    request_hash  bytea,
    member_id     text        NOT NULL,
    snapshot      jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tombstone_keeps_nothing CHECK ((request_hash IS NULL) = (snapshot IS NULL))
);
CREATE INDEX registration_requests_by_member ON accounts.registration_requests (member_id);

-- Idempotency keys of mutations of an existing member, with the first result. Erasure
-- deletes them (masks, keyed hashes of personal data) except those of EraseMemberData,
-- whose snapshot is the erased, empty member.
CREATE TABLE accounts.member_requests (
    member_id     text        NOT NULL,
    request_id    text        NOT NULL,
    method        text        NOT NULL,
    request_hash  bytea       NOT NULL,
    snapshot      jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (member_id, request_id)
);

-- Transactional outbox: events for other services, written with the change.
CREATE TABLE accounts.outbox (
    member_id     text        NOT NULL,
    event_id      bigint      GENERATED ALWAYS AS IDENTITY,
    event_type    text        NOT NULL,
    payload       jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    PRIMARY KEY (member_id, event_id)
);
CREATE INDEX outbox_unpublished ON accounts.outbox (event_id) WHERE published_at IS NULL;
