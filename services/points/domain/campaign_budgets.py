"""A campaign's shared budgets as slices, without SQL (docs/decisions/points.md "Campaign
budgets without a hot row").

Each shared budget (the whole campaign's, or one local day's) is SLICES rows, each holding
its share of the points and awards. A batch of settlements locks only the slices it needs
(store/campaign_budgets.py), gives at most what they hold, and takes what it gave from them.
So concurrent batches update different rows, and no slice ever goes below zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from services.points.domain.campaign_awards import Allowance, BudgetKey, MemberKey
from services.points.domain.campaigns import Limit

SLICES = 16  # points.claim_campaign_budgets (migration 013) counts slices modulo 16 too
FREE_SLICES_PER_CLAIM = 2  # a batch first tries this many unlocked slices of a budget


class Slice(NamedTuple):
    slice: int
    points_left: int | None
    awards_left: int | None


class SliceSpend(NamedTuple):
    slice: int
    points: int
    awards: int


def _shares(total: int | None) -> list[int | None]:
    if total is None:
        return [None] * SLICES
    whole, rest = divmod(total, SLICES)
    return [whole + (1 if i < rest else 0) for i in range(SLICES)]


def split(limit: Limit) -> list[Slice]:
    """The budget's slices: equal shares, the remainder on the first ones."""
    points, awards = _shares(limit.points), _shares(limit.awards)
    return [Slice(i, points[i], awards[i]) for i in range(SLICES)]


def held(slices: Sequence[Slice]) -> Allowance:
    """What the held slices together allow."""
    points = [s.points_left for s in slices]
    awards = [s.awards_left for s in slices]
    return Allowance(
        None if any(p is None for p in points) else sum(p or 0 for p in points),
        None if any(a is None for a in awards) else sum(a or 0 for a in awards),
    )


def spend(slices: Sequence[Slice], points: int, awards: int) -> list[SliceSpend]:
    """How the points and awards a batch gave come out of the slices it held: each slice
    gives what it has, in order (their sum covers both, as the awards were limited by it)."""
    spent = []
    for s in slices:
        from_points = points if s.points_left is None else min(points, s.points_left)
        from_awards = awards if s.awards_left is None else min(awards, s.awards_left)
        points, awards = points - from_points, awards - from_awards
        if from_points or from_awards:
            spent.append(SliceSpend(s.slice, from_points, from_awards))
    if points or awards:
        raise ValueError("the held slices do not cover what was given")
    return spent


class CampaignWrite(NamedTuple):
    """What a batch's campaigns gave, as the rows one statement writes: each campaign's
    results (campaign, results slice, points, awards), members' usage of campaigns with a
    per-member budget (member and campaign, points, awards), and what the budget slices
    gave (store/campaigns.py)."""

    results: list[tuple[str, int, int, int]]
    usage: list[tuple[MemberKey, int, int]]
    spent: list[tuple[BudgetKey, SliceSpend]]
    # coupon campaigns' awards: (member, campaign, payment, template), issued by a job
    coupons: list[tuple[str, str, str, str]]


def taken(slices: list[Slice], spent: Sequence[SliceSpend]) -> list[Slice]:
    """The slices as they are once `spent` came out of them."""
    by_slice = {s.slice: s for s in spent}
    left = []
    for s in slices:
        out = by_slice.get(s.slice)
        if out is None:
            left.append(s)
            continue
        points = None if s.points_left is None else s.points_left - out.points
        awards = None if s.awards_left is None else s.awards_left - out.awards
        left.append(Slice(s.slice, points, awards))
    return left
