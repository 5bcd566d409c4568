"""Protobuf <-> domain for membership.accounts.v1: members and their history as messages, and
each request parsed into domain values (every field violation at once, values never echoed).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from google.protobuf import timestamp_pb2
from membership.accounts.v1 import accounts_pb2 as pb
from membership.privacy.v1 import consent_pb2 as cpb

from services.accounts.domain import normalise, validation
from services.accounts.domain.consents import Channel, ConsentGrant, SignupConsents
from services.accounts.domain.lifecycle import Status
from services.accounts.domain.members import ListPosition, LookupKind, Member, StatusChange
from services.accounts.domain.registration import Registration
from services.runtime import paging
from services.runtime.errors import ViolationCollector, bad_field
from services.runtime.names import member_name

STATUS_TO_PB = {
    Status.ACTIVE: pb.MEMBER_STATUS_ACTIVE,
    Status.FROZEN: pb.MEMBER_STATUS_FROZEN,
    Status.CLOSED: pb.MEMBER_STATUS_CLOSED,
    Status.ERASED: pb.MEMBER_STATUS_ERASED,
}
PB_TO_STATUS = {v: k for k, v in STATUS_TO_PB.items()}
CHANNELS: dict[cpb.Channel.ValueType, Channel] = {
    cpb.CHANNEL_APP: Channel.APP,
    cpb.CHANNEL_WEB: Channel.WEB,
    cpb.CHANNEL_COUNTER: Channel.COUNTER,
    cpb.CHANNEL_PHONE: Channel.PHONE,
}
UPDATE_RULES = {
    "phone": normalise.normalise_phone,
    "email": normalise.normalise_email,
    "display_name": normalise.normalise_display_name,
}
LOOKUP_RULES = {
    LookupKind.PHONE: normalise.normalise_phone,
    LookupKind.EMAIL: normalise.normalise_email,
}


# --- domain -> protobuf -----------------------------------------------------------------


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def member_to_pb(member: Member) -> pb.Member:
    return pb.Member(
        name=member_name(member.member_id),
        member_id=member.member_id,
        phone=member.phone,
        email=member.email,
        display_name=member.display_name,
        status=STATUS_TO_PB[member.status],
        referral_code=member.referral_code,
        referred_by=member_name(member.referred_by) if member.referred_by else "",
        create_time=timestamp(member.created_at),
        update_time=timestamp(member.updated_at),
        view=pb.MEMBER_VIEW_FULL if member.full else pb.MEMBER_VIEW_MASKED,
    )


def status_change_to_pb(change: StatusChange) -> pb.StatusChange:
    return pb.StatusChange(
        from_status=STATUS_TO_PB[change.from_status],
        to_status=STATUS_TO_PB[change.to_status],
        reason=change.reason,
        actor=change.actor,
        change_time=timestamp(change.changed_at),
    )


# --- protobuf -> domain -----------------------------------------------------------------


def registration_of(request: pb.RegisterMemberRequest) -> Registration:
    v = ViolationCollector()
    v.request_id(request.request_id)
    reg = Registration(
        request_id=request.request_id,
        phone=validation.normalised(
            v, request.phone, normalise.normalise_phone, field="phone", required=True
        ),
        email=validation.normalised(v, request.email, normalise.normalise_email, field="email"),
        display_name=validation.normalised(
            v, request.display_name, normalise.normalise_display_name, field="display_name"
        ),
        referral_code=validation.normalised(
            v, request.referral_code, normalise.normalise_referral_code, field="referral_code"
        ),
        consents=_signup_consents(v, request),
    )
    v.raise_if_any()
    return reg


def _signup_consents(
    v: ViolationCollector, request: pb.RegisterMemberRequest
) -> SignupConsents | None:
    """The consents given at sign-up with their channel; None when none were given (a
    channel alone is then not recorded anywhere)."""
    given = [ConsentGrant(c.purpose, c.notice_version) for c in request.consents]
    grants = validation.consents(v, given)
    channel = CHANNELS.get(request.channel)
    if channel is None and request.channel != cpb.CHANNEL_UNSPECIFIED:
        v.add("channel", "unknown channel")
    elif channel is None and grants:
        v.add("channel", "required when consents are given: APP, WEB, COUNTER or PHONE")
    if not grants or channel is None:
        return None
    return SignupConsents(grants, channel)


class GetRequest(NamedTuple):
    member_id: str
    full: bool
    purpose: str  # stripped; "" unless full


def get_request_of(request: pb.GetMemberRequest) -> GetRequest:
    """GetMember's fields (the caller's permission to read in clear is checked before)."""
    full = request.view == pb.MEMBER_VIEW_FULL
    v = ViolationCollector()
    member_id = validation.member_id_of(v, request.name)
    if request.view not in pb.MemberView.values():
        v.add("view", "unknown view")
    if full:
        validation.purpose(v, request.purpose)
    v.raise_if_any()
    return GetRequest(member_id, full, request.purpose.strip() if full else "")


class LookupRequest(NamedTuple):
    kind: LookupKind
    normalised_value: str


def lookup_request_of(request: pb.LookupMemberRequest) -> LookupRequest:
    v = ViolationCollector()
    key = request.WhichOneof("key")
    if key is None:
        v.add("key", "set phone or email")
        v.raise_if_any()
    kind = LookupKind(str(key))
    value = validation.normalised(
        v, getattr(request, kind.value), LOOKUP_RULES[kind], field=kind.value, required=True
    )
    v.raise_if_any()
    return LookupRequest(kind, value)


class UpdateRequest(NamedTuple):
    member_id: str
    request_id: str
    changes: dict[str, str]  # normalised new values of the fields the mask names
    validate_only: bool


def update_request_of(request: pb.UpdateMemberRequest) -> UpdateRequest:
    v = ViolationCollector()
    v.request_id(request.request_id)
    member_id = validation.member_id_of(v, request.member.name, field="member.name")
    paths = validation.update_paths(v, list(request.update_mask.paths))
    changes = {
        p: validation.normalised(
            v,
            getattr(request.member, p),
            UPDATE_RULES[p],
            field=f"member.{p}",
            required=p == "phone",
        )
        for p in paths
    }
    v.raise_if_any()
    return UpdateRequest(member_id, request.request_id, changes, request.validate_only)


class ChangeRequest(NamedTuple):
    """A lifecycle change or an erasure of a member: who, under which key, and why."""

    member_id: str
    request_id: str
    reason: str  # stripped


def change_request_of(*, name: str, request_id: str, reason: str) -> ChangeRequest:
    v = ViolationCollector()
    member_id = validation.member_id_of(v, name)
    v.request_id(request_id)
    validation.reason(v, reason)
    v.raise_if_any()
    return ChangeRequest(member_id, request_id, reason.strip())


class ExportRequest(NamedTuple):
    member_id: str
    purpose: str  # stripped


def export_request_of(request: pb.ExportMemberDataRequest) -> ExportRequest:
    v = ViolationCollector()
    member_id = validation.member_id_of(v, request.name)
    validation.purpose(v, request.purpose)
    v.raise_if_any()
    return ExportRequest(member_id, request.purpose.strip())


# --- ListMembers ------------------------------------------------------------------------


class ListRequest(NamedTuple):
    status: Status | None
    after: ListPosition | None
    page_size: int
    query: dict[str, Any]  # what a page token is bound to


def list_request_of(request: pb.ListMembersRequest) -> ListRequest:
    v = ViolationCollector()
    if request.status not in pb.MemberStatus.values():
        v.add("status", "unknown status")
    v.raise_if_any()
    size = paging.page_size(request.page_size)
    status = PB_TO_STATUS.get(request.status)
    query: dict[str, Any] = {"status": status.value if status else ""}
    after = _position(paging.decode_token(request.page_token, query))
    return ListRequest(status, after, size, query)


def list_response(members: Sequence[Member], listed: ListRequest) -> pb.ListMembersResponse:
    """The page of `members` (fetched one beyond the page size, to know if more follow)."""
    size = listed.page_size
    token = ""
    if len(members) > size:
        last = members[size - 1]
        token = paging.encode_token(
            {"t": last.created_at.isoformat(), "m": last.member_id}, listed.query
        )
    return pb.ListMembersResponse(
        members=[member_to_pb(m) for m in members[:size]], next_page_token=token
    )


def _position(position: dict[str, object] | None) -> ListPosition | None:
    if position is None:
        return None
    t, m = position.get("t"), position.get("m")
    try:
        if not isinstance(t, str) or not isinstance(m, str):
            raise ValueError("position fields must be text")
        when = datetime.fromisoformat(t)
        if when.tzinfo is None:
            raise ValueError("position time needs a time zone")
        when = when.astimezone(UTC)  # OverflowError beyond the ends of the calendar
    except (ValueError, OverflowError) as exc:
        raise bad_field("page_token", "not a page token of this list") from exc
    if not (0 < len(m) <= validation.MEMBER_ID_MAX and m.isascii() and m.isalnum()):
        raise bad_field("page_token", "not a page token of this list")
    return ListPosition(when, m)
