"""What a registration is: its validated input, its idempotency fingerprint, the rules of
referral codes."""

from __future__ import annotations

import json
from dataclasses import dataclass

from services.accounts.domain import reasons
from services.accounts.domain.consents import SignupConsents
from services.accounts.domain.members import LookupKind
from services.runtime.errors import DomainError, failed_precondition

# a fresh code collides with a taken one rarely (32^8 codes): a few draws, then give up
REFERRAL_CODE_ATTEMPTS = 8


@dataclass(frozen=True)
class Registration:
    """Validated, normalised registration input."""

    request_id: str
    phone: str
    email: str
    display_name: str
    referral_code: str
    consents: SignupConsents | None = None

    def canonical(self) -> bytes:
        parts: list[object] = [self.phone, self.email, self.display_name, self.referral_code]
        # only when given: a registration without consents keeps the fingerprint it had
        # before consents existed, so its late repeats still match
        if self.consents is not None:
            parts.append(self.consents.canonical())
        return json.dumps(parts, ensure_ascii=False).encode()

    def personal(self) -> dict[str, str]:
        values = {"phone": self.phone, "email": self.email, "display_name": self.display_name}
        return {k: v for k, v in values.items() if v}

    def lookups(self) -> dict[LookupKind, str]:
        """The values given that a member can be looked up by."""
        values = {LookupKind.PHONE: self.phone, LookupKind.EMAIL: self.email}
        return {kind: value for kind, value in values.items() if value}


def referral_codes_exhausted() -> DomainError:
    return failed_precondition(reasons.REFERRAL_CODES_EXHAUSTED, "no free referral code found")
