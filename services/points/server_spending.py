"""gRPC <-> domain: HoldPoints, CapturePoints, ReleaseHold, RedeemPoints."""

from __future__ import annotations

import grpc
from membership.points.v1 import points_pb2 as pb

from services.points.proto_spending import (
    capture_of,
    hold_of,
    hold_pb,
    redeem_of,
    redemption_pb,
    release_of,
)
from services.points.server_base import RpcGroup


class SpendingRpcs(RpcGroup):
    async def HoldPoints(
        self, request: pb.HoldPointsRequest, context: grpc.aio.ServicerContext
    ) -> pb.Hold:
        hold = hold_of(request)
        held = self.deps.spending.hold(hold)
        return hold_pb(await self.for_known_member(hold.member_id, held))

    async def CapturePoints(
        self, request: pb.CapturePointsRequest, context: grpc.aio.ServicerContext
    ) -> pb.Hold:
        capture = capture_of(request)
        captured = self.deps.spending.capture(capture)
        return hold_pb(await self.for_known_member(capture.member_id, captured))

    async def ReleaseHold(
        self, request: pb.ReleaseHoldRequest, context: grpc.aio.ServicerContext
    ) -> pb.Hold:
        return hold_pb(await self.deps.spending.release(release_of(request)))

    async def RedeemPoints(
        self, request: pb.RedeemPointsRequest, context: grpc.aio.ServicerContext
    ) -> pb.Redemption:
        redeem = redeem_of(request)
        redeemed = self.deps.spending.redeem(redeem)
        return redemption_pb(await self.for_known_member(redeem.member_id, redeemed))
