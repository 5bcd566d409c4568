"""The purposes file the settings name: read, validated (domain/purpose_catalogue.py) and
synced into the catalogue tables when the service builds."""

from __future__ import annotations

import logging
from pathlib import Path

import asyncpg

from services.privacy.domain.purpose_catalogue import Catalogue, PurposesError, purposes_from_toml
from services.privacy.store import consent as consent_store

log = logging.getLogger("membership.privacy")


def load_purposes_file(path: Path) -> Catalogue:
    return purposes_from_toml(path.read_text(encoding="utf-8"), str(path))


async def load_purposes(pool: asyncpg.Pool, path: Path) -> Catalogue:
    """Parses the purposes file and syncs it into the catalogue tables; refuses a file that
    rewrites a published notice version."""
    catalogue = load_purposes_file(path)
    async with pool.acquire() as conn:
        changed = await consent_store.sync_catalogue(conn, catalogue)
    if changed:
        code, version = changed[0]
        raise PurposesError(
            f"purposes.{code}.notices",
            f"version {version} was published with another material flag",
        )
    log.info("purposes loaded", extra={"fields": {"purposes": len(catalogue.purposes)}})
    return catalogue
