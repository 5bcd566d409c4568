"""What every group of accounts RPCs shares: the use cases, built once by the wiring."""

from __future__ import annotations

from dataclasses import dataclass

from services.accounts.member_data import MemberData
from services.accounts.members import Members
from services.accounts.profile_updates import ProfileUpdates
from services.accounts.registration import Registrations
from services.accounts.status_changes import StatusChanges


@dataclass(frozen=True)
class AccountsUseCases:
    registrations: Registrations
    members: Members
    profile_updates: ProfileUpdates
    status_changes: StatusChanges
    member_data: MemberData


class RpcGroup:
    """Base of the mixins that make up AccountsServicer, one per topic (registration, reads,
    updates, lifecycle, member data), so that each stays small and the servicer is their
    sum."""

    def __init__(self, use_cases: AccountsUseCases) -> None:
        self.use_cases = use_cases
