"""Updating a member's profile (phone, email, display name): idempotent per request_id,
unique by phone and email, and its preview (validate_only)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import asyncpg

from services.accounts import personal_data
from services.accounts.domain.idempotency import Method, replay
from services.accounts.domain.lifecycle import require_editable
from services.accounts.domain.members import LookupKind, Member, masked, taken
from services.accounts.domain.profile import changed_lookups, clears_email, update_canonical
from services.accounts.members import load
from services.accounts.personal_data import Digests, Sealed
from services.accounts.ports import INDEX_UPDATE_REQUEST, PrivacyPort
from services.accounts.store import lookup as lookup_store
from services.accounts.store import members as member_store
from services.accounts.store import requests as request_store
from services.accounts.store.unique import UniqueViolation
from services.runtime.db import Conn, in_transaction


class ProfileUpdates:
    def __init__(self, pool: asyncpg.Pool, privacy: PrivacyPort) -> None:
        self._pool = pool
        self._privacy = privacy

    async def _digests(self, member_id: str, changes: Mapping[str, str]) -> Digests:
        digests = await personal_data.request_digests(
            self._privacy,
            context=INDEX_UPDATE_REQUEST,
            canonical=update_canonical(member_id, changes),
            lookups=changed_lookups(changes),
        )
        if clears_email(changes):
            digests.lookups[LookupKind.EMAIL] = None  # cleared: its index entry goes
        return digests

    async def update(
        self, member_id: str, *, request_id: str, changes: Mapping[str, str]
    ) -> Member:
        """`changes`: normalised new values of the masked fields named by the update mask."""
        digests = await self._digests(member_id, changes)
        async with self._pool.acquire() as conn:
            done = await _replay_update(
                conn, member_id, request_id=request_id, request_hash=digests.request
            )
            if done is not None:
                return done
        sealed = await personal_data.seal(self._privacy, member_id, changes)
        return await in_transaction(
            self._pool,
            lambda conn: _write_update(
                conn, member_id, request_id=request_id, digests=digests, sealed=sealed
            ),
        )

    async def preview(self, member_id: str, changes: Mapping[str, str]) -> Member:
        """UpdateMember with validate_only (AIP-163): the checks of `update` that need no
        write (the member's status, a phone or email another member holds) and the member
        as the update would show it. Nothing is encrypted, written or recorded; a later
        update under the same key still runs. (A value taken meanwhile, or one that two
        updates race for, is still refused by the update itself.)"""
        digests = await personal_data.lookup_digests(self._privacy, changed_lookups(changes))
        async with self._pool.acquire() as conn:
            stored = await load(conn, member_id)
            require_editable(stored.member.status)
            for kind, digest in digests.items():
                holder = await lookup_store.find_by_digest(conn, kind, digest)
                if holder is not None and holder != member_id:
                    raise taken(kind)
        shown = masked(changes)
        member = stored.member
        return replace(
            member,
            phone=shown.get("phone", member.phone),
            email=shown.get("email", member.email),
            display_name=shown.get("display_name", member.display_name),
        )


async def _write_update(
    conn: Conn, member_id: str, *, request_id: str, digests: Digests, sealed: Sealed
) -> Member:
    # re-checked under the row lock: a concurrent repeat may have finished meanwhile
    done = await _replay_update(
        conn, member_id, request_id=request_id, request_hash=digests.request, lock=True
    )
    if done is not None:
        return done
    try:
        await lookup_store.write_lookups(conn, member_id, digests.lookups)
    except UniqueViolation as exc:
        raise taken(LookupKind(exc.constraint)) from exc
    updated = await member_store.update_personal(conn, member_id, sealed.ciphertexts, sealed.masks)
    await request_store.insert_member_request(
        conn,
        updated.member,
        request_id=request_id,
        method=Method.UPDATE,
        request_hash=digests.request,
    )
    return updated.member


async def _replay_update(
    conn: Conn, member_id: str, *, request_id: str, request_hash: bytes, lock: bool = False
) -> Member | None:
    """The first result of this update if it was done; else checks that it may be done."""
    stored = await load(conn, member_id, lock=lock)
    record = await request_store.get_member_request(conn, member_id, request_id=request_id)
    done = replay(record, Method.UPDATE, request_hash)
    if done is None:
        require_editable(stored.member.status)
    return done
