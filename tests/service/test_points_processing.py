"""ApplyProcessingEvents: privacy pauses settling a member's payments (a withdrawn
`payment_records` consent, a restriction request); settlement refuses them with
PROCESSING_RESTRICTED until every cause is lifted, without calling privacy."""

from __future__ import annotations

from itertools import count

import grpc
from membership.points.v1 import points_pb2 as pb

from tests.service.test_points_settlement import (
    NOW,
    announce,
    known_member,
    payment,
    settler,
    ts,
)
from tests.support.rpc_errors import expect_error
from tests.support.suite import Suite

CONSENT = pb.PROCESSING_CAUSE_CONSENT_WITHDRAWN
RESTRICTION = pb.PROCESSING_CAUSE_RESTRICTION_REQUESTED
_event_ids = count(1)


def event(
    member_id: str, cause: pb.ProcessingCause.ValueType, paused: bool, event_id: int = 0
) -> pb.ProcessingEvent:
    return pb.ProcessingEvent(
        event_id=event_id or next(_event_ids),
        member=f"members/{member_id}",
        cause=cause,
        paused=paused,
        event_time=ts(NOW),
    )


async def apply(suite: Suite, *events: pb.ProcessingEvent) -> pb.ApplyProcessingEventsResponse:
    reply: pb.ApplyProcessingEventsResponse = await suite.points.ApplyProcessingEvents(
        pb.ApplyProcessingEventsRequest(events=list(events)),
        metadata=suite.auth("service:privacy"),
    )
    return reply


async def balance(suite: Suite, member_id: str) -> pb.Balance:
    reply: pb.Balance = await suite.points.GetBalance(
        pb.GetBalanceRequest(name=f"members/{member_id}/balance"), metadata=suite.auth("officer")
    )
    return reply


async def test_a_paused_member_is_refused_until_consent_is_given_again(suite: Suite) -> None:
    member_id = await known_member(suite)
    first = await suite.points.SettlePayment(payment(member_id, "p-1"), metadata=settler(suite))
    assert (await apply(suite, event(member_id, CONSENT, True))).applied == 1
    before = await balance(suite, member_id)
    await expect_error(
        suite.points.SettlePayment(payment(member_id, "p-2"), metadata=settler(suite)),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="PROCESSING_RESTRICTED",
    )
    batch = await suite.points.SettlePayments(
        pb.SettlePaymentsRequest(requests=[payment(member_id, "p-3")]), metadata=settler(suite)
    )
    assert batch.results[0].error_reason == "PROCESSING_RESTRICTED"
    assert await balance(suite, member_id) == before  # nothing written
    # a payment settled before the pause still answers with its first result
    again = await suite.points.SettlePayment(payment(member_id, "p-1"), metadata=settler(suite))
    assert again == first
    await apply(suite, event(member_id, CONSENT, False))
    settled = await suite.points.SettlePayment(payment(member_id, "p-2"), metadata=settler(suite))
    assert settled.points > 0


async def test_each_cause_pauses_on_its_own(suite: Suite) -> None:
    member_id = await known_member(suite)
    await apply(suite, event(member_id, CONSENT, True), event(member_id, RESTRICTION, True))
    await apply(suite, event(member_id, CONSENT, False))
    await expect_error(
        suite.points.SettlePayment(payment(member_id, "p-1"), metadata=settler(suite)),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="PROCESSING_RESTRICTED",
    )
    await apply(suite, event(member_id, RESTRICTION, False))
    assert (
        await suite.points.SettlePayment(payment(member_id, "p-1"), metadata=settler(suite))
    ).points > 0


async def test_redelivered_and_older_events_are_skipped(suite: Suite) -> None:
    member_id = await known_member(suite)
    pause = event(member_id, CONSENT, True, event_id=10)
    assert (await apply(suite, pause)).applied == 1
    redelivered = await apply(suite, pause, event(member_id, CONSENT, False, event_id=9))
    assert (redelivered.applied, redelivered.skipped) == (0, 2)  # an older resume undoes nothing
    await expect_error(
        suite.points.SettlePayment(payment(member_id, "p-1"), metadata=settler(suite)),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="PROCESSING_RESTRICTED",
    )


async def test_a_pause_may_arrive_before_the_member(suite: Suite) -> None:
    """Privacy's and accounts' outboxes are independent: the order they arrive in is not."""
    member_id = "mptsearly01"
    await apply(suite, event(member_id, CONSENT, True))
    await announce(suite, member_id)
    await expect_error(
        suite.points.SettlePayment(payment(member_id, "p-1"), metadata=settler(suite)),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="PROCESSING_RESTRICTED",
    )


async def test_bad_events_are_refused_whole(suite: Suite) -> None:
    member_id = await known_member(suite)
    bad = pb.ProcessingEvent(event_id=0, member="nobody", event_time=ts(NOW))
    err = await expect_error(
        suite.points.ApplyProcessingEvents(
            pb.ApplyProcessingEventsRequest(events=[event(member_id, CONSENT, True), bad]),
            metadata=suite.auth("service:privacy"),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert err.fields == {"events[1].event_id", "events[1].member", "events[1].cause"}
    await expect_error(
        suite.points.ApplyProcessingEvents(
            pb.ApplyProcessingEventsRequest(), metadata=suite.auth("service:privacy")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    # nothing of the refused call was applied
    assert (
        await suite.points.SettlePayment(payment(member_id, "p-1"), metadata=settler(suite))
    ).points > 0


async def test_only_privacy_may_pause(suite: Suite) -> None:
    member_id = await known_member(suite)
    for role in ("wallet-backend", "settlement", "officer", "admin", "service:accounts"):
        await expect_error(
            suite.points.ApplyProcessingEvents(
                pb.ApplyProcessingEventsRequest(events=[event(member_id, CONSENT, True)]),
                metadata=suite.auth(role),
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )
