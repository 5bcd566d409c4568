"""Which caller may handle which service's fields. Pure rules; no I/O, no gRPC."""

from __future__ import annotations

from collections.abc import Iterable

from services.runtime.errors import DomainError, permission_denied

SERVICE_ROLE_PREFIX = "service:"
# privacy answers data-subject requests, so it handles every service's fields
PRIVACY_ROLE = "service:privacy"
CONTEXT_NOT_OWNED = "CONTEXT_NOT_OWNED"


def may_handle(role: str, service: str) -> bool:
    """A service's token may encrypt and decrypt only its own fields, so one leaked or
    misused service token cannot read another service's data. Other roles are bounded by
    their scopes alone."""
    if not role.startswith(SERVICE_ROLE_PREFIX) or role == PRIVACY_ROLE:
        return True
    return service == role.removeprefix(SERVICE_ROLE_PREFIX)


def context_not_owned(role: str, services: Iterable[str]) -> DomainError | None:
    """The error to raise if any of the field contexts' services is not the caller's."""
    if all(may_handle(role, service) for service in services):
        return None
    return permission_denied(
        CONTEXT_NOT_OWNED, "a service may only encrypt and decrypt its own fields"
    )
