"""The bundle written while points' ledger stream arrives (services/privacy/domain/
export_stream.py): the JSON arrays and CSV as the paged bundle has them whatever the
chunking, a readable ZIP, and every way a stream can arrive incomplete or wrong."""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import AsyncGenerator
from datetime import UTC, datetime

import pytest

from services.points.domain.ledger_stream import CSV_HEADER, Section, texts
from services.privacy.domain import export_stream
from services.privacy.domain.export_bundle import CSV_COLUMNS, ExportSources, LedgerExport
from services.privacy.domain.export_stream import (
    BundleFrame,
    BundleWriter,
    IncompleteLedger,
    LedgerEnd,
    LedgerPiece,
    LedgerSection,
    LedgerSummary,
    LedgerText,
)
from services.privacy.domain.service_calls import ServiceCallError
from services.privacy.export_stream import streamed_archive

CSV_HEAD = (",".join(CSV_COLUMNS) + "\r\n").encode()
FRAME = BundleFrame(
    head=b'{"points":{"transactions":',
    after_transactions=b',"lots":',
    after_lots=b',"holds":',
    tail=b"}}\n",
    csv_header=CSV_HEAD,
    generated_at=datetime(2026, 12, 7, 10, 30, 15, tzinfo=UTC),
)
T, C, L, H = (
    LedgerSection.TRANSACTIONS_JSON,
    LedgerSection.TRANSACTIONS_CSV,
    LedgerSection.LOTS_JSON,
    LedgerSection.HOLDS_JSON,
)


def unpacked(archive: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        assert z.testzip() is None
        return {name: z.read(name) for name in z.namelist()}


def written(pieces: list[LedgerText], end: LedgerEnd | None) -> dict[str, bytes]:
    writer = BundleWriter(FRAME)
    for piece in pieces:
        writer.text(piece)
    return unpacked(writer.finish(end))


def test_points_and_privacy_agree_on_the_csv_header() -> None:
    assert CSV_HEADER == CSV_HEAD


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_json_lines_become_the_bundles_arrays_however_they_are_cut(size: int) -> None:
    lines = '{"a":"ü,\\n"}\n{"b":2}\n{"c":3}\n'.encode()
    cut = [LedgerText(T, lines[i : i + size]) for i in range(0, len(lines), size)]
    files = written(
        [LedgerText(C, CSV_HEAD), *cut, LedgerText(C, b"1,x\r\n"), LedgerText(H, b"{}\n")],
        LedgerEnd(3, 0, 1, len(CSV_HEAD) + len(lines) + 5 + 3),
    )
    assert files["bundle.json"] == (
        b'{"points":{"transactions":[\n{"a":"\xc3\xbc,\\n"},\n{"b":2},\n{"c":3}\n],'
        b'"lots":[],"holds":[\n{}\n]}}\n'
    )
    assert files["ledger.csv"] == CSV_HEAD + b"1,x\r\n"
    assert list(files) == ["bundle.json", "ledger.csv"]


def test_a_member_points_never_knew_has_empty_arrays_and_the_header() -> None:
    files = written([], None)
    assert files["bundle.json"] == b'{"points":{"transactions":[],"lots":[],"holds":[]}}\n'
    assert files["ledger.csv"] == CSV_HEAD


def test_the_archive_is_what_zipfile_reads_and_the_same_for_the_same_input() -> None:
    pieces = [LedgerText(C, CSV_HEAD), LedgerText(T, b"{}\n" * 50_000)]
    end = LedgerEnd(50_000, 0, 0, len(CSV_HEAD) + 150_000)
    first, second = BundleWriter(FRAME), BundleWriter(FRAME)
    for piece in pieces:
        first.text(piece)
        second.text(piece)
    archive = first.finish(end)
    assert archive == second.finish(end)
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        info = z.getinfo("bundle.json")
        assert info.compress_type == zipfile.ZIP_DEFLATED and info.date_time[:3] == (2026, 12, 7)
        assert info.compress_size < info.file_size / 10


@pytest.mark.parametrize(
    ("pieces", "end"),
    [
        pytest.param([LedgerText(C, CSV_HEAD), LedgerText(T, b"{}\n{")], (2, 0, 0), id="cut-line"),
        pytest.param([LedgerText(C, CSV_HEAD), LedgerText(T, b"{}\n")], (2, 0, 0), id="count"),
        pytest.param([LedgerText(T, b"{}\n")], (1, 0, 0), id="no-csv-header"),
        pytest.param(
            [LedgerText(C, CSV_HEAD), LedgerText(L, b"{}\n"), LedgerText(T, b"{}\n")],
            (1, 1, 0),
            id="out-of-order",
        ),
    ],
)
def test_an_incomplete_stream_is_no_archive(
    pieces: list[LedgerText], end: tuple[int, int, int]
) -> None:
    size = sum(len(p.data) for p in pieces)
    with pytest.raises(IncompleteLedger):
        written(pieces, LedgerEnd(*end, size))
    with pytest.raises(IncompleteLedger):  # bytes lost on the way
        written(pieces[:1], LedgerEnd(*end, size))


def test_texts_without_an_end_are_no_archive() -> None:
    with pytest.raises(IncompleteLedger):
        written([LedgerText(C, CSV_HEAD)], None)


def test_another_header_or_too_much_text_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="header"):
        written([LedgerText(C, b"id,kind\r\n")], None)
    monkeypatch.setattr(export_stream, "MAX_LEDGER_BYTES", 10)
    with pytest.raises(ValueError, match="over 10 bytes"):
        written([LedgerText(C, CSV_HEAD)], None)


def test_points_cuts_text_into_bounded_chunks_that_join_to_it() -> None:
    text = "交易,\n".encode() * 300_000  # 3 MB
    chunks = list(texts(Section.TRANSACTIONS_CSV, text))
    assert [len(c.data) for c in chunks[:-1]] == [1024 * 1024] * 2 and len(chunks) == 3
    assert b"".join(c.data for c in chunks) == text
    assert list(texts(Section.LOTS_JSON, b"")) == []


# --- the use case: what arrives, in order, or a transient failure -------------------------


def _sources_of(ledger: LedgerExport) -> ExportSources:
    return ledger  # type: ignore[return-value]  # the frame below ignores it


def _frame(_: object) -> BundleFrame:
    return FRAME


async def _stream(*pieces: LedgerPiece) -> AsyncGenerator[LedgerPiece, None]:
    for piece in pieces:
        await asyncio.sleep(0)
        yield piece


async def test_the_archive_of_a_whole_stream() -> None:
    stream = _stream(
        LedgerSummary(object()),
        LedgerText(C, CSV_HEAD),
        LedgerText(T, b"{}\n"),
        LedgerEnd(1, 0, 0, len(CSV_HEAD) + 3),
    )
    files = unpacked(await streamed_archive(stream, _sources_of, _frame))
    assert files["bundle.json"].startswith(b'{"points":{"transactions":[\n{}\n]')


@pytest.mark.parametrize(
    "pieces",
    [
        pytest.param((LedgerSummary(object()), LedgerText(C, CSV_HEAD)), id="no-end"),
        pytest.param(
            (LedgerSummary(object()), LedgerEnd(0, 0, 0, 0), LedgerText(C, CSV_HEAD)),
            id="after-the-end",
        ),
    ],
)
async def test_an_incomplete_stream_is_a_transient_failure(pieces: tuple[LedgerPiece]) -> None:
    with pytest.raises(ServiceCallError) as caught:
        await streamed_archive(_stream(*pieces), _sources_of, _frame)
    assert caught.value.transient and caught.value.code == "LEDGER_STREAM_INCOMPLETE"


async def test_a_failure_of_the_call_is_passed_on() -> None:
    async def failing() -> AsyncGenerator[LedgerPiece, None]:
        yield LedgerSummary(object())
        raise ServiceCallError("points", "UNAVAILABLE", transient=True)

    with pytest.raises(ServiceCallError) as caught:
        await streamed_archive(failing(), _sources_of, _frame)
    assert caught.value.code == "UNAVAILABLE"
