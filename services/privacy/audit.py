"""Reading the audit log: pages of events, and checking the hash chain (rules in
domain/audit.py). Appends happen in each change's own transaction (store/audit.py)."""

from __future__ import annotations

import asyncpg

from services.privacy.domain.audit import (
    AuditFilter,
    AuditPage,
    ChainRange,
    ChainReport,
    StoredEntry,
    verify_chain,
)
from services.privacy.store import audit as audit_store

# entries per query of a chain check: bounded memory, and few enough round trips
VERIFY_BATCH_ROWS = 5_000


class AuditLog:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def list_page(self, where: AuditFilter, after_seq: int, size: int) -> AuditPage:
        """A page of matching events after a seq, and whether more follow."""
        async with self._pool.acquire() as conn:
            rows = await audit_store.list_events(conn, where, after_seq, size + 1)
        return AuditPage(rows[:size], len(rows) > size)

    async def verify(self, bounds: ChainRange) -> ChainReport:
        """Checks the chain in one snapshot, VERIFY_BATCH_ROWS entries per query: never the
        whole table in memory."""
        async with audit_store.chain_snapshot(self._pool) as conn:

            async def read(after_seq: int, limit: int) -> list[StoredEntry]:
                return await audit_store.chain_batch(conn, after_seq, bounds.to_seq, limit)

            start_hash = await audit_store.hash_before(conn, bounds.from_seq)
            return await verify_chain(
                read,
                start_hash,
                max(bounds.from_seq - 1, 0),
                VERIFY_BATCH_ROWS,
                bounds.expected_head_hash,
            )
