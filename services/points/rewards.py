"""Rewards: the catalogue (ListRewards) and redeeming a reward for points (RedeemReward).

A reward redemption is a RedeemPoints of `points_cost * quantity` with three more checks and
two more writes, in the same transaction: it reuses Spending's member check, balance lock,
lot taking (soonest-expiring first) and transfers (member:available -> program:redeemed, one
per lot). Its transaction is kind `reward`, key `reward:<request_id>`, `points` the change of
`available` (negative). The member's units of the sku (points.reward_redemptions) are counted
under the balance lock, so the per-member limit holds under concurrency. The stock is taken
last, by a conditional UPDATE: never oversold, and the one row every member shares is locked
only until the commit. Any refusal raises before the commit, so nothing is written.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from services.points import metrics
from services.points.coupons import issue_in
from services.points.domain import tiers
from services.points.domain.ledger import REDEEMED, NewTransaction
from services.points.domain.restrictions import require_readable
from services.points.domain.rewards import (
    KIND,
    PER_MEMBER_LIMIT,
    REWARD_INACTIVE,
    TIER_TOO_LOW,
    Availability,
    CatalogueEntry,
    RedeemRewardRequest,
    Reward,
    RewardQuery,
    RewardRedemption,
    allowed_tiers,
    out_of_stock,
    parse_catalogue,
)
from services.points.domain.rules import Rules, RulesInForce, Tier
from services.points.domain.spending import LotPart, LotTaken, Taken
from services.points.domain.strict import RulesError
from services.points.spending import Spending
from services.points.store import ledger as ledger_store
from services.points.store import rewards as reward_store
from services.points.store import spending as spending_store
from services.points.store import tiers as tier_store
from services.runtime import paging
from services.runtime.db import Conn, in_transaction
from services.runtime.errors import failed_precondition, idempotency_key_reused, not_found


def load_catalogue_file(path: Path, rules: Rules) -> tuple[CatalogueEntry, ...]:
    """Reads and validates the catalogue file against the rules in force."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise RulesError(str(path), f"not valid TOML: {error}") from None
    return parse_catalogue(doc, rules)


async def sync_rewards(pool: asyncpg.Pool, rules: RulesInForce, path: Path) -> None:
    """Loads the catalogue file (validated against the rules in force) into points.rewards,
    at start."""
    entries = load_catalogue_file(path, rules.rules)
    async with pool.acquire() as conn:
        await reward_store.sync_catalogue(conn, entries)


async def tier_of(conn: Conn, rules: Rules, member_id: str) -> Tier:
    """The member's current tier (no tier state yet: the base tier)."""
    states = await tier_store.tier_rows(conn, [member_id])
    return tiers.tier_of(rules, states.get(member_id))


class Rewards(Spending):
    async def redeem_reward(self, request: RedeemRewardRequest) -> RewardRedemption:
        spent: list[int] = []  # the points of a new redemption, not of a repeat
        result = await in_transaction(
            self._pool, lambda conn: self._redeem_reward_in(conn, request, spent)
        )
        if spent:  # committed: counted once
            metrics.POINTS_REDEEMED.inc(spent[-1])
        return result

    async def list_rewards(self, query: RewardQuery) -> tuple[list[Reward], str]:
        size = paging.page_size(query.page_size)
        bound = {"a": query.available_to}
        position = paging.decode_token(query.page_token, bound)
        after = str(position.get("s", "")) if position else ""
        async with self._pool.acquire() as conn:
            only = await self._availability(conn, query.available_to)
            rows = await reward_store.list_rewards(conn, after, size + 1, only)
        page = rows[:size]
        if len(rows) <= size:
            return page, ""
        return page, paging.encode_token({"s": page[-1].sku}, bound)

    async def _availability(self, conn: Conn, member_id: str) -> Availability | None:
        if not member_id:
            return None
        require_readable(await self._members.state_of(conn, member_id))
        rules = self._rules.rules
        tier = await tier_of(conn, rules, member_id)
        return Availability(member_id, allowed_tiers(rules, tier))

    async def _replayed(self, conn: Conn, request: RedeemRewardRequest) -> RewardRedemption | None:
        done = await ledger_store.find_transaction(conn, request.member_id, request.idempotency_key)
        if done is None:
            return None
        if done.request_hash != request.fingerprint():
            raise idempotency_key_reused()
        return RewardRedemption.from_json(done.result)

    async def _redeem_reward_in(
        self, conn: Conn, request: RedeemRewardRequest, spent: list[int]
    ) -> RewardRedemption:
        spent.clear()  # a retried transaction starts over
        # a repeat answers with the first result, whatever the member's state is now
        done = await self._replayed(conn, request)
        if done is not None:
            return done
        await self._require_active(conn, request.member_id)
        key, fingerprint = request.idempotency_key, request.fingerprint()
        stored = await self._lock(conn, request.member_id, key, fingerprint)
        if stored is not None:
            return RewardRedemption.from_json(stored)
        reward = await self._redeemable(conn, request)
        points = reward.points_cost * request.quantity
        taken = await self._take(conn, request.member_id, points, self._clock())
        codes: tuple[str, ...] = ()
        if reward.coupon_template is not None:  # a coupon reward: one coupon per unit
            keys = [f"{request.idempotency_key}:{i}" for i in range(request.quantity)]
            made = await issue_in(
                conn, self._clock(), reward.coupon_template, request.member_id, keys
            )
            codes = tuple(c.code for c in made)
        result = await self._record_reward(conn, request, reward, taken, codes)
        if reward.stock is not None and not await reward_store.take_stock(
            conn, reward.sku, request.quantity
        ):
            raise out_of_stock()  # rolls back it all
        spent.append(points)
        return result

    async def _redeemable(self, conn: Conn, request: RedeemRewardRequest) -> Reward:
        """The reward, if this member may redeem this many now; every check reads only."""
        reward = await reward_store.get_reward(conn, request.sku)
        if reward is None:
            raise not_found("reward")
        if not reward.active:
            raise failed_precondition(REWARD_INACTIVE, "the reward is retired")
        rules = self._rules.rules
        tier = await tier_of(conn, rules, request.member_id)
        if reward.min_tier not in allowed_tiers(rules, tier):
            raise failed_precondition(
                TIER_TOO_LOW, f"the reward needs tier {reward.min_tier} or above"
            )
        if reward.per_member_limit is not None:
            units = await reward_store.units_redeemed(conn, request.member_id, request.sku)
            if units + request.quantity > reward.per_member_limit:
                raise failed_precondition(
                    PER_MEMBER_LIMIT, f"at most {reward.per_member_limit} per member"
                )
        # an early answer for a sold-out reward; take_stock decides under the row lock
        if reward.stock is not None and reward.stock < request.quantity:
            raise out_of_stock()
        return reward

    async def _record_reward(
        self,
        conn: Conn,
        request: RedeemRewardRequest,
        reward: Reward,
        taken: Sequence[Taken],
        coupons: tuple[str, ...] = (),
    ) -> RewardRedemption:
        member_id, version = request.member_id, self._rules.version
        points = reward.points_cost * request.quantity
        txn_id = (await ledger_store.next_ids(conn, 1))[0]
        moved = [LotPart(t.lot.lot_id, t.points) for t in taken]
        await self._move(conn, member_id, txn_id, REDEEMED, moved)
        await spending_store.add_to_balance(conn, member_id, available=-points, held=0)
        await reward_store.add_units(conn, member_id, reward.sku, request.quantity)
        lots = tuple(LotTaken(t.lot.lot_id, t.points, t.lot.expires_at) for t in taken)
        head = (request.request_id, reward.sku, request.quantity)
        result = RewardRedemption(member_id, *head, points, txn_id, version, lots, coupons)
        key, fingerprint = request.idempotency_key, request.fingerprint()
        doc, explained = result.to_json(), result.explanation(reward)
        txn = NewTransaction(
            txn_id=txn_id,
            kind=KIND,
            idempotency_key=key,
            request_hash=fingerprint,
            rule_version=version,
            points=-points,
            result=doc,
            explanation=explained,
        )
        await ledger_store.insert_transaction(conn, member_id, txn)
        return result
