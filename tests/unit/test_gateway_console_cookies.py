"""The console's Secure-cookie setting as the gateway reads it, and the actor names that need
no lookup (service identities, subjects that are not API keys) with the batch bounds."""

from __future__ import annotations

import pytest

from gateway.console_cookies import SECURE_COOKIES_ENV, secure_cookies_setting
from gateway.console_names import MAX_SUBJECTS, Actor, ActorNames, check_subjects
from gateway.server import load_gateway_settings
from services.runtime.config import ConfigError


@pytest.mark.parametrize(
    ("value", "secure"),
    [(None, True), ("", True), ("1", True), ("true", True), ("On", True), ("0", False),
     ("false", False), (" off ", False), ("no", False)],
)  # fmt: skip
def test_cookies_are_secure_unless_the_setting_is_off(value: str | None, secure: bool) -> None:
    env = {} if value is None else {SECURE_COOKIES_ENV: value}
    assert secure_cookies_setting(env) is secure
    assert load_gateway_settings(env).secure_cookies is secure


def test_a_value_neither_on_nor_off_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match=SECURE_COOKIES_ENV):
        load_gateway_settings({SECURE_COOKIES_ENV: "sometimes"})


async def test_services_are_named_as_services_and_other_subjects_stay_as_they_are() -> None:
    names = ActorNames(None)  # no database: API keys cannot be named, and stay ids
    got = await names.resolve(
        ["privacy", "service:points", "key:abcdefghijklmnop", "officer-1", "key:SHORT", "privacy"]
    )
    assert got == {
        "privacy": Actor("service", "privacy service", "service:privacy"),
        "service:points": Actor("service", "points service", "service:points"),
        "key:abcdefghijklmnop": Actor("unknown", "key:abcdefghijklmnop"),
        "officer-1": Actor("unknown", "officer-1"),
        "key:SHORT": Actor("unknown", "key:SHORT"),  # not a key id: never looked up
    }
    assert len(names) == 0  # nothing was loaded, so nothing cached


def test_a_batch_of_subjects_is_bounded() -> None:
    assert check_subjects(["privacy"] * MAX_SUBJECTS) is None
    assert check_subjects(["privacy"] * (MAX_SUBJECTS + 1)) is not None
    assert check_subjects([""]) is not None
    assert check_subjects(["x" * 129]) is not None
    assert check_subjects(["tab\there"]) is not None
