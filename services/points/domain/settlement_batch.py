"""A batch of settlements decided set-wise, without SQL: what the batch reads under its
members' locks (`BatchSeen`), and the column rows of everything it writes in one statement
(`BatchWrite`, store/settlement_batch.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import NamedTuple

from services.points.domain.ledger import ISSUED, LotState
from services.points.domain.referrals import DueReferral
from services.points.domain.settlement import Credit, Prior, SettlementRow
from services.points.domain.tiers import TierState, TierView

Key = tuple[str, str]  # (member_id, idempotency key)


@dataclass(frozen=True)
class MemberSeen:
    """A locked member as the batch must see it."""

    state: str
    # the referrer, while no referral bonus has been recorded for this member
    referrer: str | None
    tier: TierState | None
    qualifying: int  # in the window
    paused: bool = False  # privacy paused settling this member's payments


@dataclass(frozen=True)
class BatchSeen:
    members: dict[str, MemberSeen]
    done: dict[Key, Prior]  # earlier settlements
    earned: dict[tuple[str, date], int]  # points counted by the daily cap
    ids: list[int]  # for the batch's transactions, lots and transfers


@dataclass
class BatchView:
    """What the database holds for the batch, under the members' locks, as the batch's
    earlier items left it."""

    available: dict[str, int]
    seen: BatchSeen
    # each member's tier and window sum, as the batch's earlier items left them
    tiers: dict[str, TierView]
    now: datetime  # one clock reading (and so one window) for the whole batch
    in_batch: dict[Key, Prior] = field(default_factory=dict)


class TransactionColumns(NamedTuple):
    member_id: str
    txn_id: int
    key: str
    request_hash: bytes
    rule_version: int
    points: int
    result: str  # JSON
    explanation: str  # JSON


class LotColumns(NamedTuple):
    member_id: str
    lot_id: int
    txn_id: int
    state: str
    points: int
    earned_at: datetime
    available_at: datetime
    expires_at: datetime
    rule_version: int


class TransferColumns(NamedTuple):
    member_id: str
    transfer_id: int
    txn_id: int
    from_account: str
    to_account: str
    amount: int
    lot_id: int
    rule_version: int


@dataclass(slots=True)
class BalanceDelta:
    pending: int = 0
    available: int = 0
    earned: int = 0


@dataclass
class BatchWrite:
    """Rows of everything a batch writes (one statement: store/settlement_batch.py)."""

    transactions: list[TransactionColumns] = field(default_factory=list)
    lots: list[LotColumns] = field(default_factory=list)
    transfers: list[TransferColumns] = field(default_factory=list)
    balances: dict[str, BalanceDelta] = field(default_factory=dict)
    days: dict[tuple[str, date], int] = field(default_factory=dict)  # also qualifying points
    tiers: dict[str, TierState] = field(default_factory=dict)  # upgrades: the final state
    # referee -> the bonus its first settlement makes due
    referrals: dict[str, DueReferral] = field(default_factory=dict)

    def add(self, member_id: str, row: SettlementRow, credit: Credit | None) -> None:
        """One settlement's transaction and, when it earned points, its lot, transfer,
        balance change and day total."""
        self.transactions.append(
            TransactionColumns(
                member_id,
                row.txn_id,
                row.key,
                row.request_hash,
                row.rule_version,
                row.points,
                json.dumps(row.result),
                json.dumps(row.explanation, ensure_ascii=False),
            )
        )
        if credit is None:
            return
        self.lots.append(
            LotColumns(
                member_id,
                credit.lot_id,
                row.txn_id,
                credit.state,
                row.points,
                credit.earned_at,
                credit.available_at,
                credit.expires_at,
                row.rule_version,
            )
        )
        self.transfers.append(
            TransferColumns(
                member_id,
                credit.transfer_id,
                row.txn_id,
                ISSUED,
                credit.to_account,
                row.points,
                credit.lot_id,
                row.rule_version,
            )
        )
        delta = self.balances.get(member_id)
        if delta is None:
            delta = self.balances[member_id] = BalanceDelta()
        if credit.state == LotState.PENDING:
            delta.pending += row.points
        else:
            delta.available += row.points
        delta.earned += row.points
        day = (member_id, credit.day)
        self.days[day] = self.days.get(day, 0) + row.points
