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

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from services.points import earn, tiers
from services.points.grants import credit_available
from services.points.rules import Rules
from services.points.store import batch_settlement as bstore
from services.points.store import ledger as store
from services.points.store import referrals as rstore
from services.points.store.tiers import rules_documents
from services.runtime.db import Conn

KIND = "referral"


async def pay_referral_bonuses(conn: Conn, now: datetime, limit: int) -> tuple[int, int, int]:
    """Due referral bonuses are paid to both sides (or forfeited by a side not ACTIVE);
    returns (candidates seen, rows paid, points credited)."""
    candidates = await rstore.due_candidates(conn, limit)
    if not candidates:
        return 0, 0, 0
    rules = await _rules(conn, {c.rule_version for c in candidates})
    latest = rules[max(rules)]
    floor = -latest.negative_floor if latest.refund_policy == "allow_negative" else 0
    members = sorted({m for c in candidates for m in (c.member_id, c.referrer_id)})
    available = await bstore.lock_known_members(conn, members, floor)
    states = await bstore.member_states(conn, list(available))
    due = await rstore.lock_due(conn, [c.member_id for c in candidates])
    paid = []
    for row in due:
        in_force = rules[row.rule_version]
        sides = _sides(in_force, row, states)
        points = [await _pay(conn, (row, in_force), side, sides, available, now) for side in sides]
        paid.append((row.member_id, points[0], points[1]))
    if paid:
        await rstore.mark_paid(conn, paid, now)
    return len(candidates), len(paid), sum(referee + referrer for _, referee, referrer in paid)


async def _rules(conn: Conn, versions: set[int]) -> dict[int, Rules]:
    documents = await rules_documents(conn, sorted(versions))
    return {v: tiers.rules_of(v, documents[v]) for v in versions}


# (role, member, points it is due, why it is skipped or None)
Side = tuple[str, str, int, str | None]


def _sides(rules: Rules, row: rstore.DueReferral, states: dict[str, str]) -> list[Side]:
    def side(role: str, member_id: str, points: int) -> Side:
        state = states.get(member_id, "UNKNOWN")
        return (role, member_id, points, None if state == "ACTIVE" else state)

    return [
        side("referee", row.member_id, rules.referral_bonus_referee),
        side("referrer", row.referrer_id, rules.referral_bonus_referrer),
    ]


async def _pay(
    conn: Conn,
    referral: tuple[rstore.DueReferral, Rules],
    side: Side,
    sides: Sequence[Side],
    available: dict[str, int],
    now: datetime,
) -> int:
    """Credits one side; returns the points it received (0 when skipped)."""
    (row, rules), (role, member_id, points, skipped) = referral, side
    if skipped is not None or points <= 0:
        return 0
    expires_at = earn.expires_at(rules, now)
    txn_id, lot_id = await store.next_ids(conn, 2)
    repaid = await credit_available(
        conn,
        member_id,
        (points, available[member_id]),
        (txn_id, lot_id),
        row.rule_version,
        (now, expires_at),
    )
    available[member_id] += points
    key = f"{KIND}:{row.member_id}"
    result = {
        "member_id": member_id,
        "role": role,
        "referee": row.member_id,
        "referrer": row.referrer_id,
        "payment_id": row.payment_id,
        "points": points,
        "expires_at": expires_at.isoformat(),
        "rule_version": row.rule_version,
        "txn_id": txn_id,
        "debt_repaid": repaid,
    }
    txn = store.NewTransaction(
        txn_id,
        KIND,
        key,
        hashlib.sha256(key.encode()).digest(),
        row.rule_version,
        points,
        result,
        _explanation(row, side, sides, repaid),
    )
    await store.insert_transaction(conn, member_id, txn)
    return points


def _explanation(
    row: rstore.DueReferral, side: Side, sides: Sequence[Side], repaid: int
) -> dict[str, Any]:
    role, _, points, _ = side
    sentence = (
        f"{points} points of referral bonus as the {role}: members/{row.member_id}"
        f" (referred by members/{row.referrer_id}) settled its first payment {row.payment_id}"
    )
    if repaid:
        sentence += f"; {repaid} of them repaid earlier refunds"
    skipped = [
        {"role": r, "member_id": m, "state": why} for r, m, _, why in sides if why is not None
    ]
    for other in skipped:
        sentence += f"; the {other['role']} was {other['state']} and received no bonus"
    return {
        "kind": KIND,
        "role": role,
        "referee": row.member_id,
        "referrer": row.referrer_id,
        "payment_id": row.payment_id,
        "points": points,
        "debt_repaid": repaid,
        "skipped": skipped,
        "steps": [],
        "sentence": sentence,
    }
