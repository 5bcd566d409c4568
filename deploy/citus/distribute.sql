-- Distributes the suite's schemas over a Citus cluster (deploy/citus/README.md).
--
-- Run on the coordinator, after every service's migrations, as the database owner:
--
--     psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f deploy/citus/distribute.sql
--
-- No BEGIN/COMMIT on purpose: each call commits by itself, so a failure half-way leaves
-- what was done in place, and every call is guarded by pg_dist_partition, so running the
-- file again after a fix (or after any new migration) does only what is still missing.
-- A table that does not exist yet makes `'…'::regclass` fail: run the migrations first.
--
-- tests/service/test_citus_layout.py reads this file: every table of the four schemas must
-- appear exactly once below, as a create_reference_table call, a create_distributed_table
-- call, or a `-- local schema.table: reason` line. Keep each call on the pattern used here.

-- The member colocation group takes its shard count from its first table and keeps it:
-- choose it before the first run (several shards per worker, room for the workers to come).
SET citus.shard_count TO 32;

-- privacy.consent_records has append-only triggers; Citus distributes a table with triggers
-- only when this is on (the triggers only raise, on the shard's own node).
SET citus.enable_unsafe_triggers TO on;

-- === Reference tables: small rule and catalogue tables, a copy on every node ============
-- First, because distributed tables reference them by foreign key (a foreign key may only
-- point at a table that is already distributed or reference).

SELECT create_reference_table('points.program_rules')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'points.program_rules'::regclass);

SELECT create_reference_table('points.rewards')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'points.rewards'::regclass);

SELECT create_reference_table('points.campaigns')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'points.campaigns'::regclass);

SELECT create_reference_table('points.campaign_versions')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'points.campaign_versions'::regclass);

SELECT create_reference_table('points.campaign_epoch')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'points.campaign_epoch'::regclass);

SELECT create_reference_table('points.campaign_budget_slices')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'points.campaign_budget_slices'::regclass);

SELECT create_reference_table('points.coupon_templates')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'points.coupon_templates'::regclass);

SELECT create_reference_table('points.campaign_results')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'points.campaign_results'::regclass);

SELECT create_reference_table('privacy.purposes')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'privacy.purposes'::regclass);

-- references privacy.purposes
SELECT create_reference_table('privacy.purpose_notices')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'privacy.purpose_notices'::regclass);

-- === Member-scoped tables: distributed by member_id, one colocation group ===============
-- accounts.members starts the group ('none': a fresh group, never merged by type with some
-- other text-distributed table of the cluster); every other member table joins it, so one
-- member's rows of every service live on the same shard index.

SELECT create_distributed_table('accounts.members', 'member_id', colocate_with => 'none')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'accounts.members'::regclass);

SELECT create_distributed_table('accounts.member_status_changes', 'member_id',
                                colocate_with => 'accounts.members')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'accounts.member_status_changes'::regclass);

SELECT create_distributed_table('accounts.member_requests', 'member_id',
                                colocate_with => 'accounts.members')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'accounts.member_requests'::regclass);

-- written in the transaction of each member change: co-located, that stays one shard
SELECT create_distributed_table('accounts.outbox', 'member_id',
                                colocate_with => 'accounts.members')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'accounts.outbox'::regclass);

SELECT create_distributed_table('points.members', 'member_id',
                                colocate_with => 'accounts.members')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'points.members'::regclass);

SELECT create_distributed_table('points.balances', 'member_id',
                                colocate_with => 'accounts.members')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'points.balances'::regclass);

SELECT create_distributed_table('points.transactions', 'member_id',
                                colocate_with => 'accounts.members')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'points.transactions'::regclass);

SELECT create_distributed_table('points.transfers', 'member_id',
                                colocate_with => 'accounts.members')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'points.transfers'::regclass);

SELECT create_distributed_table('points.lots', 'member_id',
                                colocate_with => 'accounts.members')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'points.lots'::regclass);

SELECT create_distributed_table('points.daily_earnings', 'member_id',
                                colocate_with => 'accounts.members')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'points.daily_earnings'::regclass);

SELECT create_distributed_table('points.payment_refunds', 'member_id',
                                colocate_with => 'accounts.members')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'points.payment_refunds'::regclass);

SELECT create_distributed_table('points.holds', 'member_id',
                                colocate_with => 'accounts.members')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'points.holds'::regclass);

SELECT create_distributed_table('points.hold_lots', 'member_id',
                                colocate_with => 'accounts.members')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'points.hold_lots'::regclass);

SELECT create_distributed_table('points.reward_redemptions', 'member_id',
                                colocate_with => 'accounts.members')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'points.reward_redemptions'::regclass);

SELECT create_distributed_table('points.campaign_member_usage', 'member_id',
                                colocate_with => 'accounts.members')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'points.campaign_member_usage'::regclass);

SELECT create_distributed_table('points.campaign_coupons_due', 'member_id',
                                colocate_with => 'accounts.members')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'points.campaign_coupons_due'::regclass);

SELECT create_distributed_table('points.coupons', 'member_id',
                                colocate_with => 'accounts.members')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'points.coupons'::regclass);

SELECT create_distributed_table('points.qualifying_days', 'member_id',
                                colocate_with => 'accounts.members')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'points.qualifying_days'::regclass);

SELECT create_distributed_table('points.member_tiers', 'member_id',
                                colocate_with => 'accounts.members')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'points.member_tiers'::regclass);

SELECT create_distributed_table('points.member_restrictions', 'member_id',
                                colocate_with => 'accounts.members')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'points.member_restrictions'::regclass);

-- member_id is the referee; the referrer's side is paid in the referrer's own transaction
SELECT create_distributed_table('points.referral_bonuses', 'member_id',
                                colocate_with => 'accounts.members')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'points.referral_bonuses'::regclass);

SELECT create_distributed_table('points.processing_pauses', 'member_id',
                                colocate_with => 'accounts.members')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'points.processing_pauses'::regclass);

SELECT create_distributed_table('points.unknown_members', 'member_id',
                                colocate_with => 'accounts.members')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'points.unknown_members'::regclass);

-- references privacy.purpose_notices (reference, distributed above)
SELECT create_distributed_table('privacy.consent_records', 'member_id',
                                colocate_with => 'accounts.members')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'privacy.consent_records'::regclass);

-- === Departures: one row per member, but unique across members by another key ===========
-- Distributed by the key they are looked up by, so the uniqueness check and the lookup stay
-- on one shard; each in a colocation group of its own (co-location with the member group
-- would mean nothing: the shard of a row is not its member's shard).

-- blind index (kind, digest) -> member: unique among all members
SELECT create_distributed_table('accounts.member_lookup', 'digest', colocate_with => 'none')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'accounts.member_lookup'::regclass);

-- a referral code names one member among all
SELECT create_distributed_table('accounts.referral_codes', 'code', colocate_with => 'none')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'accounts.referral_codes'::regclass);

-- RegisterMember's idempotency key: issued before the member id exists
SELECT create_distributed_table('accounts.registration_requests', 'request_id',
                                colocate_with => 'none')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'accounts.registration_requests'::regclass);

-- === Kept local on the coordinator (not Citus tables; plain PostgreSQL there) ===========
-- One line each, `-- local schema.table: reason`; the README says more.
--
-- local accounts.schema_migrations: the migration runner's record, written on the coordinator under its advisory lock
-- local points.schema_migrations: the migration runner's record, written on the coordinator under its advisory lock
-- local privacy.schema_migrations: the migration runner's record, written on the coordinator under its advisory lock
-- local gateway.schema_migrations: the migration runner's record, written on the coordinator under its advisory lock
-- local privacy.audit_log: one hash chain for the whole suite, appended under one advisory lock; each entry reads the previous one
-- local privacy.subject_keys: the key rewrapper scans all subjects with FOR UPDATE SKIP LOCKED (single-shard only in Citus); written with the local audit log
-- local privacy.key_rotations: a handful of rows, one per key-encryption-key rotation, under the key-ring lock
-- local privacy.outbox: relay cursor in one global event_id order (bigserial key without member_id); few events (processing pauses)
-- local privacy.data_requests: officers' queue read across members by deadline and by id; few rows; key is the request id, not the member
-- local privacy.data_request_events: timeline of a data request, references privacy.data_requests
-- local privacy.data_request_extensions: idempotency of deadline extensions, references privacy.data_requests
-- local privacy.data_exports: one export per data request (keyed by it), references privacy.data_requests
-- local privacy.export_downloads: one download in progress, references privacy.data_exports
-- local privacy.erasures: register of erased members, read whole to re-apply after a restore; written with the local data request
-- local gateway.api_keys: the gateway's callers, looked up by key id; joined with nothing, so no copy on the workers
-- local gateway.webhook_deliveries: replay cache of signed webhooks by (client, signature); not member-scoped, purged by age
