"""A member's data for privacy's data-subject requests (the internal RPCs): the export of
everything accounts holds of them, and their erasure."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from services.accounts.domain.idempotency import (
    REMOVED,
    Method,
    first_result,
    plain_request_hash,
)
from services.accounts.domain.lifecycle import Action, Status
from services.accounts.domain.members import Member, StatusChange
from services.accounts.members import Members, load
from services.accounts.status_changes import apply_action
from services.accounts.store import lookup as lookup_store
from services.accounts.store import members as member_store
from services.accounts.store import requests as request_store
from services.accounts.store import status_changes as history_store
from services.runtime.db import Conn, in_transaction
from services.runtime.identity import Caller

MAX_EXPORTED_REFERRALS = 10_000


@dataclass(frozen=True)
class Export:
    member: Member
    history: list[StatusChange]
    referred_members: list[str]


@dataclass(frozen=True)
class Erasure:
    member: Member
    removed_index_entries: int


class MemberData:
    def __init__(self, pool: asyncpg.Pool, members: Members) -> None:
        self._pool = pool
        self._members = members

    async def export(self, caller: Caller, member_id: str, *, purpose: str) -> Export:
        async with self._pool.acquire() as conn:
            stored = await load(conn, member_id)
            changes = await history_store.status_history(conn, member_id)
            referred = await member_store.referred_members(conn, member_id, MAX_EXPORTED_REFERRALS)
        member = stored.member
        if member.status is not Status.ERASED:
            member = await self._members.get_full(caller, member_id, purpose=purpose)
        return Export(member, changes, referred)

    async def erase(
        self, caller: Caller, member_id: str, *, request_id: str, reason: str
    ) -> Erasure:
        """Idempotent by nature (erasing an erased member changes nothing) and by key: a
        repeat of a request answers with its first result, including what it removed."""
        request_hash = plain_request_hash(Method.ERASE.value, member_id, reason)

        async def work(conn: Conn) -> Erasure:
            stored = await load(conn, member_id, lock=True)
            record = await request_store.get_member_request(conn, member_id, request_id=request_id)
            first = first_result(record, Method.ERASE, request_hash)
            if first is not None:
                return Erasure(Member.from_snapshot(first), int(first.get(REMOVED, 0)))
            erasure = await _erase(conn, caller, stored.member, reason=reason)
            await request_store.insert_member_request(
                conn,
                erasure.member,
                request_id=request_id,
                method=Method.ERASE,
                request_hash=request_hash,
                extra={REMOVED: erasure.removed_index_entries},
            )
            return erasure

        return await in_transaction(self._pool, work)


async def _erase(conn: Conn, caller: Caller, member: Member, *, reason: str) -> Erasure:
    if member.status is Status.ERASED:
        return Erasure(member, 0)
    removed = await lookup_store.drop_lookup(conn, member.member_id)
    await request_store.forget_requests(conn, member.member_id, kept_method=Method.ERASE)
    erased = await apply_action(conn, caller, member, Action.ERASE, reason=reason)
    return Erasure(erased, removed)
