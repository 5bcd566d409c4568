"""How many points a refund claws back, and where they come from: pure rules, no SQL.

A refund takes back what the payment earned (rounded up, `clawback_increment`) from what
the member still holds of it first, then from the rest of what the member holds, so that no
sequence of calls keeps points of a refunded payment while the member holds any:

1. the payment's own lot (pending, or available and not yet expired);
2. points of that lot that open holds hold (a hold made for a redemption in progress
   holds fewer afterwards; one left with none is CLAWED_BACK and cannot be captured);
3. the member's other usable lots, soonest-expiring first;
4. the member's other held points, in the lots' spending order.

Only what is still missing then follows the refund policy (written off under
`within_balance`, below zero under `allow_negative`). Points of a lot past its expiry are
never taken, whether or not the expiry job has run: they are not the member's any more.
Held points are taken whatever their lot's expiry, since a capture can still redeem them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from services.points.domain.ledger import (
    MEMBER_AVAILABLE,
    MEMBER_HELD,
    MEMBER_PENDING,
    Account,
    LotState,
)
from services.points.domain.rules import RefundPolicy


def clawback_points(points: int, payment_minor: int, refund_minor: int) -> int:
    """The refunded share of a payment's points, rounded up; never more than `points`."""
    if points < 0 or payment_minor <= 0:
        raise ValueError("points must not be negative and payment_minor must be > 0")
    if not 0 <= refund_minor <= payment_minor:
        raise ValueError("refund_minor: must be within 0..payment_minor")
    return min(points, -(-points * refund_minor // payment_minor))


def clawback_increment(
    points: int, payment_minor: int, refunded_before_minor: int, refund_minor: int
) -> int:
    """What one more partial refund claws back, given what was refunded before.

    The difference of the rounded-up shares of the running totals: repeated partial refunds
    then take exactly `clawback_points` of their sum, so rounding up each refund separately
    can never take more than the payment earned (1 point, 3 refunds of a third: 1, 0, 0).
    """
    before = clawback_points(points, payment_minor, refunded_before_minor)
    return clawback_points(points, payment_minor, refunded_before_minor + refund_minor) - before


@dataclass(frozen=True)
class LotRow:
    lot_id: int
    state: LotState
    remaining: int
    expires_at: datetime


@dataclass(frozen=True)
class HeldPart:
    """The points one open hold holds of one lot."""

    hold_id: str
    lot_id: int
    points: int


@dataclass(frozen=True)
class Take:
    lot_id: int
    # the member account the points leave: member:pending, member:available or member:held
    account: Account
    points: int
    hold_id: str | None = None  # set for points taken from a hold


@dataclass(frozen=True)
class Clawback:
    points: int  # what the refund claws back in all
    takes: tuple[Take, ...]
    uncollectable: int  # within_balance: what the member no longer had
    below_zero: int  # allow_negative: what `available` goes below its lots by

    @property
    def from_member(self) -> int:
        return sum(t.points for t in self.takes) + self.below_zero

    def from_account(self, account: Account) -> int:
        return sum(t.points for t in self.takes if t.account == account)

    @property
    def shortfall(self) -> int:
        return self.uncollectable + self.below_zero

    def covered_by(self, own_lot_id: int | None) -> bool:
        """Whether the payment's own lot alone gave everything."""
        return self.shortfall == 0 and all(t.lot_id == own_lot_id for t in self.takes)


def _usable(lot: LotRow, own_lot_id: int | None, now: datetime) -> bool:
    """The own lot pending or available; another lot only available (pending points of
    other payments are still refundable themselves); never past its expiry."""
    if lot.state == LotState.PENDING:
        return lot.lot_id == own_lot_id
    return lot.state == LotState.AVAILABLE and now < lot.expires_at


def plan_clawback(
    points: int,
    own_lot_id: int | None,
    lots: Sequence[LotRow],
    held: Sequence[HeldPart],
    policy: RefundPolicy,
    now: datetime,
) -> Clawback:
    """`lots` are in spending order (expires_at, lot_id); `held` in the lots' spending
    order, then by hold id. Pass no `held` when the lots may cover it all."""
    usable = [lot for lot in lots if _usable(lot, own_lot_id, now)]
    sources: list[LotRow | HeldPart] = [
        *(lot for lot in usable if lot.lot_id == own_lot_id),
        *(part for part in held if part.lot_id == own_lot_id),
        *(lot for lot in usable if lot.lot_id != own_lot_id),
        *(part for part in held if part.lot_id != own_lot_id),
    ]
    rest, takes = points, []
    for source in sources:
        taken = min(rest, source.remaining if isinstance(source, LotRow) else source.points)
        if taken > 0:
            takes.append(_take(source, taken))
            rest -= taken
    if policy == RefundPolicy.ALLOW_NEGATIVE:
        return Clawback(points, tuple(takes), 0, rest)
    return Clawback(points, tuple(takes), rest, 0)


def _take(item: LotRow | HeldPart, points: int) -> Take:
    if isinstance(item, HeldPart):
        return Take(item.lot_id, MEMBER_HELD, points, item.hold_id)
    account = MEMBER_PENDING if item.state == LotState.PENDING else MEMBER_AVAILABLE
    return Take(item.lot_id, account, points)
