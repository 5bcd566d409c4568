"""gRPC <-> domain: ExportMemberLedger, RestrictMember (internal, for the privacy service)."""

from __future__ import annotations

from datetime import UTC

import grpc
from membership.points.v1 import points_pb2 as pb

from services.points.ledger_export import ExportPage, LedgerExport, page_size
from services.points.restrictions import Restrictions, RestrictRequest
from services.points.server_base import RpcGroup, timestamp
from services.points.server_transactions import transaction_pb
from services.points.store.ledger_export import HoldRow, LotRow
from services.points.store.restrictions import RestrictionRow
from services.runtime.errors import ViolationCollector
from services.runtime.names import member_id_of, member_name

MAX_LEGAL_BASIS = 2000


def restrict_request_of(request: pb.RestrictMemberRequest) -> RestrictRequest:
    v = ViolationCollector()
    member_id = member_id_of(v, request.member, "member")
    v.request_id(request.request_id)
    v.text(request.legal_basis, "legal_basis", MAX_LEGAL_BASIS, required=True)
    end = None
    if not request.HasField("retention_end_time"):
        v.add("retention_end_time", "required")
    else:
        try:
            end = request.retention_end_time.ToDatetime(tzinfo=UTC)
        except (ValueError, OverflowError):
            v.add("retention_end_time", "not a valid time")
    v.raise_if_any()
    assert end is not None
    return RestrictRequest(member_id, request.request_id, request.legal_basis, end)


def restriction_pb(row: RestrictionRow) -> pb.MemberRestriction:
    return pb.MemberRestriction(
        member=member_name(row.member_id),
        request_id=row.request_id,
        legal_basis=row.legal_basis,
        retention_end_time=timestamp(row.retention_end),
        restrict_time=timestamp(row.restricted_at),
    )


def lot_pb(lot: LotRow) -> pb.ExportedLot:
    return pb.ExportedLot(
        lot_id=lot.lot_id,
        transaction_id=lot.txn_id,
        state=lot.state,
        points=lot.points,
        remaining=lot.remaining,
        earn_time=timestamp(lot.earned_at),
        available_time=timestamp(lot.available_at),
        expire_time=timestamp(lot.expires_at),
        rule_version=lot.rule_version,
    )


def hold_pb(hold: HoldRow) -> pb.ExportedHold:
    return pb.ExportedHold(
        hold_id=hold.hold_id,
        state=hold.state,
        points=hold.points,
        captured_points=hold.captured_points,
        expire_time=timestamp(hold.expires_at),
        rule_version=hold.rule_version,
        transaction_id=hold.hold_txn_id,
        create_time=timestamp(hold.created_at),
        close_time=timestamp(hold.closed_at),
        points_clawed_back=hold.clawed_back_points,
    )


def export_pb(page: ExportPage) -> pb.MemberLedgerExport:
    name = member_name(page.member_id)
    b = page.balance
    tier = page.tier
    return pb.MemberLedgerExport(
        member=name,
        balance=pb.Balance(
            name=name + "/balance",
            available=b.available,
            pending=b.pending,
            held=b.held,
            lifetime_earned=b.lifetime_earned,
        ),
        tier=None
        if tier is None
        else pb.ExportedTier(
            tier_code=tier.code,
            since_time=timestamp(tier.since),
            review_time=timestamp(tier.review_at),
            grace_end_time=timestamp(tier.grace_until),
            rule_version=tier.rule_version,
        ),
        transactions=[
            pb.ExportedTransaction(transaction=transaction_pb(e), sentence=s)
            for e, s in page.entries
        ],
        lots=[lot_pb(lot) for lot in page.lots],
        holds=[hold_pb(h) for h in page.holds],
        reward_redemptions=[
            pb.ExportedRewardRedemption(
                sku=r.sku, units=r.units, update_time=timestamp(r.updated_at)
            )
            for r in page.redemptions
        ],
        restriction=None if page.restriction is None else restriction_pb(page.restriction),
        next_page_token=page.next_page_token,
    )


class PrivacyRpcs(RpcGroup):
    async def ExportMemberLedger(
        self, request: pb.ExportMemberLedgerRequest, context: grpc.aio.ServicerContext
    ) -> pb.MemberLedgerExport:
        v = ViolationCollector()
        member_id = member_id_of(v, request.member, "member")
        v.raise_if_any()
        size = page_size(request.page_size)
        page = await LedgerExport(self.deps.pool).export(member_id, size, request.page_token)
        return export_pb(page)

    async def RestrictMember(
        self, request: pb.RestrictMemberRequest, context: grpc.aio.ServicerContext
    ) -> pb.MemberRestriction:
        restrictions = Restrictions(self.deps.pool, self.deps.clock)
        return restriction_pb(await restrictions.restrict(restrict_request_of(request)))
