"""StreamMemberLedger (internal, for the privacy service) and the bundle privacy writes while
it arrives: the same files, byte for byte, as the bundle built from ExportMemberLedger's
pages; chunks bounded; an unknown member, an empty ledger; a stream cut off never becomes
an export."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import cast

import asyncpg
import grpc
import pytest
from membership.accounts.v1 import accounts_pb2 as apb
from membership.points.v1 import points_pb2 as pb
from membership.privacy.v1 import data_rights_pb2 as dpb

from services.points.domain import ledger_stream as stream_rules
from services.points.domain.ledger_stream import StreamItem
from services.points.ledger_stream import LedgerStream
from services.points.store.ledger_stream import Rendered
from services.privacy.domain.export_stream import (
    BundleWriter,
    LedgerEnd,
    LedgerPiece,
    LedgerSummary,
    LedgerText,
)
from services.privacy.ports import ledger_piece
from services.privacy.proto_export_bundle import BundleSources, build_bundle, frame_of
from services.privacy.server import PrivacyComponent
from services.runtime.access import METHOD_SCOPES, ROLE_SCOPES
from tests.service.test_points_privacy import busy_member, exported, privacy
from tests.service.test_points_refunds import refund
from tests.service.test_points_settlement import known_member, payment, settler
from tests.service.test_points_spending import (
    OLDER,
    capture,
    earned,
    hold,
    redeem,
    release,
    spender,
)
from tests.support.data_rights import (
    approve,
    create,
    download,
    get_request,
    member_with_ledger,
    verify,
)
from tests.support.rpc_errors import expect_error
from tests.support.suite import Suite

POINTS = "/membership.points.v1.PointsService/"
GENERATED = datetime(2026, 12, 7, 10, 30, 15, 250000, tzinfo=UTC)
# ids a caller may choose: CSV and JSON specials, formula starts, non-ASCII, a backslash
ODD_IDS = ["p,1", 'p"2', "=1+1", "-3", "@4", "+5", "p\\6", "支付,“七”", " 8", "'9"]
# sentences the code never writes, stored by hand: what the CSV and JSON rules must survive
ODD_SENTENCES = [
    'a "quoted", line\nbreak',
    "\ttab first",
    "\r\ncarriage",
    "back\\slash \u2028 \x01 control",
    "=formula",
    "",
]
# created_at values whose fractions print with 0, 3 and 6 digits (Timestamp.ToJsonString)
ODD_TIMES = [
    "2026-01-02 03:04:05+00",
    "2026-01-02 03:04:05.120+00",
    "2026-01-02 03:04:05.123456+00",
    "1999-12-31 23:59:59.000001+08",
]


async def chunks(suite: Suite, member_id: str) -> list[pb.MemberLedgerChunk]:
    call = suite.points.StreamMemberLedger(
        pb.StreamMemberLedgerRequest(member=f"members/{member_id}"), metadata=privacy(suite)
    )
    return [message async for message in call]


def pieces(messages: list[pb.MemberLedgerChunk]) -> list[LedgerPiece]:
    return [ledger_piece(m, first=i == 0) for i, m in enumerate(messages)]


def sources(member_id: str, pages: list[pb.MemberLedgerExport]) -> BundleSources:
    return BundleSources(
        member_export=apb.ExportMemberDataResponse(
            member=apb.Member(name=f"members/{member_id}", display_name="Ann")
        ),
        ledger_pages=pages,
        consents=[],
        consent_history=[],
        requests=[],
        generated_at=GENERATED,
        request_name="dataRequests/d1",
        portable=True,
    )


def streamed_files(member_id: str, got: list[LedgerPiece]) -> dict[str, bytes]:
    """The archive privacy writes from the stream, unpacked."""
    summary = got[0]
    assert isinstance(summary, LedgerSummary)
    assert isinstance(summary.message, pb.MemberLedgerExport)
    writer = BundleWriter(frame_of(sources(member_id, [summary.message])))
    for piece in got[1:-1]:
        assert isinstance(piece, LedgerText)
        writer.text(piece)
    end = got[-1]
    assert isinstance(end, LedgerEnd)
    archive = zipfile.ZipFile(io.BytesIO(writer.finish(end)))
    assert archive.testzip() is None  # every member's CRC checks out
    return {name: archive.read(name) for name in archive.namelist()}


async def paged_files(suite: Suite, member_id: str) -> dict[str, bytes]:
    """The bundle as privacy built it before the stream, from ExportMemberLedger's page."""
    page = await exported(suite, member_id)
    assert page.next_page_token == ""  # one page: the old order of lots and holds is by id
    bundle = build_bundle(sources(member_id, [page]))
    return {"bundle.json": bundle.json_bytes, "ledger.csv": bundle.ledger_csv}


async def varied_member(suite: Suite, db: asyncpg.Connection) -> str:
    """A few hundred transactions of every kind: settlements (odd payment ids), refunds,
    holds captured, released and open, redemptions, a reward; odd sentences and times."""
    member_id = await busy_member(suite)
    for i in range(40):
        pid = f"{ODD_IDS[i % len(ODD_IDS)]}-{i}"
        await earned(suite, member_id, pid, 3000 + i * 17, OLDER + timedelta(minutes=i))
        if i % 4 == 0:
            await suite.points.RefundPayment(
                refund(member_id, pid, f"r{i}", 700), metadata=settler(suite)
            )
    for i in range(12):
        hold_id = f"h{i},{ODD_IDS[i % len(ODD_IDS)]}"
        await suite.points.HoldPoints(hold(member_id, hold_id, 3 + i), metadata=spender(suite))
        if i % 3 == 0:
            await suite.points.CapturePoints(
                capture(member_id, hold_id, f"c{i}", 2), metadata=spender(suite)
            )
        elif i % 3 == 1:
            await suite.points.ReleaseHold(
                release(member_id, hold_id, f"rel{i}"), metadata=spender(suite)
            )
        await suite.points.RedeemPoints(redeem(member_id, f"rd{i}", 1), metadata=spender(suite))
    batch = pb.SettlePaymentsRequest(
        requests=[payment(member_id, f"b-{i}", 100 + i) for i in range(250)]
    )
    await suite.points.SettlePayments(batch, metadata=settler(suite))
    await _odd_rows(db, member_id)
    return member_id


async def _odd_rows(db: asyncpg.Connection, member_id: str) -> None:
    ids = [
        r["txn_id"]
        for r in await db.fetch(
            "SELECT txn_id FROM points.transactions WHERE member_id = $1 ORDER BY txn_id LIMIT 12",
            member_id,
        )
    ]
    for txn_id, sentence in zip(ids, ODD_SENTENCES, strict=False):
        await db.execute(
            "UPDATE points.transactions SET explanation = jsonb_set(explanation, '{sentence}',"
            " to_jsonb($3::text)) WHERE member_id = $1 AND txn_id = $2",
            member_id,
            txn_id,
            sentence,
        )
    for txn_id, at in zip(ids[6:], ODD_TIMES, strict=False):
        await db.execute(
            "UPDATE points.transactions SET created_at = $3::text::timestamptz"
            " WHERE member_id = $1 AND txn_id = $2",
            member_id,
            txn_id,
            at,
        )
    # a key of a kind added later (shown whole), one without a prefix at all
    await db.execute(
        "UPDATE points.transactions SET idempotency_key = CASE txn_id WHEN $2 THEN 'later:x,y'"
        " ELSE 'no-prefix' END WHERE member_id = $1 AND txn_id IN ($2, $3)",
        member_id,
        ids[10],
        ids[11],
    )


async def test_the_streamed_bundle_equals_the_paged_one_byte_for_byte(
    suite: Suite, db: asyncpg.Connection
) -> None:
    member_id = await varied_member(suite, db)
    paged = await paged_files(suite, member_id)
    messages = await chunks(suite, member_id)
    streamed = streamed_files(member_id, pieces(messages))
    assert list(streamed) == ["bundle.json", "ledger.csv"]
    assert streamed["ledger.csv"] == paged["ledger.csv"]
    assert streamed["bundle.json"] == paged["bundle.json"]
    # the odd values are in there, each as the rules want it
    csv_text, json_text = streamed["ledger.csv"].decode(), streamed["bundle.json"].decode()
    assert '"a ""quoted"", line\nbreak"' in csv_text and ",'=formula\r\n" in csv_text
    assert ",'\ttab first" in csv_text and '"\'\r\ncarriage"' in csv_text
    assert ",'=1+1-12,1," in csv_text and ",'-3-13,1," in csv_text and ',"p,1-20",' in csv_text
    assert ',"支付,“七”-7",' in csv_text and '"value":"p\\\\6-16"' in json_text
    assert "\\u0001" in json_text and "\u2028" in json_text  # escaped; not escaped
    for fraction in ('05Z"', '05.120Z"', '05.123456Z"', '59.000001Z"'):
        assert fraction in json_text
    assert '"type":"idempotency_key","value":"later:x,y"' in json_text
    end = messages[-1].end
    page = await exported(suite, member_id)
    assert (end.transactions, end.lots, end.holds) == (
        len(page.transactions),
        len(page.lots),
        len(page.holds),
    )
    assert end.transactions > 300 and end.lots > 40 and end.holds == 13


async def test_chunks_are_bounded_and_join_to_the_same_bytes(
    suite: Suite, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    member_id = await varied_member(suite, db)
    whole = streamed_files(member_id, pieces(await chunks(suite, member_id)))
    monkeypatch.setattr(stream_rules, "MAX_CHUNK_BYTES", 1000)
    messages = await chunks(suite, member_id)
    texts = [m.text for m in messages if m.HasField("text")]
    assert max(len(t.data) for t in texts) == 1000
    assert len(texts) > 100  # split inside lines and inside UTF-8 sequences too
    assert streamed_files(member_id, pieces(messages)) == whole
    assert messages[-1].end.text_bytes == sum(len(t.data) for t in texts)


async def test_the_default_chunk_is_at_most_one_mebibyte(suite: Suite) -> None:
    member_id = await known_member(suite)
    batch = [payment(member_id, f"p-{i}", 100 + i) for i in range(2500)]
    for start in range(0, len(batch), 500):
        request = pb.SettlePaymentsRequest(requests=batch[start : start + 500])
        await suite.points.SettlePayments(request, metadata=settler(suite))
    messages = await chunks(suite, member_id)
    assert all(len(m.text.data) <= 1024 * 1024 for m in messages if m.HasField("text"))
    # 2,500 transactions: three fetches, rendered by two connections, sent in order
    assert streamed_files(member_id, pieces(messages)) == await paged_files(suite, member_id)


async def test_one_renderer_or_two_send_the_same(suite: Suite) -> None:
    member_id = await known_member(suite)
    batch = [payment(member_id, f"p-{i}", 100 + i) for i in range(2100)]
    for start in range(0, len(batch), 500):
        request = pb.SettlePaymentsRequest(requests=batch[start : start + 500])
        await suite.points.SettlePayments(request, metadata=settler(suite))
    pool = suite.points_service.pool
    alone, helped = LedgerStream(pool, renderers=1), LedgerStream(pool, renderers=3)
    first = [item async for item in alone.stream(member_id)]
    second = [item async for item in helped.stream(member_id)]
    assert first[1:] == second[1:]  # the summary's balance is read at each one's time


async def test_a_member_without_transactions(suite: Suite) -> None:
    member_id = await known_member(suite)
    messages = await chunks(suite, member_id)
    assert [m.WhichOneof("content") for m in messages] == ["summary", "text", "end"]
    assert messages[1].text.section == pb.LEDGER_SECTION_TRANSACTIONS_CSV
    assert messages[2].end == pb.LedgerStreamEnd(text_bytes=len(stream_rules.CSV_HEADER))
    assert streamed_files(member_id, pieces(messages)) == await paged_files(suite, member_id)


async def test_an_unknown_member_is_not_found(suite: Suite) -> None:
    await expect_error(chunks(suite, "mnobodyatall"), grpc.StatusCode.NOT_FOUND)
    await expect_error(chunks(suite, "not a member!"), grpc.StatusCode.INVALID_ARGUMENT)


async def test_too_large_a_ledger_is_refused_before_anything_is_sent(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    member_id = await busy_member(suite)
    monkeypatch.setattr("services.points.ledger_stream.MAX_TRANSACTIONS", 5)
    call = suite.points.StreamMemberLedger(
        pb.StreamMemberLedgerRequest(member=f"members/{member_id}"), metadata=privacy(suite)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_only_the_privacy_service_may_stream() -> None:
    scope = METHOD_SCOPES[POINTS + "StreamMemberLedger"]
    assert {role for role, scopes in ROLE_SCOPES.items() if scope in scopes} == {"service:privacy"}


async def test_others_are_refused_the_stream(suite: Suite) -> None:
    member_id = await known_member(suite)
    for role in ("wallet-backend", "officer", "admin", "settlement", "service:accounts"):
        call = suite.points.StreamMemberLedger(
            pb.StreamMemberLedgerRequest(member=f"members/{member_id}"),
            metadata=suite.auth(role),
        )
        await expect_error(_messages(call), grpc.StatusCode.PERMISSION_DENIED)


async def _messages(call: AsyncIterator[pb.MemberLedgerChunk]) -> list[pb.MemberLedgerChunk]:
    return [m async for m in call]


# --- privacy: a stream that fails part-way never becomes an export -------------------------


async def _lots_then_failure(conn: object, member_id: str) -> AsyncIterator[Rendered]:
    raise RuntimeError("the database went away mid-stream")
    yield  # an async generator, as the store's


async def _without_end(self: LedgerStream, member_id: str) -> AsyncIterator[StreamItem]:
    async for item in _original_stream(self, member_id):
        if not isinstance(item, stream_rules.StreamEnd):
            yield item


_original_stream = LedgerStream.stream


@pytest.mark.parametrize(
    ("patch", "error"),
    [
        pytest.param(
            ("services.points.store.ledger_stream.lots", _lots_then_failure),
            "points: INTERNAL",
            id="points-fails-after-the-transactions",
        ),
        pytest.param(
            ("services.points.ledger_stream.LedgerStream.stream", _without_end),
            "points: LEDGER_STREAM_INCOMPLETE",
            id="the-stream-ends-without-its-end",
        ),
    ],
)
async def test_a_stream_failing_part_way_is_retried_never_kept_cut_off(
    suite: Suite,
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    patch: tuple[str, object],
    error: str,
) -> None:
    member_id = await member_with_ledger(suite, payments=3)
    monkeypatch.setattr(*patch)
    created = await create(suite, member_id, dpb.DATA_REQUEST_TYPE_ACCESS)
    await verify(suite, created.name)
    stopped = await approve(suite, created.name)
    assert stopped.state == dpb.DATA_REQUEST_STATE_IN_PROGRESS  # to be tried again later
    assert stopped.steps[0].last_error == error and not stopped.HasField("step_failure")
    request_id = created.name.split("/")[1]
    kept = "SELECT count(*) FROM privacy.data_exports WHERE data_request_id = $1"
    assert await db.fetchval(kept, request_id) == 0
    monkeypatch.undo()  # points recovers: the next attempt builds the whole bundle
    await cast(PrivacyComponent, suite.privacy_service.component).fulfiller.run(request_id)
    done = await get_request(suite, created.name)
    assert done.state == dpb.DATA_REQUEST_STATE_COMPLETED
    files = await download(suite, done.name)
    assert len(files["ledger.csv"].decode().strip().splitlines()) == 1 + 3
    assert len(json.loads(files["bundle.json"])["points"]["transactions"]) == 3
