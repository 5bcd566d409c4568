"""gRPC <-> domain: membership.points.v1.PromotionsService (campaigns; its coupon RPCs are
server_coupons.py's)."""

from __future__ import annotations

import grpc
from membership.points.v1 import promotions_pb2 as ppb
from membership.points.v1 import promotions_pb2_grpc as ppb_grpc

from services.points.campaigns import Campaigns
from services.points.checkout import Checkout
from services.points.coupons import Coupons
from services.points.domain.campaigns import CampaignView
from services.points.proto_campaigns import (
    campaign_id_of,
    campaign_pb,
    query_of,
    simulation_pb,
    simulation_request_of,
    spec_of,
)
from services.points.server_coupons import CouponRpcs, RevokeRpcs


class PromotionsServicer(CouponRpcs, RevokeRpcs, ppb_grpc.PromotionsServiceServicer):
    """Campaigns here, coupons in server_coupons.py."""

    def __init__(self, campaigns: Campaigns, coupons: Coupons, checkout: Checkout) -> None:
        self._campaigns = campaigns
        self.coupons = coupons
        self.checkout = checkout

    async def CreateCampaign(
        self, request: ppb.CreateCampaignRequest, context: grpc.aio.ServicerContext
    ) -> ppb.Campaign:
        spec = spec_of(request.campaign)
        return campaign_pb(await self._campaigns.create(request.campaign_id, spec))

    async def UpdateCampaign(
        self, request: ppb.UpdateCampaignRequest, context: grpc.aio.ServicerContext
    ) -> ppb.Campaign:
        campaign_id = campaign_id_of(request.campaign.name)
        spec = spec_of(request.campaign)
        return campaign_pb(await self._campaigns.update(campaign_id, spec))

    async def ActivateCampaign(
        self, request: ppb.ActivateCampaignRequest, context: grpc.aio.ServicerContext
    ) -> ppb.Campaign:
        return campaign_pb(await self._campaigns.activate(campaign_id_of(request.name)))

    async def EndCampaign(
        self, request: ppb.EndCampaignRequest, context: grpc.aio.ServicerContext
    ) -> ppb.Campaign:
        return campaign_pb(await self._campaigns.end(campaign_id_of(request.name)))

    async def GetCampaign(
        self, request: ppb.GetCampaignRequest, context: grpc.aio.ServicerContext
    ) -> ppb.Campaign:
        return campaign_pb(await self._campaigns.get(campaign_id_of(request.name)))

    async def SimulateCampaign(
        self, request: ppb.SimulateCampaignRequest, context: grpc.aio.ServicerContext
    ) -> ppb.CampaignSimulation:
        campaign_id, spec, start, end = simulation_request_of(request)
        result = await self._campaigns.simulate(campaign_id, spec, start, end)
        return simulation_pb(result)

    async def ListCampaigns(
        self, request: ppb.ListCampaignsRequest, context: grpc.aio.ServicerContext
    ) -> ppb.ListCampaignsResponse:
        rows, token = await self._campaigns.list_campaigns(query_of(request), request.page_token)
        views = [campaign_pb(CampaignView(c)) for c in rows]
        return ppb.ListCampaignsResponse(campaigns=views, next_page_token=token)
