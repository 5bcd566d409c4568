"""Protobuf <-> domain of HoldPoints, CapturePoints, ReleaseHold and RedeemPoints."""

from __future__ import annotations

from membership.points.v1 import points_pb2 as pb

from services.points.domain.spending import (
    CaptureRequest,
    HoldRequest,
    HoldState,
    HoldView,
    RedeemRequest,
    RedemptionResult,
    ReleaseRequest,
)
from services.points.proto import timestamp
from services.runtime.errors import ViolationCollector
from services.runtime.names import is_member_id, member_id_of, member_name

MAX_POINTS = 10**12  # far above any balance; keeps sums within int64
MAX_TEXT = 200
HOLD_STATES = {
    HoldState.HELD: pb.HOLD_STATE_HELD,
    HoldState.CAPTURED: pb.HOLD_STATE_CAPTURED,
    HoldState.RELEASED: pb.HOLD_STATE_RELEASED,
    HoldState.EXPIRED: pb.HOLD_STATE_EXPIRED,
    HoldState.CLAWED_BACK: pb.HOLD_STATE_CLAWED_BACK,
}


def _points(v: ViolationCollector, points: int) -> None:
    if not 0 < points <= MAX_POINTS:
        v.add("points", f"must be between 1 and {MAX_POINTS}")


def _hold_id(v: ViolationCollector, hold_id: str, field: str) -> None:
    v.request_id(hold_id, field)
    if "/" in hold_id:
        v.add(field, "must not contain '/'")  # it is a segment of the hold's name


def hold_name_of(v: ViolationCollector, name: str) -> tuple[str, str]:
    """(member_id, hold_id) of `members/{member_id}/holds/{hold_id}`."""
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "members" or parts[2] != "holds":
        v.add("name", "must be members/{member_id}/holds/{hold_id}")
        return "", ""
    if not is_member_id(parts[1]):
        v.add("name", "must be members/{member_id}/holds/{hold_id}")
    _hold_id(v, parts[3], "name")
    return parts[1], parts[3]


def hold_of(request: pb.HoldPointsRequest) -> HoldRequest:
    v = ViolationCollector()
    member_id = member_id_of(v, request.member, "member")
    _hold_id(v, request.hold_id, "hold_id")
    _points(v, request.points)
    v.text(request.reason, "reason", MAX_TEXT, required=False)
    v.text(request.reference, "reference", MAX_TEXT, required=False)
    v.raise_if_any()
    return HoldRequest(
        member_id, request.hold_id, request.points, request.reason, request.reference
    )


def capture_of(request: pb.CapturePointsRequest) -> CaptureRequest:
    v = ViolationCollector()
    member_id, hold_id = hold_name_of(v, request.name)
    v.request_id(request.capture_id, "capture_id")
    _points(v, request.points)
    v.raise_if_any()
    return CaptureRequest(member_id, hold_id, request.capture_id, request.points)


def release_of(request: pb.ReleaseHoldRequest) -> ReleaseRequest:
    v = ViolationCollector()
    member_id, hold_id = hold_name_of(v, request.name)
    v.request_id(request.request_id, "request_id")
    v.raise_if_any()
    return ReleaseRequest(member_id, hold_id, request.request_id)


def redeem_of(request: pb.RedeemPointsRequest) -> RedeemRequest:
    v = ViolationCollector()
    member_id = member_id_of(v, request.member, "member")
    v.request_id(request.request_id, "request_id")
    _points(v, request.points)
    v.text(request.reference, "reference", MAX_TEXT, required=False)
    v.raise_if_any()
    return RedeemRequest(member_id, request.request_id, request.points, request.reference)


def hold_pb(view: HoldView) -> pb.Hold:
    member = member_name(view.member_id)
    return pb.Hold(
        name=f"{member}/holds/{view.hold_id}",
        points=view.points,
        state=HOLD_STATES[view.state],
        captured_points=view.captured_points,
        expire_time=timestamp(view.expires_at),
        transaction=f"{member}/transactions/{view.txn_id}",
        rule_version=view.rule_version,
        points_clawed_back=view.clawed_back_points,
    )


def redemption_pb(result: RedemptionResult) -> pb.Redemption:
    member = member_name(result.member_id)
    return pb.Redemption(
        name=f"{member}/redemptions/{result.request_id}",
        points=result.points,
        transaction=f"{member}/transactions/{result.txn_id}",
        lots=[pb.LotTaken(points=p, expire_time=timestamp(at)) for _, p, at in result.lots],
        rule_version=result.rule_version,
    )
