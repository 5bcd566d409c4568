"""Protobuf <-> domain of PromotionsService's campaigns."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2
from membership.points.v1 import points_pb2 as pb
from membership.points.v1 import promotions_pb2 as ppb

from services.points.domain.campaign_calendar import HolidaySchedule
from services.points.domain.campaign_simulation import Simulation
from services.points.domain.campaigns import (
    Audience,
    Budget,
    Campaign,
    CampaignQuery,
    CampaignSpec,
    CampaignState,
    CampaignView,
    Effect,
    EffectKind,
    Limit,
    MinimumAmount,
    Schedule,
)
from services.points.domain.promotion_terms import MAX_LIST_ITEMS
from services.points.proto import timestamp
from services.runtime.errors import ViolationCollector

CAMPAIGN_PREFIX = "campaigns/"
STATES = {
    ppb.Campaign.STATE_DRAFT: CampaignState.DRAFT,
    ppb.Campaign.STATE_ACTIVE: CampaignState.ACTIVE,
    ppb.Campaign.STATE_ENDED: CampaignState.ENDED,
}
STATE_PB = {v: k for k, v in STATES.items()}
HOLIDAYS = {
    ppb.CampaignSchedule.HOLIDAY_CALENDAR_PUBLIC_HOLIDAYS: HolidaySchedule.PUBLIC_HOLIDAYS,
    ppb.CampaignSchedule.HOLIDAY_CALENDAR_GOLDEN_WEEKS: HolidaySchedule.GOLDEN_WEEKS,
}
HOLIDAYS_PB = {v: k for k, v in HOLIDAYS.items()}
EFFECTS = {
    ppb.CampaignEffect.KIND_MULTIPLIER: EffectKind.MULTIPLIER,
    ppb.CampaignEffect.KIND_FIXED_POINTS: EffectKind.FIXED_POINTS,
    ppb.CampaignEffect.KIND_COUPON: EffectKind.COUPON,
}
EFFECTS_PB = {v: k for k, v in EFFECTS.items()}
MAX_LIST_SIZE = 200


def campaign_id_of(name: str) -> str:
    """`campaigns/{id}` -> id (checked by the use case; a bad name is a bad id)."""
    return name[len(CAMPAIGN_PREFIX) :] if name.startswith(CAMPAIGN_PREFIX) else "/" + name


def _required_time(
    v: ViolationCollector, message: ppb.Campaign, field: str
) -> timestamp_pb2.Timestamp | None:
    if not message.HasField(field):  # type: ignore[arg-type]
        v.add(f"campaign.{field}", "required")
        return None
    value: timestamp_pb2.Timestamp = getattr(message, field)
    return value


def spec_of(message: ppb.Campaign) -> CampaignSpec:
    """The terms of a campaign message; the faults a message alone shows (missing window or
    effect, lists too long) as one INVALID_ARGUMENT; domain/campaigns.check_spec the rest."""
    v = ViolationCollector()
    start = _required_time(v, message, "start_time")
    end = _required_time(v, message, "end_time")
    kind = EFFECTS.get(message.effect.kind)
    if kind is None:
        v.add("campaign.effect.kind", "required: MULTIPLIER, FIXED_POINTS or COUPON")
    audience = message.audience
    for name in ("tiers", "merchant_categories", "merchant_ids", "channels"):
        if len(getattr(audience, name)) > MAX_LIST_ITEMS:
            v.add(f"campaign.audience.{name}", f"at most {MAX_LIST_ITEMS} values")
    if message.schedule.holidays and message.schedule.holidays not in HOLIDAYS:
        v.add("campaign.schedule.holidays", "not a holiday schedule")
    if audience.joined_within_days < 0:
        v.add("campaign.audience.joined_within_days", "must not be negative")
    v.raise_if_any()
    assert start is not None and end is not None and kind is not None
    return CampaignSpec(
        name=message.display_name,
        start_at=start.ToDatetime(tzinfo=UTC),
        end_at=end.ToDatetime(tzinfo=UTC),
        effect=Effect(
            kind,
            message.effect.multiplier_bps,
            message.effect.points,
            message.effect.coupon_template.removeprefix("couponTemplates/"),
        ),
        schedule=_schedule(message.schedule),
        audience=_audience(audience),
        priority=message.priority,
        exclusive=message.exclusive,
        cap_per_payment=message.cap_per_payment or None,
        tier_qualifying=message.tier_qualifying,
        budget=Budget(
            _limit(message.budget.total),
            _limit(message.budget.per_day),
            _limit(message.budget.per_member),
        ),
    )


def _schedule(message: ppb.CampaignSchedule) -> Schedule:
    return Schedule(
        tuple(message.days_of_week[:MAX_LIST_ITEMS]),
        tuple(message.days_of_month[:MAX_LIST_ITEMS]),
        HOLIDAYS.get(message.holidays),
    )


def _audience(message: ppb.CampaignAudience) -> Audience:
    minimum = None
    if message.HasField("minimum_amount"):
        amount = message.minimum_amount
        minimum = MinimumAmount(amount.currency_code, amount.amount_minor)
    return Audience(
        tiers=tuple(message.tiers),
        joined_within_days=message.joined_within_days or None,
        categories=tuple(message.merchant_categories),
        merchant_ids=tuple(message.merchant_ids),
        channels=tuple(message.channels),
        minimum=minimum,
        first_payment=message.first_payment,
    )


def _limit(message: ppb.CampaignLimit) -> Limit:
    # 0 is "no bound"; a negative one stays, for check_spec to name
    return Limit(message.points or None, message.awards or None)


def _limit_pb(limit: Limit) -> ppb.CampaignLimit:
    return ppb.CampaignLimit(points=limit.points or 0, awards=limit.awards or 0)


def campaign_pb(view: CampaignView) -> ppb.Campaign:
    campaign: Campaign = view.campaign
    spec = campaign.spec
    audience, schedule = spec.audience, spec.schedule
    minimum = audience.minimum
    return ppb.Campaign(
        name=CAMPAIGN_PREFIX + campaign.campaign_id,
        state=STATE_PB[campaign.state],
        version=campaign.version,
        display_name=spec.name,
        start_time=timestamp(spec.start_at),
        end_time=timestamp(spec.end_at),
        schedule=ppb.CampaignSchedule(
            days_of_week=list(schedule.days_of_week),
            days_of_month=list(schedule.days_of_month),
            holidays=HOLIDAYS_PB[schedule.holidays]
            if schedule.holidays
            else ppb.CampaignSchedule.HOLIDAY_CALENDAR_UNSPECIFIED,
        ),
        audience=ppb.CampaignAudience(
            tiers=list(audience.tiers),
            joined_within_days=audience.joined_within_days or 0,
            merchant_categories=list(audience.categories),
            merchant_ids=list(audience.merchant_ids),
            channels=list(audience.channels),
            minimum_amount=None
            if minimum is None
            else pb.Money(currency_code=minimum.currency, amount_minor=minimum.amount_minor),
            first_payment=audience.first_payment,
        ),
        effect=ppb.CampaignEffect(
            kind=EFFECTS_PB[spec.effect.kind],
            multiplier_bps=spec.effect.multiplier_bps,
            points=spec.effect.points,
            coupon_template=f"couponTemplates/{spec.effect.coupon_template}"
            if spec.effect.coupon_template
            else "",
        ),
        priority=spec.priority,
        exclusive=spec.exclusive,
        cap_per_payment=spec.cap_per_payment or 0,
        tier_qualifying=spec.tier_qualifying,
        budget=ppb.CampaignBudget(
            total=_limit_pb(spec.budget.total),
            per_day=_limit_pb(spec.budget.per_day),
            per_member=_limit_pb(spec.budget.per_member),
        ),
        points_given=view.points_given,
        awards_given=view.awards_given,
        create_time=timestamp(campaign.created_at),
        update_time=timestamp(campaign.updated_at),
    )


def query_of(request: ppb.ListCampaignsRequest) -> CampaignQuery:
    v = ViolationCollector()
    states = set()
    for index, state in enumerate(request.states):
        if state not in STATES:
            v.add(f"states[{index}]", "not a campaign state")
        else:
            states.add(STATES[state])
    size = request.page_size or 50
    if not 0 < size <= MAX_LIST_SIZE:
        v.add("page_size", f"must be within 1..{MAX_LIST_SIZE}")
    v.raise_if_any()
    active_at = request.active_at.ToDatetime(tzinfo=UTC) if request.HasField("active_at") else None
    return CampaignQuery(frozenset(states), active_at, size)


def simulation_request_of(
    request: ppb.SimulateCampaignRequest,
) -> tuple[str, CampaignSpec | None, datetime | None, datetime | None]:
    """(campaign id, inline terms or None, start, end); a stored campaign or terms, not
    both."""
    v = ViolationCollector()
    if bool(request.name) == request.HasField("campaign"):
        v.add("name", "name a stored campaign, or give its terms in `campaign`, not both")
    v.raise_if_any()
    spec = None
    if request.HasField("campaign"):
        terms = ppb.Campaign()
        terms.CopyFrom(request.campaign)
        # the period replaces the window: any valid one lets the terms be read
        if not terms.HasField("start_time"):
            terms.start_time.FromSeconds(0)
        if not terms.HasField("end_time"):
            terms.end_time.FromSeconds(1)
        spec = spec_of(terms)
    start = request.start_time.ToDatetime(tzinfo=UTC) if request.HasField("start_time") else None
    end = request.end_time.ToDatetime(tzinfo=UTC) if request.HasField("end_time") else None
    return campaign_id_of(request.name) if request.name else "", spec, start, end


def simulation_pb(result: Simulation) -> ppb.CampaignSimulation:
    return ppb.CampaignSimulation(
        points=result.points,
        awards=result.awards,
        payments_reached=result.payments_reached,
        members_reached=result.members_reached,
        payments_scanned=result.payments_scanned,
        budget_exhausted_time=timestamp(result.budget_exhausted_at),
        days_budget_exhausted=result.days_budget_exhausted,
        payments_over_budget=result.payments_over_budget,
        truncated=result.truncated,
        days=[
            ppb.CampaignSimulationDay(day=day.isoformat(), points=p, awards=n)
            for day, (p, n) in sorted(result.days.items())
        ],
    )
