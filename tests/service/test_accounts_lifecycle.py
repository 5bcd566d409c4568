"""FreezeMember, UnfreezeMember, CloseMember: the state machine over gRPC, idempotency,
reasons, status history and outbox events."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import grpc
from membership.accounts.v1 import accounts_pb2 as pb

from tests.support.accounts import fetch, register, table_counts
from tests.support.rpc_errors import expect_error
from tests.support.suite import Metadata, Suite

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
ACTIVE, FROZEN, CLOSED = pb.MEMBER_STATUS_ACTIVE, pb.MEMBER_STATUS_FROZEN, pb.MEMBER_STATUS_CLOSED

Change = Callable[[str, str, str], Awaitable[pb.Member]]


def _changer(suite: Suite, method: str, metadata: Metadata) -> Change:
    requests = {
        "FreezeMember": pb.FreezeMemberRequest,
        "UnfreezeMember": pb.UnfreezeMemberRequest,
        "CloseMember": pb.CloseMemberRequest,
    }

    async def call(name: str, request_id: str, reason: str) -> pb.Member:
        request = requests[method](name=name, request_id=request_id, reason=reason)
        result: pb.Member = await getattr(suite.accounts, method)(request, metadata=metadata)
        return result

    return call


class Lifecycle:
    def __init__(self, suite: Suite, subject: str = "admin:risk") -> None:
        admin = suite.auth("admin", subject=subject)
        self.freeze = _changer(suite, "FreezeMember", admin)
        self.unfreeze = _changer(suite, "UnfreezeMember", admin)
        self.close = _changer(suite, "CloseMember", admin)


async def _history(suite: Suite, member_id: str) -> list[tuple[str, str, str, str]]:
    rows = await fetch(
        suite.dsn,
        "SELECT from_status, to_status, reason, actor FROM accounts.member_status_changes"
        " WHERE member_id = $1 ORDER BY seq",
        member_id,
    )
    return [(r["from_status"], r["to_status"], r["reason"], r["actor"]) for r in rows]


async def _events(suite: Suite, member_id: str) -> list[tuple[str, dict[str, str]]]:
    rows = await fetch(
        suite.dsn,
        "SELECT event_type, payload FROM accounts.outbox WHERE member_id = $1 ORDER BY event_id",
        member_id,
    )
    return [(r["event_type"], json.loads(r["payload"])) for r in rows]


async def _status(suite: Suite, name: str) -> int:
    member = await suite.accounts.GetMember(
        pb.GetMemberRequest(name=name), metadata=suite.auth("officer")
    )
    return int(member.status)


async def test_legal_transitions_with_history_and_events(suite: Suite) -> None:
    member = await register(suite)
    life = Lifecycle(suite)
    frozen = await life.freeze(member.name, "f1", "chargeback pattern")
    assert frozen.status == FROZEN
    assert frozen.member_id == member.member_id
    assert frozen.phone == member.phone, "the masked view is returned"
    assert frozen.update_time.ToDatetime() > member.update_time.ToDatetime()
    assert await _status(suite, member.name) == FROZEN
    assert (await life.unfreeze(member.name, "u1", "  cleared by review  ")).status == ACTIVE
    assert (await life.freeze(member.name, "f2", "again")).status == FROZEN
    closed = await _changer(suite, "CloseMember", suite.auth("wallet-backend", "app:wallet"))(
        member.name, "c1", "member asked"
    )
    assert closed.status == CLOSED
    assert await _status(suite, member.name) == CLOSED
    assert await _history(suite, member.member_id) == [
        ("ACTIVE", "FROZEN", "chargeback pattern", "admin:risk"),
        ("FROZEN", "ACTIVE", "cleared by review", "admin:risk"),
        ("ACTIVE", "FROZEN", "again", "admin:risk"),
        ("FROZEN", "CLOSED", "member asked", "app:wallet"),
    ]
    events = await _events(suite, member.member_id)
    assert [e[0] for e in events] == ["member.registered"] + ["member.status_changed"] * 4
    assert [(p["from_status"], p["to_status"]) for _, p in events[1:]] == [
        ("ACTIVE", "FROZEN"),
        ("FROZEN", "ACTIVE"),
        ("ACTIVE", "FROZEN"),
        ("FROZEN", "CLOSED"),
    ]
    assert all(p["member_id"] == member.member_id for _, p in events)


async def test_an_active_member_can_be_closed_directly(suite: Suite) -> None:
    member = await register(suite)
    assert (await Lifecycle(suite).close(member.name, "c1", "moving abroad")).status == CLOSED
    assert await _history(suite, member.member_id) == [
        ("ACTIVE", "CLOSED", "moving abroad", "admin:risk")
    ]


async def test_illegal_transitions_are_failed_precondition(suite: Suite) -> None:
    life = Lifecycle(suite)
    active = await register(suite)
    frozen = await register(suite)
    closed = await register(suite)
    await life.freeze(frozen.name, "setup-f", "setup")
    await life.close(closed.name, "setup-c", "setup")
    before = await table_counts(suite.dsn)
    cases: list[tuple[Change, pb.Member, str]] = [
        (life.unfreeze, active, "MEMBER_ACTIVE"),
        (life.freeze, frozen, "MEMBER_FROZEN"),
        (life.freeze, closed, "MEMBER_CLOSED"),
        (life.unfreeze, closed, "MEMBER_CLOSED"),
        (life.close, closed, "MEMBER_CLOSED"),
    ]
    for i, (change, member, reason) in enumerate(cases):
        err = await expect_error(
            change(member.name, f"bad-{i}", "try"), PRECONDITION, reason=reason
        )
        assert err.domain == "accounts.membership"
    assert await table_counts(suite.dsn) == before, "a refused change writes nothing"
    assert [await _status(suite, m.name) for m in (active, frozen, closed)] == [
        ACTIVE,
        FROZEN,
        CLOSED,
    ]


async def test_repeat_with_the_same_request_id_returns_the_first_result(suite: Suite) -> None:
    member = await register(suite)
    life = Lifecycle(suite)
    first = await life.freeze(member.name, "f1", "risk")
    await life.unfreeze(member.name, "u1", "ok")
    again = await life.freeze(member.name, "f1", "risk")
    assert again == first
    assert again.status == FROZEN
    assert await _status(suite, member.name) == ACTIVE, "the repeat changed nothing"
    # even an otherwise illegal repeat answers with the first result
    assert (await life.unfreeze(member.name, "u1", "ok")).status == ACTIVE
    await life.close(member.name, "c1", "bye")
    assert (await life.close(member.name, "c1", "bye")).status == CLOSED
    assert len(await _history(suite, member.member_id)) == 3


async def test_reused_request_id_with_another_request_is_rejected(suite: Suite) -> None:
    member = await register(suite)
    other = await register(suite)
    life = Lifecycle(suite)
    await life.freeze(member.name, "k1", "risk")
    before = await table_counts(suite.dsn)
    for call in (
        life.freeze(member.name, "k1", "another reason"),
        life.unfreeze(member.name, "k1", "risk"),
        life.close(member.name, "k1", "risk"),
    ):
        await expect_error(call, grpc.StatusCode.ALREADY_EXISTS, reason="IDEMPOTENCY_KEY_REUSED")
    assert await table_counts(suite.dsn) == before
    assert await _status(suite, member.name) == FROZEN
    # request ids are scoped to the member: another member may use the same one
    assert (await life.freeze(other.name, "k1", "risk")).status == FROZEN


async def test_reason_name_and_request_id_are_validated(suite: Suite) -> None:
    member = await register(suite)
    life = Lifecycle(suite)
    before = await table_counts(suite.dsn)
    cases: list[tuple[str, str, str, set[str]]] = [
        (member.name, "r1", "", {"reason"}),
        (member.name, "r1", "   ", {"reason"}),
        (member.name, "r1", "x" * 201, {"reason"}),
        (member.name, "r1", "line\nbreak", {"reason"}),
        (member.name, "r1", "nul\x00byte", {"reason"}),
        (member.name, "", "risk", {"request_id"}),
        (member.name, "i" * 129, "risk", {"request_id"}),
        ("", "r1", "risk", {"name"}),
        ("members/not-valid", "r1", "risk", {"name"}),
        ("members/", "", "", {"name", "request_id", "reason"}),
    ]
    for change in (life.freeze, life.unfreeze, life.close):
        for name, request_id, reason, fields in cases:
            await expect_error(change(name, request_id, reason), INVALID, fields=fields)
    assert await table_counts(suite.dsn) == before
    # the bounds are inclusive
    assert (await life.freeze(member.name, "i" * 128, "x" * 200)).status == FROZEN


async def test_unknown_member_is_not_found(suite: Suite) -> None:
    life = Lifecycle(suite)
    for change in (life.freeze, life.unfreeze, life.close):
        await expect_error(change("members/mnosuchmember", "r1", "risk"), grpc.StatusCode.NOT_FOUND)
