"""Member registration, profile reads and updates."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import datetime

import asyncpg

from services.accounts import normalise, store
from services.accounts.lifecycle import Status, member_erased, require_editable
from services.accounts.model import (
    PERSONAL_FIELDS,
    Member,
    StoredMember,
    new_member_id,
    new_referral_code,
)
from services.accounts.ports import (
    INDEX_EMAIL,
    INDEX_PHONE,
    INDEX_REGISTER_REQUEST,
    INDEX_UPDATE_REQUEST,
    Channel,
    ConsentGrant,
    PrivacyPort,
)
from services.accounts.requests import replay, replay_registration
from services.runtime.db import Conn, in_transaction
from services.runtime.errors import (
    MAX_REQUEST_ID,
    DomainError,
    already_exists,
    bad_field,
    failed_precondition,
    not_found,
)
from services.runtime.identity import Caller

REFERRAL_CODE_ATTEMPTS = 8
UPDATE = "UpdateMember"
SIGNUP_CONSENTS = ":signup-consents"
LOOKUP_CONTEXTS = {"phone": INDEX_PHONE, "email": INDEX_EMAIL}
MASKS = {
    "phone": normalise.mask_phone,
    "email": normalise.mask_email,
    "display_name": normalise.mask_display_name,
}


@dataclass(frozen=True)
class SignupConsents:
    """Consents the member gave while signing up, and where they signed up."""

    grants: tuple[ConsentGrant, ...]
    channel: Channel

    def canonical(self) -> list[object]:
        return [self.channel.value, [[g.purpose, g.notice_version] for g in self.grants]]


@dataclass(frozen=True)
class Registration:
    """Validated, normalised registration input."""

    request_id: str
    phone: str
    email: str
    display_name: str
    referral_code: str
    consents: SignupConsents | None = None

    def canonical(self) -> bytes:
        parts: list[object] = [self.phone, self.email, self.display_name, self.referral_code]
        # only when given: a registration without consents keeps the fingerprint it had
        # before consents existed, so its late repeats still match
        if self.consents is not None:
            parts.append(self.consents.canonical())
        return json.dumps(parts, ensure_ascii=False).encode()

    def personal(self) -> dict[str, str]:
        values = {"phone": self.phone, "email": self.email, "display_name": self.display_name}
        return {k: v for k, v in values.items() if v}


@dataclass(frozen=True)
class _Digests:
    """Keyed hashes of a request: its idempotency fingerprint and its blind-index entries
    by kind (None: the entry of that kind is removed)."""

    request: bytes
    lookups: dict[str, bytes | None]


def signup_consents_request_id(request_id: str) -> str:
    """GrantConsent's key for a registration's consents: derived from the registration's
    key, so privacy's records and audit entries name it; hashed when both together would
    pass the length limit of a key."""
    derived = request_id + SIGNUP_CONSENTS
    if len(derived) <= MAX_REQUEST_ID:
        return derived
    return hashlib.sha256(request_id.encode()).hexdigest() + SIGNUP_CONSENTS


def _taken(kind: str) -> Exception:
    return already_exists(f"{kind.upper()}_TAKEN", f"another member already uses this {kind}")


class Members:
    def __init__(self, pool: asyncpg.Pool, privacy: PrivacyPort) -> None:
        self._pool = pool
        self._privacy = privacy

    async def _load(self, conn: Conn, member_id: str, lock: bool = False) -> StoredMember:
        stored = await store.get_member(conn, member_id, for_update=lock)
        if stored is None:
            raise not_found("member")
        return stored

    async def _encrypt(
        self, member_id: str, values: dict[str, str]
    ) -> tuple[dict[str, bytes | None], dict[str, str]]:
        present = [(column, value) for column, value in values.items() if value]
        # clearing fields only (an update to empty values) has nothing to encrypt
        cts = (
            await self._privacy.encrypt(member_id, [(c, v.encode()) for c, v in present])
            if present
            else []
        )
        ciphertexts: dict[str, bytes | None] = {c: None for c in values}
        ciphertexts.update({c: ct for (c, _), ct in zip(present, cts, strict=True)})
        masks = {c: MASKS[c](v) if v else "" for c, v in values.items()}
        return ciphertexts, masks

    async def _registration_digests(self, reg: Registration) -> _Digests:
        lookups = {"phone": reg.phone, "email": reg.email}
        kinds = sorted(kind for kind, value in lookups.items() if value)
        digests = await self._privacy.blind_indexes(
            [(INDEX_REGISTER_REQUEST, reg.canonical())]
            + [(LOOKUP_CONTEXTS[kind], lookups[kind].encode()) for kind in kinds]
        )
        return _Digests(digests[0], dict(zip(kinds, digests[1:], strict=True)))

    async def register(self, reg: Registration) -> Member:
        digests = await self._registration_digests(reg)
        try:
            return await self._register(reg, digests)
        except store.UniqueViolation as exc:
            return await self._after_clash(reg.request_id, digests.request, exc)

    async def _register(self, reg: Registration, digests: _Digests) -> Member:
        """Raises store.UniqueViolation when a phone, email or the request_id is taken."""
        async with self._pool.acquire() as conn:
            stored = await store.get_registration(conn, reg.request_id)
            done = replay_registration(stored, digests.request)
            if done is not None:
                return done
            referrer = await self._referrer(conn, reg.referral_code)
            for kind, digest in digests.lookups.items():
                if digest is not None and await store.find_by_digest(conn, kind, digest):
                    raise store.UniqueViolation(kind)
        member_id = new_member_id()
        # encrypting creates the member's data key, without which privacy does not know
        # them; consents are recorded next and the member inserted last, so a refused
        # consent leaves no member behind (see docs/decisions.md, consents at sign-up)
        ciphertexts, masks = await self._encrypt(member_id, reg.personal())
        await self._record_consents(member_id, reg)
        new = store.NewMember(member_id, ciphertexts, masks, referrer)
        return await in_transaction(
            self._pool, lambda conn: self._insert(conn, reg.request_id, digests, new)
        )

    async def _record_consents(self, member_id: str, reg: Registration) -> None:
        if reg.consents is None:
            return
        await self._privacy.record_consents(
            member_id,
            reg.consents.grants,
            reg.consents.channel,
            signup_consents_request_id(reg.request_id),
        )

    async def _after_clash(
        self, request_id: str, request_hash: bytes, clash: store.UniqueViolation
    ) -> Member:
        """A concurrent repeat of this request may have won (its phone then clashes with
        ours before its request_id does): answer like it; otherwise the key is taken."""
        async with self._pool.acquire() as conn:
            stored = await store.get_registration(conn, request_id)
        done = replay_registration(stored, request_hash)
        if done is not None:
            return done
        if clash.constraint == "request_id":
            # registrations are never deleted, so whoever took the key must be there
            raise DomainError.internal("request_id taken, but no registration holds it")
        raise _taken(clash.constraint) from clash

    async def _referrer(self, conn: Conn, code: str) -> str | None:
        if not code:
            return None
        referrer = await store.find_by_referral_code(conn, code)
        stored = referrer and await store.get_member(conn, referrer)
        if not stored or stored.member.status is not Status.ACTIVE:
            raise bad_field("referral_code", "is not the code of an active member")
        return referrer

    async def _insert(
        self, conn: Conn, request_id: str, digests: _Digests, new: store.NewMember
    ) -> Member:
        await store.insert_member(conn, new)
        await self._give_referral_code(conn, new.member_id)
        await store.write_lookups(conn, new.member_id, digests.lookups)
        member = (await self._load(conn, new.member_id)).member
        await store.insert_registration(conn, request_id, digests.request, member)
        await store.add_outbox_event(
            conn,
            new.member_id,
            "member.registered",
            {
                "member_id": new.member_id,
                "referred_by": new.referred_by or "",
                "status": Status.ACTIVE.value,
            },
        )
        return member

    @staticmethod
    async def _give_referral_code(conn: Conn, member_id: str) -> None:
        for _ in range(REFERRAL_CODE_ATTEMPTS):
            if await store.claim_referral_code(conn, member_id, new_referral_code()):
                return
        raise failed_precondition("REFERRAL_CODES_EXHAUSTED", "no free referral code found")

    async def get(self, member_id: str) -> Member:
        async with self._pool.acquire() as conn:
            return (await self._load(conn, member_id)).member

    async def get_full(self, caller: Caller, member_id: str, purpose: str) -> Member:
        async with self._pool.acquire() as conn:
            stored = await self._load(conn, member_id)
        return await self._reveal(caller, stored, purpose)

    async def _reveal(self, caller: Caller, stored: StoredMember, purpose: str) -> Member:
        if stored.member.status is Status.ERASED:
            raise member_erased()
        present = [(c, ct) for c, ct in stored.ciphertexts.items() if ct is not None]
        clear = await self._privacy.decrypt(
            stored.member.member_id, present, purpose, caller.subject
        )
        values = {c: "" for c in PERSONAL_FIELDS}
        values.update({c: pt.decode() for (c, _), pt in zip(present, clear, strict=True)})
        return stored.member.with_clear(values["phone"], values["email"], values["display_name"])

    async def lookup(self, kind: str, normalised_value: str) -> Member:
        (digest,) = await self._privacy.blind_indexes(
            [(LOOKUP_CONTEXTS[kind], normalised_value.encode())]
        )
        async with self._pool.acquire() as conn:
            member_id = await store.find_by_digest(conn, kind, digest)
            if member_id is None:
                raise not_found("member")
            return (await self._load(conn, member_id)).member

    async def list(
        self, status: Status | None, after: tuple[datetime, str] | None, limit: int
    ) -> list[Member]:
        async with self._pool.acquire() as conn:
            return await store.list_members(conn, status, after, limit)

    async def _update_digests(self, member_id: str, changes: dict[str, str]) -> _Digests:
        canonical = json.dumps([member_id, sorted(changes.items())], ensure_ascii=False).encode()
        kinds = sorted(k for k, v in changes.items() if k in LOOKUP_CONTEXTS and v)
        digests = await self._privacy.blind_indexes(
            [(INDEX_UPDATE_REQUEST, canonical)]
            + [(LOOKUP_CONTEXTS[k], changes[k].encode()) for k in kinds]
        )
        lookups: dict[str, bytes | None] = dict(zip(kinds, digests[1:], strict=True))
        if "email" in changes and not changes["email"]:
            lookups["email"] = None  # cleared: its index entry goes
        return _Digests(digests[0], lookups)

    async def update(self, member_id: str, request_id: str, changes: dict[str, str]) -> Member:
        """`changes`: normalised new values of the masked fields named by the update mask."""
        digests = await self._update_digests(member_id, changes)
        async with self._pool.acquire() as conn:
            done = await self._replay_update(conn, member_id, request_id, digests.request)
            if done is not None:
                return done
        ciphertexts, masks = await self._encrypt(member_id, changes)

        async def work(conn: Conn) -> Member:
            # re-checked under the row lock: a concurrent repeat may have finished meanwhile
            done = await self._replay_update(
                conn, member_id, request_id, digests.request, lock=True
            )
            if done is not None:
                return done
            try:
                await store.write_lookups(conn, member_id, digests.lookups)
            except store.UniqueViolation as exc:
                raise _taken(exc.constraint) from exc
            member = (await store.update_personal(conn, member_id, ciphertexts, masks)).member
            await store.insert_member_request(conn, request_id, UPDATE, digests.request, member)
            return member

        return await in_transaction(self._pool, work)

    async def preview_update(self, member_id: str, changes: dict[str, str]) -> Member:
        """UpdateMember with validate_only (AIP-163): the checks of `update` that need no
        write (the member's status, a phone or email another member holds) and the member
        as the update would show it. Nothing is encrypted, written or recorded; a later
        update under the same key still runs. (A value taken meanwhile, or one that two
        updates race for, is still refused by the update itself.)"""
        kinds = sorted(k for k, v in changes.items() if k in LOOKUP_CONTEXTS and v)
        digests = (
            await self._privacy.blind_indexes(
                [(LOOKUP_CONTEXTS[k], changes[k].encode()) for k in kinds]
            )
            if kinds
            else []
        )
        async with self._pool.acquire() as conn:
            stored = await self._load(conn, member_id)
            require_editable(stored.member.status)
            for kind, digest in zip(kinds, digests, strict=True):
                holder = await store.find_by_digest(conn, kind, digest)
                if holder is not None and holder != member_id:
                    raise _taken(kind)
        shown = {c: MASKS[c](v) if v else "" for c, v in changes.items()}
        member = stored.member
        return replace(
            member,
            phone=shown.get("phone", member.phone),
            email=shown.get("email", member.email),
            display_name=shown.get("display_name", member.display_name),
        )

    async def _replay_update(
        self, conn: Conn, member_id: str, request_id: str, request_hash: bytes, lock: bool = False
    ) -> Member | None:
        stored = await self._load(conn, member_id, lock=lock)
        done = replay(
            await store.get_member_request(conn, member_id, request_id), UPDATE, request_hash
        )
        if done is None:
            require_editable(stored.member.status)
        return done
