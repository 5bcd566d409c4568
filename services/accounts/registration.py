"""Registering a member: idempotent per request_id, unique by phone and email, with the
consents given at sign-up recorded by privacy, and the member.registered event for points."""

from __future__ import annotations

import asyncpg

from services.accounts import personal_data
from services.accounts.domain import events
from services.accounts.domain.consents import signup_consents_request_id
from services.accounts.domain.idempotency import RegistrationRecord, replay_registration
from services.accounts.domain.lifecycle import Status
from services.accounts.domain.members import (
    LookupKind,
    Member,
    new_member_id,
    new_referral_code,
    taken,
)
from services.accounts.domain.registration import (
    REFERRAL_CODE_ATTEMPTS,
    Registration,
    referral_codes_exhausted,
)
from services.accounts.personal_data import Digests, Sealed
from services.accounts.ports import INDEX_REGISTER_REQUEST, PrivacyPort
from services.accounts.store import lookup as lookup_store
from services.accounts.store import members as member_store
from services.accounts.store import registration as registration_store
from services.accounts.store import requests as request_store
from services.accounts.store.unique import UniqueKey, UniqueViolation
from services.runtime.db import Conn, in_statement
from services.runtime.errors import DomainError, bad_field


class Registrations:
    def __init__(self, pool: asyncpg.Pool, privacy: PrivacyPort) -> None:
        self._pool = pool
        self._privacy = privacy

    async def register(self, reg: Registration) -> Member:
        """One call of privacy for a new registration: the member's fields are encrypted
        and the request's digests computed together (a repeat, rare, first asks for the
        digest its stored fingerprint is compared with)."""
        async with self._pool.acquire() as conn:
            stored = await request_store.get_registration(conn, reg.request_id)
            # an unknown referral code is refused before privacy makes a data key
            referrer = None if stored is not None else await _referrer(conn, reg.referral_code)
        if stored is not None:
            return await self._repeat(reg, stored)
        member_id = new_member_id()
        # encrypting creates the member's data key, without which privacy does not know
        # them; consents are recorded next and the member inserted last, so a refused
        # consent leaves no member behind (see docs/decisions/accounts.md, consents at sign-up)
        sealed, digests = await personal_data.seal_and_digest(
            self._privacy,
            member_id,
            reg.personal(),
            context=INDEX_REGISTER_REQUEST,
            canonical=reg.canonical(),
            lookups=reg.lookups(),
        )
        try:
            return await self._register(reg, member_id, sealed, digests, referrer)
        except UniqueViolation as exc:
            return await self._after_clash(reg.request_id, digests.request, exc)

    async def _repeat(self, reg: Registration, stored: RegistrationRecord) -> Member:
        """The first result of this request_id; raises when the key was used for another
        request, or for a member since erased."""
        digests = await personal_data.request_digests(
            self._privacy, context=INDEX_REGISTER_REQUEST, canonical=reg.canonical(), lookups={}
        )
        done = replay_registration(stored, digests.request)
        if done is None:
            raise DomainError.internal("a stored registration replayed to nothing")
        return done

    async def _register(
        self,
        reg: Registration,
        member_id: str,
        sealed: Sealed,
        digests: Digests,
        referrer: str | None,
    ) -> Member:
        """Raises UniqueViolation when a phone, email or the request_id is taken."""
        if reg.consents is not None:
            done = await self._before_consents(reg, digests)
            if done is not None:
                return done
            await self._record_consents(member_id, reg)
        new = registration_store.NewRegistration(
            member=member_store.NewMember(
                member_id=member_id,
                ciphertexts=sealed.ciphertexts,
                masks=sealed.masks,
                referred_by=referrer,
            ),
            request_id=reg.request_id,
            request_hash=digests.request,
            lookups=digests.lookups,
            event=events.registered(member_id, referred_by=referrer),
        )
        # one statement writes it all (store/registration.py): no explicit transaction
        return await in_statement(self._pool, lambda conn: _insert(conn, new))

    async def _before_consents(self, reg: Registration, digests: Digests) -> Member | None:
        """What keeps consents from being recorded for a registration that will not insert:
        a concurrent repeat committed since the first look (its result), or a phone or email
        taken (UniqueViolation). Without consents the insert's unique keys decide alone."""
        async with self._pool.acquire() as conn:
            stored = await request_store.get_registration(conn, reg.request_id)
            done = replay_registration(stored, digests.request)
            if done is not None:
                return done
            # in sorted kind order (as the digests are): the kind named when both are taken
            taken = await lookup_store.first_taken(conn, digests.lookups)
            if taken is not None:
                raise UniqueViolation(taken)
        return None

    async def _record_consents(self, member_id: str, reg: Registration) -> None:
        if reg.consents is None:
            return
        await self._privacy.record_consents(
            member_id,
            reg.consents.grants,
            reg.consents.channel,
            request_id=signup_consents_request_id(reg.request_id),
        )

    async def _after_clash(
        self, request_id: str, request_hash: bytes, clash: UniqueViolation
    ) -> Member:
        """A concurrent repeat of this request may have won (its phone then clashes with
        ours before its request_id does): answer like it; otherwise the key is taken."""
        async with self._pool.acquire() as conn:
            stored = await request_store.get_registration(conn, request_id)
        done = replay_registration(stored, request_hash)
        if done is not None:
            return done
        if clash.constraint is UniqueKey.REQUEST_ID:
            # registrations are never deleted, so whoever took the key must be there
            raise DomainError.internal("request_id taken, but no registration holds it")
        raise taken(LookupKind(clash.constraint)) from clash


async def _referrer(conn: Conn, code: str) -> str | None:
    if not code:
        return None
    stored = await member_store.holder_of_referral_code(conn, code)
    if stored is None or stored.member.status is not Status.ACTIVE:
        raise bad_field("referral_code", "is not the code of an active member")
    return stored.member.member_id


async def _insert(conn: Conn, new: registration_store.NewRegistration) -> Member:
    """The member as inserted, with a referral code of their own (a drawn code is taken
    rarely: the statement then writes nothing and another is drawn)."""
    for _ in range(REFERRAL_CODE_ATTEMPTS):
        stored = await registration_store.insert_registration(conn, new, code=new_referral_code())
        if stored is not None:
            return stored.member
    raise referral_codes_exhausted()
