"""gRPC <-> domain for membership.privacy.v1.ConsentService (messages: proto_consent.py, the
use cases: consent.py and consent_statistics.py)."""

from __future__ import annotations

import grpc
from membership.privacy.v1 import consent_pb2 as pb
from membership.privacy.v1 import consent_pb2_grpc as pb_grpc

from services.privacy import proto_consent as proto
from services.privacy.consent import Consents
from services.privacy.consent_statistics import ConsentStatisticsCache
from services.runtime.context import current_caller


class ConsentServicer(pb_grpc.ConsentServiceServicer):
    def __init__(self, consents: Consents, statistics: ConsentStatisticsCache) -> None:
        self._consents = consents
        self._statistics = statistics

    async def ListPurposes(
        self, request: pb.ListPurposesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPurposesResponse:
        purposes = self._consents.catalogue.purposes.values()
        return pb.ListPurposesResponse(purposes=[proto.purpose_pb(p) for p in purposes])

    async def GrantConsent(
        self, request: pb.GrantConsentRequest, context: grpc.aio.ServicerContext
    ) -> pb.GrantConsentResponse:
        asked = proto.grant_of(request, self._consents.catalogue)
        states = await self._consents.grant(
            current_caller(),
            asked.member_id,
            asked.grants,
            channel=asked.channel,
            request_id=asked.request_id,
        )
        consents = [proto.consent_pb(asked.member_id, s) for s in states]
        return pb.GrantConsentResponse(consents=consents)

    async def WithdrawConsent(
        self, request: pb.WithdrawConsentRequest, context: grpc.aio.ServicerContext
    ) -> pb.WithdrawConsentResponse:
        asked = proto.withdrawal_of(request, self._consents.catalogue)
        states = await self._consents.withdraw(
            current_caller(),
            asked.member_id,
            asked.purposes,
            channel=asked.channel,
            request_id=asked.request_id,
        )
        consents = [proto.consent_pb(asked.member_id, s) for s in states]
        return pb.WithdrawConsentResponse(consents=consents)

    async def GetConsents(
        self, request: pb.GetConsentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetConsentsResponse:
        member_id = proto.member_of(request)
        states = await self._consents.states(member_id)
        return pb.GetConsentsResponse(consents=[proto.consent_pb(member_id, s) for s in states])

    async def CheckConsent(
        self, request: pb.CheckConsentRequest, context: grpc.aio.ServicerContext
    ) -> pb.CheckConsentResponse:
        member_id = proto.check_of(request, self._consents.catalogue)
        return proto.check_pb(await self._consents.check(member_id, request.purpose))

    async def GetConsentStatistics(
        self, request: pb.GetConsentStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetConsentStatisticsResponse:
        return proto.statistics_pb(await self._statistics.get())
