"""Members as accounts shows and stores them: ids, masked and clear views, status history."""

from __future__ import annotations

import enum
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, NamedTuple

from services.accounts.domain import reasons
from services.accounts.domain.lifecycle import Status
from services.accounts.domain.normalise import mask_display_name, mask_email, mask_phone
from services.runtime.errors import DomainError, already_exists

# Crockford's base32 without I, L, O, U: unambiguous when read aloud or typed
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
MEMBER_ID_CHARS = 19
REFERRAL_CODE_CHARS = 8

# personal fields: column name -> encrypted, masked for display
PERSONAL_FIELDS = ("phone", "email", "display_name")
MASKS = {"phone": mask_phone, "email": mask_email, "display_name": mask_display_name}


class LookupKind(enum.StrEnum):
    """What a member can be looked up by (a blind index); accounts.member_lookup.kind."""

    PHONE = "phone"
    EMAIL = "email"


TAKEN_REASONS = {LookupKind.PHONE: reasons.PHONE_TAKEN, LookupKind.EMAIL: reasons.EMAIL_TAKEN}


def taken(kind: LookupKind) -> DomainError:
    """Another member already holds this phone or email."""
    return already_exists(TAKEN_REASONS[kind], f"another member already uses this {kind.value}")


def masked(values: Mapping[str, str]) -> dict[str, str]:
    """The display masks of personal values by column; an empty value stays empty."""
    return {column: MASKS[column](value) if value else "" for column, value in values.items()}


def _random_chars(count: int) -> str:
    """`count` characters of the 32-letter alphabet, uniform and independent: 5 bits of one
    draw each (one call of the system's random source instead of one per character)."""
    bits = secrets.randbits(5 * count)
    return "".join(_ALPHABET[(bits >> (5 * i)) & 31] for i in range(count))


def new_member_id() -> str:
    """`m` + 19 base32 characters (95 random bits); a valid AIP-122 resource id."""
    return "m" + _random_chars(MEMBER_ID_CHARS).lower()


def new_referral_code() -> str:
    return _random_chars(REFERRAL_CODE_CHARS)


@dataclass(frozen=True)
class Member:
    """A member as shown: personal fields masked unless `full` (decrypted for this read)."""

    member_id: str
    status: Status
    phone: str
    email: str
    display_name: str
    referral_code: str
    referred_by: str
    created_at: datetime
    updated_at: datetime
    full: bool = False

    def to_snapshot(self) -> dict[str, Any]:
        """The masked view as stored with an idempotency key, to answer repeats."""
        if self.full:  # clear personal values must never reach an idempotency record
            raise DomainError.internal("only the masked view of a member is stored")
        return {
            "member_id": self.member_id,
            "status": self.status.value,
            "phone": self.phone,
            "email": self.email,
            "display_name": self.display_name,
            "referral_code": self.referral_code,
            "referred_by": self.referred_by,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }

    @classmethod
    def from_snapshot(cls, doc: dict[str, Any]) -> Member:
        """The member of a snapshot; keys it does not know (extra reply fields) are ignored."""
        return cls(
            member_id=doc["member_id"],
            status=Status(doc["status"]),
            phone=doc["phone"],
            email=doc["email"],
            display_name=doc["display_name"],
            referral_code=doc["referral_code"],
            referred_by=doc["referred_by"],
            created_at=datetime.fromisoformat(doc["created_at"]),
            updated_at=datetime.fromisoformat(doc["updated_at"]),
        )

    def with_clear(self, *, phone: str, email: str, display_name: str) -> Member:
        return replace(self, phone=phone, email=email, display_name=display_name, full=True)


@dataclass(frozen=True)
class StoredMember:
    """A member row: ciphertexts plus their masked forms."""

    member: Member
    ciphertexts: dict[str, bytes | None] = field(default_factory=dict)


class ListPosition(NamedTuple):
    """Where a page of ListMembers ends: members are listed by (created_at, member_id)."""

    created_at: datetime
    member_id: str


@dataclass(frozen=True)
class StatusChange:
    from_status: Status
    to_status: Status
    reason: str
    actor: str
    changed_at: datetime
