"""membership.privacy.v1.ConsentService's messages <-> domain: purposes, consents and
statistics as messages; requests checked against the catalogue (every violation at once)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from membership.privacy.v1 import consent_pb2 as pb

from services.privacy.domain.consent import Channel, ConsentState, Grant, Status
from services.privacy.domain.consent_statistics import ConsentStatistics
from services.privacy.domain.purpose_catalogue import (
    MAX_NOTICE_VERSION,
    PURPOSE_CODE,
    Catalogue,
    Purpose,
)
from services.privacy.proto import channel_enum, channel_of
from services.runtime.errors import ViolationCollector
from services.runtime.names import member_id_of, member_name

MAX_PURPOSES_PER_CALL = 16

_STATUSES = {
    Status.GRANTED: pb.CONSENT_STATUS_GRANTED,
    Status.WITHDRAWN: pb.CONSENT_STATUS_WITHDRAWN,
    Status.NOT_GIVEN: pb.CONSENT_STATUS_NOT_GIVEN,
}


@dataclass(frozen=True)
class GrantRequest:
    member_id: str
    grants: list[Grant]
    channel: Channel | None
    request_id: str


@dataclass(frozen=True)
class WithdrawRequest:
    member_id: str
    purposes: list[str]
    channel: Channel | None
    request_id: str


def _known(catalogue: Catalogue, code: str) -> bool:
    # the pattern check first keeps arbitrary input out of the catalogue lookup
    return PURPOSE_CODE.fullmatch(code) is not None and catalogue.get(code) is not None


def _purpose_codes(
    v: ViolationCollector, catalogue: Catalogue, codes: Sequence[str], path: str, suffix: str = ""
) -> None:
    """1-16 distinct purposes of the catalogue."""
    if not 1 <= len(codes) <= MAX_PURPOSES_PER_CALL:
        v.add(path, f"between 1 and {MAX_PURPOSES_PER_CALL} purposes")
    seen: set[str] = set()
    for i, code in enumerate(codes):
        field = f"{path}[{i}]{suffix}"
        if not _known(catalogue, code):
            v.add(field, "unknown purpose")
        elif code in seen:
            v.add(field, "each purpose at most once")
        seen.add(code)


def grant_of(request: pb.GrantConsentRequest, catalogue: Catalogue) -> GrantRequest:
    v = ViolationCollector()
    member_id = member_id_of(v, request.member, "member")
    codes = [g.purpose for g in request.grants]
    _purpose_codes(v, catalogue, codes, "grants", ".purpose")
    for i, g in enumerate(request.grants):
        if not 1 <= g.notice_version <= MAX_NOTICE_VERSION:
            v.add(f"grants[{i}].notice_version", "required: the notice version shown")
    channel = channel_of(v, request.channel)
    v.request_id(request.request_id)
    v.raise_if_any()
    grants = [Grant(g.purpose, g.notice_version) for g in request.grants]
    return GrantRequest(member_id, grants, channel, request.request_id)


def withdrawal_of(request: pb.WithdrawConsentRequest, catalogue: Catalogue) -> WithdrawRequest:
    v = ViolationCollector()
    member_id = member_id_of(v, request.member, "member")
    _purpose_codes(v, catalogue, request.purposes, "purposes")
    channel = channel_of(v, request.channel)
    v.request_id(request.request_id)
    v.raise_if_any()
    return WithdrawRequest(member_id, list(request.purposes), channel, request.request_id)


def member_of(request: pb.GetConsentsRequest) -> str:
    v = ViolationCollector()
    member_id = member_id_of(v, request.member, "member")
    v.raise_if_any()
    return member_id


def check_of(request: pb.CheckConsentRequest, catalogue: Catalogue) -> str:
    """The member id of a check of one purpose of the catalogue."""
    v = ViolationCollector()
    member_id = member_id_of(v, request.member, "member")
    if not _known(catalogue, request.purpose):
        v.add("purpose", "unknown purpose")
    v.raise_if_any()
    return member_id


def purpose_pb(p: Purpose) -> pb.Purpose:
    notices = [pb.NoticeVersion(version=n.version, material=n.material) for n in p.notices]
    return pb.Purpose(
        code=p.code,
        description=p.description,
        legal_basis=p.legal_basis,
        necessary=p.necessary,
        separate_consent=p.separate_consent,
        current_notice_version=p.current_version,
        notice_versions=notices,
    )


def consent_pb(member_id: str, state: ConsentState) -> pb.Consent:
    consent = pb.Consent(
        name=f"{member_name(member_id)}/consents/{state.purpose.code}",
        purpose=state.purpose.code,
        status=_STATUSES[state.status],
        notice_version=state.notice_version,
        current_notice_version=state.purpose.current_version,
        stale=state.stale,
        channel=channel_enum(state.channel),
        necessary=state.purpose.necessary,
        separate_consent=state.purpose.separate_consent,
    )
    if state.update_time is not None:
        consent.update_time.FromDatetime(state.update_time)
    return consent


def check_pb(state: ConsentState) -> pb.CheckConsentResponse:
    return pb.CheckConsentResponse(
        allowed=state.allowed,
        status=_STATUSES[state.status],
        stale=state.stale,
        consented_notice_version=state.notice_version,
        current_notice_version=state.purpose.current_version,
        necessary=state.purpose.necessary,
    )


def statistics_pb(statistics: ConsentStatistics) -> pb.GetConsentStatisticsResponse:
    response = pb.GetConsentStatisticsResponse(
        purposes=[
            pb.PurposeStatistics(
                purpose=p.purpose_code,
                granted_members=p.granted_members,
                stale_members=p.stale_members,
                withdrawn_members=p.withdrawn_members,
                not_given_members=p.not_given_members,
            )
            for p in statistics.purposes
        ],
        members=statistics.members,
    )
    response.compute_time.FromDatetime(statistics.compute_time)
    return response
