"""REST routes from the protos' `google.api.http` rules (google/api/http.proto path templates).

Adding an annotated RPC adds its route: nothing here knows a service by name. Matching works on
the raw (still percent-encoded) request path so that an encoded `/` (`%2F`) inside a value
never splits a segment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote_to_bytes

from google.api import annotations_pb2  # type: ignore[import-untyped]
from google.protobuf import message_factory
from google.protobuf.descriptor import (
    Descriptor,
    FieldDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.protobuf.message import Message

SegmentKind = Literal["literal", "*", "**"]
_FIELD_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_ENCODED_SLASH = re.compile(r"%2[Ff]")
# specificity rank of a segment: lower wins when two templates match the same path
_RANK: dict[SegmentKind, int] = {"literal": 0, "*": 1, "**": 2}
_WILDCARDS: dict[str, SegmentKind] = {"*": "*", "**": "**"}


class TemplateError(ValueError):
    """A `google.api.http` rule the gateway cannot serve; raised at start-up, never per call."""


@dataclass(frozen=True)
class Segment:
    kind: SegmentKind
    text: str = ""


@dataclass(frozen=True)
class Variable:
    """A field bound to segments [start, end) of the path; end None runs to the end (`**`)."""

    field_path: str
    start: int
    end: int | None


@dataclass(frozen=True)
class PathTemplate:
    segments: tuple[Segment, ...]
    variables: tuple[Variable, ...]
    verb: str

    @property
    def shape(self) -> tuple[object, ...]:
        """What the template matches, without variable names: equal shapes are ambiguous."""
        return (tuple((s.kind, s.text) for s in self.segments), self.verb)

    @property
    def specificity(self) -> tuple[int, ...]:
        return tuple(_RANK[s.kind] for s in self.segments)

    def match(self, raw: Sequence[str]) -> dict[str, str] | None:
        """Variables of the raw path segments `raw`, or None when the template does not fit."""
        if not self._fits(raw):
            return None
        values: dict[str, str] = {}
        for var in self.variables:
            chunk = raw[var.start : var.end]
            single = len(chunk) == 1 and var.end is not None
            value = _decode(chunk[0]) if single else _decode_multi(chunk)
            if value is None:
                return None
            values[var.field_path] = value
        return values

    def _fits(self, raw: Sequence[str]) -> bool:
        open_ended = bool(self.segments) and self.segments[-1].kind == "**"
        fixed = len(self.segments) - 1 if open_ended else len(self.segments)
        if len(raw) < fixed or (not open_ended and len(raw) != fixed):
            return False
        for seg, got in zip(self.segments[:fixed], raw, strict=False):
            if seg.kind == "*":
                if not got:  # `//` is not a segment
                    return False
            elif got != seg.text and _decode(got) != seg.text:
                return False
        return True


def _decode(raw: str) -> str | None:
    """Percent-decodes once (http.proto: a single-segment value has `/` encoded as %2F)."""
    if "%" not in raw:
        return raw
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _decode_multi(raw: Sequence[str]) -> str | None:
    """Multi-segment values keep %2F encoded, as http.proto asks, so `/` stays a separator."""
    parts: list[str] = []
    for segment in raw:
        pieces = [_decode(p) for p in _ENCODED_SLASH.split(segment)]
        if any(p is None for p in pieces):
            return None
        parts.append("%2F".join(p for p in pieces if p is not None))
    return "/".join(parts)


def parse_template(template: str) -> PathTemplate:
    """Parses `/v1/{name=members/*}/x:verb` per the grammar of google/api/http.proto."""
    if not template.startswith("/"):
        raise TemplateError(f"template {template!r} must start with '/'")
    path, verb = _split_verb(template[1:], template)
    segments: list[Segment] = []
    variables: list[Variable] = []
    for token in _tokens(path, template):
        if token.startswith("{"):
            variables.append(_variable(token, len(segments), segments, template))
        else:
            segments.append(_segment(token, template))
    if any(s.kind == "**" for s in segments[:-1]):
        raise TemplateError(f"template {template!r}: '**' must be the last segment")
    names = [v.field_path for v in variables]
    if len(set(names)) != len(names):
        raise TemplateError(f"template {template!r} binds a field twice")
    return PathTemplate(tuple(segments), tuple(variables), verb)


def _split_verb(path: str, template: str) -> tuple[str, str]:
    depth = 0
    for index, char in enumerate(path):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == ":" and depth == 0:
            verb = path[index + 1 :]
            if not verb or "/" in verb or "{" in verb:
                raise TemplateError(f"template {template!r} has a malformed verb")
            return path[:index], verb
    return path, ""


def _tokens(path: str, template: str) -> Iterator[str]:
    """Top-level segments; a variable `{...}` is one token even when it spans several."""
    token = ""
    depth = 0
    for char in path:
        if char == "/" and depth == 0:
            yield token
            token = ""
            continue
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth not in (0, 1):
            raise TemplateError(f"template {template!r} has unbalanced braces")
        token += char
    if depth:
        raise TemplateError(f"template {template!r} has unbalanced braces")
    yield token


def _segment(token: str, template: str) -> Segment:
    wildcard = _WILDCARDS.get(token)
    if wildcard is not None:
        return Segment(wildcard)
    if not token or any(c in token for c in "{}*:?#"):
        raise TemplateError(f"template {template!r} has a bad segment {token!r}")
    return Segment("literal", token)


def _variable(token: str, start: int, segments: list[Segment], template: str) -> Variable:
    if not token.endswith("}"):
        raise TemplateError(f"template {template!r} has a bad variable {token!r}")
    name, _, pattern = token[1:-1].partition("=")
    if not _FIELD_PATH.match(name):
        raise TemplateError(f"template {template!r} has a bad field path {name!r}")
    inner = [_segment(t, template) for t in (pattern or "*").split("/")]
    segments.extend(inner)
    end = None if inner[-1].kind == "**" else start + len(inner)
    return Variable(name, start, end)


@dataclass(frozen=True)
class Route:
    """One HTTP binding of one RPC."""

    http_method: str
    template: str
    service: str
    method: str
    rpc_path: str
    body: str
    request_class: type[Message]
    response_class: type[Message]
    path: PathTemplate = field(repr=False, compare=False)


@dataclass(frozen=True)
class RouteMatch:
    route: Route
    variables: dict[str, str]


def routes_of(service_descriptors: Iterable[ServiceDescriptor]) -> list[Route]:
    """Every binding (with additional_bindings) of every annotated method; others are skipped."""
    routes: list[Route] = []
    for service in service_descriptors:
        for method in service.methods:
            options = method.GetOptions()
            if options.HasExtension(annotations_pb2.http):
                rule = options.Extensions[annotations_pb2.http]
                routes.extend(_routes_of_rule(service, method, rule, nested=False))
    return routes


def _routes_of_rule(
    service: ServiceDescriptor, method: MethodDescriptor, rule: Any, *, nested: bool
) -> Iterator[Route]:
    where = f"{service.full_name}.{method.name}"
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise TemplateError(f"{where}: http rule without a pattern")
    if kind == "custom":
        http_method, template = str(rule.custom.kind).upper(), str(rule.custom.path)
    else:
        http_method, template = kind.upper(), str(getattr(rule, kind))
    if rule.response_body:
        # the REST side answers with the whole response message; refuse rather than ignore
        raise TemplateError(f"{where}: response_body is not supported")
    if nested and len(rule.additional_bindings):
        raise TemplateError(f"{where}: additional_bindings may not nest")
    path = parse_template(template)
    _check_fields(method.input_type, path, str(rule.body), where)
    yield Route(
        http_method=http_method,
        template=template,
        service=service.full_name,
        method=method.name,
        rpc_path=f"/{service.full_name}/{method.name}",
        body=str(rule.body),
        request_class=message_factory.GetMessageClass(method.input_type),
        response_class=message_factory.GetMessageClass(method.output_type),
        path=path,
    )
    for extra in rule.additional_bindings:
        yield from _routes_of_rule(service, method, extra, nested=True)


def _check_fields(request: Descriptor, path: PathTemplate, body: str, where: str) -> None:
    for var in path.variables:
        leaf = resolve_field_path(request, var.field_path)
        if leaf is None or leaf.message_type is not None or leaf.is_repeated:
            raise TemplateError(f"{where}: {var.field_path!r} is not a singular scalar field")
    if body not in ("", "*") and body not in request.fields_by_name:
        raise TemplateError(f"{where}: body field {body!r} is not a top-level field")


def resolve_field_path(message: Descriptor, dotted: str) -> FieldDescriptor | None:
    """The field at a dotted path of proto names, through singular message fields only."""
    *parents, last = dotted.split(".")
    current = message
    for name in parents:
        step = current.fields_by_name.get(name)
        if step is None or step.is_repeated or step.message_type is None:
            return None
        current = step.message_type
    return current.fields_by_name.get(last)


class RouteTable:
    """Matches (method, raw path) to a route; the most literal template wins an overlap."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self._routes = sorted(routes, key=lambda r: (r.path.specificity, r.template))
        seen: dict[tuple[str, object], Route] = {}
        for route in self._routes:
            key = (route.http_method, route.path.shape)
            other = seen.setdefault(key, route)
            if other is not route:
                raise TemplateError(
                    f"ambiguous routes: {route.http_method} {route.template} is bound by both "
                    f"{other.rpc_path} and {route.rpc_path}"
                )
        self._by_verb: dict[str, list[Route]] = {}
        for route in self._routes:
            self._by_verb.setdefault(route.path.verb, []).append(route)

    @classmethod
    def from_services(cls, service_descriptors: Iterable[ServiceDescriptor]) -> RouteTable:
        return cls(routes_of(service_descriptors))

    @property
    def routes(self) -> list[Route]:
        return list(self._routes)

    def match(self, http_method: str, path: str) -> RouteMatch | None:
        """The route for `path` (raw, percent-encoded; a query string is ignored)."""
        method = http_method.upper()
        for route, variables in self._candidates(path):
            if route.http_method == method:
                return RouteMatch(route, variables)
        return None

    def allowed_methods(self, path: str) -> set[str]:
        """Methods some route accepts at `path`: non-empty with no match means 405."""
        return {route.http_method for route, _ in self._candidates(path)}

    def _candidates(self, path: str) -> Iterator[tuple[Route, dict[str, str]]]:
        """Routes fitting `path`, most specific first. A final `:x` is tried as a verb first;
        only when no route has that verb at that path is it part of the last segment, so
        `GET /v1/members/m1:freeze` is a 405 and not GetMember of `members/m1:freeze`."""
        path = path.partition("?")[0].partition("#")[0]
        if not path.startswith("/"):
            return
        raw = path[1:].split("/")
        head, colon, verb = raw[-1].rpartition(":")
        if colon:
            found = False
            for hit in self._fitting(self._by_verb.get(verb, []), [*raw[:-1], head]):
                found = True
                yield hit
            if found:
                return
        yield from self._fitting(self._by_verb.get("", []), raw)

    @staticmethod
    def _fitting(
        routes: Iterable[Route], raw: Sequence[str]
    ) -> Iterator[tuple[Route, dict[str, str]]]:
        for route in routes:
            variables = route.path.match(raw)
            if variables is not None:
                yield route, variables
