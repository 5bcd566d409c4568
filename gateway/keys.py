"""API keys of the gateway's callers: creating, listing, revoking, and verifying them.

A key reads `wm_<key_id>_<secret>`: `key_id` is 80 random bits and public (it is how a key
is named in lists, logs and `membership apikey revoke`), `secret` is 256 random bits. Both are
lowercase base32 without padding, so a key is one word to copy and needs no URL escaping.
The key is returned once by `create_key`; the database keeps only a hash of the secret.

The hash is a single SHA-256 (domain-separated and bound to the key id), not a slow password
hash: bcrypt/scrypt/argon2 exist to make guessing low-entropy passwords expensive, but nobody
can guess 256 random bits however fast the hash is, while a slow hash would cost milliseconds
of CPU on every request and hand anyone sending made-up keys a cheap way to exhaust it.

`KeyVerifier` caches key rows in memory for `cache_ttl_s` (30 s by default), so a request does
not wait on the database each time; a revocation therefore takes effect on a gateway process
within that time (at once on the process that calls `forget`). Expiry is checked against the
clock on every request, cached or not, so it is exact.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import asyncpg

from gateway import store
from gateway.store import KeyRow
from services.runtime.db import Conn, database_failure

log = logging.getLogger("membership.gateway.keys")

ROLES: tuple[str, ...] = ("wallet-backend", "settlement", "officer", "admin", "marketing")
KEY_PREFIX = "wm"
KEY_ID_BYTES = 10  # 80 bits: ids never collide in practice; they are not secret
SECRET_BYTES = 32  # 256 bits
HASH_SCHEME = "sha256-v1"
MAX_NAME_CHARS = 100
MAX_TTL = timedelta(days=3650)
MAX_LIST = 10_000
# a well-formed key is 72 characters; anything much longer is refused before any parsing
MAX_TOKEN_CHARS = 128

_KEY_ID = re.compile(r"[a-z2-7]{16}")
_TOKEN = re.compile(rf"{KEY_PREFIX}_([a-z2-7]{{16}})_([a-z2-7]{{52}})")
_HASH_DOMAIN = b"wallet-membership/api-key/sha256-v1\x00"


class RejectReason(StrEnum):
    MALFORMED = "MALFORMED"
    UNKNOWN = "UNKNOWN"
    WRONG_SECRET = "WRONG_SECRET"  # noqa: S105 - a reason code, not a secret
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"


class InvalidApiKey(Exception):
    """The presented key does not authenticate. Callers answer 401 whatever the reason;
    `reason` and `key_id` (public, when the key parsed) are for logs. The message never
    contains the key."""

    def __init__(self, reason: RejectReason, key_id: str | None = None) -> None:
        named = f" {key_id}" if key_id else ""
        super().__init__(f"API key{named} rejected: {reason.value}")
        self.reason = reason
        self.key_id = key_id


class KeyRequestError(ValueError):
    """A create/revoke request is invalid (role, name, lifetime, key id format)."""


class KeyNotFound(LookupError):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"no API key {key_id}")
        self.key_id = key_id


@dataclass(frozen=True)
class KeyRecord:
    """What anyone may see of a key: never its secret nor the secret's hash."""

    key_id: str
    name: str
    role: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def to_json(self, now: datetime) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "name": self.name,
            "role": self.role,
            "status": self.status(now),
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "revoked_at": _iso(self.revoked_at),
            "last_used_at": _iso(self.last_used_at),
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def hash_secret(key_id: str, secret: str) -> bytes:
    """SHA-256 of the secret, bound to its key id so a hash copied onto another row does
    not verify. Fast on purpose (see the module docstring)."""
    return hashlib.sha256(_HASH_DOMAIN + key_id.encode() + b"\x00" + secret.encode()).digest()


def format_key(key_id: str, secret: str) -> str:
    return f"{KEY_PREFIX}_{key_id}_{secret}"


def parse_key(token: str) -> tuple[str, str]:
    """(key_id, secret) of a well-formed key; InvalidApiKey MALFORMED otherwise."""
    match = _TOKEN.fullmatch(token) if len(token) <= MAX_TOKEN_CHARS else None
    if match is None:
        raise InvalidApiKey(RejectReason.MALFORMED)
    return match[1], match[2]


def check_key_id(key_id: str) -> str:
    if not _KEY_ID.fullmatch(key_id):
        raise KeyRequestError(f"{key_id!r} is not a key id (16 characters a-z, 2-7)")
    return key_id


def check_request(name: str, role: str, ttl: timedelta | None) -> None:
    if role not in ROLES:
        raise KeyRequestError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    if not name or len(name) > MAX_NAME_CHARS:
        raise KeyRequestError(f"the name must be 1 to {MAX_NAME_CHARS} characters")
    # names end up in terminal tables and logs: no control characters, no padding
    if not name.isprintable() or name.strip() != name:
        raise KeyRequestError("the name must be printable, without leading/trailing spaces")
    if ttl is not None and not timedelta(0) < ttl <= MAX_TTL:
        raise KeyRequestError(f"the lifetime must be positive and at most {MAX_TTL.days} days")


def _record(row: KeyRow) -> KeyRecord:
    return KeyRecord(
        key_id=row.key_id,
        name=row.name,
        role=row.role,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


async def create_key(
    conn: Conn, name: str, role: str, ttl: timedelta | None, *, now: datetime | None = None
) -> tuple[KeyRecord, str]:
    """A new key: its record and the key in clear, which exists nowhere else afterwards.
    `ttl` None: the key does not expire. `now` is for tests."""
    check_request(name, role, ttl)
    created_at = now or _utc_now()
    key_id = _b32(secrets.token_bytes(KEY_ID_BYTES))
    secret = _b32(secrets.token_bytes(SECRET_BYTES))
    row = KeyRow(
        key_id=key_id,
        name=name,
        role=role,
        hash_scheme=HASH_SCHEME,
        secret_hash=hash_secret(key_id, secret),
        created_at=created_at,
        expires_at=None if ttl is None else created_at + ttl,
        revoked_at=None,
        last_used_at=None,
    )
    await store.insert_key(conn, row)
    log.info("API key created", extra={"fields": {"key_id": key_id, "role": role}})
    return _record(row), format_key(key_id, secret)


async def list_keys(conn: Conn, *, limit: int = MAX_LIST) -> list[KeyRecord]:
    """Every key, revoked and expired ones included, oldest first (at most `limit`)."""
    return [_record(row) for row in await store.list_keys(conn, limit)]


async def revoke_key(conn: Conn, key_id: str, *, now: datetime | None = None) -> KeyRecord:
    """Revokes the key for good; revoking it again changes nothing and returns the record
    with its first revocation time. KeyNotFound when there is no such key."""
    row = await store.revoke_key(conn, check_key_id(key_id), now or _utc_now())
    if row is None:
        raise KeyNotFound(key_id)
    log.info("API key revoked", extra={"fields": {"key_id": key_id}})
    return _record(row)


@dataclass(frozen=True)
class _Cached:
    row: KeyRow | None  # None: no such key (cached too, apart from the known ones)
    loaded_at: float  # monotonic seconds
    # what `verify` returns, made once per load instead of on every request
    record: KeyRecord | None = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "record", None if self.row is None else _record(self.row))


class _Lru:
    """A bounded map that forgets the least recently used entry when full."""

    def __init__(self, max_entries: int) -> None:
        self._entries: OrderedDict[str, _Cached] = OrderedDict()
        self._max = max_entries

    def get(self, key: str) -> _Cached | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: _Cached) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def pop(self, key: str) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


class KeyVerifier:
    """Checks `Authorization: Bearer` keys against the database, through a short cache.

    Rows are cached by key id, not by key, so no key in clear stays in memory and a wrong
    secret for a cached id is still refused. Unknown ids are cached apart (in a tenth of the
    room), so made-up keys cannot push the real ones out. Concurrent misses for one id share
    one query. `last_used_at` is written at most once per `touch_interval` per key.
    Database errors propagate (the gateway answers 503, not 401).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        cache_ttl_s: float = 30.0,
        max_cached: int = 10_000,
        touch_interval: timedelta = timedelta(minutes=1),
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if cache_ttl_s < 0 or max_cached < 1:
            raise ValueError("cache_ttl_s must be >= 0 and max_cached >= 1")
        self._pool = pool
        self._ttl_s = cache_ttl_s
        self._known = _Lru(max_cached)
        self._unknown = _Lru(max(1, max_cached // 10))
        self._touch_interval = touch_interval
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._loading: dict[str, asyncio.Future[_Cached]] = {}

    async def verify(self, token: str) -> KeyRecord:
        """The key's record if `token` is a valid, unrevoked, unexpired key; InvalidApiKey
        otherwise."""
        key_id, secret = parse_key(token)
        entry = await self._entry(key_id)
        row, record = entry.row, entry.record
        if row is None or record is None:
            raise InvalidApiKey(RejectReason.UNKNOWN, key_id)
        # the only scheme so far; the column exists for the next one
        expected = hash_secret(key_id, secret) if row.hash_scheme == HASH_SCHEME else b""
        if not hmac.compare_digest(row.secret_hash, expected):
            raise InvalidApiKey(RejectReason.WRONG_SECRET, key_id)
        now = self._wall_clock()
        if row.revoked_at is not None:
            raise InvalidApiKey(RejectReason.REVOKED, key_id)
        if row.expires_at is not None and now >= row.expires_at:
            raise InvalidApiKey(RejectReason.EXPIRED, key_id)
        if self._touch_due(row, now):
            await self._touch(row, now)
        return record

    def forget(self, key_id: str) -> None:
        """Drops a cached key, so the next request reads it again (after a revocation made
        through this process)."""
        self._known.pop(key_id)
        self._unknown.pop(key_id)

    @property
    def cached(self) -> int:
        return len(self._known) + len(self._unknown)

    async def _entry(self, key_id: str) -> _Cached:
        entry = self._known.get(key_id) or self._unknown.get(key_id)
        if entry is not None and self._monotonic() - entry.loaded_at < self._ttl_s:
            return entry
        pending = self._loading.get(key_id)
        if pending is None:
            pending = asyncio.ensure_future(self._load(key_id))
            self._loading[key_id] = pending
            pending.add_done_callback(lambda done: self._loaded(key_id, done))
        # one caller giving up (a client disconnecting) must not cancel the others' query
        return await asyncio.shield(pending)

    def _loaded(self, key_id: str, done: asyncio.Future[_Cached]) -> None:
        self._loading.pop(key_id, None)
        if not done.cancelled():
            done.exception()  # retrieved here too, in case every waiter was cancelled

    async def _load(self, key_id: str) -> _Cached:
        # stamped before the query: an entry never looks fresher than the data it holds
        loaded_at = self._monotonic()
        async with self._pool.acquire() as conn:
            row = await store.get_key(conn, key_id)
        cache, other = (self._unknown, self._known) if row is None else (self._known, self._unknown)
        other.pop(key_id)
        entry = _Cached(row, loaded_at)
        cache.put(key_id, entry)
        return entry

    def _touch_due(self, row: KeyRow, now: datetime) -> bool:
        """Whether `last_used_at` should be written now; checked before `_touch` so that the
        usual request (written less than `touch_interval` ago) makes no coroutine for it."""
        entry = self._known.get(row.key_id)
        cached = entry.row if entry is not None else None
        # the cached row is the freshest word: requests that shared one load all hold `row`
        last_used = (cached or row).last_used_at
        return last_used is None or now - last_used >= self._touch_interval

    async def _touch(self, row: KeyRow, now: datetime) -> None:
        entry = self._known.get(row.key_id)
        cached = entry.row if entry is not None else None
        if entry is not None and cached is not None:
            # later hits see the new time and do not write again until the interval passes
            self._known.put(row.key_id, replace(entry, row=replace(cached, last_used_at=now)))
        try:
            async with self._pool.acquire() as conn:
                await store.touch_key(conn, row.key_id, now, self._touch_interval)
        except Exception as exc:
            if database_failure(exc) is None:
                raise  # a bug, not an outage: let it show
            # informational only: an unreachable or slow database must not fail a request
            # that authenticated
            log.warning(
                "could not record an API key's use",
                extra={"fields": {"key_id": row.key_id, "error": type(exc).__name__}},
            )
