"""An OpenAPI 3.0.3 document from the same routes the gateway serves, for client generators and
schemathesis.

Path variables that span segments (`{name=members/*}`) cannot be one OpenAPI parameter:
OpenAPI path parameters may not contain `/`. As grpc-gateway's `expand_slashed_path_patterns`
does, they are expanded into their literal segments with one parameter per `*`, named after the
collection before it: `/v1/{name=members/*/holds/*}:capture` is documented as
`/v1/members/{member_id}/holds/{hold_id}:capture`. That is exactly the URL the route table
matches, so the document and the router agree without a second routing scheme.

Query parameters use proto field names (`page_size`, `update_mask`), as the AIPs write them;
the gateway also accepts the lowerCamelCase JSON names. Bodies and responses use the protobuf
JSON mapping, so no property is marked required in the shared message schemas: proto3 JSON
leaves out fields at their default value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.api import field_behavior_pb2  # type: ignore[import-untyped]
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from gateway.http_rules import Route, Variable
from gateway.transcode import idempotency_field
from gateway.transcode_values import TEXT_WKTS, WRAPPERS, descriptor_of, is_map

OPENAPI_VERSION = "3.0.3"
JSON = "application/json"
_FD = FieldDescriptor
_REQUIRED = field_behavior_pb2.REQUIRED
_OUTPUT_ONLY = field_behavior_pb2.OUTPUT_ONLY
_QUERY_DEPTH = 3  # nested query parameters (`a.b.c`); deeper messages go in bodies
_ERROR_CODES = ("400", "401", "403", "404", "409", "429", "503")


def _each(kinds: Sequence[int], schema: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {kind: dict(schema) for kind in kinds}


_SCALARS: dict[int, dict[str, Any]] = {
    **_each(
        (_FD.TYPE_INT32, _FD.TYPE_SINT32, _FD.TYPE_SFIXED32), {"type": "integer", "format": "int32"}
    ),
    **_each(
        (_FD.TYPE_UINT32, _FD.TYPE_FIXED32),
        {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**32 - 1},
    ),
    # proto3 JSON writes 64-bit integers as strings: JavaScript numbers cannot hold them
    **_each(
        (_FD.TYPE_INT64, _FD.TYPE_SINT64, _FD.TYPE_SFIXED64),
        {"type": "string", "format": "int64", "pattern": r"^-?[0-9]+$"},
    ),
    **_each(
        (_FD.TYPE_UINT64, _FD.TYPE_FIXED64),
        {"type": "string", "format": "uint64", "pattern": r"^[0-9]+$"},
    ),
    _FD.TYPE_DOUBLE: {"type": "number", "format": "double"},
    _FD.TYPE_FLOAT: {"type": "number", "format": "float"},
    _FD.TYPE_BOOL: {"type": "boolean"},
    _FD.TYPE_STRING: {"type": "string"},
    _FD.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {
        "type": "string",
        "description": "Comma-separated field paths, e.g. `displayName,email`.",
    },
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
}
_IDEMPOTENCY_HEADER: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "description": "The request's idempotency key, when the body does not carry it.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
}
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "status", "message"],
            "properties": {
                "code": {"type": "integer", "description": "The HTTP status code."},
                "status": {"type": "string", "description": "The gRPC status code name."},
                "message": {"type": "string"},
                "details": {
                    "type": "array",
                    "description": "google.rpc ErrorInfo, BadRequest, ... in proto3 JSON.",
                    "items": _WELL_KNOWN["google.protobuf.Any"],
                },
            },
        }
    },
}


class Schemas:
    """components/schemas, built on demand; a message is registered before its fields are,
    so recursive messages end in a $ref instead of recursing."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {"Error": ERROR_SCHEMA}

    def message(self, descriptor: Descriptor) -> dict[str, Any]:
        if descriptor.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[descriptor.full_name])
        if descriptor.full_name in WRAPPERS:  # google.protobuf.Int64Value and the like
            return {**self._single(descriptor.fields_by_name["value"]), "nullable": True}
        if descriptor.full_name not in self.components:
            self.components[descriptor.full_name] = {}  # placeholder: stops recursion
            self.components[descriptor.full_name] = self._object(descriptor)
        return _ref(descriptor.full_name)

    def enum(self, descriptor: EnumDescriptor) -> dict[str, Any]:
        if descriptor.full_name not in self.components:
            names = [value.name for value in descriptor.values]
            self.components[descriptor.full_name] = {"type": "string", "enum": names}
        return _ref(descriptor.full_name)

    def field(self, field: FieldDescriptor) -> dict[str, Any]:
        message = field.message_type
        if message is not None and message.GetOptions().map_entry:
            value = self._single(message.fields_by_name["value"])
            return {"type": "object", "additionalProperties": value}
        single = self._single(field)
        return {"type": "array", "items": single} if field.is_repeated else single

    def _single(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None:
            return self.message(field.message_type)
        if field.enum_type is not None:
            return self.enum(field.enum_type)
        return dict(_SCALARS[field.type])

    def _object(self, descriptor: Descriptor, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        for field in descriptor.fields:
            if field.name not in skip:
                schema = self.field(field)
                if _OUTPUT_ONLY in _behaviors(field):
                    # $ref ignores its siblings in OpenAPI 3.0, hence the allOf
                    schema = {"allOf": [schema], "readOnly": True} if "$ref" in schema else schema
                    schema["readOnly"] = True
                properties[field.json_name] = schema
        return {"type": "object", "properties": properties, "additionalProperties": False}

    def body(
        self, descriptor: Descriptor, path_bound: frozenset[str], optional: frozenset[str]
    ) -> dict[str, Any]:
        """A `body: "*"` request: the request message minus what the URL path carries."""
        schema = self._object(descriptor, path_bound)
        required = [
            f.json_name
            for f in descriptor.fields
            if f.name not in path_bound | optional and _REQUIRED in _behaviors(f)
        ]
        return {**schema, "required": required} if required else schema


def _tag(route: Route) -> str:
    return route.service.rsplit(".", 1)[-1]


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _behaviors(field: FieldDescriptor) -> list[int]:
    return list(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])


def openapi_document(routes: Sequence[Route], title: str, version: str) -> dict[str, Any]:
    schemas = Schemas()
    paths: dict[str, dict[str, Any]] = {}
    operation_ids: dict[str, int] = {}
    for route in routes:
        url, parameters = _path_of(route)
        base_id = f"{_tag(route)}_{route.method}"
        operation_ids[base_id] = operation_ids.get(base_id, 0) + 1
        seen = operation_ids[base_id]
        operation_id = base_id if seen == 1 else f"{base_id}_{seen}"
        operation = _operation(route, operation_id, parameters, schemas)
        paths.setdefault(url, {})[route.http_method.lower()] = operation
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version},
        "tags": [{"name": name} for name in sorted({_tag(r) for r in routes})],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "responses": {
                "Error": {
                    "description": "An error; `details` carries the google.rpc.ErrorInfo.",
                    "content": {JSON: {"schema": _ref("Error")}},
                }
            },
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "An API key."}
            },
        },
        "security": [{"bearerAuth": []}],
    }


def _operation(
    route: Route, operation_id: str, path_parameters: list[dict[str, Any]], schemas: Schemas
) -> dict[str, Any]:
    request = descriptor_of(route.request_class)
    response = descriptor_of(route.response_class)
    header = [_IDEMPOTENCY_HEADER] if _optional(route) else []
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "tags": [_tag(route)],
        "summary": f"{_tag(route)}.{route.method}",
        "x-grpc-method": route.rpc_path,
        "parameters": [
            *path_parameters,
            *_query_parameters(route, request, schemas),
            *header,
        ],
        "responses": {
            "200": {
                "description": f"A {response.name}.",
                "content": {JSON: {"schema": schemas.message(response)}},
            },
            **{code: {"$ref": "#/components/responses/Error"} for code in _ERROR_CODES},
            "default": {"$ref": "#/components/responses/Error"},
        },
    }
    body = _request_body(route, request, schemas)
    if body is not None:
        operation["requestBody"] = body
    return operation


def _path_bound(route: Route) -> frozenset[str]:
    return frozenset(v.field_path for v in route.path.variables)


def _optional(route: Route) -> frozenset[str]:
    """The idempotency key field: the Idempotency-Key header may carry it instead."""
    key = idempotency_field(route.request_class) if route.http_method != "GET" else None
    return frozenset({key} if key else ())


def _request_body(route: Route, request: Descriptor, schemas: Schemas) -> dict[str, Any] | None:
    if not route.body:
        return None
    if route.body == "*":
        top_level = frozenset(p for p in _path_bound(route) if "." not in p)
        schema = schemas.body(request, top_level, _optional(route))
        required = bool(schema.get("required"))
    else:
        field = request.fields_by_name[route.body]
        schema = schemas.field(field)
        required = _REQUIRED in _behaviors(field)
    return {"required": required, "content": {JSON: {"schema": schema}}}


def _query_parameters(route: Route, request: Descriptor, schemas: Schemas) -> list[dict[str, Any]]:
    if route.body == "*":
        return []  # every field not in the path is in the body
    taken = _path_bound(route) | {route.body}
    found: list[dict[str, Any]] = []
    _collect_query(request, "", taken, schemas, found, (request.full_name,))
    for parameter in found:
        if parameter["name"] in _optional(route):
            parameter.pop("required", None)
    return found


def _collect_query(
    message: Descriptor,
    prefix: str,
    taken: frozenset[str],
    schemas: Schemas,
    found: list[dict[str, Any]],
    trail: tuple[str, ...],
) -> None:
    for field in message.fields:
        name = f"{prefix}{field.name}"
        if name in taken:
            continue
        nested = field.message_type
        if nested is None or nested.full_name in TEXT_WKTS:
            if not is_map(field):
                found.append(_query_parameter(name, field, not prefix, schemas))
        elif nested.full_name in _WELL_KNOWN:
            continue  # Struct, Any and the like have no text form
        elif not field.is_repeated and len(trail) < _QUERY_DEPTH and nested.full_name not in trail:
            trail_next = (*trail, nested.full_name)
            _collect_query(nested, f"{name}.", taken, schemas, found, trail_next)


def _query_parameter(
    name: str, field: FieldDescriptor, top_level: bool, schemas: Schemas
) -> dict[str, Any]:
    parameter: dict[str, Any] = {"name": name, "in": "query", "schema": schemas.field(field)}
    if field.is_repeated:
        parameter.update(style="form", explode=True)  # `?kinds=a&kinds=b`
    if top_level and _REQUIRED in _behaviors(field):
        parameter["required"] = True
    return parameter


def _path_of(route: Route) -> tuple[str, list[dict[str, Any]]]:
    """The OpenAPI path and its parameters; see the module docstring for slashed variables."""
    segments = [s.text if s.kind == "literal" else "" for s in route.path.segments]
    parameters: list[dict[str, Any]] = []
    used: set[str] = set()
    for var in route.path.variables:
        _expand(route, var, segments, parameters, used)
    for index, segment in enumerate(route.path.segments):
        if segment.kind != "literal" and not segments[index]:  # a wildcard outside variables
            name = _unique(f"segment{index}", used)
            segments[index] = f"{{{name}}}"
            parameters.append(_path_parameter(name, "Any single segment.", single=True))
    verb = f":{route.path.verb}" if route.path.verb else ""
    return "/" + "/".join(segments) + verb, parameters


def _expand(
    route: Route,
    var: Variable,
    segments: list[str],
    parameters: list[dict[str, Any]],
    used: set[str],
) -> None:
    end = len(route.path.segments) if var.end is None else var.end
    inner = route.path.segments[var.start : end]
    if len(inner) == 1 and inner[0].kind == "*":
        name = _unique(var.field_path.replace(".", "_"), used)
        segments[var.start] = f"{{{name}}}"
        parameters.append(_path_parameter(name, f"The `{var.field_path}` field.", single=True))
        return
    shown: list[str] = []
    made: list[tuple[str, bool]] = []
    for offset, segment in enumerate(inner):
        if segment.kind == "literal":
            shown.append(segment.text)
            continue
        before = inner[offset - 1].text if offset and inner[offset - 1].kind == "literal" else ""
        stem = f"{_singular(_snake(before))}_id" if before else f"{var.field_path}_part"
        name = _unique(stem.replace(".", "_"), used)
        segments[var.start + offset] = f"{{{name}}}"
        shown.append(f"{{{name}}}")
        made.append((name, segment.kind == "*"))
    note = f"Part of `{var.field_path}`, which is `{'/'.join(shown)}`."
    for name, single in made:
        parameters.append(_path_parameter(name, note, single=single))


def _path_parameter(name: str, description: str, *, single: bool) -> dict[str, Any]:
    # ids never contain `/`, and not every client encodes it: a `*` value is documented
    # without one; only `**` may span segments
    pattern = r"^[^/]+$" if single else r"^.+$"
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": pattern},
    }


def _unique(name: str, used: set[str]) -> str:
    candidate, n = name, 1
    while candidate in used:
        n += 1
        candidate = f"{name}{n}"
    used.add(candidate)
    return candidate


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _singular(name: str) -> str:
    for plural, single in (("ies", "y"), ("sses", "ss"), ("xes", "x"), ("ss", "ss"), ("s", "")):
        if name.endswith(plural):
            return name[: -len(plural)] + single
    return name
