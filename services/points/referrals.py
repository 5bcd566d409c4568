"""The referral bonus: a referred member's first settlement records it as due
(points.referral_bonuses, in the settlement's own statement), and this job pays it: a
grant-like credit in the referee's ledger and one in the referrer's, each a transaction of
kind `referral` keyed `referral:<referee id>` (once per member and referee), then the row
becomes PAID. A side whose member is not ACTIVE (or not known to points) when the job
runs forfeits its bonus: that side is recorded as 0 points and the other side's
explanation says why. The settlement never locks a second member; the job locks both
members' balances in sorted order, as every writer does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from services.points.domain import referrals, tiers
from services.points.domain.earning import expires_at
from services.points.domain.grants import AvailableCredit
from services.points.domain.jobs import BatchResult
from services.points.domain.referrals import BonusCredit, DueReferral, PaidReferral, Side
from services.points.domain.rules import Rules
from services.points.grants import credit_available
from services.points.store import ledger as ledger_store
from services.points.store import members as member_store
from services.points.store import program as program_store
from services.points.store import referrals as referral_store
from services.points.store import settlement_batch as settlement_batch_store
from services.runtime.db import Conn


async def pay_referral_bonuses(conn: Conn, now: datetime, limit: int) -> BatchResult:
    """The referral_bonus job's batch: due referral bonuses are paid to both sides (or
    forfeited by a side not ACTIVE)."""
    candidates = await referral_store.due_candidates(conn, limit)
    if not candidates:
        return BatchResult(0, 0)
    rules = await _rules(conn, {c.rule_version for c in candidates})
    floor = rules[max(rules)].available_floor
    members = sorted({m for c in candidates for m in (c.member_id, c.referrer_id)})
    available = await settlement_batch_store.lock_known_members(conn, members, floor)
    states = await member_store.member_states(conn, list(available))
    due = await referral_store.lock_due(conn, [c.member_id for c in candidates])
    paid = []
    for row in due:
        in_force = rules[row.rule_version]
        sides = referrals.sides(in_force, row, states)
        points = [await _pay(conn, row, in_force, side, sides, available, now) for side in sides]
        paid.append(PaidReferral(row.member_id, points[0], points[1]))
    if paid:
        await referral_store.mark_paid(conn, paid, now)
    issued = sum(p.referee_points + p.referrer_points for p in paid)
    return BatchResult(len(candidates), len(paid), issued=issued)


async def _rules(conn: Conn, versions: set[int]) -> dict[int, Rules]:
    documents = await program_store.rules_documents(conn, sorted(versions))
    return {v: tiers.rules_of(v, documents[v]) for v in versions}


async def _pay(
    conn: Conn,
    row: DueReferral,
    rules: Rules,
    side: Side,
    sides: Sequence[Side],
    available: dict[str, int],
    now: datetime,
) -> int:
    """Credits one side; returns the points it received (0 when skipped)."""
    if side.skipped is not None or side.points <= 0:
        return 0
    member_id, points = side.member_id, side.points
    expires = expires_at(rules, now)
    txn_id, lot_id = await ledger_store.next_ids(conn, 2)
    credit = AvailableCredit(
        member_id=member_id,
        points=points,
        available_before=available[member_id],
        txn_id=txn_id,
        lot_id=lot_id,
        rule_version=row.rule_version,
        now=now,
        expires_at=expires,
    )
    repaid = await credit_available(conn, credit)
    available[member_id] += points
    bonus = BonusCredit(row, side, txn_id, expires, repaid)
    await ledger_store.insert_transaction(conn, member_id, referrals.transaction_of(bonus, sides))
    return points
