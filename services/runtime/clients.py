"""Outgoing gRPC: channels with bounded retries and deadlines, and this service's own token."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc

from services.runtime.context import request_id
from services.runtime.identity import TokenSigner

T = TypeVar("T")

SERVICE_TOKEN_TTL_S = 300
# re-mint before expiry so a token never expires in flight
SERVICE_TOKEN_REFRESH_S = 60

# Retries only where gRPC knows the call never reached the handler or the method is safe;
# attempts and backoff are bounded.
_RETRY_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


def open_channel(target: str, max_message_bytes: int) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.service_config", _RETRY_SERVICE_CONFIG),
            ("grpc.enable_retries", 1),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
        ],
    )


class ServiceCredentials:
    """Mints and caches the calling service's own short-lived caller token."""

    def __init__(self, signer: TokenSigner, role: str) -> None:
        self._signer = signer
        self._role = role
        self._token = ""
        self._expires_at = 0.0

    def metadata(self) -> tuple[tuple[str, str], ...]:
        now = time.time()
        if now > self._expires_at - SERVICE_TOKEN_REFRESH_S:
            self._token = self._signer.mint(self._role, self._role, SERVICE_TOKEN_TTL_S)
            self._expires_at = now + SERVICE_TOKEN_TTL_S
        return (("authorization", f"Bearer {self._token}"), ("x-request-id", request_id()))


class ReconnectingChannel:
    """A channel for a background sender (an outbox relay) that is replaced by a fresh one
    after UNAVAILABLE: a channel's own reconnection backoff grows to two minutes over a long
    outage, while a fresh channel connects at once, so the receiver is reached again within
    the sender's own backoff of its return."""

    def __init__(self, connect: Callable[[], grpc.aio.Channel]) -> None:
        self._connect = connect
        self._channel = connect()

    async def call(self, rpc: Callable[[grpc.aio.Channel], Awaitable[T]]) -> T:
        try:
            return await rpc(self._channel)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.UNAVAILABLE:
                stale, self._channel = self._channel, self._connect()
                await stale.close()
            raise

    async def stream(self, rpc: Callable[[grpc.aio.Channel], AsyncIterator[T]]) -> AsyncIterator[T]:
        """A server stream's messages, with `call`'s fresh channel after UNAVAILABLE."""
        try:
            async for message in rpc(self._channel):
                yield message
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.UNAVAILABLE:
                stale, self._channel = self._channel, self._connect()
                await stale.close()
            raise

    async def close(self) -> None:
        await self._channel.close()


# what an outbox sender's call is given: the channel, the deadline and the caller metadata
OutboxRpc = Callable[[grpc.aio.Channel, float, tuple[tuple[str, str], ...]], Awaitable[T]]


class OutboxSender:
    """The calls of an outbox relay's sender to another service: on a ReconnectingChannel,
    as this service's role, within the outgoing deadline."""

    def __init__(
        self,
        connect: Callable[[], grpc.aio.Channel],
        credentials: ServiceCredentials,
        timeout_s: float,
    ) -> None:
        self._channel = ReconnectingChannel(connect)
        self._credentials = credentials
        self._timeout_s = timeout_s

    async def send(self, rpc: OutboxRpc[T]) -> T:
        metadata = self._credentials.metadata()
        return await self._channel.call(lambda channel: rpc(channel, self._timeout_s, metadata))

    async def close(self) -> None:
        await self._channel.close()
