"""The short-lived caller tokens the gateway forwards (docs/design.md §4), one per API key and
role, re-minted before they expire: signing each request would cost an Ed25519 signature."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from services.runtime.identity import TokenSigner

TOKEN_TTL_S = 300
# re-mint this long before expiry, so that a token never expires in flight
REFRESH_S = 60
MAX_CACHED = 10_000


class CallerTokens:
    def __init__(self, signer: TokenSigner, clock: Callable[[], float] = time.time) -> None:
        self._signer = signer
        self._clock = clock
        self._cache: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()

    def token(self, subject: str, role: str) -> str:
        now = self._clock()
        cached = self._cache.get((subject, role))
        if cached is not None and now < cached[1] - REFRESH_S:
            self._cache.move_to_end((subject, role))
            return cached[0]
        token = self._signer.mint(subject, role, TOKEN_TTL_S)
        self._cache[(subject, role)] = (token, now + TOKEN_TTL_S)
        while len(self._cache) > MAX_CACHED:
            self._cache.popitem(last=False)
        return token
