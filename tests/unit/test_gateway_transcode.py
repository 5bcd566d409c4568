"""REST/JSON → request messages and responses → JSON, through the real services' routes."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence

import pytest
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from membership.accounts.v1 import accounts_pb2
from membership.points.v1 import points_pb2
from membership.privacy.v1 import audit_pb2, consent_pb2, data_rights_pb2, field_crypto_pb2

from gateway.http_rules import RouteMatch, RouteTable, parse_template
from gateway.transcode import (
    BodyTooLargeError,
    TranscodeError,
    apply_idempotency_key,
    build_request,
    idempotency_field,
    response_json,
)

MODULES = (accounts_pb2, points_pb2, field_crypto_pb2, consent_pb2, data_rights_pb2, audit_pb2)
TABLE = RouteTable.from_services(s for m in MODULES for s in m.DESCRIPTOR.services_by_name.values())


def match(method: str, path: str) -> RouteMatch:
    found = TABLE.match(method, path)
    assert found is not None, (method, path)
    return found


def call(
    method: str,
    path: str,
    query: Mapping[str, Sequence[str]] | None = None,
    body: bytes | str = b"",
) -> Message:
    raw = body.encode() if isinstance(body, str) else body
    return build_request(match(method, path), query or {}, raw)


def violations(
    method: str,
    path: str,
    query: Mapping[str, Sequence[str]] | None = None,
    body: bytes | str = b"",
) -> list[tuple[str, str]]:
    with pytest.raises(TranscodeError) as caught:
        call(method, path, query, body)
    assert caught.value.message
    return caught.value.violations


def fields(found: list[tuple[str, str]]) -> list[str]:
    return [field for field, _ in found]


# --- GET with query parameters -----------------------------------------------------------


def test_get_with_repeated_timestamp_and_int_query() -> None:
    request = call(
        "GET",
        "/v1/members/m1/transactions",
        {
            "kinds": ["EARN", "REFUND"],
            "startTime": ["2026-01-02T03:04:05+08:00"],
            "page_size": ["5"],
        },
    )
    assert isinstance(request, points_pb2.ListTransactionsRequest)
    assert request.parent == "members/m1"
    assert list(request.kinds) == ["EARN", "REFUND"]
    assert request.start_time == timestamp_pb2.Timestamp(seconds=1767294245)
    assert request.page_size == 5


@pytest.mark.parametrize("value", ["MEMBER_STATUS_FROZEN", "2"])
def test_enum_by_name_or_number(value: str) -> None:
    request = call("GET", "/v1/members", {"status": [value]})
    assert isinstance(request, accounts_pb2.ListMembersRequest)
    assert request.status == accounts_pb2.MEMBER_STATUS_FROZEN


def test_repeated_enum_bool_int64_and_bytes_query() -> None:
    listed = call(
        "GET",
        "/v1/dataRequests",
        {"states": ["1", "2"], "overdueOnly": ["true"], "member": ["members/m1"]},
    )
    assert isinstance(listed, data_rights_pb2.ListDataRequestsRequest)
    assert list(listed.states) == [1, 2]
    assert listed.overdue_only
    verify = call(
        "GET",
        "/v1/auditEvents:verifyChain",
        {"from_seq": ["9007199254740993"], "expectedHeadHash": ["-_8"]},
    )
    assert isinstance(verify, audit_pb2.VerifyAuditChainRequest)
    assert verify.from_seq == 9007199254740993  # beyond a double's precision
    assert verify.expected_head_hash == b"\xfb\xff"  # URL-safe base64, unpadded


def test_nested_query_parameter() -> None:
    # UpdateMember's rule with no body: `member.email` becomes a dotted query parameter
    patched = match("PATCH", "/v1/members/m1")
    route = dataclasses.replace(patched.route, body="")
    request = build_request(
        RouteMatch(route, patched.variables),
        {"member.email": ["a@example.com"], "member.displayName": ["Zoë"]},
        b"",
    )
    assert isinstance(request, accounts_pb2.UpdateMemberRequest)
    assert request.member.name == "members/m1"
    assert request.member.email == "a@example.com"
    assert request.member.display_name == "Zoë"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status": ["MEMBER_STATUS_NOPE"]}, "status"),
        ({"status": ["99"]}, "status"),
        ({"page_size": ["1.5"]}, "page_size"),
        ({"page_size": ["2147483648"]}, "page_size"),
        ({"page_size": ["1", "2"]}, "page_size"),
        ({"nope": ["1"]}, "nope"),
        ({"status.x": ["1"]}, "status.x"),
    ],
)
def test_bad_query_parameters(query: dict[str, list[str]], expected: str) -> None:
    assert fields(violations("GET", "/v1/members", query)) == [expected]


def test_every_bad_query_parameter_is_reported() -> None:
    found = violations(
        "GET", "/v1/members/m1/transactions", {"startTime": ["yesterday"], "x": ["1"]}
    )
    assert dict(found) == {
        "start_time": "expected an RFC 3339 timestamp",
        "x": "unknown query parameter",
    }


def test_query_may_not_set_what_path_or_body_binds() -> None:
    assert fields(violations("GET", "/v1/members/m1", {"name": ["members/m2"]})) == ["name"]
    assert fields(violations("PATCH", "/v1/members/m1", {"member.email": ["x"]})) == [
        "member.email"
    ]
    # body "*": every field is in the body
    assert fields(violations("POST", "/v1/members/m1:freeze", {"reason": ["x"]})) == ["reason"]


def test_query_parameter_limit() -> None:
    query = {f"p{i}": ["1"] for i in range(101)}
    with pytest.raises(TranscodeError, match="query parameters"):
        call("GET", "/v1/members", query)


# --- bodies ------------------------------------------------------------------------------


def test_post_body_star_with_path_variable() -> None:
    request = call(
        "POST", "/v1/members/m1:freeze", body='{"requestId": "r-1", "reason": "risk review"}'
    )
    assert request == accounts_pb2.FreezeMemberRequest(
        name="members/m1", request_id="r-1", reason="risk review"
    )


def test_body_accepts_proto_names_and_the_same_path_value() -> None:
    request = call(
        "POST",
        "/v1/members/m1:freeze",
        body='{"request_id": "r-1", "name": "members/m1"}',
    )
    assert request == accounts_pb2.FreezeMemberRequest(name="members/m1", request_id="r-1")


def test_empty_body_is_an_empty_message() -> None:
    request = call("POST", "/v1/members/m1:freeze")
    assert request == accounts_pb2.FreezeMemberRequest(name="members/m1")


def test_patch_update_member_with_field_body_and_mask() -> None:
    request = call(
        "PATCH",
        "/v1/members/m1",
        {"update_mask": ["display_name,email"], "requestId": ["r-2"]},
        '{"displayName": "张三", "email": "z@example.com"}',
    )
    assert isinstance(request, accounts_pb2.UpdateMemberRequest)
    assert request.member.name == "members/m1"
    assert request.member.display_name == "张三"
    assert list(request.update_mask.paths) == ["display_name", "email"]
    assert request.request_id == "r-2"
    camel = call("PATCH", "/v1/members/m1", {"updateMask": ["displayName,email"]}, "{}")
    assert isinstance(camel, accounts_pb2.UpdateMemberRequest)
    assert list(camel.update_mask.paths) == ["display_name", "email"]


def test_bad_field_mask() -> None:
    found = violations("PATCH", "/v1/members/m1", {"update_mask": ["a,,b c"]}, "{}")
    assert found == [("update_mask", "expected comma-separated field paths")]


def test_int64_in_body_as_string_or_number() -> None:
    body = '{"paymentId": "p1", "amount": {"amountMinor": "12345678901234567"}}'
    request = call("POST", "/v1/members/m1/payments:settle", body=body)
    assert isinstance(request, points_pb2.SettlePaymentRequest)
    assert request.amount.amount_minor == 12345678901234567
    held = call("POST", "/v1/members/m1/points:hold", body='{"holdId": "h", "points": 1e3}')
    assert isinstance(held, points_pb2.HoldPointsRequest)
    assert held.points == 1000


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/v1/members/m1", '{"displayName": "x", "foo": 1}', [("member.foo", "unknown field")]),
        (
            "/v1/members/m1",
            '{"createTime": "yesterday"}',
            [("member.create_time", "expected an RFC 3339 timestamp")],
        ),
        (
            "/v1/members/m1",
            '{"status": "NOPE"}',
            [("member.status", "expected a MemberStatus name or number")],
        ),
        (
            "/v1/members/m1",
            '{"name": "members/m2"}',
            [("member.name", "the body's value differs from the URL path's")],
        ),
        ("/v1/members/m1", '["not", "an", "object"]', [("member", "expected a JSON object")]),
    ],
)
def test_field_body_errors_name_the_field(
    path: str, body: str, expected: list[tuple[str, str]]
) -> None:
    assert violations("PATCH", path, {"update_mask": ["email"]}, body) == expected


def test_unknown_fields_everywhere_are_reported_with_paths() -> None:
    body = json.dumps(
        {
            "requestId": "r",
            "bogus": 1,
            "consents": [{"purpose": "p", "noticeVersion": "1"}, {"purpose": 5, "extra": {}}],
        }
    )
    found = violations("POST", "/v1/members", body=body)
    assert found == [
        ("bogus", "unknown field"),
        ("consents[1].purpose", "expected a string"),
        ("consents[1].extra", "unknown field"),
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('{"requestId": "r",', ""),
        ("[1]", ""),
        ('{"requestId": NaN}', ""),
        (b'{"requestId": "\xff"}', ""),
        ('{"phone": "1", "phone": "2"}', "phone"),
        ('{"request_id": "a", "requestId": "b"}', "request_id"),
        ('{"requestId": true}', "request_id"),
        ('{"channel": "CHANNEL_NOPE"}', "channel"),
        ('{"consents": {"purpose": "p"}}', "consents"),
    ],
)
def test_malformed_bodies(body: str | bytes, expected: str) -> None:
    assert fields(violations("POST", "/v1/members", body=body)) == [expected]


def test_oneof_given_twice() -> None:
    found = violations("POST", "/v1/members:lookup", body='{"phone": "1", "email": "a@b.c"}')
    assert fields(found) == ["email"]


def test_deep_nesting_is_a_400_not_a_crash() -> None:
    body = '{"consents": [' * 5000 + "]}" * 5000
    with pytest.raises(TranscodeError):
        call("POST", "/v1/members", body=body)


def test_no_body_allowed_without_a_body_rule() -> None:
    assert violations("GET", "/v1/members/m1", body='{"view": "MEMBER_VIEW_FULL"}') == [
        ("", "must be empty")
    ]
    assert call("GET", "/v1/members/m1", body=b"  \n") == accounts_pb2.GetMemberRequest(
        name="members/m1"
    )


def test_body_size_is_bounded() -> None:
    with pytest.raises(BodyTooLargeError):
        build_request(match("POST", "/v1/members"), {}, b"{}" + b" " * 100, max_body_bytes=64)
    assert build_request(match("POST", "/v1/members"), {}, b"{}", max_body_bytes=2) == (
        accounts_pb2.RegisterMemberRequest()
    )


def test_path_value_must_fit_the_field_type() -> None:
    path = parse_template("/v1/things/{page_size}")
    listed = match("GET", "/v1/members").route
    route = dataclasses.replace(listed, template="/v1/things/{page_size}", path=path)
    with pytest.raises(TranscodeError) as caught:
        build_request(RouteMatch(route, {"page_size": "ten"}), {}, b"")
    assert fields(caught.value.violations) == ["page_size"]


# --- responses ---------------------------------------------------------------------------


def test_response_json_uses_the_protobuf_json_mapping() -> None:
    balance = points_pb2.Balance(name="members/m1/balance", available=12345678901234, held=0)
    assert json.loads(response_json(balance)) == {
        "name": "members/m1/balance",
        "available": "12345678901234",  # int64 as a string; `held` is 0 and left out
    }
    member = accounts_pb2.Member(
        display_name="张三",
        status=accounts_pb2.MEMBER_STATUS_ACTIVE,
        view=accounts_pb2.MEMBER_VIEW_UNSPECIFIED,
    )
    text = response_json(member).decode("utf-8")
    assert text == '{"displayName":"张三","status":"MEMBER_STATUS_ACTIVE"}'
    verified = audit_pb2.VerifyAuditChainResponse(head_hash=b"\xfb\xff")
    assert json.loads(response_json(verified))["headHash"] == "+/8="


# --- idempotency -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_class", "expected"),
    [
        (accounts_pb2.RegisterMemberRequest, "request_id"),
        (accounts_pb2.UpdateMemberRequest, "request_id"),
        (points_pb2.SettlePaymentRequest, "payment_id"),
        (points_pb2.RefundPaymentRequest, "refund_id"),  # payment_id names the refunded one
        (points_pb2.HoldPointsRequest, "hold_id"),
        (points_pb2.CapturePointsRequest, "capture_id"),
        (accounts_pb2.GetMemberRequest, None),
        (points_pb2.ListTransactionsRequest, None),
    ],
)
def test_idempotency_field(request_class: type[Message], expected: str | None) -> None:
    assert idempotency_field(request_class) == expected


def test_idempotency_key_header() -> None:
    request = points_pb2.RefundPaymentRequest(payment_id="p1")
    apply_idempotency_key(request, "k-1")
    assert request.refund_id == "k-1"
    assert request.payment_id == "p1"
    apply_idempotency_key(request, "k-1")  # the same key twice is fine
    with pytest.raises(TranscodeError) as caught:
        apply_idempotency_key(request, "k-2")
    assert fields(caught.value.violations) == ["refund_id"]
    untouched = points_pb2.HoldPointsRequest(hold_id="h")
    apply_idempotency_key(untouched, None)
    apply_idempotency_key(untouched, "")
    assert untouched.hold_id == "h"
    read = accounts_pb2.GetMemberRequest(name="members/m1")
    apply_idempotency_key(read, "k-3")  # reads have no key: the header is ignored
    assert read == accounts_pb2.GetMemberRequest(name="members/m1")
