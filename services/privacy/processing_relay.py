"""The relay of privacy's outbox to points: processing pauses (a withdrawn or re-granted
`payment_records` consent), delivered at least once through ApplyProcessingEvents, so that
points refuses a paused member's payments without asking privacy on the settlement path."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import asyncpg
import grpc
from google.protobuf import timestamp_pb2
from membership.points.v1 import points_pb2 as pb
from membership.points.v1 import points_pb2_grpc as pb_grpc

from services.privacy import store_outbox as store
from services.runtime import outbox_relay as relay
from services.runtime.clients import ReconnectingChannel, ServiceCredentials
from services.runtime.db import Conn
from services.runtime.outbox_relay import MalformedEventError

BATCH_SIZE = 500  # ApplyProcessingEvents takes at most 500 events
CAUSES = {
    "CONSENT_WITHDRAWN": pb.PROCESSING_CAUSE_CONSENT_WITHDRAWN,
    "RESTRICTION_REQUESTED": pb.PROCESSING_CAUSE_RESTRICTION_REQUESTED,
}


def to_processing_event(event: store.PauseEvent) -> pb.ProcessingEvent:
    cause = CAUSES.get(event.cause)
    if cause is None:
        raise MalformedEventError(event.event_id)
    time = timestamp_pb2.Timestamp()
    time.FromDatetime(event.created_at)
    return pb.ProcessingEvent(
        event_id=event.event_id,
        member=f"members/{event.member_id}",
        cause=cause,
        paused=event.paused,
        event_time=time,
    )


class PauseEventsOutbox:
    """privacy.outbox, as its relay takes, delivers and marks it."""

    def __init__(
        self,
        connect: Callable[[], grpc.aio.Channel],
        credentials: ServiceCredentials,
        timeout_s: float,
    ) -> None:
        self._channel = ReconnectingChannel(connect)
        self._credentials = credentials
        self._timeout_s = timeout_s

    async def take(self, conn: Conn, limit: int) -> Sequence[store.PauseEvent] | None:
        if not await store.try_lock_outbox(conn):
            return None
        return await store.unpublished(conn, limit)

    async def deliver(self, events: Sequence[store.PauseEvent]) -> None:
        request = pb.ApplyProcessingEventsRequest(events=[to_processing_event(e) for e in events])
        await self._channel.call(
            lambda channel: pb_grpc.PointsServiceStub(channel).ApplyProcessingEvents(
                request, timeout=self._timeout_s, metadata=self._credentials.metadata()
            )
        )

    async def mark(self, conn: Conn, events: Sequence[store.PauseEvent]) -> None:
        await store.mark_published(conn, events)

    def last_event_id(self, events: Sequence[store.PauseEvent]) -> int:
        return events[-1].event_id

    async def close(self) -> None:
        await self._channel.close()


def pause_relay(
    pool: asyncpg.Pool, outbox: PauseEventsOutbox
) -> relay.OutboxRelay[store.PauseEvent]:
    return relay.OutboxRelay(pool, outbox, name="privacy", batch_size=BATCH_SIZE)
