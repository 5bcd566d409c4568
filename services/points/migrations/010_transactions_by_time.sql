-- ListTransactions and ExportMemberLedger page a member's transactions newest first by
-- (created_at, txn_id); without this index every page sorted all of the member's remaining
-- transactions (seconds for a member with 100,000 of them). Member-first, so it co-locates
-- under Citus like every other index of a member-scoped table.
CREATE INDEX transactions_by_time
    ON points.transactions (member_id, created_at DESC, txn_id DESC);
