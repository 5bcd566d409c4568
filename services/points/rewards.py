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

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

from services.points import metrics, tiers
from services.points.ledger_accounts import REDEEMED
from services.points.restrictions import require_readable
from services.points.rules import Rules, Tier
from services.points.spending import Spending
from services.points.store import ledger as ledger_store
from services.points.store import rewards as store
from services.points.store import spending as spending_store
from services.points.store import tiers as tier_store
from services.runtime import paging
from services.runtime.db import Conn, in_transaction
from services.runtime.errors import failed_precondition, idempotency_key_reused, not_found

KIND = "reward"


async def tier_of(conn: Conn, rules: Rules, member_id: str) -> Tier:
    """The member's current tier (no tier state yet: the base tier)."""
    states = await tier_store.tier_rows(conn, [member_id])
    return tiers.tier_of(rules, states.get(member_id))


def allowed_tiers(rules: Rules, tier: Tier) -> list[str]:
    """Codes of the tiers up to `tier`: a reward with one of these as min_tier is allowed."""
    codes = [t.code for t in rules.tiers]
    return codes[: codes.index(tier.code) + 1] if tier.code in codes else codes[:1]


@dataclass(frozen=True)
class RedeemRewardRequest:
    member_id: str
    sku: str
    request_id: str
    quantity: int

    @property
    def idempotency_key(self) -> str:
        return f"{KIND}:{self.request_id}"

    def fingerprint(self) -> bytes:
        fields = [self.member_id, self.sku, self.request_id, self.quantity]
        return hashlib.sha256(json.dumps(fields).encode()).digest()


@dataclass(frozen=True)
class RewardRedemption:
    member_id: str
    request_id: str
    sku: str
    quantity: int
    points: int
    txn_id: int
    rule_version: int
    lots: tuple[tuple[int, int, datetime], ...]  # (lot_id, points, expires_at), spending order

    def to_json(self) -> dict[str, Any]:
        lots = [[lot_id, p, at.isoformat()] for lot_id, p, at in self.lots]
        return {k: v for k, v in vars(self).items() if k != "lots"} | {"lots": lots}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RewardRedemption:
        lots = tuple((int(i), int(p), datetime.fromisoformat(at)) for i, p, at in doc["lots"])
        return cls(**(doc | {"lots": lots}))

    def explanation(self, reward: store.RewardRow) -> dict[str, Any]:
        steps = [
            {
                "name": "cost",
                "value": str(self.points),
                "note": f"{self.quantity} x {reward.points_cost} points for reward {self.sku}",
            },
        ] + [
            {
                "name": "take",
                "value": str(p),
                "note": f"{p} from lot {i} (expires {at.isoformat()})",
            }
            for i, p, at in self.lots
        ]
        return {
            "kind": KIND,
            "rule_version": self.rule_version,
            "request_id": self.request_id,
            "sku": self.sku,
            "quantity": self.quantity,
            "points_cost": reward.points_cost,
            "points": self.points,
            "steps": steps,
            "sentence": f"Redeemed {self.quantity} x reward {self.sku} for {self.points} points,"
            " soonest-expiring lots first: " + ", ".join(s["note"] for s in steps[1:]) + ".",
        }


@dataclass(frozen=True)
class RewardQuery:
    available_to: str  # member id, or "" for every active reward
    page_size: int
    page_token: str


def _refuse(reason: str, message: str) -> NoReturn:
    raise failed_precondition(reason, message)


class Rewards(Spending):
    async def redeem_reward(self, request: RedeemRewardRequest) -> RewardRedemption:
        spent: list[int] = []  # the points of a new redemption, not of a repeat
        result = await in_transaction(
            self._pool, lambda conn: self._redeem_reward_in(conn, request, spent)
        )
        if spent:  # committed: counted once
            metrics.POINTS_REDEEMED.inc(spent[-1])
        return result

    async def list_rewards(self, query: RewardQuery) -> tuple[list[store.RewardRow], str]:
        size = paging.page_size(query.page_size)
        bound = {"a": query.available_to}
        position = paging.decode_token(query.page_token, bound)
        after = str(position.get("s", "")) if position else ""
        async with self._pool.acquire() as conn:
            only = await self._availability(conn, query.available_to)
            rows = await store.list_rewards(conn, after, size + 1, only)
        page = rows[:size]
        if len(rows) <= size:
            return page, ""
        return page, paging.encode_token({"s": page[-1].sku}, bound)

    async def _availability(self, conn: Conn, member_id: str) -> store.Availability | None:
        if not member_id:
            return None
        require_readable(await self._members.state_of(conn, member_id))
        rules = self._rules.rules
        tier = await tier_of(conn, rules, member_id)
        return store.Availability(member_id, allowed_tiers(rules, tier))

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
        result = await self._record_reward(conn, request, reward, taken)
        if reward.stock is not None and not await store.take_stock(
            conn, reward.sku, request.quantity
        ):
            _refuse("OUT_OF_STOCK", "not enough of the reward is left")  # rolls back it all
        spent.append(points)
        return result

    async def _redeemable(self, conn: Conn, request: RedeemRewardRequest) -> store.RewardRow:
        """The reward, if this member may redeem this many now; every check reads only."""
        reward = await store.get_reward(conn, request.sku)
        if reward is None:
            raise not_found("reward")
        if not reward.active:
            _refuse("REWARD_INACTIVE", "the reward is retired")
        rules = self._rules.rules
        tier = await tier_of(conn, rules, request.member_id)
        if reward.min_tier not in allowed_tiers(rules, tier):
            _refuse("TIER_TOO_LOW", f"the reward needs tier {reward.min_tier} or above")
        if reward.per_member_limit is not None:
            units = await store.units_redeemed(conn, request.member_id, request.sku)
            if units + request.quantity > reward.per_member_limit:
                _refuse("PER_MEMBER_LIMIT", f"at most {reward.per_member_limit} per member")
        # an early answer for a sold-out reward; take_stock decides under the row lock
        if reward.stock is not None and reward.stock < request.quantity:
            _refuse("OUT_OF_STOCK", "not enough of the reward is left")
        return reward

    async def _record_reward(
        self,
        conn: Conn,
        request: RedeemRewardRequest,
        reward: store.RewardRow,
        taken: Sequence[tuple[spending_store.SpendableLot, int]],
    ) -> RewardRedemption:
        member_id, version = request.member_id, self._rules.version
        points = reward.points_cost * request.quantity
        txn_id = (await ledger_store.next_ids(conn, 1))[0]
        await self._move(conn, member_id, txn_id, REDEEMED, [(lot.lot_id, p) for lot, p in taken])
        await spending_store.add_to_balance(conn, member_id, available=-points, held=0)
        await store.add_units(conn, member_id, reward.sku, request.quantity)
        lots = tuple((lot.lot_id, p, lot.expires_at) for lot, p in taken)
        head = (request.request_id, reward.sku, request.quantity)
        result = RewardRedemption(member_id, *head, points, txn_id, version, lots)
        key, fingerprint = request.idempotency_key, request.fingerprint()
        doc, explained = result.to_json(), result.explanation(reward)
        txn = ledger_store.NewTransaction(
            txn_id, KIND, key, fingerprint, version, -points, doc, explained
        )
        await ledger_store.insert_transaction(conn, member_id, txn)
        return result
