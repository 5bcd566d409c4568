"""Protobuf <-> domain of Reconcile."""

from __future__ import annotations

from membership.points.v1 import points_pb2 as pb

from services.points.domain.reconcile import Invariant, Report
from services.runtime.errors import ViolationCollector
from services.runtime.names import member_id_of, member_name

INVARIANT_TO_PB = {
    invariant: pb.LedgerInvariant.Value(f"LEDGER_INVARIANT_{invariant.value}")
    for invariant in Invariant
}


def member_of(request: pb.ReconcileRequest) -> str | None:
    """The one member to check; None for the whole ledger."""
    if not request.member:
        return None
    v = ViolationCollector()
    member_id = member_id_of(v, request.member, "member")
    v.raise_if_any()
    return member_id


def report_pb(report: Report) -> pb.ReconcileResponse:
    c = report.counts
    return pb.ReconcileResponse(
        ok=report.ok,
        checked=pb.ReconcileCounts(
            members=c.members, transactions=c.transactions, transfers=c.transfers, lots=c.lots
        ),
        violations=[
            pb.LedgerViolation(
                invariant=INVARIANT_TO_PB[found.invariant],
                member=member_name(found.member_id) if found.member_id else "",
                detail=found.detail,
            )
            for found in report.violations
        ],
        total_violations=report.total,
    )
