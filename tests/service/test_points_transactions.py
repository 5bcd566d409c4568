"""ListTransactions (newest first, pages, filters) and ExplainTransaction (steps, sentence,
data; errors)."""

from __future__ import annotations

from datetime import timedelta

import grpc
from google.protobuf import json_format
from membership.points.v1 import points_pb2 as pb

from services.points.jobs import JobRunner
from services.runtime.db import create_pool
from tests.service.test_points_refunds import refund, refunded, settle
from tests.service.test_points_settlement import NOW, known_member, payment, ts
from tests.support.rpc_errors import expect_error
from tests.support.suite import Metadata, Suite

DAY = timedelta(days=1)


def reader(suite: Suite) -> Metadata:
    return suite.auth("wallet-backend")


async def listed(suite: Suite, request: pb.ListTransactionsRequest) -> pb.ListTransactionsResponse:
    got: pb.ListTransactionsResponse = await suite.points.ListTransactions(
        request, metadata=reader(suite)
    )
    return got


async def explained(suite: Suite, name: str) -> pb.TransactionExplanation:
    got: pb.TransactionExplanation = await suite.points.ExplainTransaction(
        pb.ExplainTransactionRequest(name=name), metadata=reader(suite)
    )
    return got


async def history(suite: Suite) -> tuple[str, pb.Settlement, pb.Refund]:
    """A settlement, a partial refund, and the maturation of the settlement's lot."""
    member_id = await known_member(suite)
    settled = await settle(suite.points, suite, payment(member_id, "p-1", 1234))
    back = await refunded(suite.points, suite, refund(member_id, "p-1", "r-1", 500))
    pool = await create_pool(suite.dsn, 1, 2)
    try:
        await JobRunner(pool).run_once(NOW + 8 * DAY)
    finally:
        await pool.close()
    return member_id, settled, back


async def test_transactions_are_listed_newest_first_with_their_transfers(suite: Suite) -> None:
    member_id, settled, back = await history(suite)
    got = await listed(suite, pb.ListTransactionsRequest(parent=f"members/{member_id}"))
    assert [t.kind for t in got.transactions] == ["maturation", "refund", "settlement"]
    assert got.next_page_token == ""
    maturation, refund_txn, settlement = got.transactions
    assert settlement.name == settled.transaction
    assert (settlement.points, settlement.rule_version) == (24, settled.rule_version)
    assert (settlement.reference.type, settlement.reference.value) == ("payment_id", "p-1")
    [credit] = settlement.transfers
    assert (credit.from_account, credit.to_account, credit.amount) == (
        "program:issued",
        "member:pending",
        24,
    )
    assert credit.lot_id > 0
    assert refund_txn.name == back.transaction
    assert refund_txn.points == -back.points_clawed_back
    assert (refund_txn.reference.type, refund_txn.reference.value) == ("refund_id", "r-1")
    assert maturation.reference == pb.TransactionReference(type="lot_id", value=str(credit.lot_id))
    assert maturation.points == 24 - back.points_clawed_back
    assert settlement.create_time.ToDatetime() <= maturation.create_time.ToDatetime()


async def test_pages_and_filters(suite: Suite) -> None:
    member_id, _, _ = await history(suite)
    parent = f"members/{member_id}"
    first = await listed(suite, pb.ListTransactionsRequest(parent=parent, page_size=2))
    assert len(first.transactions) == 2 and first.next_page_token
    rest = await listed(
        suite,
        pb.ListTransactionsRequest(parent=parent, page_size=2, page_token=first.next_page_token),
    )
    assert [t.kind for t in rest.transactions] == ["settlement"]
    assert rest.next_page_token == ""
    only = await listed(suite, pb.ListTransactionsRequest(parent=parent, kinds=["refund"]))
    assert [t.kind for t in only.transactions] == ["refund"]
    future = await listed(
        suite, pb.ListTransactionsRequest(parent=parent, start_time=ts(NOW + 365 * DAY))
    )
    assert list(future.transactions) == []
    past = await listed(
        suite, pb.ListTransactionsRequest(parent=parent, end_time=ts(NOW + 365 * DAY))
    )
    assert len(past.transactions) == 3
    # a token is bound to its filter
    await expect_error(
        suite.points.ListTransactions(
            pb.ListTransactionsRequest(
                parent=parent, kinds=["refund"], page_token=first.next_page_token
            ),
            metadata=reader(suite),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_list_errors(suite: Suite) -> None:
    for request, code in (
        (pb.ListTransactionsRequest(parent="members/"), grpc.StatusCode.INVALID_ARGUMENT),
        (
            pb.ListTransactionsRequest(parent="members/m1", page_size=-1),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            pb.ListTransactionsRequest(parent="members/m1", page_token="garbage!"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            pb.ListTransactionsRequest(parent="members/m1", kinds=["DROP TABLE;"]),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            pb.ListTransactionsRequest(
                parent="members/m1", start_time=ts(NOW), end_time=ts(NOW - DAY)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (pb.ListTransactionsRequest(parent="members/nobody"), grpc.StatusCode.NOT_FOUND),
    ):
        await expect_error(suite.points.ListTransactions(request, metadata=reader(suite)), code)


async def test_a_settlement_is_explained_step_by_step(suite: Suite) -> None:
    _, settled, _ = await history(suite)
    got = await explained(suite, settled.transaction)
    assert got.name == settled.transaction
    assert (got.kind, got.points, got.rule_version) == ("settlement", 24, settled.rule_version)
    names = [s.name for s in got.steps]
    assert names[0] == "base" and "round_down" in names
    assert got.steps[-1].value == "24"
    assert got.sentence.startswith("Earned 24 points")
    assert all(s.note in got.sentence for s in got.steps)
    # the stored inputs, integers as strings (never floating point)
    data = json_format.MessageToDict(got.data)
    assert data["payment"]["amount_minor"] == "1234"
    assert data["payment"]["currency"] == "CNY"


async def test_kinds_without_a_computation_give_their_sentence(suite: Suite) -> None:
    member_id, _, back = await history(suite)
    got = await explained(suite, back.transaction)
    assert got.kind == "refund"
    assert "clawback_round_up" in [s.name for s in got.steps]
    assert got.sentence.startswith(f"Clawed back {back.points_clawed_back} points")
    page = await listed(suite, pb.ListTransactionsRequest(parent=f"members/{member_id}"))
    maturation = await explained(suite, page.transactions[0].name)
    assert maturation.kind == "maturation"
    assert "became available" in maturation.sentence
    lot = json_format.MessageToDict(maturation.data)["lot"]
    assert lot["lot_id"] == page.transactions[0].reference.value


async def test_explain_errors(suite: Suite) -> None:
    member_id, settled, _ = await history(suite)
    other = await known_member(suite)
    txn = settled.transaction.rsplit("/", 1)[1]
    not_found = grpc.StatusCode.NOT_FOUND
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    for name, code in (
        (f"members/{other}/transactions/{txn}", not_found),  # another member's
        (f"members/{member_id}/transactions/999999999", not_found),
        (f"members/{member_id}/transactions/abc", invalid),
        (f"members/{member_id}/transactions/", invalid),
        (f"members/{member_id}/settlements/{txn}", invalid),
        ("transactions/1", invalid),
        (f"members/{member_id}/transactions/{'9' * 30}", invalid),
    ):
        await expect_error(
            suite.points.ExplainTransaction(
                pb.ExplainTransactionRequest(name=name), metadata=reader(suite)
            ),
            code,
        )
