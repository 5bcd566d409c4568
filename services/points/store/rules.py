"""SQL of the versioned program rules (a small reference table)."""

from __future__ import annotations

import json
from typing import Any

from services.runtime.db import Conn

# serialises version assignment when several replicas start with a new rules file
RULES_LOCK = (0x6D656D62, 0x72756C65)  # "memb", "rule"


async def register_rules(conn: Conn, digest: str, document: dict[str, Any]) -> int:
    """The version of these rules: the existing one for a known digest, else the next."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", *RULES_LOCK)
        version = await conn.fetchval(
            "SELECT version FROM points.program_rules WHERE digest = $1", digest
        )
        if version is None:
            version = await conn.fetchval(
                "INSERT INTO points.program_rules (version, digest, document)"
                " SELECT COALESCE(max(version), 0) + 1, $1, $2 FROM points.program_rules"
                " RETURNING version",
                digest,
                json.dumps(document, sort_keys=True),
            )
    return int(version)


async def rules_document(conn: Conn, version: int) -> dict[str, Any] | None:
    raw = await conn.fetchval(
        "SELECT document FROM points.program_rules WHERE version = $1", version
    )
    return None if raw is None else dict(json.loads(raw))
