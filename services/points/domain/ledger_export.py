"""ExportMemberLedger, without SQL: everything points holds about one member, for the
privacy service's access and portability requests, a page at a time (services/points/
ledger_export.py reads it in one snapshot)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.points.domain.balance import Balance
from services.points.domain.restrictions import Restriction
from services.points.domain.tiers import TierState
from services.points.domain.transactions import (
    Entry,
    TransactionRow,
    TransferRow,
    reference_of,
)
from services.runtime.errors import bad_field

MAX_PAGE = 10_000


@dataclass(frozen=True)
class ExportedLot:
    lot_id: int
    txn_id: int
    state: str
    points: int
    remaining: int
    earned_at: datetime
    available_at: datetime
    expires_at: datetime
    rule_version: int


@dataclass(frozen=True)
class ExportedHold:
    hold_id: str
    state: str
    points: int
    captured_points: int
    expires_at: datetime
    rule_version: int
    hold_txn_id: int
    created_at: datetime
    closed_at: datetime | None
    clawed_back_points: int


@dataclass(frozen=True)
class ExportedRedemption:
    sku: str
    units: int
    updated_at: datetime


@dataclass(frozen=True)
class ExportPage:
    member_id: str
    balance: Balance
    tier: TierState | None
    entries: list[tuple[Entry, str]]  # each transaction and its explanation's sentence
    lots: list[ExportedLot]
    holds: list[ExportedHold]
    redemptions: list[ExportedRedemption]
    restriction: Restriction | None
    next_page_token: str


def page_size(requested: int) -> int:
    if requested < 0:
        raise bad_field("page_size", "must not be negative")
    return MAX_PAGE if requested == 0 else min(requested, MAX_PAGE)


def exported_entry(
    member_id: str, row: TransactionRow, mine: tuple[TransferRow, ...]
) -> tuple[Entry, str]:
    entry = Entry(member_id, row, reference_of(row.idempotency_key), mine)
    return entry, str(row.explanation.get("sentence", ""))
