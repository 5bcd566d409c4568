"""Settling a batch set-wise: lock every member of the batch at once, read what the lock
holder must see in one query, decide each item in Python, write everything in one
statement. A bad item fails alone because every failure is decided before anything is
written; members in debt (rare) take the one-by-one path, which knows how to repay it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.points import earn, tiers
from services.points.ledger import ItemOutcome, Ledger
from services.points.processing import processing_restricted
from services.points.settlement import Payment, SettlementResult
from services.points.store import batch_settlement as bstore
from services.points.store.referrals import DueReferral
from services.points.store.settlement import Credit, SettlementRow
from services.points.store.tiers import TierView
from services.points.unknown_members import member_unknown
from services.runtime.db import Conn
from services.runtime.errors import DomainError, failed_precondition, idempotency_key_reused

Key = tuple[str, str]  # (member_id, idempotency key)


@dataclass
class BatchView:
    """What the database holds for the batch, under the members' locks."""

    available: dict[str, int]
    seen: bstore.BatchSeen
    # each member's tier and window sum, as the batch's earlier items left them
    tiers: dict[str, TierView]
    now: datetime
    in_batch: dict[Key, tuple[bytes, dict[str, Any]]] = field(default_factory=dict)


async def settle_set_wise(
    ledger: Ledger, conn: Conn, payments: Sequence[Payment]
) -> list[ItemOutcome]:
    """Four statements for the whole batch: lock, read, write, and (rarely) the one-by-one
    path for members in debt, which knows how to repay it."""
    view = await _read(ledger, conn, payments)
    ids = iter(view.seen.ids)
    write = bstore.BatchWrite([], [], [], {}, {})
    outcomes: dict[int, ItemOutcome] = {}
    slow: list[int] = []
    # member order, then request order: the daily cap counts a member's payments in order
    for i in sorted(range(len(payments)), key=lambda i: (payments[i].member_id, i)):
        payment = payments[i]
        if view.available.get(payment.member_id, 0) < 0:
            slow.append(i)
            continue
        outcomes[i] = _decide(ledger, view, payment, ids, write)
    await bstore.write_batch(conn, write)
    for i in slow:
        outcomes[i] = await ledger.settle_item(conn, payments[i])
    return [outcomes[i] for i in range(len(payments))]


async def _read(ledger: Ledger, conn: Conn, payments: Sequence[Payment]) -> BatchView:
    rules = ledger.rules.rules
    floor = -rules.negative_floor if rules.refund_policy == "allow_negative" else 0
    members = sorted({p.member_id for p in payments})
    available = await bstore.lock_known_members(conn, members, floor)
    known = [p for p in payments if p.member_id in available]
    days = {(p.member_id, earn.local_day(rules, p.occurred_at)) for p in known}
    now = ledger.now()  # one clock reading (and so one window) for the whole batch
    seen = await bstore.read_locked(
        conn,
        list(available),
        [(p.member_id, p.idempotency_key) for p in known],
        sorted(days),
        tiers.window_days(rules, now),
        3 * len(known),
    )
    views = {m: TierView(s.tier, s.qualifying) for m, s in seen.members.items()}
    return BatchView(available=available, seen=seen, tiers=views, now=now)


def _decide(
    ledger: Ledger, view: BatchView, payment: Payment, ids: Any, write: bstore.BatchWrite
) -> ItemOutcome:
    key = (payment.member_id, payment.idempotency_key)
    # a repeat answers with the first result and writes nothing: not counted as new work
    replayed = key in view.seen.done or key in view.in_batch
    try:
        return ItemOutcome(_settle(ledger, view, payment, ids, write), None, replayed)
    except DomainError as err:
        return ItemOutcome(None, err)


def _settle(
    ledger: Ledger, view: BatchView, payment: Payment, ids: Any, write: bstore.BatchWrite
) -> SettlementResult:
    key = (payment.member_id, payment.idempotency_key)
    if payment.member_id not in view.available:
        raise member_unknown()
    prior = view.seen.done.get(key) or view.in_batch.get(key)
    if prior is not None:
        if prior[0] != payment.fingerprint():
            raise idempotency_key_reused("payment_id")
        return SettlementResult.from_json(prior[1])
    member = view.seen.members[payment.member_id]
    state = member.state
    if state != "ACTIVE":
        raise failed_precondition(f"MEMBER_{state}", f"a {state} member does not earn points")
    if member.paused:
        raise processing_restricted()
    day = earn.local_day(ledger.rules.rules, payment.occurred_at)
    seen = view.tiers[payment.member_id]
    tier = tiers.tier_of(ledger.rules.rules, seen.state)
    earned = view.seen.earned
    earning = ledger.earning(earned.get((payment.member_id, day), 0), payment, tier)
    result, credit, row = ledger.settlement_of(
        payment, earning, (next(ids), next(ids), next(ids)), (day, tier)
    )
    _add(write, payment.member_id, row, credit)
    # as a single call would: the next item of this member earns at the upgraded tier
    after = ledger.qualified(seen.state, seen.qualifying, row.points, day, view.now)
    view.tiers[payment.member_id] = TierView(after.state, after.qualifying)
    if after.upgrade is not None:
        write.tiers[payment.member_id] = after.upgrade
    earned[(payment.member_id, day)] = earned.get((payment.member_id, day), 0) + row.points
    view.in_batch[key] = (row.request_hash, row.result)
    if member.referrer is not None and payment.member_id not in write.referrals:
        write.referrals[payment.member_id] = DueReferral(
            payment.member_id, member.referrer, payment.payment_id, row.rule_version
        )
    return result


def _add(
    write: bstore.BatchWrite, member_id: str, row: SettlementRow, credit: Credit | None
) -> None:
    write.transactions.append(
        (
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
    write.lots.append(
        (
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
    write.transfers.append(
        (
            member_id,
            credit.transfer_id,
            row.txn_id,
            "program:issued",
            credit.to_account,
            row.points,
            credit.lot_id,
            row.rule_version,
        )
    )
    deltas = write.balances.setdefault(member_id, [0, 0, 0])
    deltas[0 if credit.state == "PENDING" else 1] += row.points
    deltas[2] += row.points
    write.days[(member_id, credit.day)] = write.days.get((member_id, credit.day), 0) + row.points
