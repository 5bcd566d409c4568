"""Normalisation and masking of registration input (pure functions)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.accounts.domain import normalise
from services.accounts.domain.normalise import InvalidValue

MAINLAND = "+8613800138000"


@pytest.mark.parametrize(
    "raw",
    [
        "13800138000",
        "+8613800138000",
        "8613800138000",
        "008613800138000",
        "0086 138 0013 8000",
        "+86 138 0013 8000",
        "+86-138-0013-8000",
        "138-0013-8000",
        "  138 0013 8000  ",
        "(+86) 138 0013 8000",
        "１３８００１３８０００",  # full-width digits, as typed with a Chinese input method
    ],
)
def test_mainland_mobile_numbers_normalise_to_e164(raw: str) -> None:
    assert normalise.normalise_phone(raw) == MAINLAND


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("+44 7911 123456", "+447911123456"),
        ("+852 5123 4567", "+85251234567"),
        ("+1 415-555-2671", "+14155552671"),
        ("+44 20 7946 0958", "+442079460958"),  # abroad, a landline is fine
    ],
)
def test_foreign_numbers_need_their_prefix(raw: str, e164: str) -> None:
    assert normalise.normalise_phone(raw) == e164


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "required"),
        ("   ", "required"),
        ("abc", "not a phone number"),
        ("12345", "not a valid phone number"),
        ("+86 138", "not a valid phone number"),
        ("1380013800", "not a valid phone number"),  # 10 digits
        ("138001380001", "not a valid phone number"),  # 12 digits
        ("010 6552 9988", "mainland numbers must be mobile numbers"),  # Beijing landline
        ("+86 10 6552 9988", "mainland numbers must be mobile numbers"),
        ("4155552671", "mainland numbers must be mobile numbers"),  # US number without +1
        ("1" * 33, "at most 32 characters"),
    ],
)
def test_bad_phone_numbers_are_rejected(raw: str, message: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        normalise.normalise_phone(raw)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("fn", "raw"),
    [
        (normalise.normalise_phone, "+86 10 6552 9988"),
        (normalise.normalise_phone, "139123"),
        (normalise.normalise_email, "someone.private@@mail.example"),
        (normalise.normalise_display_name, "Private\x00Name"),
        (normalise.normalise_referral_code, "SECRET-CODE"),
    ],
)
def test_invalid_value_messages_never_echo_the_value(fn: Callable[[str], str], raw: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        fn(raw)
    message = str(caught.value)
    assert raw not in message
    assert not any(part in message for part in ("6552", "139123", "private", "Private", "SECRET"))


@pytest.mark.parametrize(
    ("e164", "masked"),
    [
        ("+8613800138000", "138****8000"),
        ("+8619912345678", "199****5678"),
        ("+447911123456", "+44 791****3456"),
        ("+85251234567", "+852 512****4567"),
    ],
)
def test_mask_phone(e164: str, masked: str) -> None:
    assert normalise.mask_phone(e164) == masked


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("alice@example.com", "alice@example.com"),
        ("  Alice@Example.COM ", "alice@example.com"),
        ("BOB.SMITH+tag@Mail.Example.CN", "bob.smith+tag@mail.example.cn"),
        ("Ünïcode@Exämple.com", "ünïcode@exämple.com"),
    ],
)
def test_email_is_normalised_to_lower_case(raw: str, normalised: str) -> None:
    assert normalise.normalise_email(raw) == normalised


@pytest.mark.parametrize(
    "raw",
    ["not-an-email", "a@b", "@example.com", "alice@", "a b@example.com", "alice@@example.com"],
)
def test_malformed_email_is_rejected(raw: str) -> None:
    with pytest.raises(InvalidValue, match="not a valid email address"):
        normalise.normalise_email(raw)


def test_overlong_email_is_rejected() -> None:
    raw = "a" * 64 + "@" + ".".join(["b" * 60] * 4) + ".cn"
    assert len(raw) > normalise.MAX_EMAIL
    with pytest.raises(InvalidValue, match="at most 254 characters"):
        normalise.normalise_email(raw)


@pytest.mark.parametrize(
    ("email", "masked"),
    [("alice@example.com", "a***@example.com"), ("b@example.cn", "b***@example.cn")],
)
def test_mask_email(email: str, masked: str) -> None:
    assert normalise.mask_email(email) == masked


def test_display_name_is_stripped_and_nfc_normalised() -> None:
    assert normalise.normalise_display_name("  张三 ") == "张三"
    assert normalise.normalise_display_name("Jose\u0301") == "José"


def test_display_name_length_is_bounded_after_normalisation() -> None:
    assert normalise.normalise_display_name("名" * 64) == "名" * 64
    # 64 base letters with combining accents compose to 64 characters: accepted
    assert normalise.normalise_display_name("e\u0301" * 64) == "é" * 64
    with pytest.raises(InvalidValue, match="at most 64 characters"):
        normalise.normalise_display_name("名" * 65)


@pytest.mark.parametrize("raw", ["a\x00b", "tab\there", "zero\u200bwidth", "bidi\u202eoverride"])
def test_display_name_rejects_control_and_format_characters(raw: str) -> None:
    with pytest.raises(InvalidValue, match="control or unassigned"):
        normalise.normalise_display_name(raw)


@pytest.mark.parametrize(
    ("name", "masked"),
    [("", ""), ("A", "A*"), ("张三", "张*"), ("Alexander", "A****"), ("李小龙", "李**")],
)
def test_mask_display_name(name: str, masked: str) -> None:
    assert normalise.mask_display_name(name) == masked


def test_referral_codes_are_upper_cased() -> None:
    assert normalise.normalise_referral_code(" abcd1234 ") == "ABCD1234"


@pytest.mark.parametrize("raw", ["ABC-1234", "ABCD 1234", "Ａ１２３", "A" * 17, "码1234567"])
def test_malformed_referral_codes_are_rejected(raw: str) -> None:
    with pytest.raises(InvalidValue, match="not a referral code"):
        normalise.normalise_referral_code(raw)


# Properties over arbitrary text: only InvalidValue ever escapes, and a normalised value is a
# fixed point (normalising it again changes nothing), so lookups match registrations.


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40) | st.from_regex(r"\+?[0-9 ()-]{5,20}", fullmatch=True))
def test_phone_normalisation_is_total_and_idempotent(raw: str) -> None:
    try:
        e164 = normalise.normalise_phone(raw)
    except InvalidValue:
        return
    assert e164.startswith("+")
    assert e164[1:].isdigit()
    assert normalise.normalise_phone(e164) == e164
    # the mask never shows five digits in a row
    assert re.search(r"[0-9]{5}", normalise.mask_phone(e164)) is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60) | st.emails())
def test_email_normalisation_is_total_and_idempotent(raw: str) -> None:
    try:
        email = normalise.normalise_email(raw)
    except InvalidValue:
        return
    assert email == email.lower()
    assert normalise.normalise_email(email) == email
    assert "@" in normalise.mask_email(email)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_display_name_normalisation_is_total_and_idempotent(raw: str) -> None:
    try:
        name = normalise.normalise_display_name(raw)
    except InvalidValue:
        return
    assert len(name) <= normalise.MAX_DISPLAY_NAME
    assert normalise.normalise_display_name(name) == name
