"""The points service's own settings, parsed from the MEMBERSHIP_* variables the runtime
settings were loaded from (never from os.environ): every variable is in the README's table.

The files the settings name (program rules, rewards catalogue) are read and validated when
the service builds (program.py, rewards.py), so a typo stops it from starting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.runtime.config import Settings, number_setting

RULES_FILE_ENV = "MEMBERSHIP_POINTS_RULES_FILE"
REWARDS_FILE_ENV = "MEMBERSHIP_POINTS_REWARDS_FILE"
SETTLEMENT_LINGER_ENV = "MEMBERSHIP_POINTS_SETTLEMENT_LINGER_MS"
DEFAULT_SETTLEMENT_LINGER_MS = 0.0  # off: measured no gain on 2 cores (docs/decisions/points.md)

DEFAULT_RULES_FILE = Path(__file__).with_name("program_rules") / "default.toml"
DEFAULT_REWARDS_FILE = Path(__file__).with_name("program_rules") / "rewards.toml"


@dataclass(frozen=True)
class PointsSettings:
    rules_file: Path
    rewards_file: Path
    # how often the background jobs run; 0: never (tests, `membership points run-jobs`)
    jobs_interval_s: float
    # how long writes for a member accounts has not announced are answered "retry"
    unknown_member_grace_s: float
    # how long, under load, a coalesced batch of single settlements waits to fill
    settlement_linger_s: float


def load(settings: Settings) -> PointsSettings:
    env = settings.env
    return PointsSettings(
        rules_file=Path(env.get(RULES_FILE_ENV) or DEFAULT_RULES_FILE),
        rewards_file=Path(env.get(REWARDS_FILE_ENV) or DEFAULT_REWARDS_FILE),
        jobs_interval_s=settings.points_jobs_interval_s,
        unknown_member_grace_s=settings.points_unknown_member_grace_s,
        settlement_linger_s=number_setting(
            env, SETTLEMENT_LINGER_ENV, DEFAULT_SETTLEMENT_LINGER_MS, 0.0, 100.0
        )
        / 1000,
    )
