"""What accounts needs from the privacy service, as the domain sees it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

SERVICE = "accounts"
TABLE = "members"
INDEX_PHONE = "accounts.members.phone"
INDEX_EMAIL = "accounts.members.email"
# keyed hashes of requests that carry personal information (idempotency fingerprints)
INDEX_REGISTER_REQUEST = "accounts.requests.register"
INDEX_UPDATE_REQUEST = "accounts.requests.update"


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
