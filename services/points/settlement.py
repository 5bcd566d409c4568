"""Settled payments and their results, as the ledger records them. Pure data."""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.points.earn import Earning


class PointsState(enum.Enum):
    PENDING = "PENDING"
    AVAILABLE = "AVAILABLE"
    NONE = "NONE"


@dataclass(frozen=True)
class Payment:
    member_id: str
    payment_id: str
    currency: str
    amount_minor: int
    merchant_id: str
    category: str
    occurred_at: datetime
    channel: str

    @property
    def idempotency_key(self) -> str:
        return f"payment:{self.payment_id}"

    def fingerprint(self) -> bytes:
        """What makes a repeat the same request (no personal information in a payment)."""
        canonical = json.dumps(
            [
                self.member_id,
                self.payment_id,
                self.currency,
                self.amount_minor,
                self.merchant_id,
                self.category,
                self.occurred_at.isoformat(timespec="microseconds"),
                self.channel,
            ]
        )
        return hashlib.sha256(canonical.encode()).digest()


@dataclass(frozen=True)
class SettlementResult:
    member_id: str
    payment_id: str
    points: int
    state: PointsState
    available_at: datetime | None
    expires_at: datetime | None
    tier_multiplier_bps: int
    rule_version: int
    txn_id: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "member_id": self.member_id,
            "payment_id": self.payment_id,
            "points": self.points,
            "state": self.state.value,
            "available_at": self.available_at.isoformat() if self.available_at else None,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "tier_multiplier_bps": self.tier_multiplier_bps,
            "rule_version": self.rule_version,
            "txn_id": self.txn_id,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SettlementResult:
        def when(value: str | None) -> datetime | None:
            return datetime.fromisoformat(value) if value else None

        return cls(
            member_id=doc["member_id"],
            payment_id=doc["payment_id"],
            points=int(doc["points"]),
            state=PointsState(doc["state"]),
            available_at=when(doc["available_at"]),
            expires_at=when(doc["expires_at"]),
            tier_multiplier_bps=int(doc["tier_multiplier_bps"]),
            rule_version=int(doc["rule_version"]),
            txn_id=doc["txn_id"],
        )


def explanation_of(payment: Payment, earning: Earning, sentence: str) -> dict[str, Any]:
    """Each step of the computation as data, plus the readable sentence."""
    return {
        "kind": "settlement",
        "payment": {
            "currency": payment.currency,
            "amount_minor": payment.amount_minor,
            "merchant_category": payment.category,
            "occurred_at": payment.occurred_at.isoformat(),
        },
        "steps": [{"name": s.name, "value": s.value, "note": s.note} for s in earning.steps],
        "points": earning.points,
        "none_reason": earning.none_reason,
        "sentence": sentence,
    }
