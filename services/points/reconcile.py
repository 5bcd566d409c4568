"""Reconcile: the invariants of the points ledger (DESIGN.md §6) and the report of a check.

Each invariant is one set-based query (services/points/store/reconcile.py), run together in
one read-only REPEATABLE READ transaction: every query sees the same snapshot, so a
settlement committing in the middle of a check cannot show up as a false mismatch.

What a transaction's `points` column means depends on its kind (read from the code that
writes it); `POINTS_MEANING` names, per kind, the member accounts whose net inflow in that
transaction's transfers must equal it:

- settlement: what was awarded: program:issued -> member:pending|available (a pending lot's
  debt repayment, pending -> available, is internal to the member and nets to 0);
- refund: minus what was taken from the member (lots, holds, or below zero); the write-off
  program:uncollectable -> program:issued moves no member account;
- maturation: what became available (pending -> available, as `available` sees it);
- expiry: minus what was forfeited (available -> program:expired);
- grant: what was granted (program:issued -> member:available).

- hold, capture, release, hold_expiry, redemption: the change of `available`.

Kinds not listed (added later) are still checked for orphaned transfers,
rule versions and keys, but not for their points until their meaning is added here.

The books close (PROGRAM_TOTAL): every transfer takes from one account what it gives to
another, so over the eight known accounts, per member and hence program-wide,

    -net(program:issued) == net(member:available) + net(member:pending) + net(member:held)
                            + net(program:redeemed) + net(program:expired)
                            + net(program:uncollectable) + net(program:adjustment)

with net = inflow - outflow. It fails exactly when points moved to or from an account outside
that list, i.e. out of the books. BALANCE_MISMATCH ties the member nets to the materialised
balances, so together they prove the identity with the balances members see.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import asyncpg

from services.points.ledger_accounts import (
    MEMBER_ACCOUNTS,
    MEMBER_AVAILABLE,
    MEMBER_HELD,
    MEMBER_PENDING,
    PROGRAM_ACCOUNTS,
)
from services.points.store import reconcile as store
from services.runtime.db import Conn

# the response lists at most this many violations (and counts them all)
MAX_VIOLATIONS = 1000

KNOWN_ACCOUNTS: tuple[str, ...] = MEMBER_ACCOUNTS + PROGRAM_ACCOUNTS

POINTS_MEANING: dict[str, tuple[str, ...]] = {
    "settlement": (MEMBER_AVAILABLE, MEMBER_PENDING),
    # a refund also takes back points open holds hold (services/points/clawback.py)
    "refund": (MEMBER_AVAILABLE, MEMBER_PENDING, MEMBER_HELD),
    "maturation": (MEMBER_AVAILABLE,),
    "expiry": (MEMBER_AVAILABLE,),
    # a grant's points arrive available at once (a debt repayment shrinks only the lot)
    "grant": (MEMBER_AVAILABLE,),
    "referral": (MEMBER_AVAILABLE,),
    # spending (services/points/spending.py): `points` is the change of `available`; a
    # hold's available -> held is minus what it holds, a capture, release or hold expiry
    # gives back to available what it returns, a redemption is minus what it spends
    "hold": (MEMBER_AVAILABLE,),
    "capture": (MEMBER_AVAILABLE,),
    "release": (MEMBER_AVAILABLE,),
    "hold_expiry": (MEMBER_AVAILABLE,),
    "redemption": (MEMBER_AVAILABLE,),
    "reward": (MEMBER_AVAILABLE,),  # a reward redemption: minus the points it spent
}


class Invariant(enum.Enum):
    TRANSFER_INVALID = "TRANSFER_INVALID"
    TRANSFER_ORPHAN = "TRANSFER_ORPHAN"
    UNKNOWN_RULE_VERSION = "UNKNOWN_RULE_VERSION"
    BALANCE_MISMATCH = "BALANCE_MISMATCH"
    LOTS_MISMATCH = "LOTS_MISMATCH"
    LOT_OVERDRAWN = "LOT_OVERDRAWN"
    BELOW_FLOOR = "BELOW_FLOOR"
    DUPLICATE_KEY = "DUPLICATE_KEY"
    PROGRAM_TOTAL = "PROGRAM_TOTAL"


@dataclass(frozen=True)
class Violation:
    invariant: Invariant
    member_id: str  # "" when it concerns the program as a whole
    detail: str


@dataclass(frozen=True)
class Report:
    counts: store.Counts
    violations: tuple[Violation, ...]  # at most MAX_VIOLATIONS
    total: int  # every violation found, listed or not

    @property
    def ok(self) -> bool:
        return self.total == 0


def _checks() -> dict[Invariant, store.Check]:
    """One query per invariant; each returns at most `limit` rows and the full count."""
    return {
        Invariant.TRANSFER_INVALID: store.invalid_transfers,
        Invariant.TRANSFER_ORPHAN: lambda conn, member, limit: store.orphans(
            conn, member, limit, POINTS_MEANING
        ),
        Invariant.UNKNOWN_RULE_VERSION: store.unknown_rule_versions,
        Invariant.BALANCE_MISMATCH: store.balance_mismatches,
        Invariant.LOTS_MISMATCH: store.lots_mismatches,
        Invariant.LOT_OVERDRAWN: store.overdrawn_lots,
        Invariant.BELOW_FLOOR: store.below_floor,
        Invariant.DUPLICATE_KEY: store.duplicate_keys,
        Invariant.PROGRAM_TOTAL: lambda conn, member, limit: store.books_not_closing(
            conn, member, limit, KNOWN_ACCOUNTS
        ),
    }


async def check(conn: Conn, member_id: str | None) -> Report:
    """Every invariant, inside the caller's (snapshot) transaction."""
    found: list[Violation] = []
    total = 0
    for invariant, run in _checks().items():
        rows, count = await run(conn, member_id, MAX_VIOLATIONS - len(found))
        found.extend(Violation(invariant, r.member_id, r.detail) for r in rows)
        total += count
    counts = await store.counts(conn, member_id)
    return Report(counts, tuple(found[:MAX_VIOLATIONS]), total)


class Reconciler:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def reconcile(self, member_id: str | None) -> Report:
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            await store.allow_long_statements(conn)
            return await check(conn, member_id)
