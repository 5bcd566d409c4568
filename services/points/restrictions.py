"""RestrictMember: a member's ledger restricted after erasure (domain/restrictions.py says
what that means), exactly once per member; and the check of the paths that do not read the
member's state already."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import asyncpg

from services.points.domain.restrictions import Restriction, RestrictRequest, member_restricted
from services.points.store import restrictions as restriction_store
from services.runtime.db import Conn, in_transaction
from services.runtime.errors import idempotency_key_reused, not_found


async def refuse_if_restricted(conn: Conn, member_id: str) -> None:
    """For the paths that do not read the member's state already (refunds, reads)."""
    if await restriction_store.is_restricted(conn, member_id):
        raise member_restricted()


class Restrictions:
    def __init__(self, pool: asyncpg.Pool, clock: Callable[[], datetime]) -> None:
        self._pool = pool
        self._clock = clock

    async def restrict(self, request: RestrictRequest) -> Restriction:
        """Exactly once per member: a repeat with the same payload answers with the first
        record; any other payload (another request id too) is IDEMPOTENCY_KEY_REUSED."""
        return await in_transaction(self._pool, lambda conn: self._restrict_in(conn, request))

    async def _restrict_in(self, conn: Conn, request: RestrictRequest) -> Restriction:
        if not await restriction_store.lock_member(conn, request.member_id):
            raise not_found("member")
        done = await restriction_store.get_restriction(conn, request.member_id)
        if done is None:
            done = Restriction(
                request.member_id,
                request.legal_basis,
                request.retention_end,
                request.request_id,
                request.fingerprint(),
                self._clock(),
            )
            await restriction_store.insert_restriction(conn, done)
        if done.request_hash != request.fingerprint():
            raise idempotency_key_reused()
        return done
