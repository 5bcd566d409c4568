"""gRPC <-> domain for membership.privacy.v1.ConsentService."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from membership.privacy.v1 import consent_pb2 as pb
from membership.privacy.v1 import consent_pb2_grpc as pb_grpc

from services.privacy.consent import Consents, ConsentState, Grant, Status
from services.privacy.consent_statistics import ConsentStatisticsCache
from services.privacy.domain.purpose_catalogue import MAX_NOTICE_VERSION, PURPOSE_CODE, Purpose
from services.runtime.context import current_caller
from services.runtime.errors import ViolationCollector
from services.runtime.names import member_id_of, member_name

MAX_PURPOSES_PER_CALL = 16

CHANNELS_BY_ENUM: dict[pb.Channel.ValueType, str] = {
    pb.CHANNEL_APP: "app",
    pb.CHANNEL_WEB: "web",
    pb.CHANNEL_COUNTER: "counter",
    pb.CHANNEL_PHONE: "phone",
}
CHANNEL_ENUMS = {name: value for value, name in CHANNELS_BY_ENUM.items()}
_STATUSES = {
    Status.GRANTED: pb.CONSENT_STATUS_GRANTED,
    Status.WITHDRAWN: pb.CONSENT_STATUS_WITHDRAWN,
    Status.NOT_GIVEN: pb.CONSENT_STATUS_NOT_GIVEN,
}


def channel_of(v: ViolationCollector, value: pb.Channel.ValueType) -> str:
    channel = CHANNELS_BY_ENUM.get(value, "")
    if not channel:
        v.add("channel", "required: one of APP, WEB, COUNTER, PHONE")
    return channel


def _known(consents: Consents, code: str) -> bool:
    # the pattern check first keeps arbitrary input out of the catalogue lookup
    return PURPOSE_CODE.fullmatch(code) is not None and consents.catalogue.get(code) is not None


def _purpose_codes(
    v: ViolationCollector, consents: Consents, codes: Sequence[str], path: str, suffix: str = ""
) -> None:
    """1-16 distinct purposes of the catalogue."""
    if not 1 <= len(codes) <= MAX_PURPOSES_PER_CALL:
        v.add(path, f"between 1 and {MAX_PURPOSES_PER_CALL} purposes")
    seen: set[str] = set()
    for i, code in enumerate(codes):
        field = f"{path}[{i}]{suffix}"
        if not _known(consents, code):
            v.add(field, "unknown purpose")
        elif code in seen:
            v.add(field, "each purpose at most once")
        seen.add(code)


def _purpose_pb(p: Purpose) -> pb.Purpose:
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
        channel=CHANNEL_ENUMS.get(state.channel, pb.CHANNEL_UNSPECIFIED),
        necessary=state.purpose.necessary,
        separate_consent=state.purpose.separate_consent,
    )
    if state.update_time is not None:
        consent.update_time.FromDatetime(state.update_time)
    return consent


class ConsentServicer(pb_grpc.ConsentServiceServicer):
    def __init__(self, consents: Consents, statistics: ConsentStatisticsCache) -> None:
        self._consents = consents
        self._statistics = statistics

    async def ListPurposes(
        self, request: pb.ListPurposesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPurposesResponse:
        purposes = self._consents.catalogue.purposes.values()
        return pb.ListPurposesResponse(purposes=[_purpose_pb(p) for p in purposes])

    async def GrantConsent(
        self, request: pb.GrantConsentRequest, context: grpc.aio.ServicerContext
    ) -> pb.GrantConsentResponse:
        v = ViolationCollector()
        member_id = member_id_of(v, request.member, "member")
        codes = [g.purpose for g in request.grants]
        _purpose_codes(v, self._consents, codes, "grants", ".purpose")
        for i, g in enumerate(request.grants):
            if not 1 <= g.notice_version <= MAX_NOTICE_VERSION:
                v.add(f"grants[{i}].notice_version", "required: the notice version shown")
        channel = channel_of(v, request.channel)
        v.request_id(request.request_id)
        v.raise_if_any()
        grants = [Grant(g.purpose, g.notice_version) for g in request.grants]
        states = await self._consents.grant(
            current_caller(), member_id, grants, channel, request.request_id
        )
        return pb.GrantConsentResponse(consents=[consent_pb(member_id, s) for s in states])

    async def WithdrawConsent(
        self, request: pb.WithdrawConsentRequest, context: grpc.aio.ServicerContext
    ) -> pb.WithdrawConsentResponse:
        v = ViolationCollector()
        member_id = member_id_of(v, request.member, "member")
        _purpose_codes(v, self._consents, request.purposes, "purposes")
        channel = channel_of(v, request.channel)
        v.request_id(request.request_id)
        v.raise_if_any()
        states = await self._consents.withdraw(
            current_caller(), member_id, list(request.purposes), channel, request.request_id
        )
        return pb.WithdrawConsentResponse(consents=[consent_pb(member_id, s) for s in states])

    async def GetConsents(
        self, request: pb.GetConsentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetConsentsResponse:
        v = ViolationCollector()
        member_id = member_id_of(v, request.member, "member")
        v.raise_if_any()
        states = await self._consents.states(member_id)
        return pb.GetConsentsResponse(consents=[consent_pb(member_id, s) for s in states])

    async def CheckConsent(
        self, request: pb.CheckConsentRequest, context: grpc.aio.ServicerContext
    ) -> pb.CheckConsentResponse:
        v = ViolationCollector()
        member_id = member_id_of(v, request.member, "member")
        if not _known(self._consents, request.purpose):
            v.add("purpose", "unknown purpose")
        v.raise_if_any()
        state = await self._consents.check(member_id, request.purpose)
        return pb.CheckConsentResponse(
            allowed=state.allowed,
            status=_STATUSES[state.status],
            stale=state.stale,
            consented_notice_version=state.notice_version,
            current_notice_version=state.purpose.current_version,
            necessary=state.purpose.necessary,
        )

    async def GetConsentStatistics(
        self, request: pb.GetConsentStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetConsentStatisticsResponse:
        statistics = await self._statistics.get()
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
