"""Every error reason accounts answers with (ErrorInfo.reason, UPPER_SNAKE), and the reasons
of privacy's refusals that accounts recognises. Callers match these constants, never a
message; grep a reason's name to find where it is raised.

Reasons shared by every service (IDEMPOTENCY_KEY_REUSED, NOT_FOUND, INVALID_ARGUMENT,
INTERNAL) are services.runtime.errors'."""

from __future__ import annotations

from typing import Final

# the member's status forbids the change (domain/lifecycle.py: one per status)
MEMBER_ACTIVE: Final = "MEMBER_ACTIVE"
MEMBER_FROZEN: Final = "MEMBER_FROZEN"
MEMBER_CLOSED: Final = "MEMBER_CLOSED"
# also: the member's personal information was erased, nothing of it can be read or restored
MEMBER_ERASED: Final = "MEMBER_ERASED"

# another member holds the phone or email (domain/registration.py)
PHONE_TAKEN: Final = "PHONE_TAKEN"
EMAIL_TAKEN: Final = "EMAIL_TAKEN"
REFERRAL_CODES_EXHAUSTED: Final = "REFERRAL_CODES_EXHAUSTED"

# reading in clear without the scope for it (server_members.py)
SCOPE_MISSING: Final = "SCOPE_MISSING"

# privacy's answers, as accounts answers its own caller (ports_privacy.py)
PRIVACY_UNAVAILABLE: Final = "PRIVACY_UNAVAILABLE"
CIPHERTEXT_UNREADABLE: Final = "CIPHERTEXT_UNREADABLE"
NOTICE_VERSION_STALE: Final = "NOTICE_VERSION_STALE"  # privacy's reason, passed on as is
# privacy's reason for a member whose data key was destroyed: accounts answers MEMBER_ERASED
SUBJECT_KEY_DESTROYED: Final = "SUBJECT_KEY_DESTROYED"
