"""Campaign rules without a database: terms and their checks, the calendar, awards and
stacking, budget slices, and the refund's qualifying share."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.points.domain import campaign_budgets, campaign_calendar
from services.points.domain.campaign_awards import (
    TOTAL_PERIOD,
    Allowance,
    Allowances,
    PaymentFacts,
    Running,
    award,
    by_priority,
    compile_running,
    demand,
    with_campaigns,
)
from services.points.domain.campaigns import (
    Audience,
    Budget,
    Campaign,
    CampaignSpec,
    CampaignState,
    Effect,
    EffectKind,
    Limit,
    MinimumAmount,
    Schedule,
    check_activatable,
    check_editable,
    check_running_set,
    check_spec,
    spec_of,
)
from services.points.domain.earning import Earning, Step, base_points
from services.points.domain.refunds import SettledPayment, qualifying_share
from services.points.program import load_rules_file
from services.points.settings import DEFAULT_RULES_FILE
from services.runtime.errors import Code, DomainError

NOW = datetime(2026, 12, 8, 4, 0, tzinfo=UTC)  # 12:00 on the 8th in Shanghai
RULES = load_rules_file(DEFAULT_RULES_FILE)
BASE = base_points(RULES, "CNY", 1234, "dining")


def spec(**changes: object) -> CampaignSpec:
    base = CampaignSpec(
        name="Member day",
        start_at=NOW - timedelta(days=1),
        end_at=NOW + timedelta(days=1),
        effect=Effect(EffectKind.MULTIPLIER, multiplier_bps=20_000),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def active(campaign_id: str, terms: CampaignSpec) -> Campaign:
    return Campaign(campaign_id, CampaignState.ACTIVE, 1, terms, NOW, NOW)


def running(campaign_id: str, terms: CampaignSpec) -> Running:
    return compile_running(active(campaign_id, terms))


def facts(**changes: object) -> PaymentFacts:
    base = PaymentFacts(
        member_id="m1",
        occurred_at=NOW,
        day=date(2026, 12, 8),
        currency="CNY",
        amount_minor=1234,
        merchant_id="shop",
        category="dining",
        channel="app",
        base_num=BASE[0],
        base_den=BASE[1],
        tier="basic",
        registered_at=NOW - timedelta(days=3),
        first_payment=False,
    )
    return base._replace(**changes)  # type: ignore[arg-type]


def unlimited() -> Allowances:
    return Allowances({}, {})


def test_a_good_spec_passes_and_round_trips_through_its_document() -> None:
    terms = spec(
        schedule=Schedule((6, 7), (8,), campaign_calendar.HolidaySchedule.GOLDEN_WEEKS),
        audience=Audience(
            tiers=("gold",),
            joined_within_days=30,
            categories=("dining",),
            merchant_ids=("shop",),
            channels=("app",),
            minimum=MinimumAmount("CNY", 100),
            first_payment=True,
        ),
        priority=3,
        exclusive=True,
        cap_per_payment=500,
        tier_qualifying=True,
        budget=Budget(Limit(1000, 10), Limit(100, None), Limit(None, 2)),
    )
    check_spec(terms, RULES, NOW)
    assert spec_of(terms.document()) == terms


def test_every_fault_is_named_at_once() -> None:
    bad = spec(
        name="",
        start_at=NOW + timedelta(days=2),
        end_at=NOW + timedelta(days=1),
        effect=Effect(EffectKind.MULTIPLIER, multiplier_bps=10_000),
        schedule=Schedule((0, 8), (31, 31)),
        audience=Audience(
            tiers=("platinum",),
            categories=("fee", "nonsense"),
            minimum=MinimumAmount("EUR", 0),
            joined_within_days=0,
        ),
        priority=-1,
        cap_per_payment=0,
        budget=Budget(Limit(0, -1)),
    )
    with pytest.raises(DomainError) as caught:
        check_spec(bad, RULES, NOW)
    fields = {v.field for v in caught.value.violations}
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert fields >= {
        "campaign.name",
        "campaign.end_time",
        "campaign.effect.multiplier_bps",
        "campaign.schedule.days_of_week",
        "campaign.schedule.days_of_month",
        "campaign.audience.tiers[0]",
        "campaign.audience.categories[0]",
        "campaign.audience.categories[1]",
        "campaign.audience.minimum_amount.currency_code",
        "campaign.audience.minimum_amount",
        "campaign.audience.joined_within_days",
        "campaign.priority",
        "campaign.cap_per_payment",
        "campaign.budget.total.points",
        "campaign.budget.total.awards",
    }


def test_windows_in_the_past_or_too_long_are_refused() -> None:
    with pytest.raises(DomainError):
        check_spec(spec(start_at=NOW - timedelta(days=3), end_at=NOW), RULES, NOW)
    with pytest.raises(DomainError):
        check_spec(spec(end_at=NOW + timedelta(days=400)), RULES, NOW)


def test_lifecycle_rules() -> None:
    draft = Campaign("c", CampaignState.DRAFT, 1, spec(), NOW, NOW)
    check_activatable(draft, NOW)
    with pytest.raises(DomainError, match="window"):
        check_activatable(draft, NOW + timedelta(days=2))
    active = replace(draft, state=CampaignState.ACTIVE)
    check_editable(active, spec(name="Another name"))
    with pytest.raises(DomainError) as caught:
        check_editable(active, spec(budget=Budget(Limit(5))))
    assert caught.value.reason == "CAMPAIGN_BUDGET_FIXED"
    with pytest.raises(DomainError) as caught:
        check_editable(replace(draft, state=CampaignState.ENDED), spec())
    assert caught.value.reason == "CAMPAIGN_ENDED"


def test_exclusive_campaigns_may_not_overlap() -> None:
    first = active("first", spec(exclusive=True))
    later = spec(exclusive=True, start_at=NOW + timedelta(days=1), end_at=NOW + timedelta(days=2))
    check_running_set(later, "later", [first])  # touching windows do not overlap
    check_running_set(spec(), "combinable", [first])
    with pytest.raises(DomainError) as caught:
        check_running_set(spec(exclusive=True), "second", [first])
    assert caught.value.metadata == {"campaign_id": "first"}
    many = [active(f"c{i}", spec()) for i in range(200)]
    with pytest.raises(DomainError, match="at most 200"):
        check_running_set(spec(), "one-more", many)


def test_the_calendar_knows_holidays_and_golden_weeks() -> None:
    assert campaign_calendar.is_public_holiday(date(2026, 10, 1))
    assert not campaign_calendar.is_public_holiday(date(2026, 10, 4))  # an ordinary Sunday
    golden = campaign_calendar.golden_weeks(2026)
    assert {date(2026, 10, d) for d in range(1, 8)} <= golden
    assert date(2026, 10, 8) not in golden and date(2026, 9, 30) not in golden
    assert date(2026, 2, 17) in golden  # the Spring Festival


def test_a_multiplier_gives_the_part_above_one_of_the_base() -> None:
    # 12.34 CNY dining: base 24.68; x2 adds 24.68, rounded down once
    outcome = award([running("double", spec())], facts(), unlimited())
    assert [a.points for a in outcome.awards] == [24]
    triple = award(
        [running("x3", spec(effect=Effect(EffectKind.MULTIPLIER, 30_000)))], facts(), unlimited()
    )
    assert triple.points == 49  # 49.36 rounded down


def test_reach_window_schedule_and_audience() -> None:
    def gives(terms: CampaignSpec, **payment: object) -> int:
        return award([running("c", terms)], facts(**payment), unlimited()).points

    assert gives(spec(schedule=Schedule(days_of_month=(8,)))) == 24
    assert gives(spec(schedule=Schedule(days_of_month=(9,)))) == 0
    assert gives(spec(schedule=Schedule(days_of_week=(2,)))) == 24  # 2026-12-08 is a Tuesday
    assert (
        gives(spec(schedule=Schedule(holidays=campaign_calendar.HolidaySchedule.PUBLIC_HOLIDAYS)))
        == 0
    )
    assert gives(spec(), occurred_at=NOW + timedelta(days=1)) == 0  # the window is exclusive
    assert gives(spec(audience=Audience(tiers=("gold",)))) == 0
    assert gives(spec(audience=Audience(tiers=("gold",))), tier="gold") == 24
    assert gives(spec(audience=Audience(joined_within_days=2))) == 0
    assert gives(spec(audience=Audience(joined_within_days=4))) == 24
    assert gives(spec(audience=Audience(joined_within_days=4)), registered_at=None) == 0
    assert gives(spec(audience=Audience(minimum=MinimumAmount("CNY", 1235)))) == 0
    assert gives(spec(audience=Audience(minimum=MinimumAmount("HKD", 100)))) == 0
    assert gives(spec(audience=Audience(channels=("pos",)))) == 0
    assert gives(spec(audience=Audience(merchant_ids=("shop",)))) == 24
    assert gives(spec(audience=Audience(first_payment=True))) == 0
    assert gives(spec(audience=Audience(first_payment=True)), first_payment=True) == 24
    assert gives(spec(), base_num=0, category="top_up") == 0
    fixed = spec(effect=Effect(EffectKind.FIXED_POINTS, points=7))
    assert gives(fixed) == 7 and gives(replace(fixed, cap_per_payment=5)) == 5


def test_stacking_by_priority_and_exclusive() -> None:
    fixed = spec(effect=Effect(EffectKind.FIXED_POINTS, points=5))
    combinable = active("a-combinable", fixed)
    alone = active("z-alone", replace(fixed, exclusive=True, priority=9))
    late_alone = active("late-alone", replace(fixed, exclusive=True, priority=0))
    outcome = award(by_priority([combinable, alone]), facts(), unlimited())
    assert [a.campaign_id for a in outcome.awards] == ["z-alone"]
    outcome = award(by_priority([combinable, late_alone]), facts(), unlimited())
    assert [a.campaign_id for a in outcome.awards] == ["a-combinable"]
    both = [active("b", fixed), active("a", fixed)]
    assert [a.campaign_id for a in award(by_priority(both), facts(), unlimited()).awards] == [
        "a",
        "b",
    ]


def test_budgets_limit_awards_and_a_budget_not_held_gives_nothing() -> None:
    budgeted = running("b", spec(budget=Budget(Limit(points=30), Limit(awards=5))))
    allowances = Allowances(
        {("b", TOTAL_PERIOD): Allowance(30, None), ("b", "2026-12-08"): Allowance(None, 5)}, {}
    )
    got = [award([budgeted], facts(), allowances).points for _ in range(3)]
    assert got == [24, 6, 0]
    assert award([budgeted], facts(), Allowances({}, {})).points == 0
    member = running("m", spec(budget=Budget(per_member=Limit(awards=1))))
    per_member = Allowances({}, {("m1", "m"): Allowance(None, 1)})
    assert [award([member], facts(), per_member).points for _ in range(2)] == [24, 0]


def test_demand_is_an_upper_bound_whatever_the_tier() -> None:
    gold_only = running(
        "g", spec(audience=Audience(tiers=("gold",)), budget=Budget(Limit(points=1000)))
    )
    wanted: dict[tuple[str, str], Allowance] = {}
    demand([gold_only], facts(), wanted)
    demand([gold_only], facts(), wanted)
    assert wanted == {("g", TOTAL_PERIOD): Allowance(48, 2)}


def test_the_explanation_adds_a_step_per_campaign_and_the_total() -> None:
    program = Earning(24, (Step("round_down", "24", "rounded down to 24"),), "")
    outcome = award([running("double", spec())], facts(), unlimited())
    earning = with_campaigns(program, outcome)
    assert earning.points == 48
    assert [s.name for s in earning.steps] == ["round_down", "campaign", "total"]
    assert "double v1" in earning.steps[1].note
    capped = Earning(0, (), "DAILY_CAP_REACHED")
    fixed = award(
        [running("f", spec(effect=Effect(EffectKind.FIXED_POINTS, points=3)))], facts(), unlimited()
    )
    assert with_campaigns(capped, fixed) == Earning(3, with_campaigns(capped, fixed).steps, "")


@given(
    points=st.one_of(st.none(), st.integers(1, 10**12)),
    awards=st.one_of(st.none(), st.integers(1, 10**6)),
)
def test_slices_add_up_to_the_budget(points: int | None, awards: int | None) -> None:
    slices = campaign_budgets.split(Limit(points, awards))
    assert len(slices) == campaign_budgets.SLICES
    held = campaign_budgets.held(slices)
    assert (held.points, held.awards) == (points, awards)


@given(
    left=st.lists(st.integers(0, 50), min_size=1, max_size=16),
    wanted=st.integers(0, 800),
)
def test_spending_never_takes_a_slice_below_zero(left: list[int], wanted: int) -> None:
    slices = [campaign_budgets.Slice(i, p, p) for i, p in enumerate(left)]
    points = min(wanted, sum(left))
    awards = min(wanted // 10, sum(left))
    spent = campaign_budgets.spend(slices, points, awards)
    assert sum(s.points for s in spent) == points and sum(s.awards for s in spent) == awards
    by_slice = {s.slice: s for s in spent}
    for s in slices:
        taken = by_slice.get(s.slice)
        if taken is not None:
            assert taken.points <= (s.points_left or 0) and taken.awards <= (s.awards_left or 0)


def test_spending_more_than_held_is_a_fault() -> None:
    with pytest.raises(ValueError, match="do not cover"):
        campaign_budgets.spend([campaign_budgets.Slice(0, 3, None)], 4, 1)


@given(
    points=st.integers(1, 10_000),
    non_qualifying=st.integers(0, 10_000),
    cuts=st.lists(st.integers(1, 10_000), max_size=6),
)
def test_refunds_take_the_qualifying_share_exactly(
    points: int, non_qualifying: int, cuts: list[int]
) -> None:
    non_qualifying = min(non_qualifying, points)
    paid = SettledPayment("p", "CNY", 100, points, 1, NOW, non_qualifying)
    clawed = taken = 0
    for cut in [*cuts, points]:
        now = min(cut, points - clawed)
        taken += qualifying_share(paid, clawed, now)
        clawed += now
    assert clawed == points and taken == points - non_qualifying
