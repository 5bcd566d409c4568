"""StreamMemberLedger: a member's whole ledger as text PostgreSQL renders, for the privacy
service's access and portability bundles (what is sent and why: domain/ledger_stream.py).

One repeatable-read snapshot for the whole stream: the first connection exports it and up
to RENDERERS - 1 more connections import it, so that PostgreSQL renders the transactions on
several cores (rendering is ~90 % of the stream's cost; one backend took ~1.5 s of CPU for
100,000), each connection a share of the fetches (every RENDERERS-th), sent in order. A
helper connection the pool cannot give at once is done without: the stream is never held up
waiting for one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import asyncpg

from services.points.domain.balance import NO_BALANCE
from services.points.domain.ledger_export import ExportPage
from services.points.domain.ledger_stream import (
    CSV_HEADER,
    LEDGER_TOO_LARGE,
    MAX_TRANSACTIONS,
    Section,
    StreamItem,
    Tally,
    Text,
    texts,
)
from services.points.store import balance as balance_store
from services.points.store import ledger_export as export_store
from services.points.store import ledger_stream as stream_store
from services.points.store import members as member_store
from services.points.store import restrictions as restriction_store
from services.points.store import tiers as tier_store
from services.points.store.ledger_stream import Bound, Rendered
from services.runtime.db import Conn
from services.runtime.errors import failed_precondition, not_found

RENDERERS = 2  # connections rendering at once: the cores PostgreSQL may spend on one stream
HELPER_WAIT_S = 0.05  # for a helper connection from the pool, before going without it
QUEUE_FETCHES = 2  # rendered fetches waiting per renderer (each up to ~1 MB)


class LedgerStream:
    def __init__(
        self,
        pool: asyncpg.Pool,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        renderers: int = RENDERERS,
    ) -> None:
        self._pool = pool
        self._clock = clock
        self._renderers = max(1, renderers)

    async def stream(self, member_id: str) -> AsyncIterator[StreamItem]:
        """The summary, the texts, the end; NOT_FOUND / LEDGER_TOO_LARGE before anything."""
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            await stream_store.prepare_session(conn)
            yield await self._summary(conn, member_id)
            tally = Tally()
            yield tally.sent(Text(Section.TRANSACTIONS_CSV, CSV_HEADER))
            bounds = await stream_store.fetch_bounds(conn, member_id)
            async with self._helpers(conn, len(bounds)) as helpers:
                async for rendered in _in_order(member_id, bounds, [conn, *helpers]):
                    tally.transactions += rendered.rows
                    for text in texts(Section.TRANSACTIONS_JSON, rendered.json):
                        yield tally.sent(text)
                    for text in texts(Section.TRANSACTIONS_CSV, rendered.csv):
                        yield tally.sent(text)
            async for rendered in stream_store.lots(conn, member_id):
                tally.lots += rendered.rows
                for text in texts(Section.LOTS_JSON, rendered.json):
                    yield tally.sent(text)
            async for rendered in stream_store.holds(conn, member_id):
                tally.holds += rendered.rows
                for text in texts(Section.HOLDS_JSON, rendered.json):
                    yield tally.sent(text)
            yield tally.end()

    async def _summary(self, conn: Conn, member_id: str) -> ExportPage:
        if not await member_store.member_exists(conn, member_id):
            raise not_found("member")
        count = await stream_store.transaction_count(conn, member_id)
        if count > MAX_TRANSACTIONS:
            raise failed_precondition(
                LEDGER_TOO_LARGE, f"more than {MAX_TRANSACTIONS} transactions: not exported"
            )
        balance = await balance_store.get_balance(conn, member_id, self._clock())
        tiers = await tier_store.tier_rows(conn, [member_id])
        return ExportPage(
            member_id,
            balance or NO_BALANCE,
            tiers.get(member_id),
            [],
            [],
            [],
            await export_store.redemptions_of(conn, member_id),
            await restriction_store.get_restriction(conn, member_id),
            "",
        )

    @contextlib.asynccontextmanager
    async def _helpers(self, conn: Conn, fetches: int) -> AsyncIterator[list[Conn]]:
        """Connections in the snapshot of `conn`'s transaction, as many as the pool gives
        at once (up to RENDERERS - 1, and none for a ledger of one fetch)."""
        async with contextlib.AsyncExitStack() as stack:
            helpers: list[Conn] = []
            wanted = min(self._renderers, fetches) - 1
            if wanted > 0:
                snapshot = await stream_store.export_snapshot(conn)
                for _ in range(wanted):
                    try:
                        helper = await stack.enter_async_context(
                            self._pool.acquire(timeout=HELPER_WAIT_S)
                        )
                    except TimeoutError:
                        break
                    await stack.enter_async_context(
                        helper.transaction(isolation="repeatable_read", readonly=True)
                    )
                    await stream_store.import_snapshot(helper, snapshot)
                    helpers.append(helper)
            yield helpers


async def _in_order(
    member_id: str, bounds: list[Bound], conns: list[Conn]
) -> AsyncIterator[Rendered]:
    """The rendered fetches of every connection's share, in the ledger's order: fetch i is
    share i % len(conns)'s. Each share renders ahead into a small queue while the previous
    ones are sent."""
    shares = len(conns)
    queues: list[asyncio.Queue[Rendered | BaseException | None]] = [
        asyncio.Queue(QUEUE_FETCHES) for _ in conns
    ]

    async def render(share: int) -> None:
        try:
            for bound in bounds[share::shares]:
                rendered = await stream_store.transactions(conns[share], member_id, bound)
                await queues[share].put(rendered)
            await queues[share].put(None)
        except Exception as exc:  # handed to the sender, which raises it
            await queues[share].put(exc)

    tasks = [asyncio.create_task(render(share)) for share in range(shares)]
    try:
        share = 0
        while True:
            got = await queues[share].get()
            if isinstance(got, BaseException):
                raise got
            if got is None:
                break
            yield got
            share = (share + 1) % shares
        for other in range(shares):  # the fetches after the last are nobody's: all ended
            if other != share and await queues[other].get() is not None:
                raise RuntimeError("the ledger's renderers got out of step")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
