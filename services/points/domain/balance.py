"""A member's balance: what it holds available, pending and held, and what expires soonest."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Balance:
    """A member's materialised balance (points.balances)."""

    available: int
    pending: int
    held: int
    lifetime_earned: int


NO_BALANCE = Balance(0, 0, 0, 0)


@dataclass(frozen=True)
class ExpiringPoints:
    points: int
    expires_at: datetime
