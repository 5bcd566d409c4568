"""Strict reading of a rules document's values (TOML, or stored JSON): a typo must never
silently change how points are earned, so unknown keys, floats and out-of-range values are
errors that name the offending path (domain/rules.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

INT64_MAX = 2**63 - 1

_CODE = re.compile(r"[a-z0-9][a-z0-9_]{0,63}")  # categories, tier codes, perk names
# optional sign only so that "-1" is reported as "must be greater than 0", not as garbage
_RATE = re.compile(r"(-?)(\d{1,18})(?:\.(\d{1,18})|/(\d{1,18}))?")
_RATE_FORM = 'an exact decimal or fraction written as a string, such as "1", "0.5" or "3/2"'


class RulesError(ValueError):
    """A rules document is invalid; `path` names the offending value, e.g. `tiers[2].threshold`."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


KINDS = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array"}


def kind(value: object) -> str:
    kind = "a table" if isinstance(value, Mapping) else f"a {type(value).__name__}"
    return KINDS.get(type(value), kind)


def mapping(path: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RulesError(path or "(document)", f"must be a table, not {kind(value)}")
    return value


def table(path: str, value: object, keys: tuple[str, ...]) -> Mapping[str, Any]:
    """A table with a fixed set of keys: any other key is a typo, never ignored."""
    table = mapping(path, value)
    for key in table:
        if key not in keys:
            raise RulesError(join(path, str(key)), "unknown key")
    return table


def required(table: Mapping[str, Any], path: str, key: str) -> object:
    if table.get(key) is None:
        raise RulesError(join(path, key), "missing")
    return table[key]


def int_value(path: str, value: object, minimum: int = 0, maximum: int = INT64_MAX) -> int:
    # bool is an int in Python, but `true` where a number belongs is a mistake
    if isinstance(value, bool) or not isinstance(value, int):
        raise RulesError(path, f"must be an integer, not {kind(value)}")
    if value < minimum:
        raise RulesError(path, "must not be negative" if minimum == 0 else f"must be >= {minimum}")
    if value > maximum:
        raise RulesError(path, f"must be <= {maximum}")
    return value


def field_int(t: Mapping[str, Any], path: str, key: str, lo: int = 0, hi: int = INT64_MAX) -> int:
    return int_value(join(path, key), required(t, path, key), lo, hi)


def optional_int(table: Mapping[str, Any], path: str, key: str, lo: int = 0) -> int | None:
    value = table.get(key)
    return None if value is None else int_value(join(path, key), value, lo)


def string(path: str, value: object) -> str:
    if not isinstance(value, str):
        raise RulesError(path, f"must be a string, not {kind(value)}")
    if not value.strip():
        raise RulesError(path, "must not be empty")
    return value


def code(path: str, value: object) -> str:
    text = string(path, value)
    if not _CODE.fullmatch(text):
        raise RulesError(path, "names must be lower-case letters, digits and _ (at most 64)")
    return text


def parse_rate(path: str, value: object) -> Fraction:
    """A positive exact rate from "1", "0.5" or "3/2"; floats are inexact, so never accepted."""
    if not isinstance(value, str):
        raise RulesError(path, f"must be {_RATE_FORM}, not {kind(value)}")
    match = _RATE.fullmatch(value)
    if match is None:
        raise RulesError(path, f"must be {_RATE_FORM}")
    sign, whole, decimals, denominator = match.groups()
    if denominator is not None and int(denominator) == 0:
        raise RulesError(path, "the denominator must not be 0")
    decimals = decimals or ""  # "12.34" is 1234/100; "3/2" has no decimals
    rate = Fraction(int(whole + decimals), int(denominator or 10 ** len(decimals)))
    if sign or rate <= 0:
        raise RulesError(path, "must be > 0")
    return rate
