"""Export bundles of ACCESS / PORTABILITY requests: stored encrypted, downloaded a limited
number of times within a limited period, then purged. Pure rules (exports.py runs them; the
bundle's content is domain/export_bundle.py and proto_export_bundle.py).

The bundle is a ZIP archive encrypted under the member's data key, so erasing the member
shreds any export left too. A download is counted when it starts; its parts (at most
PART_BYTES each, to stay under any message size limit) are fetched with a page token naming
the download, valid for DOWNLOAD_WINDOW.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from services.privacy.domain.envelope import FieldContext
from services.runtime.errors import DomainError, bad_field, failed_precondition

EXPORT_PURGED = "EXPORT_PURGED"
DOWNLOAD_LIMIT_REACHED = "DOWNLOAD_LIMIT_REACHED"
DOWNLOAD_EXPIRED = "DOWNLOAD_EXPIRED"
EXPORT_NOT_BUILT = "EXPORT_NOT_BUILT"

ARCHIVE_CONTEXT = FieldContext("privacy", "data_exports", "archive")
PART_BYTES = 1024 * 1024
DOWNLOAD_LIMIT = 3
EXPORT_TTL = timedelta(days=7)
DOWNLOAD_WINDOW = timedelta(minutes=10)
NONCE_BYTES = 16


@dataclass(frozen=True)
class Export:
    data_request_id: str
    member_id: str
    archive_size_bytes: int
    archive_sha256: bytes
    downloads_remaining: int
    created_at: datetime
    expires_at: datetime
    purged_at: datetime | None

    def gone(self, now: datetime) -> bool:
        """Purged, or past its expiry (the purger has not come by yet)."""
        return self.purged_at is not None or now >= self.expires_at


class DownloadWindow(NamedTuple):
    """A download in progress: its parts may be fetched until `expires_at`."""

    data_request_id: str
    expires_at: datetime


class DownloadPosition(NamedTuple):
    """What a part's page token names: the download and the offset of the part."""

    nonce: bytes
    offset: int


@dataclass(frozen=True)
class Part:
    export: Export
    data: bytes
    offset: int
    next_page_token: str


def new_export(request_id: str, member_id: str, archive: bytes, now: datetime) -> Export:
    return Export(
        request_id,
        member_id,
        len(archive),
        hashlib.sha256(archive).digest(),
        DOWNLOAD_LIMIT,
        now,
        now + EXPORT_TTL,
        None,
    )


def export_gone() -> DomainError:
    return failed_precondition(
        EXPORT_PURGED, "the export was purged (expired or downloaded the allowed times)"
    )


def download_limit_reached() -> DomainError:
    return failed_precondition(
        DOWNLOAD_LIMIT_REACHED, "the export was downloaded the allowed times"
    )


def download_expired() -> DomainError:
    return failed_precondition(DOWNLOAD_EXPIRED, "the download window closed; start again")


def not_a_part() -> DomainError:
    return bad_field("page_token", "not a part of a download of this export")


def position_of(token: dict[str, object]) -> DownloadPosition:
    try:
        return DownloadPosition(bytes.fromhex(str(token["n"])), int(str(token["o"])))
    except (KeyError, ValueError) as exc:
        raise not_a_part() from exc


def token_of(position: DownloadPosition) -> dict[str, object]:
    return {"n": position.nonce.hex(), "o": position.offset}


def check_part(
    request_id: str,
    window: DownloadWindow | None,
    export: Export | None,
    position: DownloadPosition,
    now: datetime,
) -> Export:
    """The export whose part the position names, if the download may go on."""
    if export is not None and export.purged_at is not None:
        raise export_gone()
    if window is None or window.data_request_id != request_id or export is None:
        raise not_a_part()
    if now >= window.expires_at:
        raise download_expired()
    offset = position.offset
    if not 0 < offset < export.archive_size_bytes or offset % PART_BYTES:
        raise not_a_part()
    return export
