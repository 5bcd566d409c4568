"""Routes from the protos' `google.api.http` rules and matching of every template shape."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from google.api import annotations_pb2, http_pb2  # type: ignore[import-untyped]
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor
from membership.accounts.v1 import accounts_pb2
from membership.points.v1 import points_pb2
from membership.privacy.v1 import audit_pb2, consent_pb2, data_rights_pb2, field_crypto_pb2

from gateway.http_rules import RouteTable, TemplateError, parse_template, routes_of

MODULES = (accounts_pb2, points_pb2, field_crypto_pb2, consent_pb2, data_rights_pb2, audit_pb2)


def all_services() -> list[ServiceDescriptor]:
    return [s for m in MODULES for s in m.DESCRIPTOR.services_by_name.values()]


@pytest.fixture(scope="module")
def table() -> RouteTable:
    return RouteTable.from_services(all_services())


def fake_services(rules: Sequence[tuple[str, http_pb2.HttpRule]]) -> list[ServiceDescriptor]:
    """One service `t.v1.TService` with a method per (name, rule), in a pool of its own."""
    pool = descriptor_pool.DescriptorPool()
    for dep in (descriptor_pb2.DESCRIPTOR, http_pb2.DESCRIPTOR, annotations_pb2.DESCRIPTOR):
        proto = descriptor_pb2.FileDescriptorProto()
        dep.CopyToProto(proto)
        pool.Add(proto)
    file = descriptor_pb2.FileDescriptorProto(
        name="t/v1/t.proto",
        package="t.v1",
        syntax="proto3",
        dependency=["google/api/annotations.proto"],
    )
    inner = file.message_type.add(name="Inner")
    inner.field.add(name="id", number=1, type=9, label=1, json_name="id")
    req = file.message_type.add(name="Req")
    req.field.add(name="name", number=1, type=9, label=1, json_name="name")
    req.field.add(name="inner", number=2, type=11, label=1, type_name=".t.v1.Inner")
    req.field.add(name="tags", number=3, type=9, label=3, json_name="tags")
    service = file.service.add(name="TService")
    for name, rule in rules:
        method = service.method.add(name=name, input_type=".t.v1.Req", output_type=".t.v1.Req")
        method.options.Extensions[annotations_pb2.http].CopyFrom(rule)
    pool.Add(file)
    return [pool.FindServiceByName("t.v1.TService")]


def test_every_rpc_of_every_service_is_a_route() -> None:
    services = all_services()
    # a server-streaming RPC (StreamMemberLedger) is gRPC only: REST answers one message per
    # call (docs/design.md §3, the departure of 2026-12-07)
    methods = {
        (s.full_name, m.name): m for s in services for m in s.methods if not m.server_streaming
    }
    routes = routes_of(services)
    assert len(routes) == len(methods)
    assert {(r.service, r.method) for r in routes} == set(methods)
    for route in routes:
        method = methods[route.service, route.method]
        assert route.rpc_path == f"/{route.service}/{route.method}"
        assert route.request_class.DESCRIPTOR.full_name == method.input_type.full_name
        assert route.response_class.DESCRIPTOR.full_name == method.output_type.full_name
        assert route.http_method in {"GET", "POST", "PATCH", "PUT", "DELETE"}
    assert len(RouteTable(routes).routes) == len(routes)


def test_route_carries_the_rule(table: RouteTable) -> None:
    match = table.match("PATCH", "/v1/members/m1")
    assert match is not None
    route = match.route
    assert route.http_method == "PATCH"
    assert route.template == "/v1/{member.name=members/*}"
    assert route.service == "membership.accounts.v1.AccountsService"
    assert route.rpc_path == "/membership.accounts.v1.AccountsService/UpdateMember"
    assert route.body == "member"
    assert route.request_class is accounts_pb2.UpdateMemberRequest
    assert route.response_class is accounts_pb2.Member


@pytest.mark.parametrize(
    ("method", "path", "rpc", "variables"),
    [
        ("GET", "/v1/members", "ListMembers", {}),
        ("POST", "/v1/members", "RegisterMember", {}),
        ("GET", "/v1/members/m1", "GetMember", {"name": "members/m1"}),
        ("get", "/v1/members/m1?view=FULL", "GetMember", {"name": "members/m1"}),
        ("PATCH", "/v1/members/m1", "UpdateMember", {"member.name": "members/m1"}),
        ("POST", "/v1/members:lookup", "LookupMember", {}),
        ("POST", "/v1/members/m1:freeze", "FreezeMember", {"name": "members/m1"}),
        ("GET", "/v1/members/m1/balance", "GetBalance", {"name": "members/m1/balance"}),
        (
            "POST",
            "/v1/members/m1/holds/h1:capture",
            "CapturePoints",
            {"name": "members/m1/holds/h1"},
        ),
        (
            "GET",
            "/v1/members/m1/transactions/t9:explain",
            "ExplainTransaction",
            {"name": "members/m1/transactions/t9"},
        ),
        (
            "POST",
            "/v1/members/m1/payments/p7:refund",
            "RefundPayment",
            {"member": "members/m1", "payment_id": "p7"},
        ),
        ("GET", "/v1/members/m1/transactions", "ListTransactions", {"parent": "members/m1"}),
        ("POST", "/v1/processingEvents:apply", "ApplyProcessingEvents", {}),
        ("GET", "/v1/auditEvents", "ListAuditEvents", {}),
        ("GET", "/v1/auditEvents:verifyChain", "VerifyAuditChain", {}),
        (
            "GET",
            "/v1/members/m1/consents/marketing:check",
            "CheckConsent",
            {"member": "members/m1", "purpose": "marketing"},
        ),
        (
            "POST",
            "/v1/dataRequests/d1/export:download",
            "DownloadExport",
            {"name": "dataRequests/d1/export"},
        ),
        # an id that holds a colon is still a value when no route has that verb
        ("GET", "/v1/members/m1:x", "GetMember", {"name": "members/m1:x"}),
    ],
)
def test_match(
    table: RouteTable, method: str, path: str, rpc: str, variables: dict[str, str]
) -> None:
    match = table.match(method, path)
    assert match is not None
    assert match.route.method == rpc
    assert match.variables == variables


@pytest.mark.parametrize(
    ("path", "variables"),
    [
        # URL-decoded once: %2525 is the text %25, not %
        ("/v1/members/m1/payments/a%20b%2525:refund", {"payment_id": "a b%25"}),
        # a single-segment variable decodes an encoded slash...
        ("/v1/members/m1/payments/a%2Fb:refund", {"payment_id": "a/b"}),
        # ...a multi-segment one keeps it encoded (http.proto), so it never adds a segment
        ("/v1/members/m%2F1/payments/p:refund", {"member": "members/m%2F1"}),
        ("/v1/members/%E5%BC%A0/payments/p:refund", {"member": "members/张"}),
    ],
)
def test_url_decoding(table: RouteTable, path: str, variables: dict[str, str]) -> None:
    match = table.match("POST", path)
    assert match is not None
    assert match.route.method == "RefundPayment"
    assert variables.items() <= match.variables.items()


def test_allowed_methods_for_405(table: RouteTable) -> None:
    assert table.allowed_methods("/v1/members/m1") == {"GET", "PATCH"}
    assert table.match("DELETE", "/v1/members/m1") is None
    assert table.allowed_methods("/v1/members") == {"GET", "POST"}
    # a known verb binds the verb's routes only: GET on a custom method is 405, not GetMember
    assert table.match("GET", "/v1/members/m1:freeze") is None
    assert table.allowed_methods("/v1/members/m1:freeze") == {"POST"}
    assert table.allowed_methods("/v1/nothing") == set()


@pytest.mark.parametrize(
    "path",
    [
        "/v1/members/",
        "/v1/members//balance",
        "/v1/members/a/b",  # `*` never matches a slash
        "/v1/members/m1/balance/x",
        "/v1/members/m1/holds:capture",
        "/v1/members/m1/holds/h1/x:capture",
        "/v1/members/m1:nope:freeze/x",
        "/v2/members",
        "v1/members",
        "/v1/Members",
        "/v1/members/m1/payments:refund",
        "/v1/members/%FF",  # not UTF-8
        "",
        "/",
    ],
)
def test_no_false_matches(table: RouteTable, path: str) -> None:
    for method in ("GET", "POST", "PATCH", "PUT", "DELETE"):
        assert table.match(method, path) is None
    assert table.allowed_methods(path) == set()


def _rule(**kwargs: str) -> http_pb2.HttpRule:
    return http_pb2.HttpRule(**kwargs)


def test_literal_route_wins_over_variable() -> None:
    services = fake_services(
        [
            ("GetThing", _rule(get="/v1/{name=things/*}")),
            ("Special", _rule(get="/v1/things/special")),
            ("Any", _rule(get="/v1/{name=**}")),
        ]
    )
    table = RouteTable.from_services(services)
    special = table.match("GET", "/v1/things/special")
    thing = table.match("GET", "/v1/things/t1")
    anything = table.match("GET", "/v1/a/b/c")
    assert special is not None and special.route.method == "Special"
    assert thing is not None and thing.route.method == "GetThing"
    assert anything is not None and anything.route.method == "Any"
    assert anything.variables == {"name": "a/b/c"}


def test_double_wildcard_verb_and_additional_bindings() -> None:
    rule = _rule(get="/v1/{name=files/**}:stat")
    rule.additional_bindings.add(post="/v1/{inner.id}/tags", body="tags")
    rule.additional_bindings.add(custom=http_pb2.CustomHttpPattern(kind="put", path="/v1/{name}"))
    routes = routes_of(fake_services([("Stat", rule)]))
    assert [(r.http_method, r.template, r.body) for r in routes] == [
        ("GET", "/v1/{name=files/**}:stat", ""),
        ("POST", "/v1/{inner.id}/tags", "tags"),
        ("PUT", "/v1/{name}", ""),
    ]
    table = RouteTable(routes)
    deep = table.match("GET", "/v1/files/a/b%2Fc/d:stat")
    assert deep is not None and deep.variables == {"name": "files/a/b%2Fc/d"}
    bare = table.match("GET", "/v1/files:stat")
    assert bare is not None and bare.variables == {"name": "files"}
    nested = table.match("POST", "/v1/i9/tags")
    assert nested is not None and nested.variables == {"inner.id": "i9"}
    put = table.match("PUT", "/v1/x%3Ay")
    assert put is not None and put.variables == {"name": "x:y"}


def test_ambiguous_routes_are_refused() -> None:
    with pytest.raises(TemplateError, match="ambiguous"):
        RouteTable.from_services(
            fake_services(
                [
                    ("A", _rule(get="/v1/{name=things/*}")),
                    ("B", _rule(get="/v1/{inner.id=things/*}")),
                ]
            )
        )
    # the same template under another method is fine
    RouteTable.from_services(
        fake_services([("A", _rule(get="/v1/{name}")), ("B", _rule(delete="/v1/{name}"))])
    )


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        (_rule(get="/v1/{missing}"), "not a singular scalar"),
        (_rule(get="/v1/{tags}"), "not a singular scalar"),
        (_rule(get="/v1/{inner}"), "not a singular scalar"),
        (_rule(post="/v1/x", body="inner.id"), "not a top-level field"),
        (_rule(get="/v1/x", response_body="name"), "response_body"),
        (http_pb2.HttpRule(), "without a pattern"),
    ],
)
def test_rules_the_gateway_cannot_serve(rule: http_pb2.HttpRule, error: str) -> None:
    with pytest.raises(TemplateError, match=error):
        routes_of(fake_services([("Bad", rule)]))


@pytest.mark.parametrize(
    "template",
    [
        "v1/x",
        "/v1/{name",
        "/v1/name}",
        "/v1/{na-me}",
        "/v1/{a={b}}",
        "/v1/**/x",
        "/v1/x:",
        "/v1/x:a/b",
        "/v1//x",
        "/v1/{name}/{name}",
    ],
)
def test_malformed_templates(template: str) -> None:
    with pytest.raises(TemplateError):
        parse_template(template)


def test_template_parts() -> None:
    parsed = parse_template("/v1/{name=members/*/holds/*}:capture")
    assert [s.kind for s in parsed.segments] == ["literal", "literal", "*", "literal", "*"]
    assert parsed.verb == "capture"
    (variable,) = parsed.variables
    assert (variable.field_path, variable.start, variable.end) == ("name", 1, 5)
