"""The OpenAPI document generated from the routes: valid, complete, and what the router serves."""

from __future__ import annotations

import re
from typing import Any

import pytest
from google.protobuf import descriptor_pb2
from membership.accounts.v1 import accounts_pb2
from membership.points.v1 import points_pb2
from membership.privacy.v1 import audit_pb2, consent_pb2, data_rights_pb2, field_crypto_pb2
from openapi_spec_validator import validate

from gateway.http_rules import Route, RouteTable, parse_template
from gateway.openapi import openapi_document

MODULES = (accounts_pb2, points_pb2, field_crypto_pb2, consent_pb2, data_rights_pb2, audit_pb2)
TABLE = RouteTable.from_services(s for m in MODULES for s in m.DESCRIPTOR.services_by_name.values())
METHODS = ("get", "post", "patch", "put", "delete")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi_document(TABLE.routes, "wallet-membership", "1.0.0")


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    assert ref.startswith("#/components/schemas/")
    found: dict[str, Any] = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return found


def parameter(operation: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [p for p in operation["parameters"] if p["name"] == name]
    assert len(found) == 1, name
    return found[0]


def test_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"] == "3.0.3"
    assert document["info"] == {"title": "wallet-membership", "version": "1.0.0"}


def test_every_route_is_one_operation_named_service_method(document: dict[str, Any]) -> None:
    found = operations(document)
    assert len(found) == len(TABLE.routes)
    ids = [operation["operationId"] for _, _, operation in found]
    assert len(set(ids)) == len(ids)
    expected = {f"{r.service.rsplit('.', 1)[-1]}_{r.method}" for r in TABLE.routes}
    assert set(ids) == expected


def test_router_serves_every_documented_path(document: dict[str, Any]) -> None:
    """The document and the route table agree: each documented URL, filled in, reaches the
    operation's RPC."""
    for path, method, operation in operations(document):
        placeholders = re.findall(r"\{([^}]+)\}", path)
        path_names = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
        assert set(placeholders) == path_names, path
        concrete = re.sub(r"\{[^}]+\}", "x1", path)
        match = TABLE.match(method.upper(), concrete)
        assert match is not None, (method, concrete)
        assert match.route.rpc_path == operation["x-grpc-method"]


def test_slashed_variables_are_expanded(document: dict[str, Any]) -> None:
    capture = document["paths"]["/v1/members/{member_id}/holds/{hold_id}:capture"]["post"]
    assert capture["operationId"] == "PointsService_CapturePoints"
    member_id = parameter(capture, "member_id")
    assert member_id["required"] is True
    assert member_id["schema"]["pattern"] == "^[^/]+$"
    assert "members/{member_id}/holds/{hold_id}" in member_id["description"]
    get = document["paths"]["/v1/members/{member_id}"]
    assert set(get) == {"get", "patch"}
    refund = document["paths"]["/v1/members/{member_id}/payments/{payment_id}:refund"]["post"]
    assert [p["name"] for p in refund["parameters"] if p["in"] == "path"] == [
        "member_id",
        "payment_id",
    ]


def test_query_parameters(document: dict[str, Any]) -> None:
    listed = document["paths"]["/v1/members/{member_id}/transactions"]["get"]
    kinds = parameter(listed, "kinds")
    assert kinds["in"] == "query"
    assert kinds["schema"] == {"type": "array", "items": {"type": "string"}}
    assert kinds["explode"] is True
    assert parameter(listed, "start_time")["schema"]["format"] == "date-time"
    assert parameter(listed, "page_size")["schema"] == {"type": "integer", "format": "int32"}
    status = parameter(document["paths"]["/v1/members"]["get"], "status")
    assert resolve(document, status["schema"])["enum"][1] == "MEMBER_STATUS_ACTIVE"
    verify = document["paths"]["/v1/auditEvents:verifyChain"]["get"]
    assert parameter(verify, "from_seq")["schema"]["type"] == "string"
    assert parameter(verify, "from_seq")["schema"]["format"] == "int64"
    assert parameter(verify, "expected_head_hash")["schema"]["format"] == "byte"
    assert "requestBody" not in verify


def test_update_member_body_mask_and_idempotency(document: dict[str, Any]) -> None:
    update = document["paths"]["/v1/members/{member_id}"]["patch"]
    body = update["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/membership.accounts.v1.Member"}
    mask = parameter(update, "update_mask")
    assert mask["schema"]["type"] == "string"
    assert mask["required"] is True
    # the Idempotency-Key header may carry the key, so request_id is optional here
    assert "required" not in parameter(update, "request_id")
    assert parameter(update, "Idempotency-Key")["in"] == "header"
    assert "Idempotency-Key" not in {
        p["name"] for p in document["paths"]["/v1/members"]["get"]["parameters"]
    }


def test_body_star_leaves_out_path_fields(document: dict[str, Any]) -> None:
    freeze = document["paths"]["/v1/members/{member_id}:freeze"]["post"]
    schema = freeze["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"requestId", "reason"}
    assert schema["required"] == ["reason"]
    assert schema["additionalProperties"] is False
    assert freeze["requestBody"]["required"] is True


def test_message_schemas_follow_proto3_json(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    balance = schemas["membership.points.v1.Balance"]["properties"]
    assert balance["available"] == {"type": "string", "format": "int64", "pattern": r"^-?[0-9]+$"}
    assert balance["expiring"]["type"] == "array"
    assert resolve(document, balance["expiring"]["items"])["properties"]["expireTime"] == {
        "type": "string",
        "format": "date-time",
    }
    tier = schemas["membership.points.v1.Tier"]["properties"]
    assert tier["perks"] == {"type": "object", "additionalProperties": {"type": "string"}}
    member = schemas["membership.accounts.v1.Member"]
    assert "required" not in member  # proto3 JSON leaves default values out
    assert member["properties"]["memberId"]["readOnly"] is True
    status = member["properties"]["status"]
    assert status["readOnly"] is True
    assert resolve(document, status["allOf"][0])["type"] == "string"


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    refs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert refs
    for ref in refs:
        _, section, kind, name = ref.split("/")
        assert name in document[section][kind], ref


def test_errors_and_security(document: dict[str, Any]) -> None:
    components = document["components"]
    error = components["schemas"]["Error"]["properties"]["error"]
    assert set(error["properties"]) == {"code", "status", "message", "details"}
    assert components["responses"]["Error"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }
    assert components["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key.",
    }
    assert document["security"] == [{"bearerAuth": []}]
    for _, _, operation in operations(document):
        responses = operation["responses"]
        assert "200" in responses
        assert responses["default"] == {"$ref": "#/components/responses/Error"}
        assert responses["400"] == {"$ref": "#/components/responses/Error"}


def test_recursive_messages_end_in_references() -> None:
    # DescriptorProto nests DescriptorProto: the schema must refer to itself, not recurse
    route = Route(
        http_method="POST",
        template="/v1/files:describe",
        service="t.v1.FileService",
        method="Describe",
        rpc_path="/t.v1.FileService/Describe",
        body="*",
        request_class=descriptor_pb2.FileDescriptorProto,
        response_class=descriptor_pb2.DescriptorProto,
        path=parse_template("/v1/files:describe"),
    )
    document = openapi_document([route], "t", "1")
    validate(document)
    nested = document["components"]["schemas"]["google.protobuf.DescriptorProto"]
    assert nested["properties"]["nestedType"]["items"] == {
        "$ref": "#/components/schemas/google.protobuf.DescriptorProto"
    }


def test_additional_bindings_get_distinct_operation_ids() -> None:
    (route,) = [r for r in TABLE.routes if r.method == "GetMember"]
    other = Route(
        http_method="GET",
        template="/v2/{name=members/*}",
        service=route.service,
        method=route.method,
        rpc_path=route.rpc_path,
        body="",
        request_class=route.request_class,
        response_class=route.response_class,
        path=parse_template("/v2/{name=members/*}"),
    )
    document = openapi_document([route, other], "t", "1")
    validate(document)
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert ids == ["AccountsService_GetMember", "AccountsService_GetMember_2"]
