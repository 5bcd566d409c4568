"""The privacy service's own settings, parsed from the MEMBERSHIP_* variables the runtime
settings were loaded from (never from os.environ): every variable is in the README's table.

Files the settings name (purposes, calendar overrides) are read and validated when the
service builds (purpose_catalogue.py, deadlines.py), so a typo stops it from starting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.runtime.config import Settings

PURPOSES_FILE_ENV = "MEMBERSHIP_PRIVACY_PURPOSES_FILE"
CALENDAR_OVERRIDES_ENV = "MEMBERSHIP_PRIVACY_CALENDAR_OVERRIDES"
JOURNAL_ENV = "MEMBERSHIP_ERASURE_JOURNAL"
KEYRING_ENV = "MEMBERSHIP_KEK_KEYRING"
INDEX_KEY_ENV = "MEMBERSHIP_BLIND_INDEX_KEY"

DEFAULT_PURPOSES_FILE = Path(__file__).with_name("purposes") / "default.toml"
JOURNAL_FILE = "erasure-journal.jsonl"


@dataclass(frozen=True)
class KeySources:
    """Where the key-encryption keys and the blind-index key come from: the variables when
    set (deployments that inject secrets; read-only), else files in `keys_dir`."""

    keys_dir: Path
    # secrets: kept out of repr, so that no log or traceback shows them
    keyring_json: str = field(default="", repr=False)
    index_key: str = field(default="", repr=False)


@dataclass(frozen=True)
class PrivacySettings:
    purposes_file: Path
    calendar_overrides: Path | None  # None: the `holidays` package's calendar alone
    erasure_journal: Path  # this writer's file; every erasure-*.jsonl beside it is read
    keys: KeySources
    consent_statistics_ttl_s: float


def journal_path(env: Mapping[str, str], keys_dir: Path) -> Path:
    """The erasure journal's file: MEMBERSHIP_ERASURE_JOURNAL, else in the keys folder (the
    backup and restore commands find it the same way)."""
    return Path(env.get(JOURNAL_ENV) or keys_dir / JOURNAL_FILE)


def load(settings: Settings) -> PrivacySettings:
    env = settings.env
    overrides = env.get(CALENDAR_OVERRIDES_ENV, "")
    return PrivacySettings(
        purposes_file=Path(env.get(PURPOSES_FILE_ENV) or DEFAULT_PURPOSES_FILE),
        calendar_overrides=Path(overrides) if overrides else None,
        erasure_journal=journal_path(env, settings.keys_dir),
        keys=KeySources(
            settings.keys_dir,
            keyring_json=env.get(KEYRING_ENV, ""),
            index_key=env.get(INDEX_KEY_ENV, ""),
        ),
        consent_statistics_ttl_s=settings.consent_statistics_ttl_s,
    )
