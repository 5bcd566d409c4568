"""A member's debt under the allow_negative refund policy, and its repayment by new earnings.

Debt is `max(0, -available)`: points a refund clawed back that the member no longer had.
A refund only goes below zero after taking every available lot to 0, and every new lot
first repays the debt (its `remaining` is lowered by the repayment), so at all times

    available + debt == sum(remaining of AVAILABLE lots)

i.e. `available == sum(remaining)` when there is no debt, and no available lot holds points
while there is one.
"""

from __future__ import annotations

from services.points.ledger_accounts import MEMBER_AVAILABLE, MEMBER_PENDING
from services.points.store import ledger as ledger_store
from services.points.store import refunds as store
from services.runtime.db import Conn


async def owed(conn: Conn, member_id: str) -> int:
    """The member's debt; read before a credit changes `available`."""
    return await store.debt_of(conn, member_id)


async def repay_from_new_lot(
    conn: Conn,
    member_id: str,
    lot: tuple[int, int],  # (txn_id, lot_id) of the new lot
    repaid: int,
    pending: bool,
    rule_version: int,
) -> None:
    """The new lot's first `repaid` points pay the debt.

    An available lot's credit (program:issued -> member:available) already raised
    `available` by all its points: only the lot's remaining shrinks. A pending lot's points
    sit in member:pending, so the repaid part moves to member:available, where the debt is.
    """
    if repaid <= 0:
        return
    txn_id, lot_id = lot
    await store.take_from_lot(conn, member_id, lot_id, repaid, cancel_when_empty=False)
    if pending:
        move = ledger_store.NewTransfer(
            txn_id, MEMBER_PENDING, MEMBER_AVAILABLE, repaid, lot_id, rule_version
        )
        await ledger_store.insert_transfers(conn, member_id, [move])
        await ledger_store.add_to_balance(conn, member_id, pending=-repaid, available=repaid)
