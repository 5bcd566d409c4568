-- Consent: the purposes members consent to (a small reference catalogue synced from the
-- purposes file at start) and the append-only consent records.

CREATE TABLE privacy.purposes (
    code              text        PRIMARY KEY,
    description       text        NOT NULL,
    legal_basis       text        NOT NULL,
    necessary         boolean     NOT NULL,
    separate_consent  boolean     NOT NULL,
    synced_at         timestamptz NOT NULL DEFAULT now()
);

-- History of each purpose's privacy notice; versions are never changed or removed, because
-- consent records name the version the member was shown.
CREATE TABLE privacy.purpose_notices (
    purpose_code  text        NOT NULL REFERENCES privacy.purposes (code),
    version       integer     NOT NULL CHECK (version > 0),
    material      boolean     NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (purpose_code, version)
);

-- Append-only: the current state of a purpose is its latest record. A withdrawal records the
-- notice version in force when it was made. request_hash makes request_id an idempotency key
-- (scoped to the member, like every unique key of a member-scoped table).
CREATE TABLE privacy.consent_records (
    member_id       text        NOT NULL,
    seq             bigint      GENERATED ALWAYS AS IDENTITY,
    request_id      text        NOT NULL,
    request_hash    bytea       NOT NULL,
    purpose_code    text        NOT NULL,
    action          text        NOT NULL CHECK (action IN ('grant', 'withdraw')),
    notice_version  integer     NOT NULL,
    channel         text        NOT NULL,
    recorded_at     timestamptz NOT NULL,
    PRIMARY KEY (member_id, seq),
    UNIQUE (member_id, request_id, purpose_code),
    FOREIGN KEY (purpose_code, notice_version)
        REFERENCES privacy.purpose_notices (purpose_code, version)
);

CREATE INDEX consent_records_latest ON privacy.consent_records (member_id, purpose_code, seq);

CREATE FUNCTION privacy.consent_records_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'privacy.consent_records is append-only';
END;
$$;

CREATE TRIGGER consent_records_no_update BEFORE UPDATE OR DELETE ON privacy.consent_records
    FOR EACH ROW EXECUTE FUNCTION privacy.consent_records_append_only();

CREATE TRIGGER consent_records_no_truncate BEFORE TRUNCATE ON privacy.consent_records
    FOR EACH STATEMENT EXECUTE FUNCTION privacy.consent_records_append_only();
