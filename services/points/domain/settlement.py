"""Settling a payment, without SQL: the payment and its result, the refusals, what the
payment earns and what settling it writes. Functions of the rules in force and `now`.

The store reads what the member's lock holder must see (`Seen` for one payment,
domain/settlement_batch.py's `BatchSeen` for a batch); these functions decide, and the
store writes the `Settled` rows they return.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from services.points.domain import earning as earn
from services.points.domain.campaign_awards import NO_CAMPAIGNS, CampaignOutcome
from services.points.domain.earning import Earning
from services.points.domain.ledger import (
    MEMBER_AVAILABLE,
    MEMBER_PENDING,
    Account,
    LotState,
)
from services.points.domain.members import ACTIVE, member_not_active
from services.points.domain.processing_pauses import processing_restricted
from services.points.domain.rules import RulesInForce, Tier, UnknownCurrency
from services.points.domain.settlement_explanation import explanation_json
from services.points.domain.tiers import TierState
from services.points.domain.unknown_members import member_unknown
from services.runtime.errors import DomainError, bad_field, idempotency_key_reused

SETTLEMENT_KEY_PREFIX = "payment"
_KEY_HEAD = len(SETTLEMENT_KEY_PREFIX) + 1  # "payment:"
_FINGERPRINT_V2 = "settlement/v2;"


def settlement_key(payment_id: str) -> str:
    """The idempotency key of a payment's settlement (refunds find the payment by it)."""
    return f"{SETTLEMENT_KEY_PREFIX}:{payment_id}"


class PointsState(StrEnum):
    PENDING = "PENDING"
    AVAILABLE = "AVAILABLE"
    NONE = "NONE"


# bound once: on the settlement path a module global costs less than an enum attribute
_PENDING, _AVAILABLE, _NONE = PointsState.PENDING, PointsState.AVAILABLE, PointsState.NONE
_LOT_PENDING, _LOT_AVAILABLE = LotState.PENDING, LotState.AVAILABLE


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
        return f"{SETTLEMENT_KEY_PREFIX}:{self.payment_id}"  # settlement_key, inlined: hot

    def fingerprint(self) -> bytes:
        """What makes a repeat the same request (no personal information in a payment):
        each field length-prefixed, so no two payments share the text that is hashed."""
        fields = (
            self.member_id,
            self.payment_id,
            self.currency,
            str(self.amount_minor),
            self.merchant_id,
            self.category,
            self.occurred_at.isoformat(timespec="microseconds"),
            self.channel,
        )
        canonical = _FINGERPRINT_V2 + "".join([f"{len(f)}:{f};" for f in fields])
        return hashlib.sha256(canonical.encode()).digest()

    def matches(self, request_hash: bytes) -> bool:
        """Whether a stored request hash is this payment's: settlements stored before
        2026-12-07 hold the hash of its JSON form (`legacy_fingerprint`)."""
        return request_hash == self.fingerprint() or request_hash == self.legacy_fingerprint()

    def legacy_fingerprint(self) -> bytes:
        """The request hash of settlements stored before 2026-12-07."""
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
            "state": self.state,  # a StrEnum: JSON holds its value
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


@dataclass(frozen=True)
class ItemOutcome:
    """One item of a batch: a result, or the error that item alone met."""

    result: SettlementResult | None
    error: DomainError | None
    replayed: bool = False  # the result of an earlier call with the same key


class Prior(NamedTuple):
    """An earlier settlement under the payment's key."""

    request_hash: bytes
    result: SettlementResult


ResultColumns = tuple[str, int, datetime | None, datetime | None]


class StoredPrior(NamedTuple):
    """An earlier transaction under a key, as stored: a settlement since 2026-12-07 has its
    result as columns (`columns`: state, multiplier, available_at, expires_at), every other
    transaction its JSON `result`."""

    request_hash: bytes
    result_json: str | None
    txn_id: int
    points: int
    rule_version: int
    columns: ResultColumns | None

    def document(self) -> dict[str, Any]:
        """The JSON result of a transaction that is not a settlement (a grant's)."""
        if self.result_json is None:
            raise ValueError(f"transaction {self.txn_id} stores no JSON result")
        return dict(json.loads(self.result_json))

    def settlement(self, member_id: str, key: str) -> Prior:
        """The earlier settlement of a payment."""
        if self.columns is None:
            return Prior(self.request_hash, SettlementResult.from_json(self.document()))
        state, multiplier_bps, available, expires = self.columns
        result = SettlementResult(
            member_id=member_id,
            payment_id=key[_KEY_HEAD:],
            points=self.points,
            state=PointsState(state),
            available_at=available,
            expires_at=expires,
            tier_multiplier_bps=multiplier_bps,
            rule_version=self.rule_version,
            txn_id=self.txn_id,
        )
        return Prior(self.request_hash, result)


class LedgerIds(NamedTuple):
    """Ids drawn for a settlement: its transaction's, its lot's and its transfer's."""

    txn_id: int
    lot_id: int
    transfer_id: int


@dataclass(frozen=True)
class Locked:
    """A member's balance row, locked, and the ids drawn with the lock."""

    available: int
    ids: LedgerIds


class Earlier(Protocol):
    """A settlement under the payment's key: stored (`Prior`), or an earlier item of the
    batch (`SettlementRow`)."""

    @property
    def request_hash(self) -> bytes: ...

    @property
    def result(self) -> SettlementResult: ...


class Standing(Protocol):
    """What the refusals read of a member under its lock."""

    @property
    def state(self) -> str: ...

    @property
    def paused(self) -> bool: ...


@dataclass(frozen=True)
class Seen:
    """What the member's lock holder sees: state, an earlier settlement, today's earnings,
    the member's tier and qualifying points in the window."""

    state: str
    prior: StoredPrior | None  # a settlement's, or a grant's (grants read the same way)
    earned_today: int
    tier: TierState | None
    qualifying: int
    referred_by: str | None = None
    paused: bool = False  # privacy paused settling this member's payments


def replay_or_refuse(
    payment: Payment, member: Standing | None, prior: Earlier | None
) -> SettlementResult | None:
    """The refusals of a settlement, in order (None: settle it): a member points does not
    know (`member` None), a repeat (it answers with the first result, whatever the member's
    state is now), a member not ACTIVE, a paused member."""
    if member is None:
        raise member_unknown()
    if prior is not None:
        if not payment.matches(prior.request_hash):
            raise idempotency_key_reused("payment_id")
        return prior.result
    if member.state != ACTIVE:
        raise member_not_active(member.state, "does not earn points")
    if member.paused:
        raise processing_restricted()
    return None


def earning_of(in_force: RulesInForce, payment: Payment, tier: Tier, earned_today: int) -> Earning:
    """What the payment earns at the multiplier of the tier in force when it settles."""
    try:
        return earn.compute_earning(
            in_force.rules,
            payment.currency,
            payment.amount_minor,
            payment.category,
            tier.earn_multiplier_bps,
            earned_today,
        )
    except UnknownCurrency as exc:
        raise bad_field("amount.currency_code", "not a currency of the program") from exc


@dataclass(frozen=True)
class Credit:
    lot_id: int
    transfer_id: int
    state: LotState  # PENDING or AVAILABLE
    to_account: Account
    earned_at: datetime
    available_at: datetime
    expires_at: datetime
    day: date


class SettlementRow(NamedTuple):
    """A settlement's transaction row: its result is stored as columns (the state, the
    multiplier and the lot's dates; `StoredPrior` rebuilds it) and its explanation as the
    JSON text `explanation_json` writes."""

    txn_id: int
    key: str
    request_hash: bytes
    rule_version: int
    points: int
    result: SettlementResult
    explanation: str  # JSON


class Settled(NamedTuple):
    """What settling a payment answers and writes (no credit: it earned nothing)."""

    result: SettlementResult
    credit: Credit | None
    row: SettlementRow


class LotTerms(NamedTuple):
    """A new lot's state and dates: pending for the return window unless that passed."""

    pending: bool
    available_at: datetime
    expires_at: datetime

    @property
    def state(self) -> PointsState:
        return _PENDING if self.pending else _AVAILABLE


def lot_terms(in_force: RulesInForce, now: datetime, payment: Payment) -> LotTerms:
    rules = in_force.rules
    available_at = earn.available_at(rules, payment.occurred_at)
    return LotTerms(available_at > now, available_at, earn.expires_at(rules, payment.occurred_at))


def nothing_yet(
    in_force: RulesInForce, payment: Payment, points: int, txn_id: int, tier: Tier
) -> SettlementResult:
    """The result before any lot: what a payment that earned nothing answers."""
    return SettlementResult(
        member_id=payment.member_id,
        payment_id=payment.payment_id,
        points=points,
        state=_NONE,
        available_at=None,
        expires_at=None,
        tier_multiplier_bps=tier.earn_multiplier_bps,
        rule_version=in_force.version,
        txn_id=txn_id,
    )


def settlement_row(
    in_force: RulesInForce,
    payment: Payment,
    earning: Earning,
    result: SettlementResult,
    repaid: int,
    campaigns: CampaignOutcome = NO_CAMPAIGNS,
) -> SettlementRow:
    """The transaction row: the result for repeats, and the explanation (with the debt the
    points repaid and the campaign versions that gave points)."""
    return SettlementRow(
        txn_id=result.txn_id or 0,
        key=payment.idempotency_key,
        request_hash=payment.fingerprint(),
        rule_version=in_force.version,
        points=earning.points,
        result=result,
        explanation=explanation_json(payment, earning, earn.explain(earning), repaid, campaigns),
    )


def settlement_of(
    in_force: RulesInForce,
    now: datetime,
    payment: Payment,
    earning: Earning,
    *,
    txn_id: int,
    lot_id: int,
    transfer_id: int,
    day: date,
    tier: Tier,
    campaigns: CampaignOutcome = NO_CAMPAIGNS,
) -> Settled:
    """What settling the payment writes when there is no debt to repay: the transaction
    `txn_id` and, when it earned points, lot `lot_id` and transfer `transfer_id`. `day`: the
    payment's; `tier`: the one whose multiplier it earned at; `campaigns`: what they gave
    (in `earning` already)."""
    if earning.points <= 0:
        result = nothing_yet(in_force, payment, earning.points, txn_id, tier)
        row = settlement_row(in_force, payment, earning, result, 0, campaigns)
        return Settled(result, None, row)
    terms = lot_terms(in_force, now, payment)
    pending = terms.pending
    result = SettlementResult(
        member_id=payment.member_id,
        payment_id=payment.payment_id,
        points=earning.points,
        state=_PENDING if pending else _AVAILABLE,
        available_at=terms.available_at,
        expires_at=terms.expires_at,
        tier_multiplier_bps=tier.earn_multiplier_bps,
        rule_version=in_force.version,
        txn_id=txn_id,
    )
    credit = Credit(
        lot_id=lot_id,
        transfer_id=transfer_id,
        state=_LOT_PENDING if pending else _LOT_AVAILABLE,
        to_account=MEMBER_PENDING if pending else MEMBER_AVAILABLE,
        earned_at=payment.occurred_at,
        available_at=terms.available_at,
        expires_at=terms.expires_at,
        day=day,
    )
    return Settled(result, credit, settlement_row(in_force, payment, earning, result, 0, campaigns))
