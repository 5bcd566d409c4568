"""GetBalance: a member's balance as of now, and the points expiring soonest."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import asyncpg

from services.points.domain.balance import NO_BALANCE, Balance, ExpiringPoints
from services.points.domain.coupons import Coupon
from services.points.domain.restrictions import require_readable
from services.points.members import MemberDirectory
from services.points.store import balance as balance_store
from services.points.store import coupons as coupon_store

EXPIRING_SHOWN = 5  # expiry dates in an answer


class Balances:
    def __init__(
        self, pool: asyncpg.Pool, members: MemberDirectory, clock: Callable[[], datetime]
    ) -> None:
        self._pool = pool
        self._members = members
        self._clock = clock

    async def balance(self, member_id: str) -> tuple[Balance, list[ExpiringPoints], list[Coupon]]:
        """The balance, its soonest-expiring points and its soonest-expiring coupons."""
        async with self._pool.acquire() as conn:
            require_readable(await self._members.state_of(conn, member_id))
            now = self._clock()
            row = await balance_store.get_balance(conn, member_id, now) or NO_BALANCE
            points = await balance_store.expiring_soonest(conn, member_id, EXPIRING_SHOWN, now)
            coupons = await coupon_store.expiring_soonest(conn, member_id, now, EXPIRING_SHOWN)
            return row, points, coupons
