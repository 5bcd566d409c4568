"""RestrictMember: after erasure a member's ledger is kept (the law requires it), keyed by the
member id only, and used for nothing but storage, reconciliation and legal export (DESIGN.md
§7, PIPL Art. 47 ¶2). See docs/decisions.md "Points ledger" for what is blocked."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.points.store import restrictions as store
from services.points.store.members import MemberRecord
from services.runtime.db import Conn, in_transaction
from services.runtime.errors import (
    DomainError,
    failed_precondition,
    idempotency_key_reused,
    not_found,
)

RESTRICTED = "RESTRICTED"


def member_restricted() -> DomainError:
    return failed_precondition(
        "MEMBER_RESTRICTED",
        "this member's ledger is restricted: kept for storage, reconciliation and export only",
    )


async def refuse_if_restricted(conn: Conn, member_id: str) -> None:
    """For the paths that do not read the member's state already (refunds, reads)."""
    if await store.is_restricted(conn, member_id):
        raise member_restricted()


@dataclass(frozen=True)
class RestrictRequest:
    member_id: str
    request_id: str
    legal_basis: str
    retention_end: datetime

    def fingerprint(self) -> bytes:
        canonical = [
            self.member_id,
            self.request_id,
            self.legal_basis,
            self.retention_end.isoformat(),
        ]
        return hashlib.sha256(json.dumps(canonical).encode()).digest()


class Restrictions:
    def __init__(self, pool: asyncpg.Pool, clock: Callable[[], datetime]) -> None:
        self._pool = pool
        self._clock = clock

    async def restrict(self, request: RestrictRequest) -> store.RestrictionRow:
        """Exactly once per member: a repeat with the same payload answers with the first
        record; any other payload (another request id too) is IDEMPOTENCY_KEY_REUSED."""
        return await in_transaction(self._pool, lambda conn: self._restrict_in(conn, request))

    async def _restrict_in(self, conn: Conn, request: RestrictRequest) -> store.RestrictionRow:
        if not await store.lock_member(conn, request.member_id):
            raise not_found("member")
        done = await store.get_restriction(conn, request.member_id)
        if done is None:
            done = store.RestrictionRow(
                request.member_id,
                request.legal_basis,
                request.retention_end,
                request.request_id,
                request.fingerprint(),
                self._clock(),
            )
            await store.insert_restriction(conn, done)
        if done.request_hash != request.fingerprint():
            raise idempotency_key_reused()
        return done


def require_readable(member: MemberRecord | None) -> None:
    """For reads of one member's points: unknown is NOT_FOUND, restricted is refused."""
    if member is None:
        raise not_found("member")
    if member.state == RESTRICTED:
        raise member_restricted()
