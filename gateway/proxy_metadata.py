"""What the gRPC pass-through does with metadata: the caller's API key and request id in,
the caller's own metadata on to the backend, the backend's metadata back to the caller."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterable, Sequence

import grpc

from services.runtime.context import MAX_REQUEST_ID_LEN, set_request_id
from services.runtime.errors import unauthenticated

Metadata = tuple[tuple[str, str | bytes], ...]

MAX_API_KEY_LEN = 512
STATUS_DETAILS_KEY = "grpc-status-details-bin"

# Never forwarded either way: HTTP/2 pseudo-headers and grpc-* are the transport's own,
# hop-by-hop headers describe one connection, and user-agent is set by each hop's library.
# `authorization` and `x-request-id` are replaced with the proxy's own values.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-type",
        "user-agent",
    }
)
REPLACED = frozenset({"authorization", "x-request-id"})

# made request ids: a random prefix per process and a counter, 32 hex digits like a uuid4's.
# A request id only has to be unique (it ties log lines together; callers may choose their
# own), and uuid4 would cost a getrandom() system call on every call without one.
_ID_PREFIX = secrets.token_hex(8)
_ID_COUNTER = itertools.count()


def api_key_of(incoming: Metadata) -> str:
    values = [v for k, v in incoming if k == "authorization"]
    if not values:
        raise unauthenticated("API_KEY_MISSING", "missing API key (authorization: Bearer)")
    # two authorization values could be read differently by two hops: refuse both
    if len(values) > 1 or not isinstance(values[0], str):
        raise unauthenticated("API_KEY_INVALID", "exactly one authorization value is allowed")
    scheme, _, key = values[0].partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise unauthenticated("API_KEY_MISSING", "missing API key (authorization: Bearer)")
    if len(key) > MAX_API_KEY_LEN:
        raise unauthenticated("API_KEY_INVALID", "API key is not valid")
    return key


def request_id_of(incoming: Metadata) -> str:
    for key, value in incoming:
        if key == "x-request-id" and isinstance(value, str) and is_request_id(value):
            return value
    return new_request_id()


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def is_request_id(value: str) -> bool:
    # it reaches every service's logs: bounded, printable ASCII
    return 0 < len(value) <= MAX_REQUEST_ID_LEN and value.isascii() and value.isprintable()


def is_transport(key: str) -> bool:
    return key.startswith((":", "grpc-")) or key in HOP_BY_HOP


def forwardable(incoming: Iterable[tuple[str, str | bytes]]) -> Metadata:
    """The caller's own metadata that goes on to the backend."""
    return tuple((k, v) for k, v in incoming if not is_transport(k) and k not in REPLACED)


def to_client(backend: Iterable[tuple[str, str | bytes]] | None, request_id: str) -> Metadata:
    """The backend's metadata for the caller, with the request id (the caller may not have
    sent one) unless the backend already named it."""
    kept = tuple((k, v) for k, v in backend or () if k == STATUS_DETAILS_KEY or not is_transport(k))
    if any(k == "x-request-id" for k, _ in kept):
        return kept
    return (*kept, ("x-request-id", request_id))


async def relay_initial(
    context: grpc.aio.ServicerContext, backend: Sequence[tuple[str, str | bytes]] | None
) -> None:
    kept = tuple((k, v) for k, v in backend or () if not is_transport(k))
    # services send none today; sending an empty set would cost a round of the server loop
    if kept:
        await context.send_initial_metadata(kept)


def incoming_of(context: grpc.aio.ServicerContext) -> tuple[Metadata, str]:
    """The caller's metadata and the call's request id, which from here on is in the
    context of every log line about the call."""
    incoming = tuple(context.invocation_metadata() or ())
    request_id = request_id_of(incoming)
    set_request_id(request_id)
    return incoming, request_id
