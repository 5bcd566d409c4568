"""Campaigns: time-boxed earning rules, without SQL (docs/decisions/points.md "Campaigns").

A campaign is a window, an optional recurring schedule, an audience, an effect, a stacking
rule and budgets (`CampaignSpec`). Its lifecycle is DRAFT -> ACTIVE -> ENDED (a draft may
also end unrun). A draft is edited in place; a change to a running campaign is a new version,
and a settlement records the version that gave it points. `document()`/`spec_of` are the
stored JSON form of a version: `spec_of(s.document()) == s`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

from services.points.domain.campaign_calendar import HOLIDAY_SCHEDULES, HolidaySchedule
from services.points.domain.promotion_terms import (
    PROMOTION_ID,
    check_codes,
    check_places,
)
from services.points.domain.rules import BPS, MAX_MULTIPLIER_BPS, Rules
from services.points.domain.strict import INT64_MAX
from services.runtime.errors import (
    DomainError,
    ViolationCollector,
    failed_precondition,
    not_found,
)

MAX_NAME = 100
MAX_WINDOW_DAYS = 366
MAX_JOINED_WITHIN_DAYS = 3660
MAX_PRIORITY = 1000
MAX_ACTIVE_CAMPAIGNS = 200  # every batch matches each payment against each running campaign

CAMPAIGN_NOT_DRAFT = "CAMPAIGN_NOT_DRAFT"
CAMPAIGN_ENDED = "CAMPAIGN_ENDED"
CAMPAIGN_WINDOW_OVER = "CAMPAIGN_WINDOW_OVER"
CAMPAIGN_OVERLAPS_EXCLUSIVE = "CAMPAIGN_OVERLAPS_EXCLUSIVE"
CAMPAIGN_BUDGET_FIXED = "CAMPAIGN_BUDGET_FIXED"
TOO_MANY_ACTIVE_CAMPAIGNS = "TOO_MANY_ACTIVE_CAMPAIGNS"


class CampaignState(StrEnum):
    DRAFT = "DRAFT"
    ACTIVE = "ACTIVE"
    ENDED = "ENDED"


class EffectKind(StrEnum):
    MULTIPLIER = "MULTIPLIER"  # basis points on the base points: 20000 doubles them
    FIXED_POINTS = "FIXED_POINTS"  # points per payment
    COUPON = "COUPON"  # a coupon of a template per payment (issued by the points jobs)


@dataclass(frozen=True)
class Schedule:
    """Which days of the window count: every day when nothing is listed, else a day that
    any listed part names (local days in the rules' time zone)."""

    days_of_week: tuple[int, ...] = ()  # ISO: 1 Monday .. 7 Sunday
    days_of_month: tuple[int, ...] = ()  # 1..31: "member day every 8th"
    holidays: HolidaySchedule | None = None

    @property
    def every_day(self) -> bool:
        return not self.days_of_week and not self.days_of_month and self.holidays is None


@dataclass(frozen=True)
class MinimumAmount:
    currency: str
    amount_minor: int


@dataclass(frozen=True)
class Audience:
    """Who and which payments: every listed part must hold; an empty list is no limit."""

    tiers: tuple[str, ...] = ()
    joined_within_days: int | None = None
    categories: tuple[str, ...] = ()
    merchant_ids: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    minimum: MinimumAmount | None = None
    first_payment: bool = False  # only the member's first settled payment


@dataclass(frozen=True)
class Effect:
    kind: EffectKind
    multiplier_bps: int = 0
    points: int = 0
    coupon_template: str = ""  # COUPON


@dataclass(frozen=True)
class Limit:
    """A budget's bound in points and in awards (payments given points); None: no bound."""

    points: int | None = None
    awards: int | None = None

    @property
    def bounded(self) -> bool:
        return self.points is not None or self.awards is not None


NO_LIMIT = Limit()


@dataclass(frozen=True)
class Budget:
    total: Limit = NO_LIMIT
    per_day: Limit = NO_LIMIT  # per local day
    per_member: Limit = NO_LIMIT


@dataclass(frozen=True)
class CampaignSpec:
    name: str
    start_at: datetime
    end_at: datetime  # exclusive
    effect: Effect
    schedule: Schedule = field(default_factory=Schedule)
    audience: Audience = field(default_factory=Audience)
    priority: int = 0  # higher first
    exclusive: bool = False  # gives points only alone
    cap_per_payment: int | None = None
    tier_qualifying: bool = False
    budget: Budget = field(default_factory=Budget)

    def document(self) -> dict[str, Any]:
        return _spec_document(self)


@dataclass(frozen=True)
class Campaign:
    campaign_id: str
    state: CampaignState
    version: int
    spec: CampaignSpec
    created_at: datetime
    updated_at: datetime


class CampaignView(NamedTuple):
    """A campaign and what it gave so far (points, and payments given points)."""

    campaign: Campaign
    points_given: int = 0
    awards_given: int = 0


@dataclass(frozen=True)
class CampaignQuery:
    states: frozenset[CampaignState] = frozenset()
    active_at: datetime | None = None  # window contains this instant
    page_size: int = 50
    after: str = ""  # the last campaign_id of the previous page


# ---- checks -------------------------------------------------------------------------------


def check_spec(spec: CampaignSpec, rules: Rules, now: datetime, path: str = "campaign") -> None:
    """Every fault of a campaign's terms in one INVALID_ARGUMENT."""
    found = ViolationCollector()
    found.text(spec.name, f"{path}.name", MAX_NAME)
    _check_window(found, spec, now, path)
    _check_schedule(found, spec.schedule, f"{path}.schedule")
    _check_audience(found, spec.audience, rules, f"{path}.audience")
    _check_effect(found, spec.effect, f"{path}.effect")
    if not 0 <= spec.priority <= MAX_PRIORITY:
        found.add(f"{path}.priority", f"must be within 0..{MAX_PRIORITY}")
    _positive(found, spec.cap_per_payment, f"{path}.cap_per_payment")
    coupon = spec.effect.kind is EffectKind.COUPON
    for name in ("total", "per_day", "per_member"):
        limit: Limit = getattr(spec.budget, name)
        _positive(found, limit.points, f"{path}.budget.{name}.points")
        _positive(found, limit.awards, f"{path}.budget.{name}.awards")
        if coupon and limit.points is not None:
            found.add(f"{path}.budget.{name}.points", "a coupon campaign's budgets count awards")
    found.raise_if_any()


def _check_window(found: ViolationCollector, spec: CampaignSpec, now: datetime, path: str) -> None:
    if spec.end_at <= spec.start_at:
        found.add(f"{path}.end_time", "must be after start_time")
    elif spec.end_at - spec.start_at > timedelta(days=MAX_WINDOW_DAYS):
        found.add(f"{path}.end_time", f"a window lasts at most {MAX_WINDOW_DAYS} days")
    if spec.end_at <= now:
        found.add(f"{path}.end_time", "the window is in the past")


def _check_schedule(found: ViolationCollector, schedule: Schedule, path: str) -> None:
    _bounded_ints(found, schedule.days_of_week, 1, 7, f"{path}.days_of_week")
    _bounded_ints(found, schedule.days_of_month, 1, 31, f"{path}.days_of_month")


def _bounded_ints(
    found: ViolationCollector, values: Sequence[int], low: int, high: int, path: str
) -> None:
    if len(values) != len(set(values)):
        found.add(path, "lists a value twice")
    if any(not low <= v <= high for v in values):
        found.add(path, f"values must be within {low}..{high}")


def _check_audience(found: ViolationCollector, audience: Audience, rules: Rules, path: str) -> None:
    paths = (f"{path}.tiers", f"{path}.categories", f"{path}.merchant_ids")
    check_places(found, rules, audience.tiers, audience.categories, audience.merchant_ids, paths)
    check_codes(found, audience.channels, f"{path}.channels", None, "")
    within = audience.joined_within_days
    if within is not None and not 1 <= within <= MAX_JOINED_WITHIN_DAYS:
        found.add(f"{path}.joined_within_days", f"must be within 1..{MAX_JOINED_WITHIN_DAYS}")
    minimum = audience.minimum
    if minimum is not None:
        if minimum.currency not in rules.currencies:
            found.add(f"{path}.minimum_amount.currency_code", "not a currency of the program")
        if not 0 < minimum.amount_minor <= INT64_MAX:
            found.add(f"{path}.minimum_amount", "must be more than 0")


def _check_effect(found: ViolationCollector, effect: Effect, path: str) -> None:
    if effect.kind is EffectKind.COUPON:
        if not PROMOTION_ID.fullmatch(effect.coupon_template):
            found.add(f"{path}.coupon_template", "must name a coupon template")
        return
    if effect.kind is EffectKind.MULTIPLIER:
        if not BPS < effect.multiplier_bps <= MAX_MULTIPLIER_BPS:
            found.add(f"{path}.multiplier_bps", f"must be within {BPS + 1}..{MAX_MULTIPLIER_BPS}")
    elif not 0 < effect.points <= INT64_MAX:
        found.add(f"{path}.points", "must be more than 0")


def _positive(found: ViolationCollector, value: int | None, path: str) -> None:
    if value is not None and not 0 < value <= INT64_MAX:
        found.add(path, "must be more than 0")


def check_editable(campaign: Campaign, spec: CampaignSpec) -> None:
    """A draft takes any valid terms; a running campaign any but its budgets (its budget
    slices were cut at activation); an ended one none."""
    if campaign.state is CampaignState.ENDED:
        raise failed_precondition(CAMPAIGN_ENDED, "the campaign has ended")
    if campaign.state is CampaignState.ACTIVE and spec.budget != campaign.spec.budget:
        raise failed_precondition(
            CAMPAIGN_BUDGET_FIXED,
            "a running campaign's budgets cannot change: end it and start another",
        )


def check_activatable(campaign: Campaign, now: datetime) -> None:
    if campaign.state is not CampaignState.DRAFT:
        raise failed_precondition(CAMPAIGN_NOT_DRAFT, "only a draft can be activated")
    if campaign.spec.end_at <= now:
        raise failed_precondition(CAMPAIGN_WINDOW_OVER, "the campaign's window is over")


def check_running_set(spec: CampaignSpec, campaign_id: str, running: Sequence[Campaign]) -> None:
    """What a campaign about to run (or its new version) must not clash with: another
    exclusive campaign whose window overlaps, or too many running campaigns."""
    others = [c for c in running if c.campaign_id != campaign_id]
    if len(others) >= MAX_ACTIVE_CAMPAIGNS:
        raise failed_precondition(
            TOO_MANY_ACTIVE_CAMPAIGNS, f"at most {MAX_ACTIVE_CAMPAIGNS} campaigns run at once"
        )
    if not spec.exclusive:
        return
    for other in others:
        o = other.spec
        if o.exclusive and o.start_at < spec.end_at and spec.start_at < o.end_at:
            error = failed_precondition(
                CAMPAIGN_OVERLAPS_EXCLUSIVE,
                "another exclusive campaign runs in an overlapping window",
            )
            error.metadata = {"campaign_id": other.campaign_id}
            raise error


def runs_on(spec: CampaignSpec, day: date, holiday: bool) -> bool:
    """Whether the schedule names this local day; `holiday`: whether the calendar's
    schedule (spec.schedule.holidays) names it, worked out by the caller."""
    schedule = spec.schedule
    if schedule.every_day:
        return True
    return day.isoweekday() in schedule.days_of_week or day.day in schedule.days_of_month or holiday


# ---- the stored form --------------------------------------------------------------------


def _limit_doc(limit: Limit) -> dict[str, int]:
    doc = {"points": limit.points, "awards": limit.awards}
    return {k: v for k, v in doc.items() if v is not None}


def _spec_document(spec: CampaignSpec) -> dict[str, Any]:
    audience, schedule, budget = spec.audience, spec.schedule, spec.budget
    minimum = audience.minimum
    return {
        "name": spec.name,
        "start_at": spec.start_at.isoformat(),
        "end_at": spec.end_at.isoformat(),
        "effect": {
            "kind": spec.effect.kind.value,
            "multiplier_bps": spec.effect.multiplier_bps,
            "points": spec.effect.points,
            "coupon_template": spec.effect.coupon_template,
        },
        "schedule": {
            "days_of_week": list(schedule.days_of_week),
            "days_of_month": list(schedule.days_of_month),
            "holidays": schedule.holidays.value if schedule.holidays else None,
        },
        "audience": {
            "tiers": list(audience.tiers),
            "joined_within_days": audience.joined_within_days,
            "categories": list(audience.categories),
            "merchant_ids": list(audience.merchant_ids),
            "channels": list(audience.channels),
            "minimum": None
            if minimum is None
            else {"currency": minimum.currency, "amount_minor": minimum.amount_minor},
            "first_payment": audience.first_payment,
        },
        "priority": spec.priority,
        "exclusive": spec.exclusive,
        "cap_per_payment": spec.cap_per_payment,
        "tier_qualifying": spec.tier_qualifying,
        "budget": {
            "total": _limit_doc(budget.total),
            "per_day": _limit_doc(budget.per_day),
            "per_member": _limit_doc(budget.per_member),
        },
    }


def _limit_of(doc: Mapping[str, Any]) -> Limit:
    return Limit(doc.get("points"), doc.get("awards"))


def spec_of(doc: Mapping[str, Any]) -> CampaignSpec:
    """A stored version's terms (written by `document`)."""
    audience, schedule, effect, budget = (
        doc["audience"],
        doc["schedule"],
        doc["effect"],
        doc["budget"],
    )
    minimum = audience.get("minimum")
    holidays = schedule.get("holidays")
    if holidays is not None and holidays not in HOLIDAY_SCHEDULES:
        raise ValueError(f"unknown holiday schedule {holidays!r}")
    return CampaignSpec(
        name=doc["name"],
        start_at=datetime.fromisoformat(doc["start_at"]),
        end_at=datetime.fromisoformat(doc["end_at"]),
        effect=Effect(
            EffectKind(effect["kind"]),
            effect["multiplier_bps"],
            effect["points"],
            effect.get("coupon_template", ""),
        ),
        schedule=Schedule(
            tuple(schedule["days_of_week"]),
            tuple(schedule["days_of_month"]),
            None if holidays is None else HolidaySchedule(holidays),
        ),
        audience=Audience(
            tiers=tuple(audience["tiers"]),
            joined_within_days=audience.get("joined_within_days"),
            categories=tuple(audience["categories"]),
            merchant_ids=tuple(audience["merchant_ids"]),
            channels=tuple(audience["channels"]),
            minimum=None
            if minimum is None
            else MinimumAmount(minimum["currency"], minimum["amount_minor"]),
            first_payment=bool(audience.get("first_payment", False)),
        ),
        priority=int(doc["priority"]),
        exclusive=bool(doc["exclusive"]),
        cap_per_payment=doc.get("cap_per_payment"),
        tier_qualifying=bool(doc["tier_qualifying"]),
        budget=Budget(
            _limit_of(budget["total"]),
            _limit_of(budget["per_day"]),
            _limit_of(budget["per_member"]),
        ),
    )


def campaign_not_found() -> DomainError:
    return not_found("campaign")
