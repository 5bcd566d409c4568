"""Protobuf <-> domain of ExportMemberLedger and StreamMemberLedger (internal, for the privacy
service)."""

from __future__ import annotations

from membership.points.v1 import points_pb2 as pb

from services.points.domain.ledger_export import ExportedHold, ExportedLot, ExportPage
from services.points.domain.ledger_stream import Section, StreamEnd, StreamItem
from services.points.proto import timestamp
from services.points.proto_restrictions import restriction_pb
from services.points.proto_transactions import transaction_pb
from services.runtime.errors import ViolationCollector
from services.runtime.names import member_id_of, member_name


def member_of(request: pb.ExportMemberLedgerRequest | pb.StreamMemberLedgerRequest) -> str:
    v = ViolationCollector()
    member_id = member_id_of(v, request.member, "member")
    v.raise_if_any()
    return member_id


def lot_pb(lot: ExportedLot) -> pb.ExportedLot:
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


def hold_pb(hold: ExportedHold) -> pb.ExportedHold:
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


_SECTIONS = {
    Section.TRANSACTIONS_JSON: pb.LEDGER_SECTION_TRANSACTIONS_JSON,
    Section.TRANSACTIONS_CSV: pb.LEDGER_SECTION_TRANSACTIONS_CSV,
    Section.LOTS_JSON: pb.LEDGER_SECTION_LOTS_JSON,
    Section.HOLDS_JSON: pb.LEDGER_SECTION_HOLDS_JSON,
}


def chunk_pb(item: StreamItem) -> pb.MemberLedgerChunk:
    """One message of StreamMemberLedger: the text's bytes as they are (never decoded)."""
    if isinstance(item, ExportPage):
        return pb.MemberLedgerChunk(summary=export_pb(item))
    if isinstance(item, StreamEnd):
        return pb.MemberLedgerChunk(
            end=pb.LedgerStreamEnd(
                transactions=item.transactions,
                lots=item.lots,
                holds=item.holds,
                text_bytes=item.text_bytes,
            )
        )
    return pb.MemberLedgerChunk(text=pb.LedgerText(section=_SECTIONS[item.section], data=item.data))
