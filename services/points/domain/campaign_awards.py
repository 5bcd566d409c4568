"""What running campaigns give a payment, without SQL (docs/decisions/points.md "Campaigns").

The rules, in order:
- a campaign reaches a payment when the payment occurred in its window, on a day its
  schedule names, and the payment and member fit every part of its audience;
- a multiplier gives the part above x1 of the base points (amount x rate x category, before
  the tier), so x2 doubles what the payment earns at x1; a fixed effect gives its points;
  each is rounded down once and limited by the campaign's cap per payment;
- the tier multiplier and the program's caps apply to the program's points only: campaign
  points are the campaign's budget's business, not the daily cap's;
- payments in a non-earning category get no campaign points;
- campaigns are tried by priority (higher first, then id); the first campaign that gives
  points, when exclusive, gives alone; an exclusive one after others gave is skipped;
- an award is limited by what is left of every budget it draws on (whole campaign, the
  payment's day, the member); a budget with no points or awards left gives nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from fractions import Fraction
from typing import NamedTuple

from services.points.domain import campaign_calendar
from services.points.domain.campaigns import Campaign, CampaignSpec, EffectKind, Limit, runs_on
from services.points.domain.earning import Earning, Step
from services.points.domain.rules import BPS

TOTAL_PERIOD = "total"
CAMPAIGN_STEP = "campaign"
TOTAL_STEP = "total"

BudgetKey = tuple[str, str]  # (campaign_id, period): 'total' or the local day's ISO date
MemberKey = tuple[str, str]  # (member_id, campaign_id)


class PaymentFacts(NamedTuple):
    """What a campaign's audience and effect read of one payment and its member."""

    member_id: str
    occurred_at: datetime
    day: date  # local, in the rules' time zone
    currency: str
    amount_minor: int
    merchant_id: str
    category: str
    channel: str
    base: Fraction  # amount x rate x category, 0 in a non-earning category
    tier: str
    registered_at: datetime | None
    first_payment: bool  # no settlement of the member before this one


class CampaignAward(NamedTuple):
    campaign_id: str
    version: int
    name: str
    points: int
    tier_qualifying: bool


class CampaignOutcome(NamedTuple):
    awards: tuple[CampaignAward, ...]

    @property
    def points(self) -> int:
        return sum(a.points for a in self.awards)

    @property
    def qualifying_points(self) -> int:
        return sum(a.points for a in self.awards if a.tier_qualifying)


NO_CAMPAIGNS = CampaignOutcome(())


@dataclass
class Allowance:
    """What is left of one budget: points and awards (None: that bound does not apply)."""

    points: int | None = None
    awards: int | None = None

    def allows(self, wanted: int) -> int:
        if self.awards is not None and self.awards <= 0:
            return 0
        return wanted if self.points is None else min(wanted, self.points)

    def take(self, points: int) -> None:
        if self.points is not None:
            self.points -= points
        if self.awards is not None:
            self.awards -= 1


@dataclass
class Allowances:
    """What a batch may give: the budget slices it holds, and each member's budget left."""

    budgets: dict[BudgetKey, Allowance]
    members: dict[MemberKey, Allowance]


def period_of(day: date) -> str:
    return day.isoformat()


def budget_keys(campaign: Campaign, day: date) -> list[BudgetKey]:
    budget, cid = campaign.spec.budget, campaign.campaign_id
    keys = []
    if budget.total.bounded:
        keys.append((cid, TOTAL_PERIOD))
    if budget.per_day.bounded:
        keys.append((cid, period_of(day)))
    return keys


def member_allowance(limit: Limit, used_points: int, used_awards: int) -> Allowance:
    return Allowance(
        None if limit.points is None else max(0, limit.points - used_points),
        None if limit.awards is None else max(0, limit.awards - used_awards),
    )


def reaches(spec: CampaignSpec, facts: PaymentFacts, *, tier_known: bool = True) -> bool:
    """Whether the campaign's window, schedule and audience take this payment; with
    `tier_known` False the tier is not looked at (an upper bound for budgets)."""
    if not spec.start_at <= facts.occurred_at < spec.end_at:
        return False
    holidays = spec.schedule.holidays
    holiday = holidays is not None and campaign_calendar.matches(holidays, facts.day)
    if not runs_on(spec, facts.day, holiday):
        return False
    return _in_audience(spec, facts, tier_known)


def _in_audience(spec: CampaignSpec, facts: PaymentFacts, tier_known: bool) -> bool:
    audience = spec.audience
    if tier_known and audience.tiers and facts.tier not in audience.tiers:
        return False
    if audience.first_payment and not facts.first_payment:
        return False
    within = audience.joined_within_days
    if within is not None:
        joined = facts.registered_at
        if joined is None or facts.occurred_at - joined >= timedelta(days=within):
            return False
    return _payment_fits(spec, facts)


def _payment_fits(spec: CampaignSpec, facts: PaymentFacts) -> bool:
    audience = spec.audience
    minimum = audience.minimum
    below = minimum is not None and (
        facts.currency != minimum.currency or facts.amount_minor < minimum.amount_minor
    )
    return not (
        below
        or (audience.categories and facts.category not in audience.categories)
        or (audience.merchant_ids and facts.merchant_id not in audience.merchant_ids)
        or (audience.channels and facts.channel not in audience.channels)
    )


def uncapped_bonus(spec: CampaignSpec, base: Fraction) -> int:
    if base <= 0:
        return 0
    effect = spec.effect
    if effect.kind is EffectKind.FIXED_POINTS:
        return effect.points
    extra = base * (effect.multiplier_bps - BPS) / BPS
    return extra.numerator // extra.denominator


def bonus(spec: CampaignSpec, base: Fraction) -> int:
    points = uncapped_bonus(spec, base)
    cap = spec.cap_per_payment
    return points if cap is None else min(points, cap)


def by_priority(campaigns: Iterable[Campaign]) -> tuple[Campaign, ...]:
    return tuple(sorted(campaigns, key=lambda c: (-c.spec.priority, c.campaign_id)))


def demand(
    campaigns: Sequence[Campaign], facts: PaymentFacts, into: dict[BudgetKey, Allowance]
) -> None:
    """Adds to `into` the most this payment could draw on each shared budget, whatever its
    member's tier becomes in the batch and whichever campaign wins the stacking."""
    for campaign in campaigns:
        keys = budget_keys(campaign, facts.day)
        if not keys or not reaches(campaign.spec, facts, tier_known=False):
            continue
        points = bonus(campaign.spec, facts.base)
        if points <= 0:
            continue
        for key in keys:
            wanted = into.get(key)
            if wanted is None:
                wanted = into[key] = Allowance(0, 0)
            wanted.points = (wanted.points or 0) + points
            wanted.awards = (wanted.awards or 0) + 1


def award(
    campaigns: Sequence[Campaign], facts: PaymentFacts, allowances: Allowances
) -> CampaignOutcome:
    """What the campaigns (in `by_priority` order) give the payment; takes it from the
    allowances."""
    awards: list[CampaignAward] = []
    for campaign in campaigns:
        spec = campaign.spec
        if awards and spec.exclusive:
            continue
        if not reaches(spec, facts):
            continue
        points = _allowed(campaign, facts, allowances, bonus(spec, facts.base))
        if points <= 0:
            continue
        given = CampaignAward(
            campaign.campaign_id, campaign.version, spec.name, points, spec.tier_qualifying
        )
        awards.append(given)
        if spec.exclusive:
            break
    return CampaignOutcome(tuple(awards)) if awards else NO_CAMPAIGNS


def _allowed(campaign: Campaign, facts: PaymentFacts, allowances: Allowances, points: int) -> int:
    if points <= 0:
        return 0
    drawn: list[Allowance] = []
    for key in budget_keys(campaign, facts.day):
        # a shared budget the batch holds no slice of gives nothing
        drawn.append(allowances.budgets.get(key) or Allowance(0, 0))
    if campaign.spec.budget.per_member.bounded:
        member = allowances.members.get((facts.member_id, campaign.campaign_id))
        drawn.append(member or Allowance(0, 0))
    for allowance in drawn:
        points = allowance.allows(points)
    if points <= 0:
        return 0
    for allowance in drawn:
        allowance.take(points)
    return points


def with_campaigns(earning: Earning, outcome: CampaignOutcome) -> Earning:
    """The program's earning with the campaigns' points added: a step per campaign and the
    total. The program's own steps (and its caps) are unchanged."""
    if not outcome.awards:
        return earning
    steps = list(earning.steps)
    for a in outcome.awards:
        note = f"campaign {a.name!r} ({a.campaign_id} v{a.version}) adds {a.points}"
        steps.append(Step(CAMPAIGN_STEP, str(a.points), note))
    extra = outcome.points
    total = earning.points + extra
    note = f"{earning.points} from the program and {extra} from campaigns make {total}"
    steps.append(Step(TOTAL_STEP, str(total), note))
    return Earning(total, tuple(steps), "" if total > 0 else earning.none_reason)
