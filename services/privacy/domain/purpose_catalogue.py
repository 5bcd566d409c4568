"""The processing purposes members consent to: a data file parsed into frozen dataclasses
(purpose_catalogue.py reads the file the settings name).

Validation is strict because a typo must never silently change what a member agreed to:
unknown keys, wrong types and out-of-order notice versions are errors naming the offending
path (e.g. `purposes.marketing.notices[1].version`).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

# PIPL Art. 13: the grounds on which personal information may be processed
LEGAL_BASES = (
    "consent",
    "contract",
    "legal_obligation",
    "emergency",
    "news_reporting",
    "publicly_disclosed",
    "other_law",
)
MAX_PURPOSES = 64
MAX_NOTICES = 1000
MAX_NOTICE_VERSION = 2**31 - 1  # an int32 in the API
MAX_DESCRIPTION = 200
PURPOSE_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")

_PURPOSE_KEYS = ("description", "legal_basis", "necessary", "separate_consent", "notices")
_NOTICE_KEYS = ("version", "material")


class PurposesError(ValueError):
    """A purposes document is invalid; `path` names the offending value."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class Notice:
    version: int
    material: bool


@dataclass(frozen=True)
class Purpose:
    code: str
    description: str
    legal_basis: str
    necessary: bool
    separate_consent: bool
    notices: tuple[Notice, ...]  # ascending versions; the last is current

    @property
    def current_version(self) -> int:
        return self.notices[-1].version

    def is_stale(self, consented_version: int) -> bool:
        """Whether a material notice was published after the one consented to."""
        return any(n.material and n.version > consented_version for n in self.notices)


@dataclass(frozen=True)
class Catalogue:
    purposes: Mapping[str, Purpose]  # in file order

    def get(self, code: str) -> Purpose | None:
        return self.purposes.get(code)


def _kind(value: object) -> str:
    return type(value).__name__


def _table(path: str, value: object, keys: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise PurposesError(path, f"must be a table, not {_kind(value)}")
    for key in value:
        if key not in keys:
            raise PurposesError(f"{path}.{key}", "unknown key")
    for key in keys:
        if key not in value:
            raise PurposesError(f"{path}.{key}", "missing")
    return value


def _bool(path: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise PurposesError(path, f"must be true or false, not {_kind(value)}")
    return value


def _description(path: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PurposesError(path, "must be a non-empty string")
    if len(value) > MAX_DESCRIPTION or not value.isprintable():
        raise PurposesError(path, f"at most {MAX_DESCRIPTION} printable characters")
    return value


def _notices(path: str, value: object) -> tuple[Notice, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_NOTICES:
        raise PurposesError(path, f"must be an array of 1-{MAX_NOTICES} notice versions")
    notices: list[Notice] = []
    for i, raw in enumerate(value):
        item = _table(f"{path}[{i}]", raw, _NOTICE_KEYS)
        version = item["version"]
        vpath = f"{path}[{i}].version"
        if isinstance(version, bool) or not isinstance(version, int):
            raise PurposesError(vpath, f"must be an integer, not {_kind(version)}")
        if not 1 <= version <= MAX_NOTICE_VERSION:
            raise PurposesError(vpath, f"must be between 1 and {MAX_NOTICE_VERSION}")
        # ascending order is what makes "newer than the one consented to" well defined
        if notices and version <= notices[-1].version:
            raise PurposesError(vpath, "versions must be strictly increasing")
        notices.append(Notice(version, _bool(f"{path}[{i}].material", item["material"])))
    return tuple(notices)


def _purpose(code: str, value: object) -> Purpose:
    path = f"purposes.{code}"
    if not PURPOSE_CODE.fullmatch(code):
        raise PurposesError(path, "codes must be lower-case letters, digits and _ (at most 64)")
    table = _table(path, value, _PURPOSE_KEYS)
    legal_basis = table["legal_basis"]
    if legal_basis not in LEGAL_BASES:
        raise PurposesError(f"{path}.legal_basis", f"must be one of {', '.join(LEGAL_BASES)}")
    purpose = Purpose(
        code=code,
        description=_description(f"{path}.description", table["description"]),
        legal_basis=str(legal_basis),
        necessary=_bool(f"{path}.necessary", table["necessary"]),
        separate_consent=_bool(f"{path}.separate_consent", table["separate_consent"]),
        notices=_notices(f"{path}.notices", table["notices"]),
    )
    if purpose.necessary and purpose.separate_consent:
        # separate consent exists so that it can be refused; a necessary purpose cannot be
        raise PurposesError(path, "a necessary purpose cannot need separate consent")
    return purpose


def parse_purposes(doc: object) -> Catalogue:
    root = _table("(document)", doc, ("purposes",))
    raw = root["purposes"]
    if not isinstance(raw, dict) or not 1 <= len(raw) <= MAX_PURPOSES:
        raise PurposesError("purposes", f"must be a table of 1-{MAX_PURPOSES} purposes")
    return Catalogue(MappingProxyType({code: _purpose(code, v) for code, v in raw.items()}))


def purposes_from_toml(text: str, source: str) -> Catalogue:
    """The catalogue of a purposes file's text; `source` (its path) names it in errors."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PurposesError(source, f"not valid TOML: {exc}") from exc
    return parse_purposes(doc)
