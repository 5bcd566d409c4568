"""HTTP request → protobuf request message, and protobuf response → JSON, per the route's rule.

JSON follows the protobuf JSON mapping. Errors name the field (proto names, `a.b[0].c`) and
describe the expected type without echoing the value: bodies may carry personal information,
and error messages must not (docs/design.md §3).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway.http_rules import Route, RouteMatch
from gateway.transcode_values import (
    INT_RANGES,
    TEXT_WKTS,
    descriptor_of,
    expected,
    message_from_text,
    scalar_from_text,
)

DEFAULT_MAX_BODY_BYTES = 1 << 20
MAX_QUERY_PARAMS = 100
# checked in this order: a refund names the payment it refunds, but its key is refund_id
IDEMPOTENCY_FIELDS = ("request_id", "refund_id", "capture_id", "hold_id", "payment_id")

_FD = FieldDescriptor
# JSON types each field type accepts (bool is an int in Python, hence its own checks below)
_JSON_TYPES: dict[int, tuple[type, ...]] = {
    **dict.fromkeys(INT_RANGES, (int, float, str)),
    _FD.TYPE_DOUBLE: (int, float, str),
    _FD.TYPE_FLOAT: (int, float, str),
    _FD.TYPE_BOOL: (bool,),
    _FD.TYPE_ENUM: (int, str),
}
_AT_PATH = re.compile(r' at "?([A-Za-z_][\w.\[\]]*)')
_FAILED_FIELD = re.compile(r"Failed to parse (\w+) field")


class TranscodeError(Exception):
    """Bad input the gateway answers itself with 400 (BadRequest field violations)."""

    def __init__(self, message: str, violations: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.violations: list[tuple[str, str]] = list(violations)


class BodyTooLargeError(TranscodeError):
    """The body exceeds the limit: the caller answers 413 rather than 400."""


def build_request(
    match: RouteMatch,
    query: Mapping[str, Sequence[str]],
    body: bytes,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Message:
    """The request message: body first, then path variables (which must agree with it), then
    query parameters for the fields neither binds."""
    route = match.route
    if len(body) > max_body_bytes:
        raise BodyTooLargeError(f"the request body exceeds {max_body_bytes} bytes")
    if sum(len(values) for values in query.values()) > MAX_QUERY_PARAMS:
        raise TranscodeError(f"more than {MAX_QUERY_PARAMS} query parameters")
    request = route.request_class()
    _apply_body(route, request, body)
    _apply_path(request, match.variables)
    _apply_query(route, request, query, set(match.variables))
    return request


# --- body -------------------------------------------------------------------------------


def _apply_body(route: Route, request: Message, body: bytes) -> None:
    if not body.strip():
        return  # like grpc-gateway, an empty body is an empty message
    if not route.body:
        raise TranscodeError("this method takes no request body", [("", "must be empty")])
    data = _load_json(body)
    # a field body is parsed as {field: body}, so errors and paths are relative to the request
    doc = data if route.body == "*" else {route.body: data}
    if not isinstance(doc, dict):
        raise TranscodeError("the request body must be a JSON object", [("", "expected an object")])
    wrong = _shape_violations(doc, descriptor_of(request), "")
    if wrong:
        raise TranscodeError("the request body does not fit the request message", wrong)
    try:
        json_format.ParseDict(doc, request, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise TranscodeError(
            "the request body has an invalid value", [_violation(str(exc), descriptor_of(request))]
        ) from None
    except RecursionError:
        raise TranscodeError("the request body is nested too deeply", [("", "too deep")]) from None


def _load_json(body: bytes) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result = dict(pairs)
        if len(result) != len(pairs):
            seen = [key for key, _ in pairs]
            twice = next(k for k in seen if seen.count(k) > 1)
            raise TranscodeError("the request body repeats a key", [(twice, "given twice")])
        return result

    def no_constant(name: str) -> Any:
        raise TranscodeError("malformed JSON", [("", f"{name} is not JSON")])

    try:
        return json.loads(
            body.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=no_constant
        )
    except UnicodeDecodeError:
        raise TranscodeError("the request body is not UTF-8", [("", "not UTF-8")]) from None
    except json.JSONDecodeError as exc:
        where = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        raise TranscodeError("malformed JSON", [("", where)]) from None
    except RecursionError:
        raise TranscodeError("the request body is nested too deeply", [("", "too deep")]) from None


def _by_json_or_proto_name(message: Descriptor, name: str) -> FieldDescriptor | None:
    return _names_of(message).get(name)


@functools.cache
def _names_of(message: Descriptor) -> dict[str, FieldDescriptor]:
    # cached per descriptor: this runs for every key of every body on the hot path
    return {**{f.json_name: f for f in message.fields}, **message.fields_by_name}


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _shape_violations(doc: dict[str, Any], message: Descriptor, path: str) -> list[tuple[str, str]]:
    """Unknown keys, repeated keys, oneof clashes and wrong JSON types, each with its full path:
    json_format stops at the first problem and often cannot say where it is."""
    if message.full_name.startswith("google.protobuf."):
        return []  # well-known types have their own JSON forms; json_format checks them
    violations: list[tuple[str, str]] = []
    numbers: set[int] = set()
    oneofs: set[str] = set()
    for key, value in doc.items():
        field = _by_json_or_proto_name(message, key)
        if field is None:
            violations.append((_join(path, key), "unknown field"))
            continue
        here = _join(path, field.name)
        if field.number in numbers:
            violations.append((here, "given twice (by its JSON and its proto name)"))
        numbers.add(field.number)
        oneof = field.containing_oneof
        if oneof is not None and value is not None:
            if oneof.name in oneofs:
                violations.append((here, f"another field of oneof {oneof.name} is set"))
            oneofs.add(oneof.name)
        violations.extend(_value_violations(field, value, here))
    return violations


def _value_violations(field: FieldDescriptor, value: Any, path: str) -> list[tuple[str, str]]:
    if value is None:
        return []  # null is the default value
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        if not isinstance(value, dict):
            return [(path, expected(field, False))]
        value_field = field.message_type.fields_by_name["value"]
        items = [(f"{path}[{k}]", v) for k, v in value.items()]
        return [v for where, item in items for v in _item_violations(value_field, item, where)]
    if field.is_repeated:
        if not isinstance(value, list):
            return [(path, expected(field, False))]
        items = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
        return [v for where, item in items for v in _item_violations(field, item, where)]
    return _item_violations(field, value, path)


def _item_violations(field: FieldDescriptor, value: Any, path: str) -> list[tuple[str, str]]:
    if field.message_type is not None:
        if isinstance(value, dict):
            return _shape_violations(value, field.message_type, path)
        return []  # well-known types take strings and more; json_format judges them
    is_bool = isinstance(value, bool)
    if is_bool == (field.type == _FD.TYPE_BOOL) and isinstance(
        value, _JSON_TYPES.get(field.type, (str,))
    ):
        return []
    return [(path, expected(field, True))]


def _violation(error: str, root: Descriptor) -> tuple[str, str]:
    """(field path, expected type) from a json_format error, mapped to proto names."""
    at = _AT_PATH.findall(error)
    parts = at[-1].rstrip(".").split(".")[1:] if at else _FAILED_FIELD.findall(error)
    path, leaf, indexed = _proto_path(root, parts)
    if "oneof" in error:
        return path, "sets more than one field of a oneof"
    return path, expected(leaf, indexed) if leaf is not None else "invalid value"


def _proto_path(root: Descriptor, parts: Sequence[str]) -> tuple[str, FieldDescriptor | None, bool]:
    path, leaf, indexed = "", None, False
    current: Descriptor | None = root
    for part in parts:
        name, bracket, index = part.partition("[")
        field = _by_json_or_proto_name(current, name) if current is not None else None
        path = _join(path, (field.name if field else name) + bracket + index)
        leaf, indexed = field, bool(bracket)
        current = field.message_type if field else None
        if field is not None and current is not None and current.GetOptions().map_entry:
            current = current.fields_by_name["value"].message_type
    return path, leaf, indexed


# --- path and query -----------------------------------------------------------------------


def _apply_path(request: Message, variables: Mapping[str, str]) -> None:
    violations: list[tuple[str, str]] = []
    for field_path, text in variables.items():
        *parents, name = field_path.split(".")
        target = request
        for parent in parents:
            target = getattr(target, parent)
        field = descriptor_of(target).fields_by_name[name]
        try:
            value = scalar_from_text(field, text)
        except ValueError:
            violations.append((field_path, expected(field, True)))
            continue
        current = getattr(target, name)
        if current not in (field.default_value, value):
            violations.append((field_path, "the body's value differs from the URL path's"))
        setattr(target, name, value)
    if violations:
        raise TranscodeError("invalid path", violations)


def _apply_query(
    route: Route, request: Message, query: Mapping[str, Sequence[str]], path_bound: set[str]
) -> None:
    violations: list[tuple[str, str]] = []
    for key, values in query.items():
        try:
            _apply_parameter(route, request, key, values, path_bound)
        except _ParameterError as exc:
            violations.append((exc.path, exc.description))
    if violations:
        raise TranscodeError("invalid query parameters", violations)


class _ParameterError(Exception):
    def __init__(self, path: str, description: str) -> None:
        super().__init__(description)
        self.path, self.description = path, description


def _apply_parameter(
    route: Route, request: Message, key: str, values: Sequence[str], path_bound: set[str]
) -> None:
    if route.body == "*":
        raise _ParameterError(key, "not accepted: every field of this method is in the body")
    target, field, path = _resolve_parameter(request, key)
    if path in path_bound:
        raise _ParameterError(path, "bound by the URL path")
    if route.body and (path == route.body or path.startswith(route.body + ".")):
        raise _ParameterError(path, "bound by the request body")
    if not field.is_repeated and len(values) > 1:
        raise _ParameterError(path, "given more than once")
    oneof = field.containing_oneof
    if oneof is not None and target.WhichOneof(oneof.name) not in (None, field.name):
        raise _ParameterError(path, f"another field of oneof {oneof.name} is already set")
    try:
        _assign(target, field, values)
    except ValueError:
        raise _ParameterError(path, expected(field, True)) from None


def _resolve_parameter(request: Message, key: str) -> tuple[Message, FieldDescriptor, str]:
    """The message holding the field a (dotted, JSON or proto named) parameter sets."""
    *parents, last = key.split(".")
    target, path = request, ""
    for name in parents:
        field = _by_json_or_proto_name(descriptor_of(target), name)
        if field is None or field.message_type is None or field.is_repeated:
            raise _ParameterError(key, "unknown query parameter")
        if field.message_type.full_name.startswith("google.protobuf."):
            raise _ParameterError(key, "unknown query parameter")
        target, path = getattr(target, field.name), _join(path, field.name)
    leaf = _by_json_or_proto_name(descriptor_of(target), last)
    if leaf is None:
        raise _ParameterError(key, "unknown query parameter")
    path = _join(path, leaf.name)
    if leaf.message_type is not None and leaf.message_type.full_name not in TEXT_WKTS:
        raise _ParameterError(path, "cannot be set from a query parameter")
    return target, leaf, path


def _assign(target: Message, field: FieldDescriptor, values: Sequence[str]) -> None:
    container = getattr(target, field.name)
    if field.message_type is not None:
        if not field.is_repeated:
            message_from_text(container, values[0])
            return
        for text in values:
            message_from_text(container.add(), text)
    elif field.is_repeated:
        container.extend(scalar_from_text(field, text) for text in values)
    else:
        setattr(target, field.name, scalar_from_text(field, values[0]))


# --- idempotency and responses --------------------------------------------------------------


def idempotency_field(request_class: type[Message]) -> str | None:
    """The field that is the request's idempotency key (docs/design.md §3), None for reads."""
    fields = descriptor_of(request_class).fields_by_name
    for name in IDEMPOTENCY_FIELDS:
        field = fields.get(name)
        if field is not None and field.type == _FD.TYPE_STRING and not field.is_repeated:
            return name
    return None


def apply_idempotency_key(message: Message, header_value: str | None) -> None:
    """Puts an `Idempotency-Key` header into the request's key field when the request leaves
    it empty. A request without such a field (a read) ignores the header: clients that send
    it on every call must not break."""
    key = (header_value or "").strip()
    name = idempotency_field(type(message))
    if not key or name is None:
        return
    current = getattr(message, name)
    if not current:
        setattr(message, name, key)
    elif current != key:
        raise TranscodeError(
            f"the Idempotency-Key header differs from {name}",
            [(name, "differs from the Idempotency-Key header")],
        )


def response_json(message: Message) -> bytes:
    """The protobuf JSON mapping with json_format's defaults: lowerCamelCase names, int64 as
    strings, enums by name, bytes as base64, and fields at their default value (0, "", false,
    UNSPECIFIED, empty lists) left out. Chosen over printing every field (grpc-gateway v2's
    EmitUnpopulated) because it is the canonical proto3 JSON form: clients read a missing
    field as its default, and the OpenAPI schemas mark no field required."""
    data = json_format.MessageToDict(message)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
