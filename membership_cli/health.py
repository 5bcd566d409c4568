"""Standard gRPC health probes of the suite's services."""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = "SERVING"


def probe(addr: str, timeout_s: float) -> str:
    """The overall status name at `addr`, or the gRPC error code name when it cannot say.

    A fresh channel per probe: a reused channel backs off after a refused connection and
    would notice a server that just started listening only seconds later.
    """
    with grpc.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
        except grpc.RpcError as exc:
            return str(exc.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def probe_all(addrs: Mapping[str, str], timeout_s: float) -> dict[str, str]:
    return {name: probe(addr, timeout_s) for name, addr in addrs.items()}
