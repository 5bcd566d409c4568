"""The webhook routes in the OpenAPI document: both listed, with the whole request message as
body, the signature headers, a security scheme for them, and their answers."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import message as pb_message
from membership.points.v1 import points_pb2
from openapi_spec_validator import validate

from gateway.openapi import openapi_document
from gateway.openapi_webhooks import SECURITY_SCHEME, with_webhooks
from gateway.server import route_table

TABLE = route_table()
KINDS: dict[str, type[pb_message.Message]] = {
    "payments": points_pb2.SettlePaymentRequest,
    "refunds": points_pb2.RefundPaymentRequest,
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return with_webhooks(openapi_document(TABLE.routes, "wallet-membership", "v1"), TABLE)


def test_the_document_with_webhooks_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)
    # the generated routes are all still there
    assert len([p for p in document["paths"] if not p.startswith("/v1/webhooks/")]) > 10


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_webhook_route_has_its_body_headers_and_answers(
    document: dict[str, Any], kind: str
) -> None:
    operation = document["paths"][f"/v1/webhooks/{kind}"]["post"]
    assert operation["x-grpc-method"].startswith("/membership.points.v1.PointsService/")
    body = operation["requestBody"]
    assert body["required"] is True
    schema = body["content"]["application/json"]["schema"]
    fields = {f.json_name for f in KINDS[kind].DESCRIPTOR.fields}
    # the whole request, `member` included (no path carries it here), required fields marked
    assert set(schema["properties"]) == fields
    assert {"member", "paymentId", "amount"} <= set(schema["required"])
    headers = {p["name"]: p for p in operation["parameters"] if p["in"] == "header"}
    assert set(headers) == {"X-Client-Id", "X-Timestamp", "X-Signature"}
    assert all(h["required"] for h in headers.values())
    signing = headers["X-Signature"]["description"]
    assert "HMAC-SHA256" in signing and "v1=" in signing and "5 minutes" in signing
    assert operation["security"] == [{SECURITY_SCHEME: []}]
    responses = operation["responses"]
    assert {"200", "400", "401", "409", "413", "429", "503"} <= set(responses)
    assert "Retry-After" in responses["503"]["headers"]
    assert "WWW-Authenticate" in responses["401"]["headers"]


def test_the_signature_scheme_documents_signing_and_the_secrets(document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"][SECURITY_SCHEME]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "X-Signature")
    text = scheme["description"]
    assert '"timestamp." + body' in text or "a `.`, then the request body" in text
    assert "MEMBERSHIP_GATEWAY_WEBHOOK_SECRETS" in text and "_FILE" in text
    # API keys stay the default for every other route
    assert document["security"] == [{"bearerAuth": []}]
