"""The program in force: the rules file read and recorded as a rule version at start
(`load_rules_in_force`), GetProgram (the rules alone) and ExplainMemberRules (the rules as
they apply to one member now; the sentences are domain/program.py's)."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import asyncpg

from services.points.domain import program, tiers
from services.points.domain.program import MemberRules, ProgramRules
from services.points.domain.rules import Rules, RulesInForce, parse_rules
from services.points.domain.strict import RulesError
from services.points.store import program as program_store
from services.runtime.errors import not_found


def load_rules_file(path: Path) -> Rules:
    """Read and validate a TOML rules file."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise RulesError(str(path), f"not valid TOML: {error}") from None
    return parse_rules(doc)


async def load_rules_in_force(pool: asyncpg.Pool, path: Path) -> RulesInForce:
    """Parses the rules file and records it as a new version if it changed."""
    rules = load_rules_file(path)
    async with pool.acquire() as conn:
        version = await program_store.register_rules(conn, rules.digest(), rules.document())
    return RulesInForce(version, rules)


class Program:
    """GetProgram and ExplainMemberRules: reads only."""

    def __init__(
        self, pool: asyncpg.Pool, in_force: RulesInForce, clock: Callable[[], datetime]
    ) -> None:
        self._pool = pool
        self._in_force = in_force
        self._clock = clock

    async def program(self) -> ProgramRules:
        rules, version = self._in_force.rules, self._in_force.version
        async with self._pool.acquire() as conn:
            effective_at = await program_store.rules_loaded_at(conn, version)
        summary = program.program_summary(rules, version, effective_at)
        return ProgramRules(version, effective_at, rules, summary)

    async def explain(self, member_id: str) -> MemberRules:
        """NOT_FOUND when points does not know the member; restricted members are explained."""
        rules, version, now = self._in_force.rules, self._in_force.version, self._clock()
        async with self._pool.acquire() as conn:
            window = tiers.window_days(rules, now)
            facts = await program_store.member_facts(conn, member_id, window)
            if facts is None:
                raise not_found("member")
            effective_at = await program_store.rules_loaded_at(conn, version)
        # the same computation as GetTierProgress, so both always agree
        progress = tiers.progress(rules, facts.tier, facts.qualifying, now)
        summary = program.summarise(rules, version, effective_at, facts, progress)
        return MemberRules(member_id, version, effective_at, rules, facts, progress, summary)
