"""Member ids and referral codes: their alphabet, length, and that every letter is drawn."""

from __future__ import annotations

import re
from collections import Counter

from services.accounts.domain.members import (
    MEMBER_ID_CHARS,
    REFERRAL_CODE_CHARS,
    new_member_id,
    new_referral_code,
)

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base32: no I, L, O, U


def test_a_member_id_is_m_and_19_lower_case_base32_characters() -> None:
    member_id = new_member_id()
    assert re.fullmatch(rf"m[{ALPHABET.lower()}]{{{MEMBER_ID_CHARS}}}", member_id)


def test_a_referral_code_is_8_upper_case_base32_characters() -> None:
    assert re.fullmatch(rf"[{ALPHABET}]{{{REFERRAL_CODE_CHARS}}}", new_referral_code())


def test_every_letter_is_drawn_and_no_position_is_fixed() -> None:
    codes = [new_referral_code() for _ in range(4000)]
    assert set(Counter("".join(codes))) == set(ALPHABET)
    for position in range(REFERRAL_CODE_CHARS):
        assert len({code[position] for code in codes}) == len(ALPHABET)
    assert len(set(codes)) == len(codes)
