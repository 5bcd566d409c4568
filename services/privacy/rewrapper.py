"""Background re-wrapping of data keys after a key-encryption-key rotation.

Runs in every privacy replica; `FOR UPDATE SKIP LOCKED` lets replicas share the work. Only
wrapped data keys move: no field plaintext is ever read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.privacy.domain.field_crypto import RewrapPass
from services.privacy.field_crypto import FieldCrypto

log = logging.getLogger("membership.privacy.rewrap")

IDLE_POLL_S = 30.0
ERROR_BACKOFF_S = 5.0


class Rewrapper:
    def __init__(self, crypto: FieldCrypto) -> None:
        self._crypto = crypto
        self._task: asyncio.Task[None] | None = None
        # data keys the last pass could not unwrap; they stay counted in GetKeyRingStatus's
        # data_keys_to_rewrap until an operator restores their key-encryption key
        self.last_pass_failed = 0

    def start(self) -> None:
        self._crypto.rewrap_wanted.set()  # finish any rotation a previous process left
        self._task = asyncio.create_task(self._run(), name="rewrapper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def drain(self) -> RewrapPass:
        result = await self._crypto.rewrap_pass()
        self.last_pass_failed = result.failed
        if result.moved:
            log.info("data keys re-wrapped", extra={"fields": {"count": result.moved}})
        if result.failed:
            # counts and error types only: no subject ids in the logs
            log.warning(
                "data keys could not be re-wrapped; they stay under their old key",
                extra={"fields": {"failed": result.failed, "error_types": dict(result.failures)}},
            )
        return result

    async def _run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: in 3.11 wait_for drops a cancellation that
            # arrives as the event is set, and stop() would then wait a whole poll
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDLE_POLL_S):
                    await self._crypto.rewrap_wanted.wait()
            self._crypto.rewrap_wanted.clear()
            try:
                await self.drain()
            except Exception:
                log.exception("re-wrapping failed; will retry")
                await asyncio.sleep(ERROR_BACKOFF_S)
                self._crypto.rewrap_wanted.set()
