"""A pure-Python reference model of the points ledger, for tests/service/test_points_stateful.py.

It holds every lot, open hold, qualifying day and tier row of each member and changes them as
the program rules say, written without the service's code: a mistake on either side shows as
a difference. The terms are this module's own constants, written into the rules file the
service loads (`write_rules`) and checked against what it parsed (`check_terms`).

Only what the machine does is modelled: CNY payments in a category without a bonus, the
within_balance refund policy (so no debt), amounts far below the caps per payment and per
day, and holds closed at the instant they were made, or later by the jobs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from services.points.domain.rules import Rules
from tests.support.points import rules_file

ZONE = ZoneInfo("Asia/Shanghai")  # the default rules' time zone
PENDING_DAYS = 7
EXPIRY_MONTHS = 1  # short, so that lots expire within a run of the machine
# short too, so that reviews, grace periods and downgrades happen within a run
WINDOW = timedelta(days=30)
GRACE = timedelta(days=10)
HOLD_TTL = timedelta(seconds=900)

PENDING, AVAILABLE, EXPIRED, CANCELLED = "PENDING", "AVAILABLE", "EXPIRED", "CANCELLED"


@dataclass(frozen=True)
class TierTerms:
    code: str
    threshold: int
    multiplier_bps: int


# the default tiers' codes and multipliers; thresholds low enough for a few payments
TIERS = (
    TierTerms("basic", 0, 10_000),
    TierTerms("silver", 20, 12_500),
    TierTerms("gold", 60, 15_000),
    TierTerms("diamond", 150, 20_000),
)


def write_rules(folder: Path) -> Path:
    """The default rules with the terms above (tier thresholds are not top-level keys)."""
    path = rules_file(
        folder,
        expiry_months=str(EXPIRY_MONTHS),
        # payments settle at the machine's time; the rule must only fit the short expiry
        max_settlement_delay_days=str(28 * EXPIRY_MONTHS),
        qualifying_window_days=str(WINDOW.days),
        downgrade_grace_days=str(GRACE.days),
    )
    thresholds = iter(tier.threshold for tier in TIERS)
    text, found = re.subn(
        r"^threshold = \d+$",
        lambda _: f"threshold = {next(thresholds)}",
        path.read_text(encoding="utf-8"),
        flags=re.MULTILINE,
    )
    assert found == len(TIERS)
    path.write_text(text, encoding="utf-8")
    return path


def check_terms(rules: Rules) -> None:
    """The service's parsed rules are the model's terms (else the model checks nothing)."""
    assert rules.timezone == ZONE.key and rules.pending_days == PENDING_DAYS
    assert rules.expiry_months == EXPIRY_MONTHS and rules.hold_ttl_s == HOLD_TTL.seconds
    assert rules.qualifying_window_days == WINDOW.days
    assert rules.downgrade_grace_days == GRACE.days
    assert rules.refund_policy == "within_balance"
    got = tuple(TierTerms(t.code, t.threshold, t.earn_multiplier_bps) for t in rules.tiers)
    assert got == TIERS, got


def local_day(moment: datetime) -> date:
    return moment.astimezone(ZONE).date()


def expiry_of(earned: datetime) -> datetime:
    """First instant of the month after the month EXPIRY_MONTHS after earning (local)."""
    local = earned.astimezone(ZONE)
    months = local.month + EXPIRY_MONTHS  # 1-based month of expiry, maybe past December
    year, month = local.year + months // 12, months % 12 + 1
    return datetime(year, month, 1, tzinfo=ZONE).astimezone(UTC)


def out_of_window(day: date) -> datetime:
    """The first instant at which `day` is no longer in the qualifying window."""
    return datetime.combine(day + WINDOW, time(), ZONE).astimezone(UTC)


def clawback(points: int, minor: int, refunded_minor: int) -> int:
    """The points due for `refunded_minor` of a payment in all, rounded up."""
    return min(points, -(-points * refunded_minor // minor))


def tier_named(code: str) -> TierTerms:
    return next(tier for tier in TIERS if tier.code == code)


def tier_for(qualifying: int) -> TierTerms:
    return [tier for tier in TIERS if tier.threshold <= qualifying][-1]


@dataclass
class Lot:
    state: str
    points: int
    remaining: int
    earned_at: datetime
    available_at: datetime
    expires_at: datetime

    def row(self) -> tuple[str, int, int, datetime, datetime, datetime]:
        return (
            self.state,
            self.points,
            self.remaining,
            self.earned_at,
            self.available_at,
            self.expires_at,
        )


@dataclass(frozen=True)
class TierRow:
    code: str
    since: datetime
    review_at: datetime | None
    grace_until: datetime | None


@dataclass
class Paid:
    member: str
    payment_id: str
    minor: int
    points: int
    lot: Lot | None
    day: date
    refunded: int = 0
    non_qualifying: int = 0  # campaign points that did not count toward tiers
    clawed: int = 0  # points clawed back so far


@dataclass
class CampaignTerms:
    """A running campaign as the machine starts it: a fixed bonus per payment, a budget of
    awards in all, counted toward tiers or not."""

    bonus: int
    awards_left: int
    tier_qualifying: bool
    ends_at: datetime


@dataclass
class Hold:
    member: str
    parts: list[tuple[Lot, int]]  # spending order
    expires_at: datetime


@dataclass
class Account:
    lots: list[Lot] = field(default_factory=list)  # creation (= lot_id) order
    qualifying: dict[date, int] = field(default_factory=dict)
    tier: TierRow | None = None  # None: no row, the base tier

    def sum(self, state: str) -> int:
        return sum(lot.remaining for lot in self.lots if lot.state == state)

    def window_sum(self, now: datetime) -> int:
        last = local_day(now)
        first = last - (WINDOW - timedelta(days=1))
        return sum(p for day, p in self.qualifying.items() if first <= day <= last)

    def tier_terms(self) -> TierTerms:
        return TIERS[0] if self.tier is None else tier_named(self.tier.code)


def entered(tier: TierTerms, now: datetime) -> TierRow:
    return TierRow(tier.code, now, None if tier == TIERS[0] else now + WINDOW, None)


class LedgerModel:
    def __init__(self, members: tuple[str, ...]) -> None:
        self.accounts = {member: Account() for member in members}
        self.payments: list[Paid] = []
        self.holds: dict[str, Hold] = {}
        self.campaign: CampaignTerms | None = None

    def available(self, member: str) -> int:
        return self.accounts[member].sum(AVAILABLE)

    def pending(self, member: str) -> int:
        return self.accounts[member].sum(PENDING)

    def held(self, member: str) -> int:
        return sum(p for h in self.holds.values() if h.member == member for _, p in h.parts)

    def earned(self, member: str) -> int:
        return sum(lot.points for lot in self.accounts[member].lots)

    # ---- earning and refunds ----------------------------------------------------------

    def settle(self, member: str, payment_id: str, minor: int, now: datetime) -> int:
        """Points at the multiplier of the tier held before the payment; a pending lot."""
        account = self.accounts[member]
        program = minor * account.tier_terms().multiplier_bps // 1_000_000  # 1 CNY = 1 point
        bonus = self._campaign_bonus(now)
        qualifying = program + (bonus if self.campaign and self.campaign.tier_qualifying else 0)
        points = program + bonus
        lot = None
        if points > 0:
            available_at = now + timedelta(days=PENDING_DAYS)
            lot = Lot(PENDING, points, points, now, available_at, expiry_of(now))
            account.lots.append(lot)
            day = local_day(now)
            account.qualifying[day] = account.qualifying.get(day, 0) + qualifying
            target = tier_for(account.window_sum(now))
            if target.threshold > account.tier_terms().threshold:  # upgrades only
                account.tier = entered(target, now)
        paid = Paid(member, payment_id, minor, points, lot, local_day(now))
        paid.non_qualifying = points - qualifying
        self.payments.append(paid)
        return points

    def _campaign_bonus(self, now: datetime) -> int:
        """Every payment of the window gets the bonus while the budget lasts (any amount
        earns something at x1 in the machine's category, so the base is never 0)."""
        campaign = self.campaign
        if campaign is None or now >= campaign.ends_at or campaign.awards_left <= 0:
            return 0
        campaign.awards_left -= 1
        return campaign.bonus

    def grant(self, member: str, points: int, now: datetime) -> None:
        self.accounts[member].lots.append(Lot(AVAILABLE, points, points, now, now, expiry_of(now)))

    def refund(self, paid: Paid, minor: int, now: datetime) -> tuple[int, int] | None:
        """(clawed back, uncollectable), or None: more than is left of the payment."""
        if paid.refunded + minor > paid.minor:
            return None
        due = clawback(paid.points, paid.minor, paid.refunded + minor)
        due -= clawback(paid.points, paid.minor, paid.refunded)
        paid.refunded += minor
        account = self.accounts[paid.member]
        taken = self._claw(paid.member, paid.lot, due, now)
        # the qualifying share, rounded up on the running total of what was clawed back
        qualifying = paid.points - paid.non_qualifying
        share_before = -(-qualifying * paid.clawed // paid.points) if paid.points else 0
        paid.clawed += due
        share_after = -(-qualifying * paid.clawed // paid.points) if paid.points else 0
        if share_after - share_before > 0:
            self._disqualify(account, paid.day, share_after - share_before, now)
        return taken, due - taken

    def _claw(self, member: str, own: Lot | None, due: int, now: datetime) -> int:
        """From the payment's own lot (pending, or available and not expired), the holds
        on it, the member's other usable lots soonest-expiring first, then their other
        held points; a pending lot taken to nothing is cancelled, a hold taken to nothing
        closes (clawed back)."""
        account = self.accounts[member]

        def usable(lot: Lot) -> bool:
            return lot.state == AVAILABLE and now < lot.expires_at

        mine = [own] if own is not None and (own.state == PENDING or usable(own)) else []
        others = [lot for lot in account.lots if lot is not own and usable(lot)]
        rest = due
        for lot in mine:
            rest = self._from_lot(lot, rest)
        rest = self._from_holds(member, lambda lot: lot is own, rest)
        for lot in sorted(others, key=lambda lot: lot.expires_at):
            rest = self._from_lot(lot, rest)
        rest = self._from_holds(member, lambda lot: lot is not own, rest)
        return due - rest

    @staticmethod
    def _from_lot(lot: Lot, rest: int) -> int:
        part = min(rest, lot.remaining)
        lot.remaining -= part
        if lot.state == PENDING and lot.remaining == 0 and part > 0:
            lot.state = CANCELLED
        return rest - part

    def _held_parts(self, member: str) -> list[tuple[str, int, Lot]]:
        """(hold id, index of the part, lot) in the lots' spending order, then hold id."""
        lots = self.accounts[member].lots
        parts = [
            (hold_id, i, lot)
            for hold_id, hold in self.holds.items()
            if hold.member == member
            for i, (lot, _) in enumerate(hold.parts)
        ]
        return sorted(parts, key=lambda p: (p[2].expires_at, lots.index(p[2]), p[0]))

    def _from_holds(self, member: str, which: Callable[[Lot], bool], rest: int) -> int:
        for hold_id, i, lot in self._held_parts(member):
            if rest == 0 or not which(lot):
                continue
            hold = self.holds[hold_id]
            part = min(rest, hold.parts[i][1])
            hold.parts[i] = (lot, hold.parts[i][1] - part)
            rest -= part
        for hold_id in [h for h, hold in self.holds.items() if hold.member == member]:
            if sum(p for _, p in self.holds[hold_id].parts) == 0:
                del self.holds[hold_id]  # clawed back: nothing left to capture or release
        return rest

    def _disqualify(self, account: Account, day: date, due: int, now: datetime) -> None:
        """The points leave the payment's day; a refund that itself takes the window sum
        below the tier's threshold drops the tier at once, keeping its review date."""
        before = account.window_sum(now)
        account.qualifying[day] = max(0, account.qualifying[day] - due)
        after = account.window_sum(now)
        state = account.tier
        if state is None or not before >= account.tier_terms().threshold > after:
            return
        target = tier_for(after)
        review = None if target == TIERS[0] else state.review_at or now + WINDOW
        account.tier = TierRow(target.code, now, review, None)

    # ---- spending ----------------------------------------------------------------------

    def _take(self, member: str, points: int, now: datetime) -> list[tuple[Lot, int]] | None:
        """Soonest-expiring usable lots first (a stable sort: ties in lot_id order)."""
        usable = [
            lot
            for lot in self.accounts[member].lots
            if lot.state == AVAILABLE and lot.remaining > 0 and now < lot.expires_at
        ]
        if sum(lot.remaining for lot in usable) < points:
            return None
        parts, rest = [], points
        for lot in sorted(usable, key=lambda lot: lot.expires_at):
            part = min(rest, lot.remaining)
            if part > 0:
                lot.remaining -= part
                parts.append((lot, part))
                rest -= part
        return parts

    def redeem(self, member: str, points: int, now: datetime) -> bool:
        return self._take(member, points, now) is not None

    def hold(self, member: str, hold_id: str, points: int, now: datetime) -> bool:
        parts = self._take(member, points, now)
        if parts is not None:
            self.holds[hold_id] = Hold(member, parts, now + HOLD_TTL)
        return parts is not None

    def close_hold(self, hold_id: str, captured: int, now: datetime) -> None:
        """The capture takes the soonest-expiring held points; the rest goes back to lots
        still usable, and expires with lots past their expiry."""
        rest = captured
        for lot, part in self.holds.pop(hold_id).parts:
            taken = min(rest, part)
            rest -= taken
            if lot.state == AVAILABLE and now < lot.expires_at:
                lot.remaining += part - taken

    # ---- the jobs ----------------------------------------------------------------------

    def edges(self, now: datetime) -> list[datetime]:
        """The future instants at which some job has something new to do: a lot matures or
        expires, a hold expires, a review or grace period ends, a day leaves the window."""
        found = {hold.expires_at for hold in self.holds.values()}
        for account in self.accounts.values():
            found |= {lot.available_at for lot in account.lots if lot.state == PENDING}
            found |= {lot.expires_at for lot in account.lots if lot.state == AVAILABLE}
            if account.tier is not None and account.tier.review_at is not None:
                review = account.tier.review_at
                found |= {review, account.tier.grace_until or review + GRACE}
            found |= {out_of_window(day) for day, p in account.qualifying.items() if p}
        return sorted(moment for moment in found if moment > now)

    def run_jobs(self, now: datetime) -> None:
        """In the service's order: maturation, hold expiry, lot expiry, tier review."""
        lots = [lot for account in self.accounts.values() for lot in account.lots]
        for lot in lots:
            if lot.state == PENDING and lot.available_at <= now:
                lot.state = AVAILABLE
        for hold_id in [h for h, hold in self.holds.items() if hold.expires_at <= now]:
            self.close_hold(hold_id, 0, now)
        for lot in lots:
            # a lot whose points are all spent or held closes too, with nothing to forfeit
            if lot.state == AVAILABLE and lot.expires_at <= now:
                lot.state, lot.remaining = EXPIRED, 0
        for account in self.accounts.values():
            review(account, now)


def review(account: Account, now: datetime) -> None:
    """A due review keeps a tier the window still reaches (next review a window later),
    else starts the grace period, else (grace over) drops to what the window reaches."""
    state = account.tier
    if state is None or state.review_at is None or (state.grace_until or state.review_at) > now:
        return
    current, target = account.tier_terms(), tier_for(account.window_sum(now))
    if target.threshold > current.threshold:
        account.tier = entered(target, now)
    elif target == current:
        following = state.review_at + WINDOW
        later = following if following > now else now + WINDOW
        account.tier = replace(state, review_at=later, grace_until=None)
    elif state.grace_until is None and state.review_at + GRACE > now:
        account.tier = replace(state, grace_until=state.review_at + GRACE)
    else:
        account.tier = entered(target, now)
