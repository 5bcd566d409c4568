-- Per-subject data keys (envelope encryption) and the tamper-evident audit log.

CREATE TABLE privacy.subject_keys (
    subject_id          text        NOT NULL,
    -- 0: a tombstone for a subject erased before any data key was created, so that none
    -- can be created afterwards
    key_version         integer     NOT NULL DEFAULT 1 CHECK (key_version >= 0),
    -- key-encryption key that wraps the data key; NULL once destroyed
    kek_id              text,
    wrapped_key         bytea,
    created_at          timestamptz NOT NULL DEFAULT now(),
    rewrapped_at        timestamptz,
    destroyed_at        timestamptz,
    destroy_request_id  text,
    destroy_reason      text,
    PRIMARY KEY (subject_id),
    CONSTRAINT destroyed_means_no_key CHECK (
        (destroyed_at IS NULL AND wrapped_key IS NOT NULL AND kek_id IS NOT NULL)
        OR (destroyed_at IS NOT NULL AND wrapped_key IS NULL AND kek_id IS NULL)
    ),
    CONSTRAINT tombstone_is_destroyed CHECK (key_version > 0 OR destroyed_at IS NOT NULL)
);

-- the rewrapper finds data keys still wrapped by an older key-encryption key
CREATE INDEX subject_keys_by_kek ON privacy.subject_keys (kek_id) WHERE kek_id IS NOT NULL;

CREATE TABLE privacy.key_rotations (
    request_id       text        PRIMARY KEY,
    previous_kek_id  text        NOT NULL,
    primary_kek_id   text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- Append-only; each entry hashes the previous one. Written in the same transaction as the
-- change it records.
CREATE TABLE privacy.audit_log (
    seq           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at   timestamptz NOT NULL,
    actor         text        NOT NULL,
    actor_role    text        NOT NULL,
    on_behalf_of  text        NOT NULL DEFAULT '',
    action        text        NOT NULL,
    subject_id    text        NOT NULL DEFAULT '',
    fields        text[]      NOT NULL DEFAULT '{}',
    purpose       text        NOT NULL DEFAULT '',
    request_id    text        NOT NULL DEFAULT '',
    prev_hash     bytea       NOT NULL,
    entry_hash    bytea       NOT NULL UNIQUE
);

CREATE INDEX audit_log_by_subject ON privacy.audit_log (subject_id, seq);

CREATE FUNCTION privacy.audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'privacy.audit_log is append-only';
END;
$$;

CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON privacy.audit_log
    FOR EACH ROW EXECUTE FUNCTION privacy.audit_log_append_only();

CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON privacy.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION privacy.audit_log_append_only();
