"""Who acted, in words: the console names actors (caller-token subjects, as the services
record them in timelines and the audit log) by their API key's name instead of its id.

The gateway owns the API keys (schema `gateway`), so it resolves `key:<key_id>` subjects
itself: a batch of at most `MAX_SUBJECTS` per call, one query for the ids not cached, each
answer (a miss too) cached for `CACHE_TTL_S` in a bounded LRU. Revoked and expired keys keep
their names: a timeline says who acted then. Service identities (`privacy`, `service:…`) are
named as services; any other subject (an id no key has, a token minted by the CLI) stays as
it is. Names are cosmetic: when the database cannot answer, subjects stay ids and the console
still works.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg

from gateway import store
from services.runtime.access import ROLE_SCOPES
from services.runtime.db import database_failure

log = logging.getLogger("membership.gateway.console")

MAX_SUBJECTS = 100  # per call: a timeline or an audit page names far fewer
MAX_SUBJECT_CHARS = 128  # as caller tokens bound `sub`
CACHE_TTL_S = 60.0  # a renamed key shows its new name within a minute
MAX_CACHED = 10_000

_KEY_SUBJECT = re.compile(r"key:([a-z2-7]{16})")
_SERVICE_ROLES = frozenset(role for role in ROLE_SCOPES if role.startswith("service:"))
# the privacy service records its own fulfilment steps as `privacy`; services calling each
# other mint their role as the subject (`service:accounts`)
_SERVICE_SUBJECTS = {
    **{role: role.removeprefix("service:") for role in _SERVICE_ROLES},
    **{role.removeprefix("service:"): role.removeprefix("service:") for role in _SERVICE_ROLES},
}


@dataclass(frozen=True)
class Actor:
    kind: str  # "api_key", "service" or "unknown"
    name: str
    role: str = ""

    def to_json(self) -> dict[str, str]:
        out = {"kind": self.kind, "name": self.name}
        if self.role:
            out["role"] = self.role
        return out


def check_subjects(subjects: list[str]) -> str | None:
    """Why the batch is refused, or None when it is acceptable."""
    if len(subjects) > MAX_SUBJECTS:
        return f"at most {MAX_SUBJECTS} actors per call"
    for subject in subjects:
        if not 1 <= len(subject) <= MAX_SUBJECT_CHARS or not subject.isprintable():
            return f"an actor is 1-{MAX_SUBJECT_CHARS} printable characters"
    return None


def _fixed(subject: str) -> Actor | None:
    """The actor a subject names without looking anything up (None: an API key's)."""
    service = _SERVICE_SUBJECTS.get(subject)
    if service is not None:
        return Actor("service", f"{service} service", f"service:{service}")
    if _KEY_SUBJECT.fullmatch(subject) is None:
        return Actor("unknown", subject)
    return None


class ActorNames:
    """Subjects to actors, API keys through a short cache of the gateway's key table."""

    def __init__(
        self,
        pool: asyncpg.Pool | None,
        *,
        ttl_s: float = CACHE_TTL_S,
        max_cached: int = MAX_CACHED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._ttl_s = ttl_s
        self._max = max_cached
        self._clock = clock
        # key id -> (name and role, or None for no such key; when loaded)
        self._cache: OrderedDict[str, tuple[tuple[str, str] | None, float]] = OrderedDict()

    async def resolve(self, subjects: Iterable[str]) -> dict[str, Actor]:
        wanted = list(dict.fromkeys(subjects))
        actors = {s: a for s in wanted if (a := _fixed(s)) is not None}
        key_ids = {s: s.removeprefix("key:") for s in wanted if s not in actors}
        named = await self._names(list(key_ids.values()))
        for subject, key_id in key_ids.items():
            found = named.get(key_id)
            actors[subject] = (
                Actor("api_key", found[0], found[1]) if found else Actor("unknown", subject)
            )
        return actors

    async def _names(self, key_ids: list[str]) -> dict[str, tuple[str, str] | None]:
        now = self._clock()
        known: dict[str, tuple[str, str] | None] = {}
        missing = []
        for key_id in key_ids:
            entry = self._cache.get(key_id)
            if entry is not None and now - entry[1] < self._ttl_s:
                self._cache.move_to_end(key_id)
                known[key_id] = entry[0]
            else:
                missing.append(key_id)
        if missing:
            known.update(await self._load(missing, now))
        return known

    async def _load(self, key_ids: list[str], now: float) -> dict[str, tuple[str, str] | None]:
        if self._pool is None:
            return {}
        try:
            async with self._pool.acquire() as conn:
                rows = await store.key_names(conn, key_ids)
        except Exception as exc:
            if database_failure(exc) is None:
                raise  # a bug, not an outage
            # names are cosmetic: the ids are shown instead, and asked again next time
            log.warning("could not name actors", extra={"fields": {"error": type(exc).__name__}})
            return {}
        loaded: dict[str, tuple[str, str] | None] = {k: rows.get(k) for k in key_ids}
        for key_id, found in loaded.items():
            self._cache[key_id] = (found, now)
            self._cache.move_to_end(key_id)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return loaded

    def __len__(self) -> int:
        return len(self._cache)


def actors_json(actors: dict[str, Actor]) -> dict[str, Any]:
    return {"actors": {subject: actor.to_json() for subject, actor in actors.items()}}
