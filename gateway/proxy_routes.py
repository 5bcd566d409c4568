"""Which methods the gRPC pass-through serves and which backend owns each: read from the
services' generated descriptors, so a new RPC is proxied with no gateway code."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor

# imported for their side effect too: they put the services' descriptors in the default pool
from membership.accounts.v1 import accounts_pb2
from membership.points.v1 import points_pb2, promotions_pb2
from membership.privacy.v1 import audit_pb2, consent_pb2, data_rights_pb2, field_crypto_pb2

log = logging.getLogger("membership.gateway.grpc")

SERVICE_OWNERS: dict[str, str] = {
    service.full_name: owner
    for module, owner in (
        (accounts_pb2, "accounts"),
        (points_pb2, "points"),
        (promotions_pb2, "points"),
        (field_crypto_pb2, "privacy"),
        (consent_pb2, "privacy"),
        (data_rights_pb2, "privacy"),
        (audit_pb2, "privacy"),
    )
    for service in module.DESCRIPTOR.services_by_name.values()
}


@dataclass(frozen=True)
class ProxyRoute:
    """One proxied method: `/package.Service/Method` and the backend that owns it."""

    service: str
    method: str
    target: str
    server_streaming: bool

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.method}"


class PathHandlers(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Every proxied method behind one dict lookup by its path.

    Deliberately not `add_registered_method_handlers`: grpc.aio's server loop keeps one
    pending request per registered method and waits on all of them (`asyncio.wait`) again
    for every call that arrives, which with ~55 methods costs more than this lookup."""

    def __init__(self, handlers: Mapping[str, grpc.RpcMethodHandler]) -> None:
        self._handlers = dict(handlers)

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        return self._handlers.get(method)


def routes_of(backends: Mapping[str, str]) -> list[ProxyRoute]:
    routes: list[ProxyRoute] = []
    for service_name, target in sorted(backends.items()):
        if not target:
            raise ValueError(f"no backend address for {service_name}")
        routes += service_routes(service_descriptor(service_name), target)
    return routes


def service_descriptor(name: str) -> ServiceDescriptor:
    try:
        found: ServiceDescriptor = descriptor_pool.Default().FindServiceByName(name)
    except KeyError as exc:
        raise ValueError(f"unknown service {name}: not in the generated descriptors") from exc
    return found


def service_routes(service: ServiceDescriptor, target: str) -> list[ProxyRoute]:
    routes = []
    for method in service.methods:
        if method.client_streaming:
            # no service streams requests today; such a method stays UNIMPLEMENTED here
            log.warning(
                "client-streaming method not proxied",
                extra={"fields": {"method": f"/{service.full_name}/{method.name}"}},
            )
            continue
        routes.append(ProxyRoute(service.full_name, method.name, target, method.server_streaming))
    return routes
