"""How many members consent to each purpose: tallies of the latest records into counts by
status. Pure (consent_statistics.py computes and caches them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from services.privacy.domain.consent import ConsentAction, ConsentTally
from services.privacy.domain.purpose_catalogue import Catalogue, Purpose


@dataclass(frozen=True)
class PurposeStatistics:
    purpose_code: str
    granted_members: int  # granted and not stale
    stale_members: int
    withdrawn_members: int
    not_given_members: int


@dataclass(frozen=True)
class ConsentStatistics:
    purposes: list[PurposeStatistics]  # catalogue order
    members: int
    compute_time: datetime


def summarise(
    catalogue: Catalogue, tallies: Sequence[ConsentTally], members: int, at: datetime
) -> ConsentStatistics:
    """Tallies by (purpose, action, notice version) into counts by status per purpose."""
    by_purpose = {code: [0, 0, 0] for code in catalogue.purposes}  # granted, stale, withdrawn
    for t in tallies:
        counts = by_purpose.get(t.purpose_code)
        purpose = catalogue.get(t.purpose_code)
        if counts is None or purpose is None:
            continue  # a purpose no longer in the catalogue
        counts[_slot(purpose, t)] += t.members
    return ConsentStatistics(
        [
            PurposeStatistics(code, g, s, w, max(members - g - s - w, 0))
            for code, (g, s, w) in by_purpose.items()
        ],
        members,
        at,
    )


def _slot(purpose: Purpose, tally: ConsentTally) -> int:
    if tally.action == ConsentAction.WITHDRAW:
        return 2
    assert tally.action == ConsentAction.GRANT, tally.action
    return 1 if purpose.is_stale(tally.notice_version) else 0
