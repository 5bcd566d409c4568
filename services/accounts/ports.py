"""What accounts needs from the privacy service, as the domain sees it."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

SERVICE = "accounts"
TABLE = "members"
INDEX_PHONE = "accounts.members.phone"
INDEX_EMAIL = "accounts.members.email"
# keyed hashes of requests that carry personal information (idempotency fingerprints)
INDEX_REGISTER_REQUEST = "accounts.requests.register"
INDEX_UPDATE_REQUEST = "accounts.requests.update"


class Channel(enum.Enum):
    """Where the member gave consent (privacy's channels)."""

    APP = "app"
    WEB = "web"
    COUNTER = "counter"
    PHONE = "phone"


@dataclass(frozen=True)
class ConsentGrant:
    """Consent to one purpose, for the notice version the member was shown."""

    purpose: str
    notice_version: int


class PrivacyPort(Protocol):
    async def blind_indexes(self, inputs: Sequence[tuple[str, bytes]]) -> list[bytes]:
        """HMAC digests of (context, normalised value) pairs, in order."""
        ...

    async def encrypt(self, member_id: str, fields: Sequence[tuple[str, bytes]]) -> list[bytes]:
        """Ciphertexts of (column, plaintext) pairs of the member, in order."""
        ...

    async def decrypt(
        self,
        member_id: str,
        fields: Sequence[tuple[str, bytes]],
        purpose: str,
        on_behalf_of: str,
    ) -> list[bytes]:
        """Plaintexts of (column, ciphertext) pairs; audited by privacy."""
        ...

    async def record_consents(
        self,
        member_id: str,
        grants: Sequence[ConsentGrant],
        channel: Channel,
        request_id: str,
    ) -> None:
        """Records the member's consents; idempotent per (member_id, request_id). Refuses
        an unknown purpose (INVALID_ARGUMENT, field `consents[i].purpose`) and a notice
        version that is not the current one (FAILED_PRECONDITION NOTICE_VERSION_STALE)."""
        ...
