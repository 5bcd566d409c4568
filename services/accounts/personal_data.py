"""A member's personal values through the privacy service: sealed (encrypted, masked) to be
stored, revealed for a read in clear, and hashed into blind-index and idempotency digests.
Nothing here touches the database; the use cases call these outside their transactions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.accounts.domain.lifecycle import Status, member_erased
from services.accounts.domain.members import (
    PERSONAL_FIELDS,
    LookupKind,
    Member,
    StoredMember,
    masked,
)
from services.accounts.ports import (
    INDEX_EMAIL,
    INDEX_PHONE,
    CipherField,
    IndexInput,
    PlainField,
    PrivacyPort,
)
from services.runtime.identity import Caller

LOOKUP_CONTEXTS = {LookupKind.PHONE: INDEX_PHONE, LookupKind.EMAIL: INDEX_EMAIL}


@dataclass(frozen=True)
class Sealed:
    """Personal values as stored, by column: ciphertexts (None: the value is cleared) and
    their masks."""

    ciphertexts: dict[str, bytes | None]
    masks: dict[str, str]


@dataclass(frozen=True)
class Digests:
    """Keyed hashes of a request: its idempotency fingerprint and its blind-index entries
    by kind (None: the entry of that kind is removed)."""

    request: bytes
    lookups: dict[LookupKind, bytes | None]


async def seal(privacy: PrivacyPort, member_id: str, values: Mapping[str, str]) -> Sealed:
    present = _present(values)
    # clearing fields only (an update to empty values) has nothing to encrypt
    cts = await privacy.encrypt(member_id, present) if present else []
    return _sealed(values, present, cts)


def _present(values: Mapping[str, str]) -> list[PlainField]:
    return [PlainField(column, value.encode()) for column, value in values.items() if value]


def _sealed(values: Mapping[str, str], present: list[PlainField], cts: list[bytes]) -> Sealed:
    ciphertexts: dict[str, bytes | None] = {column: None for column in values}
    ciphertexts.update({f.column: ct for f, ct in zip(present, cts, strict=True)})
    return Sealed(ciphertexts, masked(values))


async def seal_and_digest(
    privacy: PrivacyPort,
    member_id: str,
    values: Mapping[str, str],
    *,
    context: str,
    canonical: bytes,
    lookups: Mapping[LookupKind, str],
) -> tuple[Sealed, Digests]:
    """`seal` and `request_digests` in one call of privacy (a registration's one round trip)."""
    present = _present(values)
    if not present:  # nothing to encrypt: EncryptFields needs a field
        return await seal(privacy, member_id, values), await request_digests(
            privacy, context=context, canonical=canonical, lookups=lookups
        )
    kinds = sorted(lookups)
    inputs = [IndexInput(context, canonical)] + [_lookup_input(k, lookups[k]) for k in kinds]
    cts, digests = await privacy.encrypt_and_index(member_id, present, inputs)
    found = Digests(digests[0], dict(zip(kinds, digests[1:], strict=True)))
    return _sealed(values, present, cts), found


async def reveal(
    privacy: PrivacyPort, caller: Caller, stored: StoredMember, *, purpose: str
) -> Member:
    """The member with its personal values in clear (privacy audits the read)."""
    if stored.member.status is Status.ERASED:
        raise member_erased()
    present = [CipherField(c, ct) for c, ct in stored.ciphertexts.items() if ct is not None]
    clear = await privacy.decrypt(
        stored.member.member_id, present, purpose=purpose, on_behalf_of=caller.subject
    )
    values = {column: "" for column in PERSONAL_FIELDS}
    values.update({f.column: pt.decode() for f, pt in zip(present, clear, strict=True)})
    return stored.member.with_clear(
        phone=values["phone"], email=values["email"], display_name=values["display_name"]
    )


async def request_digests(
    privacy: PrivacyPort, *, context: str, canonical: bytes, lookups: Mapping[LookupKind, str]
) -> Digests:
    """The request's fingerprint (hashed for `context`) and the digests of its lookup values,
    in one call."""
    kinds = sorted(lookups)
    digests = await privacy.blind_indexes(
        [IndexInput(context, canonical)] + [_lookup_input(kind, lookups[kind]) for kind in kinds]
    )
    return Digests(digests[0], dict(zip(kinds, digests[1:], strict=True)))


async def lookup_digests(
    privacy: PrivacyPort, lookups: Mapping[LookupKind, str]
) -> dict[LookupKind, bytes]:
    """The blind-index digests of the values, by kind (no call when there are none)."""
    kinds = sorted(lookups)
    if not kinds:
        return {}
    digests = await privacy.blind_indexes([_lookup_input(kind, lookups[kind]) for kind in kinds])
    return dict(zip(kinds, digests, strict=True))


def _lookup_input(kind: LookupKind, normalised_value: str) -> IndexInput:
    return IndexInput(LOOKUP_CONTEXTS[kind], normalised_value.encode())
