"""Reading members: by id (masked, or in clear for a stated purpose), by phone or email, and
the list of them."""

from __future__ import annotations

import asyncpg

from services.accounts import personal_data
from services.accounts.domain.lifecycle import Status
from services.accounts.domain.members import ListPosition, LookupKind, Member, StoredMember
from services.accounts.ports import PrivacyPort
from services.accounts.store import lookup as lookup_store
from services.accounts.store import members as member_store
from services.runtime.db import Conn
from services.runtime.errors import not_found
from services.runtime.identity import Caller


async def load(conn: Conn, member_id: str, *, lock: bool = False) -> StoredMember:
    """The member's row (locked for the transaction when `lock`); NOT_FOUND if none."""
    stored = await member_store.get_member(conn, member_id, for_update=lock)
    if stored is None:
        raise not_found("member")
    return stored


class Members:
    def __init__(self, pool: asyncpg.Pool, privacy: PrivacyPort) -> None:
        self._pool = pool
        self._privacy = privacy

    async def get(self, member_id: str) -> Member:
        async with self._pool.acquire() as conn:
            return (await load(conn, member_id)).member

    async def get_full(self, caller: Caller, member_id: str, *, purpose: str) -> Member:
        async with self._pool.acquire() as conn:
            stored = await load(conn, member_id)
        return await personal_data.reveal(self._privacy, caller, stored, purpose=purpose)

    async def lookup(self, kind: LookupKind, normalised_value: str) -> Member:
        digests = await personal_data.lookup_digests(self._privacy, {kind: normalised_value})
        async with self._pool.acquire() as conn:
            member_id = await lookup_store.find_by_digest(conn, kind, digests[kind])
            if member_id is None:
                raise not_found("member")
            return (await load(conn, member_id)).member

    async def list(
        self, status: Status | None, after: ListPosition | None, limit: int
    ) -> list[Member]:
        async with self._pool.acquire() as conn:
            return await member_store.list_members(conn, status, after, limit)
