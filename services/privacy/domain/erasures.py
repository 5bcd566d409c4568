"""Erasures (crypto-shredding) of members: what is recorded of each, what the law requires to
keep, and the entries of the erasure journal kept outside the database (erasure_journal.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

# Art. 47 ¶2: what the law requires to keep is kept, restricted. Points are a liability of
# the programme: its transactions are accounting records (会计档案管理办法 Art. 14: 30 years).
LEDGER_LEGAL_BASIS = "PIPL Art. 47(2); accounting records retention (30 years)"
LEDGER_RETENTION = timedelta(days=30 * 366)


@dataclass(frozen=True)
class JournalEntry:
    member_id: str
    data_request_id: str
    erased_at: datetime


class Retention(NamedTuple):
    """Why, and until when, the member's ledger is kept restricted."""

    legal_basis: str
    retention_end: datetime


def ledger_retention(erased_at: datetime) -> Retention:
    return Retention(LEDGER_LEGAL_BASIS, erased_at + LEDGER_RETENTION)
