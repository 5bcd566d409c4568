"""Normalisation and validation of registration input. Pure; raises nothing, returns problems."""

from __future__ import annotations

import unicodedata

import phonenumbers
from email_validator import EmailNotValidError, validate_email

MAX_PHONE_INPUT = 32
MAX_EMAIL = 254
MAX_DISPLAY_NAME = 64
MAX_REFERRAL_CODE = 16
MAINLAND_REGION = "CN"


class InvalidValue(ValueError):
    """The value cannot be normalised; the message describes the rule, never the value."""


def normalise_phone(raw: str) -> str:
    """E.164. Mainland numbers may omit +86; other countries need their + prefix."""
    text = raw.strip()
    if not text:
        raise InvalidValue("required")
    if len(text) > MAX_PHONE_INPUT:
        raise InvalidValue(f"at most {MAX_PHONE_INPUT} characters")
    if text.startswith("86") and len(text) == 13 and text.isdigit():
        text = "+" + text  # 86 followed by an 11-digit mainland mobile number
    try:
        number = phonenumbers.parse(text, MAINLAND_REGION)
    except phonenumbers.NumberParseException as exc:
        raise InvalidValue("not a phone number") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidValue("not a valid phone number")
    if number.country_code == 86 and phonenumbers.number_type(number) not in (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    ):
        raise InvalidValue("mainland numbers must be mobile numbers")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_email(raw: str) -> str:
    """Lower-cased, IDNA-normalised address; deliverability is not checked (no network)."""
    text = raw.strip()
    if len(text) > MAX_EMAIL:
        raise InvalidValue(f"at most {MAX_EMAIL} characters")
    try:
        result = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidValue("not a valid email address") from exc
    return result.normalized.lower()


def normalise_display_name(raw: str) -> str:
    text = unicodedata.normalize("NFC", raw.strip())
    if len(text) > MAX_DISPLAY_NAME:
        raise InvalidValue(f"at most {MAX_DISPLAY_NAME} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in text):
        raise InvalidValue("contains control or unassigned characters")
    return text


def normalise_referral_code(raw: str) -> str:
    text = raw.strip().upper()
    if len(text) > MAX_REFERRAL_CODE or not text.isalnum() or not text.isascii():
        raise InvalidValue("not a referral code")
    return text


def mask_phone(e164: str) -> str:
    """`+8613812345678` -> `138****5678`; other countries keep their prefix."""
    number = phonenumbers.parse(e164, None)
    national = str(number.national_number)
    shown = national[:3] + "****" + national[-4:] if len(national) >= 8 else "****" + national[-2:]
    return shown if number.country_code == 86 else f"+{number.country_code} {shown}"


def mask_email(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def mask_display_name(name: str) -> str:
    if not name:
        return ""
    return name[0] + "*" * max(1, min(len(name) - 1, 4))
