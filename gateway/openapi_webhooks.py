"""The signed settlement webhooks in the OpenAPI document: `POST /v1/webhooks/payments` and
`/v1/webhooks/refunds`, their bodies (the whole SettlePaymentRequest / RefundPaymentRequest
in the protobuf JSON mapping), the signature headers and a security scheme for them, and
every answer the endpoint gives. The routes are served by `gateway/webhook_endpoint.py`, not
from the http rules, so they are added to the generated document here."""

from __future__ import annotations

from typing import Any

from gateway import webhooks
from gateway.http_rules import RouteTable
from gateway.openapi import JSON, Schemas
from gateway.transcode_values import descriptor_of
from gateway.webhook_endpoint import CLIENT_HEADER, KINDS, MAX_WEBHOOK_BYTES, route_of

SECURITY_SCHEME = "webhookSignature"
_ERROR: dict[str, Any] = {"$ref": "#/components/responses/Error"}
_ERROR_CONTENT: dict[str, Any] = {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}

SIGNING = (
    "HMAC-SHA256 with the client's secret (its UTF-8 bytes) over the ASCII bytes of"
    f" `{webhooks.TIMESTAMP_HEADER}`, a `.`, then the request body exactly as sent;"
    f" lowercase or uppercase hex. `{webhooks.SIGNATURE_HEADER}` carries one or more"
    f" `v1=<hex>` values separated by `,` (at most {webhooks.MAX_SIGNATURES},"
    f" {webhooks.MAX_SIGNATURE_HEADER_CHARS} characters), e.g. one per secret while rotating;"
    " one match is enough, values of other schemes are skipped. The timestamp must be within"
    f" ±{webhooks.DEFAULT_WINDOW_S // 60} minutes of the gateway's clock. Secrets per client"
    f" come from `{webhooks.SECRETS_ENV}` (a JSON object: client id -> secret, or a list of"
    f" two while rotating) or the .json/.toml file named by `{webhooks.SECRETS_FILE_ENV}`."
)
_HEADERS: list[dict[str, Any]] = [
    {
        "name": CLIENT_HEADER,
        "in": "header",
        "required": True,
        "description": "The settlement client's id, a key of the secrets configuration.",
        "schema": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9._-]{0,63}$"},
    },
    {
        "name": webhooks.TIMESTAMP_HEADER,
        "in": "header",
        "required": True,
        "description": "Unix time in whole seconds when the delivery was signed.",
        "schema": {"type": "string", "pattern": r"^[0-9]{1,12}$"},
    },
    {
        "name": webhooks.SIGNATURE_HEADER,
        "in": "header",
        "required": True,
        "description": SIGNING,
        "schema": {"type": "string", "maxLength": webhooks.MAX_SIGNATURE_HEADER_CHARS},
        "example": "v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd",
    },
]
_RETRY_AFTER: dict[str, Any] = {
    "Retry-After": {
        "description": "Seconds to wait before the identical retry.",
        "schema": {"type": "integer", "minimum": 1},
    }
}


def _error(text: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": text, "content": _ERROR_CONTENT}
    return {**response, "headers": headers} if headers else response


def _responses(success: dict[str, Any]) -> dict[str, Any]:
    challenge = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    return {
        "200": success,
        "400": _error(
            "INVALID_ARGUMENT: a body that is not the request (kept for replays); or"
            " FAILED_PRECONDITION: a state points refuses today (not kept)."
        ),
        "401": _error(
            "A header missing, an unknown client, a timestamp outside the window or no"
            " matching signature; nothing reached points.",
            challenge,
        ),
        "404": _error("The refunded payment is not known (yet); not kept."),
        "409": _error(
            "ALREADY_EXISTS: the payment (refund) id was used with another body (kept);"
            " or ABORTED: a concurrent change, retry (not kept)."
        ),
        "413": _error(f"The body is over {MAX_WEBHOOK_BYTES} bytes."),
        "429": _error("Points is overloaded; retry after `Retry-After`.", _RETRY_AFTER),
        "503": _error(
            "Points is unavailable or does not know the member yet; retry after `Retry-After`.",
            _RETRY_AFTER,
        ),
        "504": _error("Points did not answer in time; retry."),
        "default": _ERROR,
    }


def _operation(kind: str, table: RouteTable, schemas: Schemas) -> dict[str, Any]:
    route = route_of(table, KINDS[kind])
    request, response = descriptor_of(route.request_class), descriptor_of(route.response_class)
    body = schemas.body(request, frozenset(), frozenset())
    return {
        "operationId": f"Webhooks_{route.method}",
        "tags": ["Webhooks"],
        "summary": f"Signed webhook: {route.method} ({kind})",
        "description": (
            f"The {request.name} in the protobuf JSON mapping, signed (see the"
            f" `{SECURITY_SCHEME}` scheme). Answers that a retry cannot change (success,"
            " INVALID_ARGUMENT, ALREADY_EXISTS) are kept: a replay gets the same answer."
            " Anything else is not kept, so the identical retry reaches points again; the"
            " payment (refund) id keeps it from counting twice."
        ),
        "x-grpc-method": route.rpc_path,
        "security": [{SECURITY_SCHEME: []}],
        "parameters": [dict(h) for h in _HEADERS],
        "requestBody": {"required": True, "content": {JSON: {"schema": body}}},
        "responses": _responses(
            {
                "description": f"A {response.name}.",
                "content": {JSON: {"schema": schemas.message(response)}},
            }
        ),
    }


def with_webhooks(document: dict[str, Any], table: RouteTable) -> dict[str, Any]:
    """`document` (from `openapi_document`) with the webhook routes, their schemas and the
    signature's security scheme added; changed in place and returned."""
    schemas = Schemas()
    paths = document["paths"]
    for kind in sorted(KINDS):
        paths[f"/v1/webhooks/{kind}"] = {"post": _operation(kind, table, schemas)}
    components = document["components"]
    for name, schema in schemas.components.items():
        components["schemas"].setdefault(name, schema)
    components["schemas"] = dict(sorted(components["schemas"].items()))
    components["securitySchemes"][SECURITY_SCHEME] = {
        "type": "apiKey",
        "in": "header",
        "name": webhooks.SIGNATURE_HEADER,
        "description": SIGNING,
    }
    document["tags"] = [*document["tags"], {"name": "Webhooks"}]
    document["paths"] = dict(sorted(paths.items()))
    return document
