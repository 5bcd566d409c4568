"""The ledger accounts points move between (DESIGN §6).

`member:*` accounts belong to the member of the transfer row; `program:*` accounts are the
program's side, whose totals are sums over transfers (never a materialised hot row).
"""

from __future__ import annotations

MEMBER_AVAILABLE = "member:available"
MEMBER_PENDING = "member:pending"
MEMBER_HELD = "member:held"
ISSUED = "program:issued"
REDEEMED = "program:redeemed"
EXPIRED = "program:expired"
# points clawed back by a refund that the member no longer had (within_balance policy)
UNCOLLECTABLE = "program:uncollectable"
ADJUSTMENT = "program:adjustment"

MEMBER_ACCOUNTS = (MEMBER_AVAILABLE, MEMBER_PENDING, MEMBER_HELD)
PROGRAM_ACCOUNTS = (ISSUED, REDEEMED, EXPIRED, UNCOLLECTABLE, ADJUSTMENT)
