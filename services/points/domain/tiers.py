"""Tiers: which tier a member holds, and how it moves (docs/decisions/points.md).

Qualifying points are the points settlements award, per calendar day of the payment (the
program's time zone), net of refunds; the window is the `qualifying_window_days` days ending
today. Upgrades happen at once, inside the settlement that crosses a higher threshold (the
new multiplier applies from the next payment). Downgrades happen only at the tier's review
(`since + window`), after `downgrade_grace_days` when the review finds too few points; the
one exception is a refund that itself takes the window sum below the tier's threshold: the
qualification it undoes is undone at once. These are pure functions; callers hold the
member's balance lock while they read, decide and write.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

from services.points.domain import earning
from services.points.domain.rules import Rules, RulesInForce, Tier, parse_rules


@dataclass(frozen=True)
class TierState:
    """A member's row of points.member_tiers (see migration 006)."""

    code: str
    since: datetime
    review_at: datetime | None
    grace_until: datetime | None
    rule_version: int


@dataclass(frozen=True)
class TierView:
    """A member's tier row (None: the base tier) and qualifying points in a window."""

    state: TierState | None
    qualifying: int


@dataclass(frozen=True)
class Qualified:
    """A member's tier and window sum after a settlement, and the upgrade it caused."""

    state: TierState | None
    qualifying: int
    upgrade: TierState | None


def window_days(rules: Rules, now: datetime) -> tuple[date, date]:
    """First and last calendar day of the qualifying window that ends today."""
    last = earning.local_day(rules, now)
    return last - timedelta(days=rules.qualifying_window_days - 1), last


def window_bounds(rules: Rules, now: datetime) -> tuple[datetime, datetime]:
    """[start, end) of the window as instants: its first day's start, its last day's end."""
    first, last = window_days(rules, now)
    return earning.local_day_bounds(rules, first)[0], earning.local_day_bounds(rules, last)[1]


def in_window(rules: Rules, now: datetime, day: date) -> bool:
    first, last = window_days(rules, now)
    return first <= day <= last


def qualified(
    in_force: RulesInForce, now: datetime, seen: TierView, points: int, day: date
) -> Qualified:
    """The window sum after earning `points` on `day`, and the upgrade it reaches.
    Only points earned count: a payment that earns none changes no tier."""
    state, qualifying = seen.state, seen.qualifying
    if points <= 0:
        return Qualified(state, qualifying, None)
    rules = in_force.rules
    if in_window(rules, now, day):
        qualifying += points
    upgrade = after_earning(rules, in_force.version, state, qualifying, now)
    return Qualified(upgrade or state, qualifying, upgrade)


def tier_of(rules: Rules, state: TierState | None) -> Tier:
    """The member's tier; no row, or a code these rules no longer have, is the base tier."""
    if state is None:
        return rules.base_tier()
    try:
        return rules.tier(state.code)
    except KeyError:
        return rules.base_tier()


def _window(rules: Rules) -> timedelta:
    return timedelta(days=rules.qualifying_window_days)


def entered(rules: Rules, version: int, tier: Tier, now: datetime) -> TierState:
    """The state of a member who reaches `tier` at `now` (by upgrade or downgrade)."""
    review = None if tier == rules.base_tier() else now + _window(rules)
    return TierState(tier.code, now, review, None, version)


def after_earning(
    rules: Rules, version: int, state: TierState | None, qualifying: int, now: datetime
) -> TierState | None:
    """The upgrade a settlement causes (None: none), given the window sum after it."""
    target = rules.tier_for(qualifying)
    if target.threshold <= tier_of(rules, state).threshold:
        return None
    return entered(rules, version, target, now)


def after_refund(
    rules: Rules,
    version: int,
    state: TierState | None,
    sums: tuple[int, int],
    now: datetime,
) -> TierState | None:
    """The drop a refund causes (None: none), given the window sum before and after it.

    Only a refund that itself takes the sum from at or above the tier's threshold to below
    it drops the tier, to what the sum still reaches; the review date stays (a drop gives no
    new window). A tier the window no longer supported before the refund waits for review."""
    before, after = sums
    current = tier_of(rules, state)
    if state is None or not before >= current.threshold > after:
        return None
    target = rules.tier_for(after)
    if target == rules.base_tier():
        return TierState(target.code, now, None, None, version)
    return TierState(target.code, now, state.review_at or now + _window(rules), None, version)


def review_due(state: TierState, now: datetime) -> bool:
    """Whether the tier's review (or its grace end) is due at `now`."""
    when = state.grace_until or state.review_at
    return when is not None and when <= now


def reviewed(rules: Rules, state: TierState, qualifying: int, now: datetime) -> TierState:
    """The tier review at `now` (due: `grace_until`, else `review_at`, has passed).

    Enough points for the tier: kept, reviewed again a window after the review date.
    Too few: the grace period starts (review_at + grace), or, once it is over or when there
    is none, the member drops to the tier the window sum reaches."""
    current = tier_of(rules, state)
    target = rules.tier_for(qualifying)
    review_at = state.review_at or now
    if target.threshold >= current.threshold:
        following = review_at + _window(rules)
        if target != current:  # thresholds of these rules fell below the sum: an upgrade
            return entered(rules, state.rule_version, target, now)
        return replace(
            state,
            review_at=following if following > now else now + _window(rules),
            grace_until=None,
        )
    grace_end = review_at + timedelta(days=rules.downgrade_grace_days)
    if state.grace_until is None and grace_end > now:
        return replace(state, grace_until=grace_end)
    return entered(rules, state.rule_version, target, now)


@dataclass(frozen=True)
class Progress:
    tier: Tier
    state: TierState | None
    qualifying: int
    window_start: datetime
    window_end: datetime
    next_tier: Tier | None
    points_needed: int  # to reach next_tier within the current window (0 at the top)


def progress(rules: Rules, state: TierState | None, qualifying: int, now: datetime) -> Progress:
    tier = tier_of(rules, state)
    following = rules.next_tier(tier.code)
    needed = 0 if following is None else max(0, following.threshold - qualifying)
    start, end = window_bounds(rules, now)
    return Progress(tier, state, qualifying, start, end, following, needed)


# parsed stored rules, keyed by the stored document itself: a version number names different
# rules in different databases (a process may serve several, as tests do)
_RULES_BY_DOCUMENT: dict[str, Rules] = {}
_MAX_CACHED_RULES = 64


def rules_of(version: int, document: str | dict[str, object]) -> Rules:
    """The parsed rules of a stored version (`document`, as stored with `version`)."""
    text = document if isinstance(document, str) else json.dumps(document, sort_keys=True)
    found = _RULES_BY_DOCUMENT.get(text)
    if found is None:
        found = parse_rules(json.loads(text))
        if len(_RULES_BY_DOCUMENT) >= _MAX_CACHED_RULES:
            _RULES_BY_DOCUMENT.clear()
        _RULES_BY_DOCUMENT[text] = found
    return found
