"""The console's memory: signed-in sessions and failed sign-in attempts, both bounded.

Sessions are kept by the SHA-256 of their id (a memory dump shows no usable id); failed
sign-ins are counted per client address so that guessing API keys through the sign-in form
is slow (the keys themselves are 256-bit random, this also keeps a broken client from
hammering the key store).
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

SESSION_TTL_S = 8 * 3600.0  # absolute lifetime
IDLE_TTL_S = 30 * 60.0  # signed out after this long without a call
MAX_SESSIONS = 1000
MAX_FAILURES = 10  # failed sign-ins per client address ...
FAILURE_WINDOW_S = 5 * 60.0  # ... within this long
MAX_CLIENTS = 10_000  # addresses remembered; the least recently failing forgotten first
_IPV6_PREFIX = 64  # one IPv6 client usually holds a whole /64


@dataclass
class Session:
    api_key: str
    key_id: str
    role: str
    csrf: str
    created: float
    last_seen: float


class Sessions:
    """Sessions in memory, at most `max_sessions`, the least recently used forgotten first."""

    def __init__(
        self,
        *,
        ttl_s: float = SESSION_TTL_S,
        idle_s: float = IDLE_TTL_S,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._by_hash: OrderedDict[bytes, Session] = OrderedDict()
        self._ttl_s = ttl_s
        self._idle_s = idle_s
        self._max = max_sessions
        self._clock = clock

    @staticmethod
    def _hash(session_id: str) -> bytes:
        return hashlib.sha256(session_id.encode()).digest()

    def open(self, api_key: str, key_id: str, role: str) -> tuple[str, Session]:
        now = self._clock()
        self._sweep(now)
        session_id = secrets.token_urlsafe(32)  # 256 bits
        session = Session(api_key, key_id, role, secrets.token_urlsafe(32), now, now)
        self._by_hash[self._hash(session_id)] = session
        while len(self._by_hash) > self._max:
            self._by_hash.popitem(last=False)
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id or len(session_id) > 100:
            return None
        key = self._hash(session_id)
        session = self._by_hash.get(key)
        if session is None:
            return None
        now = self._clock()
        if self._expired(session, now):
            del self._by_hash[key]
            return None
        session.last_seen = now
        self._by_hash.move_to_end(key)
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._by_hash.pop(self._hash(session_id), None)

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.created >= self._ttl_s or now - session.last_seen >= self._idle_s

    def _sweep(self, now: float) -> None:
        stale = [key for key, s in self._by_hash.items() if self._expired(s, now)]
        for key in stale:
            del self._by_hash[key]

    def __len__(self) -> int:
        return len(self._by_hash)


class SignInAttempts:
    """Failed sign-ins per client, in a sliding window: after `max_failures` within
    `window_s` the client waits until the oldest of them leaves the window. A refused
    attempt is not counted (retrying early does not push the wait further out); a
    successful sign-in forgets the client's failures. At most `max_clients` clients are
    remembered, each with at most `max_failures` timestamps: an attacker would need more
    than `max_clients` addresses failing at once to have one of theirs forgotten."""

    def __init__(
        self,
        *,
        max_failures: int = MAX_FAILURES,
        window_s: float = FAILURE_WINDOW_S,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_failures < 1 or max_clients < 1 or not window_s > 0:
            raise ValueError("max_failures, max_clients and window_s must be positive")
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._max_failures = max_failures
        self._window_s = window_s
        self._max_clients = max_clients
        self._clock = clock

    def wait_s(self, client: str) -> float:
        """0.0 if the client may try now; otherwise the seconds until it may."""
        failures = self._recent(client, self._clock())
        if failures is None or len(failures) < self._max_failures:
            return 0.0
        return max(0.0, failures[0] + self._window_s - self._clock())

    def failed(self, client: str) -> None:
        now = self._clock()
        failures = self._recent(client, now)
        if failures is None:
            failures = deque(maxlen=self._max_failures)
            self._failures[client] = failures
            while len(self._failures) > self._max_clients:
                self._failures.popitem(last=False)
        self._failures.move_to_end(client)
        failures.append(now)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)

    def _recent(self, client: str, now: float) -> deque[float] | None:
        """The client's failures still inside the window (None when there are none)."""
        failures = self._failures.get(client)
        if failures is None:
            return None
        while failures and failures[0] <= now - self._window_s:
            failures.popleft()
        if not failures:
            del self._failures[client]
            return None
        return failures

    def __len__(self) -> int:
        return len(self._failures)


def client_key(remote: str | None) -> str:
    """Whom failed sign-ins are counted against: the peer address (a forwarded-for header
    is not trusted, any client can write one), IPv6 by its /64 since one host usually
    holds all of it. Behind a reverse proxy every client shares the proxy's address, so
    the limit then applies to all of them together."""
    if not remote:
        return "unknown"
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote[:100]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        host_bits = 128 - _IPV6_PREFIX
        return str(ipaddress.IPv6Network((int(address) >> host_bits << host_bits, _IPV6_PREFIX)))
    return str(address)
