"""Page sizes and opaque page tokens (AIP-158)."""

from __future__ import annotations

import base64
import json

import pytest

from services.runtime import paging
from services.runtime.errors import Code, DomainError

QUERY = {"status": "ACTIVE"}
POSITION = {"t": "2026-01-02T03:04:05.000006+00:00", "m": "m0123456789abcdefghj"}


@pytest.mark.parametrize(
    ("requested", "size"),
    [(0, 50), (1, 1), (49, 49), (500, 500), (501, 500), (2**31 - 1, 500)],
)
def test_page_size_defaults_and_caps(requested: int, size: int) -> None:
    assert paging.page_size(requested) == size


@pytest.mark.parametrize("requested", [-1, -(2**31)])
def test_negative_page_size_is_invalid(requested: int) -> None:
    with pytest.raises(DomainError) as caught:
        paging.page_size(requested)
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == ["page_size"]


def test_token_round_trip() -> None:
    token = paging.encode_token(POSITION, QUERY)
    assert token
    assert "=" not in token and "+" not in token and "/" not in token  # URL-safe, unpadded
    assert paging.decode_token(token, dict(QUERY)) == POSITION


def test_empty_token_is_the_first_page() -> None:
    assert paging.decode_token("", QUERY) is None


def test_token_of_another_filter_is_rejected() -> None:
    token = paging.encode_token(POSITION, QUERY)
    with pytest.raises(DomainError) as caught:
        paging.decode_token(token, {"status": ""})
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == ["page_token"]
    assert "different filter" in caught.value.violations[0].description


def _b64(doc: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "not a token",
        "%%%%",
        "é",
        "YWJj",  # "abc": not JSON
        base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(),  # not UTF-8
        _b64([1, 2, 3]),
        _b64("just a string"),
        _b64(42),
        _b64({"p": POSITION}),  # no query
        _b64({"q": QUERY}),  # no position
        _b64({"p": [1, 2], "q": QUERY}),  # position not an object
        "A" * (paging.MAX_PAGE_TOKEN_LEN + 1),
    ],
)
def test_malformed_tokens_are_invalid_argument(token: str) -> None:
    with pytest.raises(DomainError) as caught:
        paging.decode_token(token, QUERY)
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == ["page_token"]
