"""A member's debt repaid by a new lot's first points (the arithmetic, and why the ledger
stays exact, are domain/debt.py's): settlements of a member in debt, grants and referral
bonuses all credit this way."""

from __future__ import annotations

from services.points.domain.debt import Repayment
from services.points.domain.ledger import MEMBER_AVAILABLE, MEMBER_PENDING, NewTransfer
from services.points.store import balance as balance_store
from services.points.store import ledger as ledger_store
from services.runtime.db import Conn


async def repay_from_new_lot(
    conn: Conn, member_id: str, repayment: Repayment, rule_version: int
) -> None:
    """The new lot's first `repayment.points` pay the debt.

    An available lot's credit (program:issued -> member:available) already raised
    `available` by all its points: only the lot's remaining shrinks. A pending lot's points
    sit in member:pending, so the repaid part moves to member:available, where the debt is.
    """
    repaid, lot_id = repayment.points, repayment.lot_id
    if repaid <= 0:
        return
    await ledger_store.take_from_lot(conn, member_id, lot_id, repaid, cancel_when_empty=False)
    if repayment.pending:
        move = NewTransfer(
            repayment.txn_id, MEMBER_PENDING, MEMBER_AVAILABLE, repaid, lot_id, rule_version
        )
        await ledger_store.insert_transfers(conn, member_id, [move])
        await balance_store.add_to_balance(conn, member_id, pending=-repaid, available=repaid)
