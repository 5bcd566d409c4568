"""The gateway's gRPC pass-through, in front of the real services and of a fake backend.

The real services show what a client sees end to end (calls, errors with their details, the
backend's own scope check); a fake backend shows what the backend sees (metadata, deadline,
cancellation) and covers what the services cannot produce (server streaming, unreachable).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, wrappers_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from membership.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from membership.points.v1 import points_pb2, points_pb2_grpc
from prometheus_client import REGISTRY

from gateway.grpc_proxy import (
    GrpcProxy,
    Principal,
    backends_from,
    signer_minter,
    start_proxy,
)
from gateway.proxy_routes import SERVICE_OWNERS
from tests.service.test_points_settlement import payment
from tests.support.accounts import next_phone, next_request_id
from tests.support.rpc_errors import STATUS_DETAILS_KEY, expect_error, parse_rpc_error, rpc_error
from tests.support.suite import Metadata, Suite

POINTS = "membership.points.v1.PointsService"
GET_BALANCE = f"/{POINTS}/GetBalance"
REGISTER = "/membership.accounts.v1.AccountsService/RegisterMember"
WAIT_S = 15.0
_payments = count(1)


@dataclass(frozen=True)
class KeyOwner:
    subject: str
    role: str


KEY_OWNERS = {
    "key-wallet": KeyOwner("key:wallet-app", "wallet-backend"),
    "key-settle": KeyOwner("key:payments", "settlement"),
    "key-officer": KeyOwner("key:officer-1", "officer"),
}


class FakeKeys:
    """The gateway's key store as the proxy sees it: API key -> principal."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def authenticate(self, api_key: str) -> Principal:
        self.seen.append(api_key)
        owner = KEY_OWNERS.get(api_key)
        if owner is None:
            raise PermissionError("unknown API key")
        return owner


def key(name: str) -> Metadata:
    return (("authorization", f"Bearer key-{name}"),)


@dataclass
class Proxied:
    proxy: GrpcProxy
    channel: grpc.aio.Channel
    keys: FakeKeys
    port: int

    @property
    def accounts(self) -> accounts_pb2_grpc.AccountsServiceStub:
        return accounts_pb2_grpc.AccountsServiceStub(self.channel)

    @property
    def points(self) -> points_pb2_grpc.PointsServiceStub:
        return points_pb2_grpc.PointsServiceStub(self.channel)

    def raw(self, path: str) -> Any:
        """A bytes-in, bytes-out callable for any method path."""
        return self.channel.unary_unary(path)


@pytest.fixture
async def gateway(suite: Suite) -> AsyncIterator[Proxied]:
    keys = FakeKeys()
    proxy = GrpcProxy(
        backends_from(suite.settings),
        keys.authenticate,
        signer_minter(suite.signer),
        settings=suite.settings,
    )
    async with serving(proxy, keys) as proxied:
        yield proxied


@contextlib.asynccontextmanager
async def serving(proxy: GrpcProxy, keys: FakeKeys) -> AsyncIterator[Proxied]:
    """Starts the proxy on a free port with a client channel to it; stops both after."""
    _, port = await start_proxy(proxy, "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Proxied(proxy, channel, keys, port)
    finally:
        await channel.close()
        await proxy.stop(0.2)


async def settle_through(gateway: Proxied, member_id: str) -> points_pb2.Settlement:
    """Settles one payment once points knows the member (accounts' relay tells it)."""
    request = payment(member_id, f"gw-pay-{next(_payments)}", 10_000)
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            settled: points_pb2.Settlement = await gateway.points.SettlePayment(
                request, metadata=key("settle")
            )
            return settled
        except grpc.aio.AioRpcError as exc:
            # points answers UNAVAILABLE MEMBER_UNKNOWN (with RetryInfo) until it hears of
            # the member; older points said FAILED_PRECONDITION or NOT_FOUND
            unknown = exc.code() in (
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.UNAVAILABLE,
            )
            if not unknown or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def register_request(phone: str | None = None) -> accounts_pb2.RegisterMemberRequest:
    return accounts_pb2.RegisterMemberRequest(
        request_id=next_request_id("gw"), phone=next_phone() if phone is None else phone
    )


def rpcs_seen(service: str, method: str) -> float:
    """How many calls of `method` the in-process `service` has handled, whatever the code."""
    total = 0.0
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            labels = sample.labels
            if (
                sample.name == "membership_rpc_total"
                and labels.get("service") == service
                and labels.get("method") == method
            ):
                total += sample.value
    return total


# --- through the proxy to the real services ---------------------------------------------


async def test_register_settle_and_read_through_the_proxy(suite: Suite, gateway: Proxied) -> None:
    member = await gateway.accounts.RegisterMember(register_request(), metadata=key("wallet"))
    assert member.name.startswith("members/")
    member_id = member.name.removeprefix("members/")

    settled = await settle_through(gateway, member_id)
    assert settled.points > 0

    name = f"members/{member_id}/balance"
    through = await gateway.points.GetBalance(
        points_pb2.GetBalanceRequest(name=name), metadata=key("wallet")
    )
    direct = await suite.points.GetBalance(
        points_pb2.GetBalanceRequest(name=name), metadata=suite.auth("wallet-backend")
    )
    assert through == direct
    assert through.pending + through.available == settled.points
    # the API key went to the key store, never to a backend
    assert set(gateway.keys.seen) == {"key-wallet", "key-settle"}


async def test_backend_errors_reach_the_client_unchanged(suite: Suite, gateway: Proxied) -> None:
    bad_phone = register_request(phone="call-me-maybe")
    through = await expect_error(
        gateway.accounts.RegisterMember(bad_phone, metadata=key("wallet")),
        grpc.StatusCode.INVALID_ARGUMENT,
        fields={"phone"},
    )
    direct = await rpc_error(
        suite.accounts.RegisterMember(bad_phone, metadata=suite.auth("wallet-backend"))
    )
    assert through.has_status_details
    assert through.domain == "accounts.membership"
    assert (through.code, through.message, through.reason, through.violations) == (
        direct.code,
        direct.message,
        direct.reason,
        direct.violations,
    )


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((), "API_KEY_MISSING"),
        ((("authorization", "Bearer key-nobody"),), "API_KEY_INVALID"),
        ((("authorization", "Basic a2V5LXdhbGxldA=="),), "API_KEY_MISSING"),
        ((("authorization", "Bearer "),), "API_KEY_MISSING"),
        ((("authorization", "Bearer " + "k" * 600),), "API_KEY_INVALID"),
        # a good key next to another value is refused too: hops could read either one
        (
            (("authorization", "Bearer key-wallet"), ("authorization", "Bearer key-officer")),
            "API_KEY_INVALID",
        ),
    ],
)
async def test_without_a_valid_key_the_backend_is_not_called(
    gateway: Proxied, metadata: Metadata, reason: str
) -> None:
    before = rpcs_seen("accounts", REGISTER)
    err = await expect_error(
        gateway.accounts.RegisterMember(register_request(), metadata=metadata),
        grpc.StatusCode.UNAUTHENTICATED,
        reason=reason,
    )
    assert err.domain == "gateway.membership"
    assert "key-" not in err.message  # the key is never echoed
    assert rpcs_seen("accounts", REGISTER) == before


async def test_a_role_without_the_scope_is_denied_by_the_backend(gateway: Proxied) -> None:
    before = rpcs_seen("points", f"/{POINTS}/SettlePayment")
    err = await expect_error(
        gateway.points.SettlePayment(payment("mnobody", "gw-denied"), metadata=key("wallet")),
        grpc.StatusCode.PERMISSION_DENIED,
        reason="SCOPE_MISSING",
    )
    # the service checked the forwarded token itself
    assert err.domain == "points.membership"
    assert rpcs_seen("points", f"/{POINTS}/SettlePayment") == before + 1


async def test_a_tiny_client_deadline_is_exceeded(gateway: Proxied) -> None:
    request = points_pb2.GetBalanceRequest(name="members/mnobody/balance")
    err = await rpc_error(gateway.points.GetBalance(request, metadata=key("wallet"), timeout=1e-3))
    assert err.code == grpc.StatusCode.DEADLINE_EXCEEDED


@pytest.mark.parametrize(
    "path",
    [
        f"/{POINTS}/NoSuchMethod",
        "/membership.points.v1.NoSuchService/GetBalance",
        "/grpc.testing.TestService/EmptyCall",
    ],
)
async def test_unknown_methods_are_unimplemented(gateway: Proxied, path: str) -> None:
    err = await rpc_error(gateway.raw(path)(b"", metadata=key("wallet")))
    assert err.code == grpc.StatusCode.UNIMPLEMENTED


async def test_reflection_lists_the_services_and_health_is_serving(gateway: Proxied) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(gateway.channel)
    ask = reflection_pb2.ServerReflectionRequest(list_services="")
    listed: set[str] = set()
    async for answer in reflection.ServerReflectionInfo(iter([ask])):
        listed |= {s.name for s in answer.list_services_response.service}
    assert set(SERVICE_OWNERS) <= listed
    assert "grpc.health.v1.Health" in listed

    health = health_pb2_grpc.HealthStub(gateway.channel)
    for service in ["", POINTS]:
        status = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert status.status == health_pb2.HealthCheckResponse.SERVING


async def test_overhead_of_the_proxy_on_sequential_calls(suite: Suite, gateway: Proxied) -> None:
    """Prints (does not assert) the time per GetBalance call, direct and through the proxy;
    speed is judged by the benchmarks, not by tests."""
    member = await gateway.accounts.RegisterMember(register_request(), metadata=key("wallet"))
    await settle_through(gateway, member.name.removeprefix("members/"))
    request = points_pb2.GetBalanceRequest(name=f"{member.name}/balance")
    direct_auth = suite.auth("wallet-backend")
    calls = 200

    async def direct() -> object:
        return await suite.points.GetBalance(request, metadata=direct_auth)

    async def proxied() -> object:
        return await gateway.points.GetBalance(request, metadata=key("wallet"))

    timings = {}
    for label, call in (("direct", direct), ("proxy", proxied)) * 2:  # second round: warm
        started = time.perf_counter()
        for _ in range(calls):
            await call()
        timings[label] = (time.perf_counter() - started) / calls * 1e6
    overhead = timings["proxy"] - timings["direct"]
    print(
        f"\nGetBalance x{calls} sequential: direct {timings['direct']:.0f} µs/call, "
        f"through the proxy {timings['proxy']:.0f} µs/call "
        f"(+{overhead:.0f} µs, {timings['direct'] / timings['proxy']:.2f}x direct)"
    )


# --- a fake backend: what the backend sees ----------------------------------------------


ECHO_FILE = "tests/gateway_proxy_echo.proto"
ECHO = "test.proxy.v1.EchoService"


def echo_service() -> str:
    """A server-streaming service in the default descriptor pool (no service streams yet)."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(ECHO_FILE)
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto(
            name=ECHO_FILE,
            package="test.proxy.v1",
            dependency=[wrappers_pb2.DESCRIPTOR.name],
            syntax="proto3",
        )
        service = proto.service.add(name="EchoService")
        service.method.add(
            name="Repeat",
            input_type=".google.protobuf.StringValue",
            output_type=".google.protobuf.StringValue",
            server_streaming=True,
        )
        pool.AddSerializedFile(proto.SerializeToString())
    return ECHO


@dataclass
class Seen:
    metadata: list[tuple[str, str | bytes]]
    time_remaining: float | None


@dataclass
class FakeBackend:
    """GetBalance of PointsService and EchoService.Repeat, answering bytes as told."""

    behaviour: str = "echo"
    seen: list[Seen] = field(default_factory=list)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    async def get_balance(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.seen.append(Seen(list(context.invocation_metadata()), context.time_remaining()))
        if self.behaviour == "hang":
            self.entered.set()
            try:
                await asyncio.sleep(WAIT_S)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if self.behaviour == "fail":
            await context.abort(**failure_status())
        await context.send_initial_metadata((("x-backend-initial", "hello"),))
        context.set_trailing_metadata((("x-backend", "fake"), ("x-trace-bin", b"\x00\x01")))
        return request

    async def repeat(self, request: bytes, context: grpc.aio.ServicerContext) -> Any:
        for _ in range(3):
            yield request

    def add_to(self, server: grpc.aio.Server) -> None:
        for service, method, handler in (
            (POINTS, "GetBalance", grpc.unary_unary_rpc_method_handler(self.get_balance)),
            (ECHO, "Repeat", grpc.unary_stream_rpc_method_handler(self.repeat)),
        ):
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service, {method: handler}),)
            )


def failure_status() -> dict[str, Any]:
    info = error_details_pb2.ErrorInfo(reason="FAKE_REASON", domain="fake.membership")
    status = status_pb2.Status(code=code_pb2.FAILED_PRECONDITION, message="fake failure")
    status.details.add().Pack(info)
    converted = rpc_status.to_status(status)
    return {
        "code": converted.code,
        "details": converted.details,
        "trailing_metadata": (*converted.trailing_metadata, ("x-backend", "fake")),
    }


def minted(principal: Principal) -> str:
    return f"token-for-{principal.subject}-{principal.role}"


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeBackend, Proxied]]:
    backend = FakeBackend()
    server = grpc.aio.server()
    backend.add_to(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    keys = FakeKeys()
    target = f"127.0.0.1:{port}"
    proxy = GrpcProxy({POINTS: target, echo_service(): target}, keys.authenticate, minted)
    try:
        async with serving(proxy, keys) as proxied:
            yield backend, proxied
    finally:
        await server.stop(0)


def values(metadata: Sequence[tuple[str, str | bytes]], name: str) -> list[str | bytes]:
    return [v for k, v in metadata if k == name]


async def test_the_backend_gets_the_token_the_request_id_and_the_callers_metadata(
    fake: tuple[FakeBackend, Proxied],
) -> None:
    backend, proxied = fake
    call = proxied.raw(GET_BALANCE)(
        b"\x0a\x03abc",
        metadata=(
            *key("wallet"),
            ("x-request-id", "req-from-client"),
            ("x-client-note", "kept"),
            ("x-blob-bin", b"\xff\x00"),
            ("proxy-authorization", "Basic c2VjcmV0"),
        ),
    )
    assert await call == b"\x0a\x03abc"  # the bytes, untouched
    [seen] = backend.seen
    assert values(seen.metadata, "authorization") == [
        "Bearer token-for-key:wallet-app-wallet-backend"
    ]
    assert values(seen.metadata, "x-request-id") == ["req-from-client"]
    assert values(seen.metadata, "x-client-note") == ["kept"]
    assert values(seen.metadata, "x-blob-bin") == [b"\xff\x00"]
    assert values(seen.metadata, "proxy-authorization") == []
    # the backend's metadata reaches the client, with the request id
    assert values(await call.initial_metadata(), "x-backend-initial") == ["hello"]
    trailing = await call.trailing_metadata()
    assert values(trailing, "x-backend") == ["fake"]
    assert values(trailing, "x-trace-bin") == [b"\x00\x01"]
    assert values(trailing, "x-request-id") == ["req-from-client"]


# (gRPC itself refuses values with control or non-ASCII characters)
@pytest.mark.parametrize("sent", [None, "", "x" * 200])
async def test_a_request_id_is_made_when_missing_or_unfit(
    fake: tuple[FakeBackend, Proxied], sent: str | None
) -> None:
    backend, proxied = fake
    extra = () if sent is None else (("x-request-id", sent),)
    call = proxied.raw(GET_BALANCE)(b"", metadata=(*key("wallet"), *extra))
    await call
    [made] = values(backend.seen[0].metadata, "x-request-id")
    assert isinstance(made, str) and 0 < len(made) <= 128 and made != sent
    assert values(await call.trailing_metadata(), "x-request-id") == [made]


async def test_backend_status_details_and_trailers_pass_through(
    fake: tuple[FakeBackend, Proxied],
) -> None:
    backend, proxied = fake
    backend.behaviour = "fail"
    try:
        await proxied.raw(GET_BALANCE)(b"", metadata=key("wallet"))
    except grpc.aio.AioRpcError as exc:
        failed = exc
    else:
        raise AssertionError("the call should fail")
    err = parse_rpc_error(failed)
    assert (err.code, err.message, err.reason, err.domain) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "fake failure",
        "FAKE_REASON",
        "fake.membership",
    )
    assert failed.details() == "fake failure"
    trailing = failed.trailing_metadata()
    assert values(trailing, "x-backend") == ["fake"]
    assert len(values(trailing, STATUS_DETAILS_KEY)) == 1


async def test_the_callers_deadline_reaches_the_backend(fake: tuple[FakeBackend, Proxied]) -> None:
    backend, proxied = fake
    await proxied.raw(GET_BALANCE)(b"", metadata=key("wallet"), timeout=2.0)
    await proxied.raw(GET_BALANCE)(b"", metadata=key("wallet"))
    with_deadline, without = (s.time_remaining for s in backend.seen)
    # gRPC sends timeouts in coarse units, rounded up (by up to a few hundred ms)
    assert with_deadline is not None and 1.0 < with_deadline <= 2.5
    # no deadline from the caller: the proxy's cap (30 s) still bounds the backend call
    assert without is not None and 25.0 < without <= 30.5


async def test_a_hanging_backend_times_out_with_the_caller(
    fake: tuple[FakeBackend, Proxied],
) -> None:
    backend, proxied = fake
    backend.behaviour = "hang"
    err = await rpc_error(proxied.raw(GET_BALANCE)(b"", metadata=key("wallet"), timeout=0.3))
    assert err.code == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.wait_for(backend.cancelled.wait(), 5)


async def test_cancelling_the_call_cancels_the_backend_call(
    fake: tuple[FakeBackend, Proxied],
) -> None:
    backend, proxied = fake
    backend.behaviour = "hang"
    call = proxied.raw(GET_BALANCE)(b"", metadata=key("wallet"), timeout=10)
    await asyncio.wait_for(backend.entered.wait(), 5)
    call.cancel()
    await asyncio.wait_for(backend.cancelled.wait(), 5)


async def test_server_streaming_is_relayed(fake: tuple[FakeBackend, Proxied]) -> None:
    _, proxied = fake
    hello = wrappers_pb2.StringValue(value="hi").SerializeToString()
    call = proxied.channel.unary_stream(f"/{ECHO}/Repeat")(hello, metadata=key("wallet"))
    assert [message async for message in call] == [hello] * 3
    assert await call.code() == grpc.StatusCode.OK


async def test_an_unreachable_backend_is_unavailable() -> None:
    keys = FakeKeys()
    proxy = GrpcProxy({POINTS: "127.0.0.1:1"}, keys.authenticate, minted)
    async with serving(proxy, keys) as proxied:
        err = await expect_error(
            proxied.raw(GET_BALANCE)(b"", metadata=key("wallet"), timeout=5),
            grpc.StatusCode.UNAVAILABLE,
            reason="BACKEND_UNAVAILABLE",
        )
    assert err.domain == "gateway.membership"
    assert err.metadata == {"service": POINTS}
    assert "127.0.0.1" not in err.message


def test_only_known_services_can_be_proxied() -> None:
    keys = FakeKeys()
    with pytest.raises(ValueError, match="unknown service"):
        GrpcProxy({"membership.points.v1.NoSuchService": "127.0.0.1:1"}, keys.authenticate, minted)


async def test_a_busy_port_fails_cleanly_and_a_proxy_serves_once(
    fake: tuple[FakeBackend, Proxied],
) -> None:
    _, proxied = fake
    other = GrpcProxy({POINTS: "127.0.0.1:1"}, FakeKeys().authenticate, minted)
    with pytest.raises(OSError, match="could not listen"):
        await start_proxy(other, f"127.0.0.1:{proxied.port}")
    with pytest.raises(RuntimeError, match="already serving"):
        await start_proxy(proxied.proxy, "127.0.0.1:0")


async def test_a_principal_the_token_cannot_carry_is_an_internal_error() -> None:
    def refuse(principal: Principal) -> str:
        raise ValueError(f"unknown role {principal.role!r}")

    keys = FakeKeys()
    # the backend is unreachable: a forwarded call would be UNAVAILABLE
    proxy = GrpcProxy({POINTS: "127.0.0.1:1"}, keys.authenticate, refuse)
    async with serving(proxy, keys) as broken:
        err = await expect_error(
            broken.raw(GET_BALANCE)(b"", metadata=key("wallet")),
            grpc.StatusCode.INTERNAL,
            reason="INTERNAL",
        )
    assert (err.domain, err.message) == ("gateway.membership", "internal error")


def rpcs_by_code(service: str, method: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            labels = sample.labels
            if (
                sample.name == "membership_rpc_total"
                and labels.get("service") == service
                and labels.get("method") == method
            ):
                counts[labels["code"]] = counts.get(labels["code"], 0.0) + sample.value
    return counts


async def test_each_proxied_call_is_counted_by_its_outcome(
    fake: tuple[FakeBackend, Proxied],
) -> None:
    backend, proxied = fake
    before = rpcs_by_code("gateway", GET_BALANCE)
    await proxied.raw(GET_BALANCE)(b"", metadata=key("wallet"))
    await rpc_error(proxied.raw(GET_BALANCE)(b"", metadata=key("nobody")))
    backend.behaviour = "fail"
    await rpc_error(proxied.raw(GET_BALANCE)(b"", metadata=key("wallet")))
    after = rpcs_by_code("gateway", GET_BALANCE)
    grown = {code: after[code] - before.get(code, 0.0) for code in after}
    assert {code: n for code, n in grown.items() if n} == {
        "OK": 1,
        "UNAUTHENTICATED": 1,
        "FAILED_PRECONDITION": 1,
    }
