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
from typing import NamedTuple

from services.points.domain import campaign_calendar
from services.points.domain.campaigns import (
    Campaign,
    CampaignSpec,
    EffectKind,
    Limit,
    MinimumAmount,
    runs_on,
)
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
    # the base points, amount x rate x category, as a reduced fraction (0 in a non-earning
    # category)
    base_num: int
    base_den: int
    tier: str
    registered_at: datetime | None
    first_payment: bool  # no settlement of the member before this one


class CampaignAward(NamedTuple):
    campaign_id: str
    version: int
    name: str
    points: int
    tier_qualifying: bool
    note: str  # the explanation step's words, before the points
    coupon_template: str = ""  # a coupon campaign's award: a coupon of this template


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


def member_allowance(limit: Limit, used_points: int, used_awards: int) -> Allowance:
    return Allowance(
        None if limit.points is None else max(0, limit.points - used_points),
        None if limit.awards is None else max(0, limit.awards - used_awards),
    )


def _set(values: tuple[str, ...]) -> frozenset[str] | None:
    return frozenset(values) if values else None


@dataclass(frozen=True, slots=True)
class Running:
    """A running campaign as the batch matches it: its terms unpacked once per reload of
    the running set, so that matching a payment is a few comparisons and set lookups."""

    campaign: Campaign
    campaign_id: str
    version: int
    name: str
    start_at: datetime
    end_at: datetime
    spec: CampaignSpec
    tiers: frozenset[str] | None
    categories: frozenset[str] | None
    merchants: frozenset[str] | None
    channels: frozenset[str] | None
    minimum: MinimumAmount | None
    first_payment: bool
    joined_within: timedelta | None
    fixed_points: int  # FIXED_POINTS; 0 for a multiplier
    extra_bps: int  # MULTIPLIER: the part above x1
    coupon_template: str  # COUPON: its awards are coupons, not points
    cap: int | None
    exclusive: bool
    tier_qualifying: bool
    total_budget: bool
    daily_budget: bool
    member_budget: bool
    # local day -> whether the schedule names it (filled as days are met)
    days: dict[date, bool]
    note: str  # the explanation step's words, before the points

    def fits_place(self, merchant_id: str, category: str) -> bool:
        return (self.merchants is None or merchant_id in self.merchants) and (
            self.categories is None or category in self.categories
        )

    @property
    def budgeted(self) -> bool:
        return self.total_budget or self.daily_budget or self.member_budget

    def keys(self, day: date) -> list[BudgetKey]:
        keys = []
        if self.total_budget:
            keys.append((self.campaign_id, TOTAL_PERIOD))
        if self.daily_budget:
            keys.append((self.campaign_id, period_of(day)))
        return keys

    def runs_on(self, day: date) -> bool:
        known = self.days.get(day)
        if known is None:
            holidays = self.spec.schedule.holidays
            holiday = holidays is not None and campaign_calendar.matches(holidays, day)
            known = self.days[day] = runs_on(self.spec, day, holiday)
        return known


def compile_running(campaign: Campaign) -> Running:
    spec = campaign.spec
    audience, effect, budget = spec.audience, spec.effect, spec.budget
    within = audience.joined_within_days
    fixed = effect.points if effect.kind is EffectKind.FIXED_POINTS else 0
    return Running(
        campaign=campaign,
        campaign_id=campaign.campaign_id,
        version=campaign.version,
        name=spec.name,
        start_at=spec.start_at,
        end_at=spec.end_at,
        spec=spec,
        tiers=_set(audience.tiers),
        categories=_set(audience.categories),
        merchants=_set(audience.merchant_ids),
        channels=_set(audience.channels),
        minimum=audience.minimum,
        first_payment=audience.first_payment,
        joined_within=None if within is None else timedelta(days=within),
        fixed_points=fixed,
        extra_bps=0
        if fixed or effect.kind is not EffectKind.MULTIPLIER
        else effect.multiplier_bps - BPS,
        coupon_template=effect.coupon_template if effect.kind is EffectKind.COUPON else "",
        cap=spec.cap_per_payment,
        exclusive=spec.exclusive,
        tier_qualifying=spec.tier_qualifying,
        total_budget=budget.total.bounded,
        daily_budget=budget.per_day.bounded,
        member_budget=budget.per_member.bounded,
        days={},
        note=(
            f"campaign {spec.name!r} ({campaign.campaign_id} v{campaign.version}) issues a"
            f" coupon of {effect.coupon_template}"
            if effect.kind is EffectKind.COUPON
            else f"campaign {spec.name!r} ({campaign.campaign_id} v{campaign.version}) adds "
        ),
    )


def by_priority(campaigns: Iterable[Campaign]) -> tuple[Running, ...]:
    """The running set in the order campaigns are tried: priority, higher first, then id."""
    ordered = sorted(campaigns, key=lambda c: (-c.spec.priority, c.campaign_id))
    return tuple(compile_running(c) for c in ordered)


class RunningSet:
    """The running campaigns, and those that can reach a (merchant, category), worked out
    once per pair: most campaigns name merchants or categories, so a payment is matched
    against the few that can reach it, not against all of them."""

    MAX_PLACES = 10_000  # pairs remembered; past it the memo starts again

    def __init__(self, running: tuple[Running, ...]) -> None:
        self.all = running
        self.first_payment = any(r.first_payment for r in running)
        self._places: dict[tuple[str, str], tuple[Running, ...]] = {}
        self._budgeted: dict[tuple[str, str], bool] = {}

    def __bool__(self) -> bool:
        return bool(self.all)

    def at(self, merchant_id: str, category: str) -> tuple[Running, ...]:
        key = (merchant_id, category)
        found = self._places.get(key)
        if found is None:
            if len(self._places) >= self.MAX_PLACES:
                self._places.clear()
                self._budgeted.clear()
            found = tuple(r for r in self.all if r.fits_place(merchant_id, category))
            self._places[key] = found
            self._budgeted[key] = any(r.budgeted for r in found)
        return found

    def budgeted_at(self, merchant_id: str, category: str) -> bool:
        """Whether a campaign with a budget (shared or per member) can reach the place."""
        self.at(merchant_id, category)
        return self._budgeted[(merchant_id, category)]


def reaches(running: Running, facts: PaymentFacts, *, tier_known: bool = True) -> bool:
    """Whether the campaign's window, schedule and audience take this payment; with
    `tier_known` False the tier is not looked at (an upper bound for budgets)."""
    if not running.start_at <= facts.occurred_at < running.end_at:
        return False
    if not running.runs_on(facts.day):
        return False
    if tier_known and running.tiers is not None and facts.tier not in running.tiers:
        return False
    if running.first_payment and not facts.first_payment:
        return False
    within = running.joined_within
    if within is not None:
        joined = facts.registered_at
        if joined is None or facts.occurred_at - joined >= within:
            return False
    return _payment_fits(running, facts)


def _payment_fits(running: Running, facts: PaymentFacts) -> bool:
    minimum = running.minimum
    if minimum is not None and (
        facts.currency != minimum.currency or facts.amount_minor < minimum.amount_minor
    ):
        return False
    return not (
        (running.categories is not None and facts.category not in running.categories)
        or (running.merchants is not None and facts.merchant_id not in running.merchants)
        or (running.channels is not None and facts.channel not in running.channels)
    )


def bonus(running: Running, facts: PaymentFacts) -> int:
    """The campaign's points for the payment before budgets: rounded down once, capped (a
    coupon campaign's award counts as 1 here: it draws one award on its budgets)."""
    num, den = facts.base_num, facts.base_den
    if num <= 0:
        return 0
    if running.coupon_template:
        return 1
    points = running.fixed_points or num * running.extra_bps // (den * BPS)
    cap = running.cap
    return points if cap is None or points <= cap else cap


def demand(
    campaigns: Sequence[Running], facts: PaymentFacts, into: dict[BudgetKey, Allowance]
) -> None:
    """Adds to `into` the most this payment could draw on each shared budget, whatever its
    member's tier becomes in the batch and whichever campaign wins the stacking."""
    for running in campaigns:
        if not (running.total_budget or running.daily_budget):
            continue  # draws on no shared budget
        if not reaches(running, facts, tier_known=False):
            continue
        points = bonus(running, facts)
        if points <= 0:
            continue
        for key in running.keys(facts.day):
            wanted = into.get(key)
            if wanted is None:
                wanted = into[key] = Allowance(0, 0)
            wanted.points = (wanted.points or 0) + points
            wanted.awards = (wanted.awards or 0) + 1


def award(
    campaigns: Sequence[Running], facts: PaymentFacts, allowances: Allowances
) -> CampaignOutcome:
    """What the campaigns (in `by_priority` order) give the payment; takes it from the
    allowances."""
    awards: list[CampaignAward] = []
    for running in campaigns:
        if awards and running.exclusive:
            continue
        if not reaches(running, facts):
            continue
        points = bonus(running, facts)
        if points <= 0:
            continue
        if running.total_budget or running.daily_budget or running.member_budget:
            points = _allowed(running, facts, allowances, points)
            if points <= 0:
                continue
        coupon = running.coupon_template
        awards.append(
            CampaignAward(
                running.campaign_id,
                running.version,
                running.name,
                0 if coupon else points,
                running.tier_qualifying,
                running.note,
                coupon,
            )
        )
        if running.exclusive:
            break
    return CampaignOutcome(tuple(awards)) if awards else NO_CAMPAIGNS


def _allowed(running: Running, facts: PaymentFacts, allowances: Allowances, points: int) -> int:
    drawn: list[Allowance] = []
    for key in running.keys(facts.day):
        # a shared budget the batch holds no slice of gives nothing
        drawn.append(allowances.budgets.get(key) or Allowance(0, 0))
    if running.member_budget:
        member = allowances.members.get((facts.member_id, running.campaign_id))
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
    extra = 0
    for a in outcome.awards:
        points = str(a.points)
        steps.append(Step(CAMPAIGN_STEP, points, a.note if a.coupon_template else a.note + points))
        extra += a.points
    total = earning.points + extra
    note = f"{earning.points} from the program and {extra} from campaigns make {total}"
    steps.append(Step(TOTAL_STEP, str(total), note))
    return Earning(total, tuple(steps), "" if total > 0 else earning.none_reason)
