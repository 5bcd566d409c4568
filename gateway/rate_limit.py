"""Per-key token buckets: a steady rate with room for short bursts, in bounded memory.

Each key's bucket holds up to `burst` tokens and refills at `rate_per_s`; a request takes one
token or, when none is left, learns how long until one is there (the `Retry-After`). A refused
request takes nothing, so a client that keeps retrying too early does not push its own wait
further out. Pure and single-threaded (one event loop); time comes in as an argument, from a
monotonic clock, so tests need no sleeping.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# float refills land a hair short of a whole token (0.1 + 0.2 != 0.3): a client that waited
# exactly the time it was told must get its token
_EPSILON = 1e-9


@dataclass
class _Bucket:
    tokens: float
    updated_at: float


class TokenBuckets:
    """One bucket per key, at most `max_keys` of them. Beyond that the least recently used
    bucket is dropped: a key idle for `burst / rate_per_s` seconds has a full bucket anyway,
    so dropping it loses nothing unless more than `max_keys` keys are busy at once (then an
    evicted key starts again with a full bucket, a burst's worth of leniency at most)."""

    def __init__(self, rate_per_s: float, burst: int, max_keys: int) -> None:
        if not (math.isfinite(rate_per_s) and rate_per_s > 0):
            raise ValueError("rate_per_s must be a positive number")
        if burst < 1:
            raise ValueError("burst must be at least 1 (a request takes one token)")
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str, now: float | None = None) -> float:
        """0.0 if the request may go ahead (a token was taken); otherwise the seconds until a
        token will be there, and nothing is taken. `now`: monotonic seconds (default
        time.monotonic())."""
        at = time.monotonic() if now is None else now
        bucket = self._bucket(key, at)
        if bucket.tokens >= 1.0 - _EPSILON:
            bucket.tokens = max(0.0, bucket.tokens - 1.0)
            return 0.0
        return (1.0 - bucket.tokens) / self.rate_per_s

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets

    def _bucket(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
            self._buckets[key] = bucket
            self._evict()
            return bucket
        self._buckets.move_to_end(key)
        # a clock that steps back (it should not, being monotonic) must not drain the bucket
        elapsed = max(0.0, now - bucket.updated_at)
        bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate_per_s)
        bucket.updated_at = max(bucket.updated_at, now)
        return bucket

    def _evict(self) -> None:
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)


class KeyLimiter:
    """The per-key limit that REST, the console and the gRPC pass-through share: one bucket
    per API key (by its subject, `key:<key_id>`) whichever door a call comes through, so a
    key cannot double its rate by alternating doors."""

    def __init__(self, buckets: TokenBuckets, clock: Callable[[], float] = time.monotonic) -> None:
        self.buckets = buckets
        self._clock = clock

    def wait_s(self, key: str) -> float:
        """0.0: go ahead (a token was taken); otherwise the seconds to wait."""
        return self.buckets.take(key, self._clock())


def retry_after_header(wait_s: float) -> str:
    """`Retry-After` takes whole seconds: round up, so a client that waits that long finds a
    token, and never say 0 for a refused request."""
    return str(max(1, math.ceil(wait_s)))
