"""A batch of settlements decided set-wise, without SQL: what the batch reads under its
members' locks (`BatchSeen`), and the column rows of everything it writes in one statement
(`BatchWrite`, store/settlement_batch.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from services.points.domain.ledger import ISSUED, LotState
from services.points.domain.referrals import DueReferral
from services.points.domain.settlement import Credit, Prior, SettlementRow
from services.points.domain.tiers import TierState, TierView

Key = tuple[str, str]  # (member_id, idempotency key)
_LOT_PENDING = LotState.PENDING  # bound once: the batch path reads it per item


@dataclass(frozen=True)
class MemberSeen:
    """A locked member as the batch must see it."""

    state: str
    # the referrer, while no referral bonus has been recorded for this member
    referrer: str | None
    tier: TierState | None
    qualifying: int  # in the window
    paused: bool = False  # privacy paused settling this member's payments
    registered_at: datetime | None = None
    # whether the member settled a payment before; None: not read (no campaign asked)
    settled_before: bool | None = None


@dataclass(frozen=True)
class BatchSeen:
    members: dict[str, MemberSeen]
    done: dict[Key, Prior]  # earlier settlements
    earned: dict[tuple[str, date], int]  # points counted by the daily cap
    ids: list[int]  # for the batch's transactions, lots and transfers
    campaign_epoch: int = 0  # moves when the running campaigns change
    # members' usage of the campaigns in `usage_of` (those with a per-member budget when the
    # batch started): (member, campaign) -> (points, awards)
    usage_of: frozenset[str] = frozenset()
    usage: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)


@dataclass
class BatchView:
    """What the database holds for the batch, under the members' locks, as the batch's
    earlier items left it."""

    available: dict[str, int]
    seen: BatchSeen
    # each member's tier and window sum, as the batch's earlier items left them
    tiers: dict[str, TierView]
    now: datetime  # one clock reading (and so one window) for the whole batch
    # what the batch's earlier items settled (a repeat in the batch answers with it)
    in_batch: dict[Key, SettlementRow] = field(default_factory=dict)


@dataclass(slots=True)
class TransactionColumns:
    """The batch's points.transactions rows, a list per column (the statement's arrays)."""

    member_id: list[str] = field(default_factory=list)
    txn_id: list[int] = field(default_factory=list)
    key: list[str] = field(default_factory=list)
    request_hash: list[bytes] = field(default_factory=list)
    rule_version: list[int] = field(default_factory=list)
    points: list[int] = field(default_factory=list)
    # the result, as columns (domain/settlement.StoredPrior)
    state: list[str] = field(default_factory=list)
    multiplier_bps: list[int] = field(default_factory=list)
    available_at: list[datetime | None] = field(default_factory=list)
    expires_at: list[datetime | None] = field(default_factory=list)
    explanation: list[str] = field(default_factory=list)  # JSON


@dataclass(slots=True)
class LotColumns:
    """The batch's new points.lots rows, a list per column."""

    member_id: list[str] = field(default_factory=list)
    lot_id: list[int] = field(default_factory=list)
    txn_id: list[int] = field(default_factory=list)
    state: list[str] = field(default_factory=list)
    points: list[int] = field(default_factory=list)
    earned_at: list[datetime] = field(default_factory=list)
    available_at: list[datetime] = field(default_factory=list)
    expires_at: list[datetime] = field(default_factory=list)
    rule_version: list[int] = field(default_factory=list)


@dataclass(slots=True)
class TransferColumns:
    """The batch's new points.transfers rows, a list per column."""

    member_id: list[str] = field(default_factory=list)
    transfer_id: list[int] = field(default_factory=list)
    txn_id: list[int] = field(default_factory=list)
    from_account: list[str] = field(default_factory=list)
    to_account: list[str] = field(default_factory=list)
    amount: list[int] = field(default_factory=list)
    lot_id: list[int] = field(default_factory=list)
    rule_version: list[int] = field(default_factory=list)


@dataclass(slots=True)
class BalanceDelta:
    pending: int = 0
    available: int = 0
    earned: int = 0


@dataclass
class BatchWrite:
    """Everything a batch writes, as the columns of one statement (store/settlement_batch.py):
    appending to columns costs less per item than rows transposed at the end."""

    transactions: TransactionColumns = field(default_factory=TransactionColumns)
    lots: LotColumns = field(default_factory=LotColumns)
    transfers: TransferColumns = field(default_factory=TransferColumns)
    balances: dict[str, BalanceDelta] = field(default_factory=dict)
    days: dict[tuple[str, date], int] = field(default_factory=dict)  # the daily cap's points
    # tier-qualifying points: the program's and the tier-qualifying campaigns'
    qualifying: dict[tuple[str, date], int] = field(default_factory=dict)
    tiers: dict[str, TierState] = field(default_factory=dict)  # upgrades: the final state
    # referee -> the bonus its first settlement makes due
    referrals: dict[str, DueReferral] = field(default_factory=dict)

    def add(
        self,
        member_id: str,
        row: SettlementRow,
        credit: Credit | None,
        counted: tuple[int, int] | None = None,
    ) -> None:
        """One settlement's transaction and, when it earned points, its lot, transfer,
        balance change and day totals. `counted`: the points the daily cap counts and the
        tier-qualifying ones, when not all of them (campaign points)."""
        txn = self.transactions
        txn.member_id.append(member_id)
        txn.txn_id.append(row.txn_id)
        txn.key.append(row.key)
        txn.request_hash.append(row.request_hash)
        txn.rule_version.append(row.rule_version)
        txn.points.append(row.points)
        result = row.result
        txn.state.append(result.state)
        txn.multiplier_bps.append(result.tier_multiplier_bps)
        txn.available_at.append(result.available_at)
        txn.expires_at.append(result.expires_at)
        txn.explanation.append(row.explanation)
        if credit is not None:
            self._add_credit(member_id, row, credit, counted)

    def _add_credit(
        self,
        member_id: str,
        row: SettlementRow,
        credit: Credit,
        counted: tuple[int, int] | None,
    ) -> None:
        lot, points = self.lots, row.points
        lot.member_id.append(member_id)
        lot.lot_id.append(credit.lot_id)
        lot.txn_id.append(row.txn_id)
        lot.state.append(credit.state)
        lot.points.append(points)
        lot.earned_at.append(credit.earned_at)
        lot.available_at.append(credit.available_at)
        lot.expires_at.append(credit.expires_at)
        lot.rule_version.append(row.rule_version)
        moved = self.transfers
        moved.member_id.append(member_id)
        moved.transfer_id.append(credit.transfer_id)
        moved.txn_id.append(row.txn_id)
        moved.from_account.append(ISSUED)
        moved.to_account.append(credit.to_account)
        moved.amount.append(points)
        moved.lot_id.append(credit.lot_id)
        moved.rule_version.append(row.rule_version)
        delta = self.balances.get(member_id)
        if delta is None:
            delta = self.balances[member_id] = BalanceDelta()
        if credit.state == _LOT_PENDING:
            delta.pending += points
        else:
            delta.available += points
        delta.earned += points
        day = (member_id, credit.day)
        daily, qualifying = (points, points) if counted is None else counted
        self.days[day] = self.days.get(day, 0) + daily
        self.qualifying[day] = self.qualifying.get(day, 0) + qualifying
