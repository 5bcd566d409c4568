"""Consents a member gives while signing up: to which purposes, for which notice versions,
through which channel (privacy records them; accounts only passes them on)."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from services.runtime.errors import MAX_REQUEST_ID

SIGNUP_CONSENTS = ":signup-consents"


class Channel(enum.StrEnum):
    """Where the member gave consent (privacy's channels)."""

    APP = "app"
    WEB = "web"
    COUNTER = "counter"
    PHONE = "phone"


@dataclass(frozen=True)
class ConsentGrant:
    """Consent to one purpose, for the notice version the member was shown."""

    purpose: str
    notice_version: int


@dataclass(frozen=True)
class SignupConsents:
    """Consents the member gave while signing up, and where they signed up."""

    grants: tuple[ConsentGrant, ...]
    channel: Channel

    def canonical(self) -> list[object]:
        return [self.channel.value, [[g.purpose, g.notice_version] for g in self.grants]]


def signup_consents_request_id(request_id: str) -> str:
    """GrantConsent's key for a registration's consents: derived from the registration's
    key, so privacy's records and audit entries name it; hashed when both together would
    pass the length limit of a key."""
    derived = request_id + SIGNUP_CONSENTS
    if len(derived) <= MAX_REQUEST_ID:
        return derived
    return hashlib.sha256(request_id.encode()).hexdigest() + SIGNUP_CONSENTS
