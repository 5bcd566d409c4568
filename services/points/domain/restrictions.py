"""RestrictMember, without SQL: after erasure a member's ledger is kept (the law requires
it), keyed by the member id only, and used for nothing but storage, reconciliation and legal
export (docs/design.md §7, PIPL Art. 47 ¶2). See docs/decisions/points.md for what is
blocked."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from services.points.domain.members import MEMBER_RESTRICTED, RESTRICTED, MemberRecord
from services.runtime.errors import DomainError, failed_precondition, not_found


def member_restricted() -> DomainError:
    return failed_precondition(
        MEMBER_RESTRICTED,
        "this member's ledger is restricted: kept for storage, reconciliation and export only",
    )


def require_readable(member: MemberRecord | None) -> None:
    """For reads of one member's points: unknown is NOT_FOUND, restricted is refused."""
    if member is None:
        raise not_found("member")
    if member.state == RESTRICTED:
        raise member_restricted()


@dataclass(frozen=True)
class RestrictRequest:
    member_id: str
    request_id: str
    legal_basis: str
    retention_end: datetime

    def fingerprint(self) -> bytes:
        canonical = [
            self.member_id,
            self.request_id,
            self.legal_basis,
            self.retention_end.isoformat(),
        ]
        return hashlib.sha256(json.dumps(canonical).encode()).digest()


@dataclass(frozen=True)
class Restriction:
    """A member's restriction of processing, as recorded (points.member_restrictions)."""

    member_id: str
    legal_basis: str
    retention_end: datetime
    request_id: str
    request_hash: bytes
    restricted_at: datetime
