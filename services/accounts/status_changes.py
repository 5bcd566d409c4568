"""Lifecycle changes of a member (freeze, unfreeze, close; erasure's own step too): the
state machine's transition, the history entry and the member.status_changed event for points,
in one transaction."""

from __future__ import annotations

import asyncpg

from services.accounts.domain import events
from services.accounts.domain.idempotency import METHOD_OF_ACTION, plain_request_hash, replay
from services.accounts.domain.lifecycle import Action, transition
from services.accounts.domain.members import Member
from services.accounts.members import load
from services.accounts.store import members as member_store
from services.accounts.store import outbox
from services.accounts.store import requests as request_store
from services.accounts.store import status_changes as history_store
from services.runtime.db import Conn, in_transaction
from services.runtime.identity import Caller


class StatusChanges:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def change(
        self, caller: Caller, member_id: str, action: Action, *, request_id: str, reason: str
    ) -> Member:
        method = METHOD_OF_ACTION[action]
        request_hash = plain_request_hash(method.value, member_id, reason)

        async def work(conn: Conn) -> Member:
            stored = await load(conn, member_id, lock=True)
            record = await request_store.get_member_request(conn, member_id, request_id=request_id)
            done = replay(record, method, request_hash)
            if done is not None:
                return done
            member = await apply_action(conn, caller, stored.member, action, reason=reason)
            await request_store.insert_member_request(
                conn, member, request_id=request_id, method=method, request_hash=request_hash
            )
            return member

        return await in_transaction(self._pool, work)


async def apply_action(
    conn: Conn, caller: Caller, member: Member, action: Action, *, reason: str
) -> Member:
    """Moves the member (locked by the caller's transaction) on by `action`; raises when the
    state machine does not allow it."""
    target = transition(member.status, action)
    updated = (await member_store.set_status(conn, member.member_id, target)).member
    await history_store.add_status_change(
        conn,
        member.member_id,
        from_status=member.status,
        to_status=target,
        reason=reason,
        actor=caller.subject,
    )
    await outbox.add_outbox_event(
        conn,
        events.status_changed(member.member_id, from_status=member.status, to_status=target),
    )
    return updated
