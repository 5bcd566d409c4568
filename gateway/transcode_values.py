"""Field values from text (URL path variables and query parameters), and the words that tell
a client what a field expects. Text forms follow the protobuf JSON mapping of each type."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

_FD = FieldDescriptor
INT_RANGES: dict[int, tuple[int, int]] = {
    **dict.fromkeys((_FD.TYPE_INT32, _FD.TYPE_SINT32, _FD.TYPE_SFIXED32), (-(2**31), 2**31 - 1)),
    **dict.fromkeys((_FD.TYPE_UINT32, _FD.TYPE_FIXED32), (0, 2**32 - 1)),
    **dict.fromkeys((_FD.TYPE_INT64, _FD.TYPE_SINT64, _FD.TYPE_SFIXED64), (-(2**63), 2**63 - 1)),
    **dict.fromkeys((_FD.TYPE_UINT64, _FD.TYPE_FIXED64), (0, 2**64 - 1)),
}
_INTEGER = re.compile(r"-?[0-9]+\Z")
_NUMBER = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\Z")
_FLOAT_WORDS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
_FLOAT32_MAX = 3.4028234663852886e38
# strconv.ParseBool's spellings, which grpc-gateway clients already send
_BOOLS = {"1": True, "t": True, "true": True, "0": False, "f": False, "false": False}
_MASK_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
WRAPPERS = {
    f"google.protobuf.{n}Value"
    for n in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
}
TEXT_WKTS = {
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
    *WRAPPERS,
}


def descriptor_of(message: Message | type[Message]) -> Descriptor:
    # the stubs type DESCRIPTOR as pure-Python or upb; both have the same interface
    return cast(Descriptor, message.DESCRIPTOR)


def expected(field: FieldDescriptor, element: bool) -> str:
    if field.is_repeated and not element:
        return "expected a JSON object" if is_map(field) else "expected a JSON array"
    if field.enum_type is not None:
        return f"expected a {field.enum_type.name} name or number"
    if field.message_type is not None:
        return {
            "google.protobuf.Timestamp": "expected an RFC 3339 timestamp",
            "google.protobuf.Duration": 'expected a duration such as "1.5s"',
            "google.protobuf.FieldMask": "expected comma-separated field paths",
        }.get(field.message_type.full_name, "expected a JSON object")
    if field.type in INT_RANGES:
        return "expected an integer (a decimal string or a number) in range"
    return {
        _FD.TYPE_STRING: "expected a string",
        _FD.TYPE_BOOL: "expected true or false",
        _FD.TYPE_BYTES: "expected base64-encoded bytes",
    }.get(field.type, "expected a number")


def is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def message_from_text(message: Message, text: str) -> None:
    """A well-known type from its JSON string form; raises ValueError."""
    descriptor = descriptor_of(message)
    if descriptor.full_name in WRAPPERS:
        value = scalar_from_text(descriptor.fields_by_name["value"], text)
        message.value = value  # type: ignore[attr-defined]
    elif descriptor.full_name == "google.protobuf.FieldMask":
        message.paths.extend(_mask_paths(text))  # type: ignore[attr-defined]
    else:  # Timestamp (RFC 3339) and Duration ("1.5s")
        message.FromJsonString(text)  # type: ignore[attr-defined]


def _mask_paths(text: str) -> list[str]:
    """`update_mask=display_name,email` or the JSON form `displayName,email`."""
    paths = [p.strip() for p in text.split(",") if p.strip()]
    if not paths or not all(_MASK_PATH.match(p) for p in paths):
        raise ValueError("bad field mask")
    return [p if "_" in p else re.sub(r"[A-Z]", lambda m: "_" + m[0].lower(), p) for p in paths]


def scalar_from_text(field: FieldDescriptor, text: str) -> Any:
    """A scalar or enum value from text; raises ValueError."""
    kind = field.type
    if kind == _FD.TYPE_STRING:
        return text
    if kind in INT_RANGES:
        low, high = INT_RANGES[kind]
        if not _INTEGER.match(text) or not low <= int(text) <= high:
            raise ValueError("bad integer")
        return int(text)
    if kind == _FD.TYPE_BOOL:
        if text.lower() not in _BOOLS:
            raise ValueError("bad bool")
        return _BOOLS[text.lower()]
    if kind == _FD.TYPE_ENUM:
        return _enum(field, text)
    if kind == _FD.TYPE_BYTES:
        return _base64(text)
    if kind in (_FD.TYPE_DOUBLE, _FD.TYPE_FLOAT):
        return _float(text, single=kind == _FD.TYPE_FLOAT)
    raise ValueError("unsupported type")


def _enum(field: FieldDescriptor, text: str) -> int:
    enum = field.enum_type
    if enum is None:
        raise ValueError("not an enum")
    by_name = enum.values_by_name.get(text)
    if by_name is not None:
        return int(by_name.number)
    if _INTEGER.match(text) and int(text) in enum.values_by_number:
        return int(text)
    raise ValueError("bad enum")


def _base64(text: str) -> bytes:
    # the JSON mapping accepts standard and URL-safe alphabets, padded or not
    padded = text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except binascii.Error:
        raise ValueError("bad base64") from None


def _float(text: str, *, single: bool) -> float:
    if text in _FLOAT_WORDS:
        return _FLOAT_WORDS[text]
    if not _NUMBER.match(text):
        raise ValueError("bad number")
    value = float(text)
    if value in (float("inf"), float("-inf")) or (single and abs(value) > _FLOAT32_MAX):
        raise ValueError("out of range")
    return value
