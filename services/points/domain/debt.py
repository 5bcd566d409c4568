"""A member's debt under the allow_negative refund policy, and its repayment by new earnings.

Debt is `max(0, -available)`: points a refund clawed back that the member no longer had.
A refund only goes below zero after taking every available lot to 0, and every new lot
first repays the debt (its `remaining` is lowered by the repayment; services/points/debt.py
writes it), so at all times

    available + debt == sum(remaining of AVAILABLE lots)

i.e. `available == sum(remaining)` when there is no debt, and no available lot holds points
while there is one.
"""

from __future__ import annotations

from typing import NamedTuple


def owed(available: int) -> int:
    """The debt of a member whose `available` is this."""
    return max(0, -available)


def repaid_by(points: int, available: int) -> int:
    """What a credit of `points` repays of the debt of a member whose `available` is this
    (read before the credit raises it)."""
    return min(owed(available), points)


class Repayment(NamedTuple):
    """A new lot's first points paying a debt."""

    txn_id: int  # the transaction that credits the lot
    lot_id: int
    points: int  # repaid
    pending: bool  # the lot is pending: its points sit in member:pending
