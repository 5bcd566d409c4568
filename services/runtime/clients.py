"""Outgoing gRPC: channels with bounded retries and deadlines, and this service's own token."""

from __future__ import annotations

import json
import time

import grpc

from services.runtime.context import request_id
from services.runtime.identity import TokenSigner

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
