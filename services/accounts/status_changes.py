"""Lifecycle changes (freeze, unfreeze, close), export and erasure of a member."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from services.accounts import store
from services.accounts.lifecycle import Action, Status, transition
from services.accounts.members import Members
from services.accounts.model import Member, StatusChange, StoredMember
from services.accounts.requests import first_result, plain_request_hash, replay
from services.runtime.db import Conn, in_transaction
from services.runtime.errors import not_found
from services.runtime.identity import Caller

MAX_EXPORTED_REFERRALS = 10_000
METHODS = {
    Action.FREEZE: "FreezeMember",
    Action.UNFREEZE: "UnfreezeMember",
    Action.CLOSE: "CloseMember",
    Action.ERASE: "EraseMemberData",
}
ERASE = METHODS[Action.ERASE]
# extra key of an erasure's idempotency record: its reply's count of removed index entries
REMOVED = "removed_index_entries"


@dataclass(frozen=True)
class Export:
    member: Member
    history: list[StatusChange]
    referred_members: list[str]


@dataclass(frozen=True)
class Erasure:
    member: Member
    removed_index_entries: int


class StatusChanges:
    def __init__(self, pool: asyncpg.Pool, members: Members) -> None:
        self._pool = pool
        self._members = members

    async def change(
        self, caller: Caller, member_id: str, action: Action, request_id: str, reason: str
    ) -> Member:
        method = METHODS[action]
        request_hash = plain_request_hash(method, member_id, reason)

        async def work(conn: Conn) -> Member:
            stored = await _locked(conn, member_id)
            stored_request = await store.get_member_request(conn, member_id, request_id)
            done = replay(stored_request, method, request_hash)
            if done is not None:
                return done
            member = await self._apply(conn, caller, stored.member, action, reason)
            await store.insert_member_request(conn, request_id, method, request_hash, member)
            return member

        return await in_transaction(self._pool, work)

    @staticmethod
    async def _apply(
        conn: Conn, caller: Caller, member: Member, action: Action, reason: str
    ) -> Member:
        target = transition(member.status, action)
        updated = (await store.set_status(conn, member.member_id, target)).member
        await store.add_status_change(
            conn, member.member_id, (member.status, target, reason, caller.subject)
        )
        await store.add_outbox_event(
            conn,
            member.member_id,
            "member.status_changed",
            {
                "member_id": member.member_id,
                "from_status": member.status.value,
                "to_status": target.value,
            },
        )
        return updated

    async def export(self, caller: Caller, member_id: str, purpose: str) -> Export:
        async with self._pool.acquire() as conn:
            stored = await store.get_member(conn, member_id)
            if stored is None:
                raise not_found("member")
            history = await store.status_history(conn, member_id)
            referred = await store.referred_members(conn, member_id, MAX_EXPORTED_REFERRALS)
        member = stored.member
        if member.status is not Status.ERASED:
            member = await self._members.get_full(caller, member_id, purpose)
        return Export(member, history, referred)

    async def erase(self, caller: Caller, member_id: str, request_id: str, reason: str) -> Erasure:
        """Idempotent by nature (erasing an erased member changes nothing) and by key: a
        repeat of a request answers with its first result, including what it removed."""
        request_hash = plain_request_hash(ERASE, member_id, reason)

        async def work(conn: Conn) -> Erasure:
            stored = await _locked(conn, member_id)
            stored_request = await store.get_member_request(conn, member_id, request_id)
            first = first_result(stored_request, ERASE, request_hash)
            if first is not None:
                return Erasure(Member.from_snapshot(first), int(first.get(REMOVED, 0)))
            erasure = await self._erase(conn, caller, stored.member, reason)
            extra = {REMOVED: erasure.removed_index_entries}
            await store.insert_member_request(
                conn, request_id, ERASE, request_hash, erasure.member, extra
            )
            return erasure

        return await in_transaction(self._pool, work)

    async def _erase(self, conn: Conn, caller: Caller, member: Member, reason: str) -> Erasure:
        if member.status is Status.ERASED:
            return Erasure(member, 0)
        removed = await store.drop_lookup(conn, member.member_id)
        await store.forget_requests(conn, member.member_id, kept_method=ERASE)
        erased = await self._apply(conn, caller, member, Action.ERASE, reason)
        return Erasure(erased, removed)


async def _locked(conn: Conn, member_id: str) -> StoredMember:
    stored = await store.get_member(conn, member_id, for_update=True)
    if stored is None:
        raise not_found("member")
    return stored
