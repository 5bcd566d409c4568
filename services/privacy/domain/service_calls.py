"""A failed call to another service (ports.py raises it), as privacy's rules see it: who
failed, the status code, whether a later attempt may succeed, and what the service said
(the google.rpc.Status reason and field violations it attached, never a message)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

# not a status code: points' ledger stream had a message out of place or of an unknown kind
LEDGER_STREAM_UNREADABLE = "LEDGER_STREAM_UNREADABLE"
# not a status code: points' ledger stream broke off, or its end disagreed with what came
LEDGER_STREAM_INCOMPLETE = "LEDGER_STREAM_INCOMPLETE"


class Violation(NamedTuple):
    """A field the other service refused and the rule it broke (AIP-193): never a value."""

    field: str
    description: str


class ServiceCallError(Exception):
    """A call to another service failed; `code` is the gRPC status code's name (or one of
    the LEDGER_* above); `transient`: retrying later may succeed."""

    def __init__(
        self,
        service: str,
        code: str,
        *,
        transient: bool,
        reason: str = "",
        violations: Sequence[Violation] = (),
    ) -> None:
        super().__init__(f"{service}: {code}")
        self.service = service
        self.code = code
        self.transient = transient
        self.reason = reason
        self.violations = tuple(violations)

    @property
    def summary(self) -> str:
        """For the request's step record: service, status code and reason, never a message."""
        reason = f" {self.reason}" if self.reason and self.reason != self.code else ""
        return f"{self.service}: {self.code}{reason}"

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v.field for v in self.violations))

    def renamed(self, names: Mapping[str, str]) -> ServiceCallError:
        """The same failure with the callee's field paths named as the caller knows them."""
        violations = [
            Violation(names.get(v.field, v.field), v.description) for v in self.violations
        ]
        return ServiceCallError(
            self.service,
            self.code,
            transient=self.transient,
            reason=self.reason,
            violations=violations,
        )
