"""The program rules in force (GetProgram) and the rules that apply to one member now,
explained (PIPL Art. 48; ExplainMemberRules), without SQL.

Transactions are explained one by one from what each recorded (ExplainTransaction); this is
the other half of an explanation request: the rules in force (earning, tiers, refunds,
spending), the member's tier and progress under them, and what makes them apply differently
to this member now (state, restriction, a paused settlement). Everything comes from the
versioned rules data and the ledger; nothing is written. A restricted member is explained
too: the answer goes to the privacy service for the data subject's own request, as the
ledger export does, and the figures in it are a subset of that export.

The `summary` sentences are English and carry no identifier or profile data: rule values,
tier codes and point figures only, never the member id, names or times of the member.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

from services.points.domain import tiers
from services.points.domain.earning import show
from services.points.domain.members import ACTIVE
from services.points.domain.processing_pauses import ProcessingCause
from services.points.domain.restrictions import Restriction
from services.points.domain.rules import BPS, RefundPolicy, Rules, Tier
from services.points.domain.tiers import TierState

CAUSE_WORDS: dict[str, str] = {
    ProcessingCause.CONSENT_WITHDRAWN: "consent to processing payment records was withdrawn",
    ProcessingCause.RESTRICTION_REQUESTED: "a restriction of processing was requested",
}


@dataclass(frozen=True)
class MemberFacts:
    """A member's standing as the ledger stores it (no personal information)."""

    state: str  # as accounts told points: ACTIVE, FROZEN, CLOSED or ERASED
    restriction: Restriction | None
    paused_causes: tuple[str, ...]  # the causes pausing settlement now, sorted
    tier: TierState | None
    qualifying: int  # the window sum
    available: int  # below 0 while the member owes points (allow_negative refunds)


@dataclass(frozen=True)
class MemberRules:
    """What ExplainMemberRules answers, before it is put into protobuf."""

    member_id: str
    rule_version: int
    effective_at: datetime | None  # when points first loaded the version
    rules: Rules
    facts: MemberFacts
    progress: tiers.Progress
    summary: tuple[str, ...]

    @property
    def points_owed(self) -> int:
        return max(0, -self.facts.available)


@dataclass(frozen=True)
class ProgramRules:
    """What GetProgram answers, before it is put into protobuf."""

    rule_version: int
    effective_at: datetime | None
    rules: Rules
    summary: tuple[str, ...]


# ---- summary sentences ----------------------------------------------------------------------


def program_summary(rules: Rules, version: int, effective_at: datetime | None) -> tuple[str, ...]:
    """The rules alone, as GetProgram answers them for every member."""
    return (
        version_sentence(version, effective_at),
        *earning_sentences(rules, None),
        *tier_sentences(rules),
        *refund_sentences(rules, 0),
        spending_sentence(rules),
    )


def summarise(
    rules: Rules,
    version: int,
    effective_at: datetime | None,
    facts: MemberFacts,
    progress: tiers.Progress,
) -> tuple[str, ...]:
    """Short sentences: the member's standing first (it changes what applies), then rules."""
    return (
        *standing_sentences(facts),
        version_sentence(version, effective_at),
        *earning_sentences(rules, progress.tier),
        *tier_sentences(rules),
        *progress_sentences(progress),
        *refund_sentences(rules, max(0, -facts.available)),
        spending_sentence(rules),
    )


def standing_sentences(facts: MemberFacts) -> list[str]:
    if facts.restriction is not None:
        # it overrides the rest: nothing is processed any more, whatever the state or pauses
        return [
            "The member's points ledger is restricted after erasure: it is kept for storage,"
            " reconciliation and export only, so no earning, spending or refund applies any"
            " more (the legal basis and retention end are given with the restriction)."
        ]
    said = []
    if facts.state != ACTIVE:
        said.append(
            f"The member's account is {facts.state.lower()}: new payments earn no points and"
            " points cannot be spent or granted; refunds of earlier payments still apply."
        )
    if facts.paused_causes:
        causes = "; ".join(CAUSE_WORDS.get(c, c.lower()) for c in facts.paused_causes)
        said.append(
            f"Settling the member's new payments is paused ({causes}): they earn no points"
            " until every cause is lifted; refunds and spending go on."
        )
    return said


def version_sentence(version: int, effective_at: datetime | None) -> str:
    since = "" if effective_at is None else f" (in force since {effective_at:%Y-%m-%d} UTC)"
    return f"The program rules of version {version} apply{since}."


def times(bps: int) -> str:
    """A multiplier in basis points as "×1.25"."""
    return f"×{show(Fraction(bps, BPS))}"


def percent(bps: int) -> str:
    return f"{show(Fraction(bps, 100))}%"


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def points(rate: Fraction) -> str:
    """An exact rate as "1 point", "0.9 points" or "1/3 (about 0.3333) points"."""
    return f"{show(rate)} point{'' if rate == 1 else 's'}"


def earning_sentences(rules: Rules, tier: Tier | None) -> list[str]:
    """With `tier`: as it applies to a member of that tier; None: the program's."""
    rates = ", ".join(
        f"{points(c.points_per_unit)} per 1 {code}" for code, c in rules.currencies.items()
    )
    bonus = ", ".join(f"{cat} {times(bps)}" for cat, bps in rules.category_multipliers_bps.items())
    said = [f"Payments earn {rates}."]
    if bonus:
        said.append(f"Category multipliers: {bonus}; other categories earn ×1.")
    if rules.non_earning_categories:
        never = ", ".join(sorted(rules.non_earning_categories))
        said.append(f"Payments in these categories never earn points: {never}.")
    which = (
        "The tier's multiplier"
        if tier is None
        else f"The tier's multiplier ({times(tier.earn_multiplier_bps)} for {tier.code})"
    )
    said += [
        f"{which} applies after the category's, and the result is rounded down to whole"
        " points once.",
        cap_sentence(rules),
        pending_sentence(rules),
        f"A referral gives the referrer {rules.referral_bonus_referrer} and the referred"
        f" member {rules.referral_bonus_referee} points when the referred member's first"
        " payment settles.",
        grants_sentence(rules),
    ]
    return said


def cap_sentence(rules: Rules) -> str:
    per_payment = rules.cap_per_payment
    per_day = rules.cap_per_member_day
    one = "none per payment" if per_payment is None else f"at most {per_payment} points per payment"
    day = "none per day" if per_day is None else f"at most {per_day} points per calendar day"
    return f"Caps, applied after rounding: {one}, {day} ({rules.timezone})."


def pending_sentence(rules: Rules) -> str:
    days = rules.pending_days
    usable = (
        "A payment's points can be spent at once"
        if days == 0
        else f"A payment's points stay pending for {plural(days, 'day')} (the return window),"
        " then can be spent"
    )
    late = rules.settlement_delay_limit_days
    return (
        f"{usable}; they expire at the end of the {ordinal(rules.expiry_months)} month after"
        f" the month they were earned ({rules.timezone}). Both count from when the payment"
        f" happened; a payment more than {plural(late, 'day')} old is not settled."
    )


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def grants_sentence(rules: Rules) -> str:
    limits = ", ".join(
        f"{g.max_points} ({reason.lower().replace('_', '-')})" for reason, g in rules.grants.items()
    )
    return (
        f"One grant gives at most {limits} points; grants and referral bonuses do not count"
        " towards tiers."
    )


def tier_sentences(rules: Rules) -> list[str]:
    window, grace = rules.qualifying_window_days, rules.downgrade_grace_days
    said = [tier_benefits(t) for t in rules.tiers]
    said += [
        "Qualifying points are the points payments earn (after caps and the tier multiplier),"
        f" net of refunds, over the last {plural(window, 'day')}.",
        "A tier is reached at once when qualifying points reach its threshold; payments"
        " after that earn at its multiplier.",
        review_sentence(window, grace),
        "A refund that takes qualifying points below the tier's threshold drops the tier at once.",
    ]
    return said


def review_sentence(window: int, grace: int) -> str:
    drop = f"it is kept {plural(grace, 'more day')} (grace), then drops" if grace else "it drops"
    return (
        f"A tier is reviewed {plural(window, 'day')} after it was reached and every"
        f" {plural(window, 'day')} after that; with too few qualifying points {drop} to the"
        " tier the points reach."
    )


def tier_benefits(tier: Tier) -> str:
    perks = "".join(f", {name.replace('_', ' ')}: {text}" for name, text in tier.perks.items())
    return (
        f"Tier {tier.code} ({tier.name}) from {tier.threshold} qualifying points: earns"
        f" {times(tier.earn_multiplier_bps)}, {percent(tier.discount_bps)} discount{perks}."
    )


def progress_sentences(progress: tiers.Progress) -> list[str]:
    tier = progress.tier
    said = [
        f"The member's tier is {tier.code} ({tier.name}), with {progress.qualifying}"
        " qualifying points in the window."
    ]
    following = progress.next_tier
    if following is None:
        said.append("It is the top tier.")
    else:
        said.append(
            f"{progress.points_needed} more qualifying points reach {following.code}"
            f" ({following.name}) within the current window."
        )
    if progress.state is not None and progress.state.grace_until is not None:
        said.append("A review found too few qualifying points: the tier is in its grace period.")
    return said


def refund_sentences(rules: Rules, owed: int) -> list[str]:
    said = [
        "A refund takes back the refunded share of the payment's points, rounded up: first"
        " from the payment's own points, then from held points of that payment, then from"
        " the soonest-expiring available points, then from other held points.",
    ]
    if rules.refund_policy == RefundPolicy.ALLOW_NEGATIVE:
        said.append(
            "Points already spent or expired are taken below zero, at most"
            f" {plural(rules.negative_floor, 'point')} below; later earnings repay that first,"
            " and nothing can be spent meanwhile."
        )
    else:
        said.append(
            "Points already spent or expired are not taken below zero: what is missing is"
            " written off."
        )
    if owed:
        said.append(f"The member owes {plural(owed, 'point')} from earlier refunds.")
    return said


def spending_sentence(rules: Rules) -> str:
    return (
        "Spending takes the soonest-expiring points first; points held and not captured"
        f" come back after {plural(rules.hold_ttl_s, 'second')}."
    )
