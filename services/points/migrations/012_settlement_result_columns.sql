-- A settlement's result as columns instead of a JSON document (issue 14): the state it
-- answered, the tier multiplier it earned at and its lot's dates; the member, payment, points,
-- rule version and transaction are columns already (domain/settlement.StoredPrior rebuilds
-- the result). Building, encoding and storing a jsonb result cost more per settlement than
-- these four columns. Settlements stored before keep their `result` and leave these NULL;
-- other kinds of transaction keep writing `result`. Adding nullable columns without a
-- default rewrites nothing, however long the table.
ALTER TABLE points.transactions
    ALTER COLUMN result DROP NOT NULL,
    ADD COLUMN settled_state   text,
    ADD COLUMN multiplier_bps  integer,
    ADD COLUMN available_at    timestamptz,
    ADD COLUMN expires_at      timestamptz;

-- Every transaction answers its repeats: with its stored result, or (settlements) with the
-- result its columns make. NOT VALID: the rows before this migration all hold a result, and
-- checking them would scan the whole ledger under a lock.
ALTER TABLE points.transactions
    ADD CONSTRAINT result_recorded
    CHECK (result IS NOT NULL OR (kind = 'settlement' AND settled_state IS NOT NULL
                                  AND multiplier_bps IS NOT NULL)) NOT VALID;
