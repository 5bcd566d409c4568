"""Opaque page tokens and page sizes for List methods (AIP-158)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from services.runtime.errors import bad_field

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_PAGE_TOKEN_LEN = 512


def page_size(requested: int) -> int:
    if requested < 0:
        raise bad_field("page_size", "must not be negative")
    return DEFAULT_PAGE_SIZE if requested == 0 else min(requested, MAX_PAGE_SIZE)


def encode_token(position: dict[str, Any], query: dict[str, Any]) -> str:
    doc = {"p": position, "q": query}
    raw = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, query: dict[str, Any]) -> dict[str, Any] | None:
    """The position a token resumes from; None for the first page. The query must match."""
    if not token:
        return None
    if len(token) > MAX_PAGE_TOKEN_LEN:
        raise bad_field("page_token", "not a page token of this list")
    try:
        doc = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        position, token_query = doc["p"], doc["q"]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise bad_field("page_token", "not a page token of this list") from exc
    if token_query != query or not isinstance(position, dict):
        raise bad_field("page_token", "was issued for a different filter")
    return position
