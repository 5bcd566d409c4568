"""Settings from environment variables (`MEMBERSHIP_*`, `DATABASE_URL`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

DEFAULT_ADDRS = {
    "accounts": "127.0.0.1:50051",
    "points": "127.0.0.1:50052",
    "privacy": "127.0.0.1:50053",
}


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
ENV_PREFIX = "MEMBERSHIP_"


class ConfigError(ValueError):
    """A setting is missing or malformed."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    keys_dir: Path
    token_audience: str
    service_addrs: Mapping[str, str]
    db_pool_min: int
    db_pool_max: int
    shutdown_grace_s: float
    outgoing_timeout_s: float
    log_level: str
    max_message_bytes: int
    max_concurrent_rpcs: int
    # empty: no metrics endpoint
    metrics_addrs: Mapping[str, str]
    # how often the points service runs its background jobs; 0: never (tests, run-jobs)
    points_jobs_interval_s: float
    # how long privacy reuses its consent statistics (a scan of every member's consents)
    consent_statistics_ttl_s: float
    # how long points answers writes for a member it has not heard of with "retry"
    # (services/points/unknown_members.py), counted from the first such write
    points_unknown_member_grace_s: float = 86_400.0
    # PEM public keys trusted for caller tokens; empty: the local signing key's
    token_public_keys: str = ""
    # every MEMBERSHIP_* variable the settings were loaded from: a service parses its own
    # settings from here (services/<name>/settings.py), never from os.environ
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def addr_of(self, service: str) -> str:
        return self.service_addrs[service]

    def metrics_addr_of(self, service: str) -> str:
        return self.metrics_addrs.get(service, "")


N = TypeVar("N", int, float)


def number_setting(env: Mapping[str, str], name: str, default: N, low: N, high: N) -> N:
    """A number from `env[name]` within [low, high]; `default` when unset or empty."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    kind = type(default)
    try:
        value = kind(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be {'an integer' if kind is int else 'a number'}") from exc
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}")
    return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    settings = Settings(
        database_url=env.get("DATABASE_URL", ""),
        keys_dir=Path(env.get("MEMBERSHIP_KEYS_DIR", ".data/keys")),
        token_audience=env.get("MEMBERSHIP_TOKEN_AUDIENCE", "wallet-membership"),
        service_addrs={
            name: env.get(f"MEMBERSHIP_{name.upper()}_ADDR", default)
            for name, default in DEFAULT_ADDRS.items()
        },
        db_pool_min=number_setting(env, "MEMBERSHIP_DB_POOL_MIN", 1, 0, 100),
        db_pool_max=number_setting(env, "MEMBERSHIP_DB_POOL_MAX", 10, 1, 200),
        shutdown_grace_s=number_setting(env, "MEMBERSHIP_SHUTDOWN_GRACE_S", 5.0, 0.0, 120.0),
        outgoing_timeout_s=number_setting(env, "MEMBERSHIP_OUTGOING_TIMEOUT_S", 3.0, 0.05, 60.0),
        log_level=env.get("MEMBERSHIP_LOG_LEVEL", "INFO").upper(),
        max_message_bytes=number_setting(
            env, "MEMBERSHIP_MAX_MESSAGE_BYTES", 4 * 1024 * 1024, 1024, 64 << 20
        ),
        max_concurrent_rpcs=number_setting(env, "MEMBERSHIP_MAX_CONCURRENT_RPCS", 256, 1, 10_000),
        metrics_addrs={
            name: env.get(f"MEMBERSHIP_{name.upper()}_METRICS_ADDR", "") for name in DEFAULT_ADDRS
        },
        points_jobs_interval_s=number_setting(
            env, "MEMBERSHIP_POINTS_JOBS_INTERVAL_S", 30.0, 0.0, 86_400.0
        ),
        consent_statistics_ttl_s=number_setting(
            env, "MEMBERSHIP_CONSENT_STATISTICS_TTL_S", 60.0, 0.0, 3600.0
        ),
        points_unknown_member_grace_s=number_setting(
            env, "MEMBERSHIP_POINTS_UNKNOWN_MEMBER_GRACE_S", 86_400.0, 1.0, 30 * 86_400.0
        ),
        token_public_keys=env.get("MEMBERSHIP_TOKEN_PUBLIC_KEYS", ""),
        env=MappingProxyType({k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}),
    )
    if settings.log_level not in LOG_LEVELS:
        raise ConfigError(f"MEMBERSHIP_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
    if settings.db_pool_min > settings.db_pool_max:
        raise ConfigError("MEMBERSHIP_DB_POOL_MIN must not exceed MEMBERSHIP_DB_POOL_MAX")
    return settings
