"""What the gRPC pass-through does with metadata, and how it finds a method's handler."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import pytest

from gateway.proxy_metadata import (
    STATUS_DETAILS_KEY,
    Metadata,
    api_key_of,
    forwardable,
    new_request_id,
    request_id_of,
    to_client,
)
from gateway.proxy_routes import SERVICE_OWNERS, PathHandlers, routes_of
from services.runtime.errors import DomainError


def test_made_request_ids_are_unique_and_look_like_uuid_hex() -> None:
    made = [new_request_id() for _ in range(10_000)]
    assert len(set(made)) == len(made)
    for value in made[:3] + made[-3:]:
        assert len(value) == 32 and int(value, 16) >= 0


def test_the_callers_request_id_is_kept_when_fit() -> None:
    assert request_id_of((("x-request-id", "req-1"),)) == "req-1"
    for unfit in ("", "x" * 200, "tab\there"):
        made = request_id_of((("x-request-id", unfit),))
        assert made != unfit and len(made) == 32


@pytest.mark.parametrize(
    ("incoming", "reason"),
    [
        ((), "API_KEY_MISSING"),
        ((("authorization", "Basic abc"),), "API_KEY_MISSING"),
        ((("authorization", "Bearer a"), ("authorization", "Bearer b")), "API_KEY_INVALID"),
        ((("authorization", "Bearer " + "k" * 600),), "API_KEY_INVALID"),
    ],
)
def test_only_one_plausible_bearer_key_passes(incoming: Metadata, reason: str) -> None:
    with pytest.raises(DomainError) as raised:
        api_key_of(incoming)
    assert raised.value.reason == reason


def test_the_key_is_read_from_a_bearer_header() -> None:
    assert api_key_of((("authorization", "bearer  wm_key "),)) == "wm_key"


def test_only_the_callers_own_metadata_goes_on() -> None:
    incoming: Metadata = (
        ("authorization", "Bearer key"),
        ("x-request-id", "r"),
        ("user-agent", "grpc-python"),
        ("grpc-accept-encoding", "gzip"),
        ("proxy-authorization", "Basic x"),
        ("x-note", "kept"),
        ("x-blob-bin", b"\x00"),
    )
    assert forwardable(incoming) == (("x-note", "kept"), ("x-blob-bin", b"\x00"))


def test_the_backends_trailers_reach_the_caller_with_the_request_id() -> None:
    backend = (("x-backend", "b"), (STATUS_DETAILS_KEY, b"\x08"), ("grpc-status", "0"))
    assert to_client(backend, "r") == (
        ("x-backend", "b"),
        (STATUS_DETAILS_KEY, b"\x08"),
        ("x-request-id", "r"),
    )
    assert to_client((("x-request-id", "own"),), "r") == (("x-request-id", "own"),)
    assert to_client(None, "r") == (("x-request-id", "r"),)


@dataclass(frozen=True)
class Details:
    method: str
    invocation_metadata: Metadata = ()


def test_every_proxied_method_has_its_handler_and_nothing_else_does() -> None:
    routes = routes_of({service: "127.0.0.1:1" for service in SERVICE_OWNERS})
    handlers = {route.path: grpc.unary_unary_rpc_method_handler(print) for route in routes}
    lookup = PathHandlers(handlers)
    assert routes and all(lookup.service(Details(r.path)) is handlers[r.path] for r in routes)
    for unknown in ("/membership.points.v1.PointsService/Nope", "/grpc.health.v1.Health/Check"):
        assert lookup.service(Details(unknown)) is None
