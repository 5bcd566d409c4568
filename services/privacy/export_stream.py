"""The archive of an ACCESS / PORTABILITY bundle, built while points' ledger stream arrives
(the rules and the ZIP writer: domain/export_stream.py): one task reads the stream into a
short queue, while each text is compressed off the event loop (zlib releases the GIL), so
that PostgreSQL rendering, the transfer and the compression overlap.

The archive exists only once the stream's end arrived and agreed with what came; a stream
cut off or inconsistent is a transient failure of points (the step is tried again later),
never a bundle with part of the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable

from services.privacy.domain.export_bundle import ExportSources, LedgerExport
from services.privacy.domain.export_stream import (
    BundleFrame,
    BundleWriter,
    IncompleteLedger,
    LedgerEnd,
    LedgerPiece,
    LedgerSummary,
    LedgerText,
)
from services.privacy.domain.service_calls import LEDGER_STREAM_INCOMPLETE, ServiceCallError
from services.privacy.ports import POINTS

QUEUED = 4  # messages read ahead of the compression (each at most 1 MiB)
# the export's sources once the ledger's summary is known (a member points never knew: none)
SourcesOf = Callable[[LedgerExport], ExportSources]
# proto_export_bundle.bundle_frame: ValueError if the sources are inconsistent
FrameBundle = Callable[[ExportSources], BundleFrame]
_DONE = object()


async def streamed_archive(
    pieces: AsyncGenerator[LedgerPiece, None], sources_of: SourcesOf, frame_bundle: FrameBundle
) -> bytes:
    """The archive; ServiceCallError if points failed (or the stream came incomplete),
    ValueError if the bundle cannot be made of what came (not worth a retry)."""
    queue: asyncio.Queue[object] = asyncio.Queue(QUEUED)
    reader = asyncio.create_task(_read(pieces, queue))
    try:
        first = await _next(queue)
        summary = first if isinstance(first, LedgerSummary) else None
        ledger = LedgerExport(() if summary is None else (summary.message,))
        writer = BundleWriter(frame_bundle(sources_of(ledger)))
        piece = first if summary is None else await _next(queue)
        while isinstance(piece, LedgerText):
            await asyncio.to_thread(writer.text, piece)
            piece = await _next(queue)
        end = await _end(queue, piece, known=summary is not None)
        return await asyncio.to_thread(writer.finish, end)
    except IncompleteLedger:
        raise ServiceCallError(POINTS, LEDGER_STREAM_INCOMPLETE, transient=True) from None
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def _end(queue: asyncio.Queue[object], piece: object, *, known: bool) -> LedgerEnd | None:
    """The stream's end (none for a member points never knew), and nothing after it."""
    if piece is _DONE and not known:
        return None
    if not isinstance(piece, LedgerEnd):
        raise IncompleteLedger("the ledger stream ended without its end")
    if await _next(queue) is not _DONE:
        raise IncompleteLedger("the ledger stream went on after its end")
    return piece


async def _read(pieces: AsyncGenerator[LedgerPiece, None], queue: asyncio.Queue[object]) -> None:
    """Every piece, then _DONE; a failure is queued for the builder to raise. Cancelled,
    it closes the stream (and so cancels the call)."""
    try:
        async with contextlib.aclosing(pieces):
            async for piece in pieces:
                await queue.put(piece)
        await queue.put(_DONE)
    except Exception as exc:
        await queue.put(exc)


async def _next(queue: asyncio.Queue[object]) -> object:
    got = await queue.get()
    if isinstance(got, Exception):
        raise got
    return got
