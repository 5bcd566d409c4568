"""SQL of a member's status history (accounts.member_status_changes)."""

from __future__ import annotations

from services.accounts.domain.lifecycle import Status
from services.accounts.domain.members import StatusChange
from services.runtime.db import Conn


async def add_status_change(
    conn: Conn, member_id: str, *, from_status: Status, to_status: Status, reason: str, actor: str
) -> None:
    await conn.execute(
        "INSERT INTO accounts.member_status_changes (member_id, from_status, to_status, reason,"
        " actor) VALUES ($1, $2, $3, $4, $5)",
        member_id,
        from_status.value,
        to_status.value,
        reason,
        actor,
    )


async def status_history(conn: Conn, member_id: str) -> list[StatusChange]:
    rows = await conn.fetch(
        "SELECT from_status, to_status, reason, actor, changed_at"
        " FROM accounts.member_status_changes WHERE member_id = $1 ORDER BY seq",
        member_id,
    )
    return [
        StatusChange(
            from_status=Status(r["from_status"]),
            to_status=Status(r["to_status"]),
            reason=r["reason"],
            actor=r["actor"],
            changed_at=r["changed_at"],
        )
        for r in rows
    ]
