"""What accounts needs from the other services, as the domain sees it: the privacy service
(ports_privacy.py speaks its gRPC) and points, the receiver of the member events
(ports_points.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from services.accounts.domain.consents import Channel, ConsentGrant
from services.accounts.domain.events import OutboxEvent

SERVICE = "accounts"
TABLE = "members"
INDEX_PHONE = "accounts.members.phone"
INDEX_EMAIL = "accounts.members.email"
# keyed hashes of requests that carry personal information (idempotency fingerprints)
INDEX_REGISTER_REQUEST = "accounts.requests.register"
INDEX_UPDATE_REQUEST = "accounts.requests.update"


class IndexInput(NamedTuple):
    """A normalised value to hash, and the index (context) it is hashed for."""

    context: str
    value: bytes


class PlainField(NamedTuple):
    """A personal value of the member's row, by column."""

    column: str
    plaintext: bytes


class CipherField(NamedTuple):
    """A stored ciphertext of the member's row, by column."""

    column: str
    ciphertext: bytes


class PrivacyPort(Protocol):
    async def blind_indexes(self, inputs: Sequence[IndexInput]) -> list[bytes]:
        """HMAC digests of the normalised values, in order."""
        ...

    async def encrypt(self, member_id: str, fields: Sequence[PlainField]) -> list[bytes]:
        """Ciphertexts of the member's fields, in order."""
        ...

    async def encrypt_and_index(
        self, member_id: str, fields: Sequence[PlainField], inputs: Sequence[IndexInput]
    ) -> tuple[list[bytes], list[bytes]]:
        """`encrypt` and `blind_indexes` in one call: (ciphertexts, digests), each in order."""
        ...

    async def decrypt(
        self,
        member_id: str,
        fields: Sequence[CipherField],
        *,
        purpose: str,
        on_behalf_of: str,
    ) -> list[bytes]:
        """Plaintexts of the member's fields, in order; audited by privacy."""
        ...

    async def record_consents(
        self,
        member_id: str,
        grants: Sequence[ConsentGrant],
        channel: Channel,
        *,
        request_id: str,
    ) -> None:
        """Records the member's consents; idempotent per (member_id, request_id). Refuses
        an unknown purpose (INVALID_ARGUMENT, field `consents[i].purpose`) and a notice
        version that is not the current one (FAILED_PRECONDITION NOTICE_VERSION_STALE)."""
        ...


class MemberEventsPort(Protocol):
    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        """Delivers the events to points, in order; raises when points did not accept them
        (nothing is then marked, the relay tries again), and MalformedEventError for an
        event points' message cannot express."""
        ...
