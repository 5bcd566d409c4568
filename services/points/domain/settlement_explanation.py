"""A settlement's explanation as the JSON text stored with its transaction, written
directly (a dict and `json.dumps` per settlement cost more than the rest of deciding it):
each step of the computation, the readable sentence, the debt the points repaid, and the
campaign versions that gave points."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from services.points.domain.campaign_awards import NO_CAMPAIGNS, CampaignAward, CampaignOutcome
from services.points.domain.earning import Earning, Step
from services.points.domain.ledger import TransactionKind

if TYPE_CHECKING:  # the settlement module imports this one
    from services.points.domain.settlement import Payment

_SETTLEMENT = TransactionKind.SETTLEMENT
_encode_string = json.encoder.encode_basestring  # a JSON string literal (C), non-ASCII kept
_JSON_BOOL = {True: "true", False: "false"}


def explanation_json(
    payment: Payment,
    earning: Earning,
    sentence: str,
    repaid: int,
    campaigns: CampaignOutcome = NO_CAMPAIGNS,
) -> str:
    """Each step of the computation as data, the readable sentence, the debt the points
    repaid and (when campaigns gave points) each campaign version's points and the points
    that do not count toward tiers, as JSON text written directly: a dict and `json.dumps`
    per settlement cost more than the rest of deciding it. Every text that is not made here
    is encoded as a JSON string (tests/unit/test_settlement_rows.py checks it parses to the
    document)."""
    steps = earning.steps
    awards = campaigns.awards
    own = steps[: len(steps) - len(awards) - 1] if awards else steps  # before campaigns'
    texts = [
        f'{{"name": "{s.name}", "value": "{s.value}", "note": {_encode_string(s.note)}}}'
        for s in own
    ]
    if awards:
        texts += _campaign_steps(steps[len(own) :], awards)
    steps_text = ", ".join(texts)
    return (
        f'{{"kind": "{_SETTLEMENT}", "payment": {{"currency": {_encode_string(payment.currency)},'
        f' "amount_minor": {payment.amount_minor},'
        f' "merchant_category": {_encode_string(payment.category)},'
        f' "merchant_id": {_encode_string(payment.merchant_id)},'
        f' "channel": {_encode_string(payment.channel)},'
        f' "occurred_at": "{payment.occurred_at.isoformat()}"}},'
        f' "steps": [{steps_text}], "points": {earning.points},'
        f' "none_reason": "{earning.none_reason}", "sentence": {_encode_string(sentence)},'
        f' "debt_repaid": {repaid}{_campaigns_json(campaigns)}}}'
    )


def _campaign_steps(steps: tuple[Step, ...], awards: tuple[CampaignAward, ...]) -> list[str]:
    """A `campaign` step per award, naming its campaign version, then the `total` step."""
    texts = [
        f'{{"name": "{s.name}", "value": "{s.value}", "note": {_encode_string(s.note)},'
        f' "campaign_id": {_encode_string(a.campaign_id)}, "version": {a.version},'
        f' "tier_qualifying": {_JSON_BOOL[a.tier_qualifying]}}}'
        for s, a in zip(steps, awards, strict=False)
    ]
    total = steps[-1]
    texts.append(
        f'{{"name": "{total.name}", "value": "{total.value}",'
        f' "note": {_encode_string(total.note)}}}'
    )
    return texts


def _campaigns_json(outcome: CampaignOutcome) -> str:
    if not outcome.awards:
        return ""
    return f', "points_not_qualifying": {outcome.points - outcome.qualifying_points}'
