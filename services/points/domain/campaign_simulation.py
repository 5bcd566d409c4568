"""SimulateCampaign without SQL: a campaign's terms run over settled payments, in the order
they settled, alone and with its budgets full at the start (docs/decisions/points.md
"SimulateCampaign")."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

from services.points.domain.campaign_awards import (
    TOTAL_PERIOD,
    Allowance,
    Allowances,
    PaymentFacts,
    award,
    bonus,
    compile_running,
    member_allowance,
    period_of,
    reaches,
)
from services.points.domain.campaigns import Campaign, CampaignSpec, CampaignState
from services.runtime.errors import ViolationCollector

MAX_PERIOD_DAYS = 92
MAX_PAYMENTS = 500_000


@dataclass
class Simulation:
    points: int = 0
    awards: int = 0
    payments_reached: int = 0
    members_reached: int = 0
    payments_scanned: int = 0
    budget_exhausted_at: datetime | None = None
    days_budget_exhausted: int = 0
    payments_over_budget: int = 0
    truncated: bool = False
    days: dict[date, list[int]] = field(default_factory=dict)  # day -> [points, awards]


def check_period(start: datetime | None, end: datetime | None, now: datetime) -> None:
    found = ViolationCollector()
    if start is None:
        found.add("start_time", "required")
    if end is None:
        found.add("end_time", "required")
    if start is not None and end is not None:
        if end <= start:
            found.add("end_time", "must be after start_time")
        elif end - start > timedelta(days=MAX_PERIOD_DAYS):
            found.add("end_time", f"a period lasts at most {MAX_PERIOD_DAYS} days")
        if end > now:
            found.add("end_time", "must not be in the future: only settled payments are run")
    found.raise_if_any()


class Simulator:
    """A campaign's terms (its window replaced by [start, end)) run over payments one by
    one, in the order they settled: `add` each, then `result`."""

    def __init__(self, spec: CampaignSpec, start: datetime, end: datetime, now: datetime) -> None:
        terms = replace(spec, start_at=start, end_at=end)
        self._campaign = Campaign("simulated", CampaignState.ACTIVE, 1, terms, now, now)
        self._running = compile_running(self._campaign)
        self._allowances = Allowances({}, {})
        total = spec.budget.total
        if total.bounded:
            key = (self._campaign.campaign_id, TOTAL_PERIOD)
            self._allowances.budgets[key] = Allowance(total.points, total.awards)
        self._result = Simulation()
        self._members: set[str] = set()
        self._exhausted_days: set[date] = set()

    @property
    def full(self) -> bool:
        return self._result.truncated

    def add(self, facts: PaymentFacts) -> None:
        result = self._result
        if result.payments_scanned >= MAX_PAYMENTS:
            result.truncated = True
            return
        result.payments_scanned += 1
        running, allowances = self._running, self._allowances
        if facts.base_num <= 0 or not reaches(running, facts):
            return  # non-earning payments get no campaign points
        result.payments_reached += 1
        self._members.add(facts.member_id)
        _day_budget(allowances, self._campaign, facts.day)
        _member_budget(allowances, self._campaign, facts.member_id)
        outcome = award((running,), facts, allowances)
        if outcome.awards:
            result.points += outcome.points
            result.awards += 1
            day = result.days.setdefault(facts.day, [0, 0])
            day[0] += outcome.points
            day[1] += 1
        elif bonus(running, facts) > 0:  # it would have given points: a budget ran out
            result.payments_over_budget += 1
        else:
            return
        _note_exhaustion(result, allowances, self._campaign, facts, self._exhausted_days)

    def result(self) -> Simulation:
        self._result.members_reached = len(self._members)
        self._result.days_budget_exhausted = len(self._exhausted_days)
        return self._result


def _day_budget(allowances: Allowances, campaign: Campaign, day: date) -> None:
    limit = campaign.spec.budget.per_day
    key = (campaign.campaign_id, period_of(day))
    if limit.bounded and key not in allowances.budgets:
        allowances.budgets[key] = Allowance(limit.points, limit.awards)


def _member_budget(allowances: Allowances, campaign: Campaign, member_id: str) -> None:
    limit = campaign.spec.budget.per_member
    key = (member_id, campaign.campaign_id)
    if limit.bounded and key not in allowances.members:
        allowances.members[key] = member_allowance(limit, 0, 0)


def _spent(allowance: Allowance | None) -> bool:
    if allowance is None:
        return False
    return (allowance.points is not None and allowance.points <= 0) or (
        allowance.awards is not None and allowance.awards <= 0
    )


def _note_exhaustion(
    result: Simulation,
    allowances: Allowances,
    campaign: Campaign,
    facts: PaymentFacts,
    exhausted_days: set[date],
) -> None:
    total = allowances.budgets.get((campaign.campaign_id, TOTAL_PERIOD))
    if result.budget_exhausted_at is None and _spent(total):
        result.budget_exhausted_at = facts.occurred_at
    if _spent(allowances.budgets.get((campaign.campaign_id, period_of(facts.day)))):
        exhausted_days.add(facts.day)
