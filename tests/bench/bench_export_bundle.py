"""Building the export bundle of an ACCESS / PORTABILITY request (not a test:
`python -m tests.bench.bench_export_bundle`).

Pure CPU, no services. Builds the bundle of one member with --transactions ledger
transactions (default 100,000, in pages of 10,000 as ExportMemberLedger returns them: about
half settlements with a lot each, a redemption with a hold every twentieth) and measures,
side by side in one run:

  (a) json.dumps of the equivalent plain document (the bundle's JSON parsed back into lists
      and dicts), with the bundle's options: the reference, what any Python encoder pays
  (b) (a) plus the csv module writing the equivalent rows: the floor for both outputs
  (c) build_bundle: JSON and CSV from the protobuf messages
  (d) MessageToDict per transaction, lot and hold, then json.dumps: what the direct mapping
      replaces (measured on a sample of --sample transactions, scaled)
  (e) build_bundle and make_archive: what privacy did per ACCESS before the ledger stream
  (f) BundleWriter: the same archive from the text points' StreamMemberLedger sends (JSON
      lines and CSV, in 1 MiB chunks, rendered by PostgreSQL: not measured here), what
      privacy does per ACCESS since issue 14 (zlib's deflate is most of it)

CPU seconds (time.process_time), best of --rounds interleaved rounds, each with its ratio
to (a). Prints a table and writes bench-results/export_bundle.json with machine information.

    python -m tests.bench.bench_export_bundle [--transactions 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from membership.accounts.v1 import accounts_pb2 as apb
from membership.points.v1 import points_pb2 as pb

from services.points.domain.ledger_stream import MAX_CHUNK_BYTES
from services.privacy.domain.export_bundle import Bundle, make_archive
from services.privacy.domain.export_stream import (
    BundleFrame,
    BundleWriter,
    LedgerEnd,
    LedgerSection,
    LedgerText,
)
from services.privacy.proto_export_bundle import BundleSources, build_bundle, frame_of
from tests.bench.common import machine_info

RESULTS = Path(__file__).resolve().parents[2] / "bench-results" / "export_bundle.json"
MEMBER = "members/m0123456789abcdefghj"
PAGE_SIZE = 10_000  # ExportMemberLedger's maximum
START_S = 1_700_000_000
SPACING_S = 3_517  # about one transaction an hour, on ever-changing minutes


@dataclass(frozen=True)
class Row:
    name: str
    seconds: float  # CPU, best of the rounds
    ratio: float | None  # over the reference's seconds
    note: str = ""


def _transaction(i: int) -> tuple[pb.ExportedTransaction, pb.ExportedLot | None]:
    """A settlement (with its lot), maturation, redemption or expiry, in turn."""
    kind = ("settlement", "maturation", "settlement", "redemption")[i % 4]
    points = 10 + i % 490
    t = pb.Transaction(
        name=f"{MEMBER}/transactions/{10_000_000 - i}", kind=kind, rule_version=3 + i % 2
    )
    t.create_time.FromSeconds(START_S - i * SPACING_S)
    t.create_time.nanos = (i % 1000) * 1_000_000
    move = {
        "settlement": ("program:issued", "member:pending", points),
        "maturation": ("member:pending", "member:available", points),
        "redemption": ("member:available", "member:held", -points),
    }[kind]
    t.points = move[2]
    t.reference.type = "payment_id" if kind == "settlement" else "request_id"
    t.reference.value = f"pay-{i:012d}"
    lots = 3 if kind == "redemption" else 1  # spending takes soonest-expiring lots first
    for n in range(lots):
        t.transfers.add(
            from_account=move[0], to_account=move[1], amount=points // lots, lot_id=i + n,
            rule_version=t.rule_version,
        )  # fmt: skip
    sentence = f'{kind}：支付 {points * 100} 分（人民币）获得 {points} 积分, "rule" v3'
    lot = None
    if kind == "settlement":
        lot = pb.ExportedLot(
            lot_id=i, transaction_id=10_000_000 - i, state="AVAILABLE", points=points,
            remaining=points // 2, rule_version=3,
        )  # fmt: skip
        lot.earn_time.CopyFrom(t.create_time)
        lot.available_time.FromSeconds(START_S - i * SPACING_S + 7 * 86_400)
        lot.expire_time.FromSeconds(START_S - i * SPACING_S + 365 * 86_400)
    return pb.ExportedTransaction(transaction=t, sentence=sentence), lot


def _hold(i: int) -> pb.ExportedHold:
    hold = pb.ExportedHold(
        hold_id=f"order-{i}", state="CAPTURED", points=100, captured_points=100,
        rule_version=3, transaction_id=10_000_000 - i,
    )  # fmt: skip
    hold.expire_time.FromSeconds(START_S - i * SPACING_S + 900)
    hold.create_time.FromSeconds(START_S - i * SPACING_S)
    hold.close_time.FromSeconds(START_S - i * SPACING_S + 60)
    return hold


def ledger_pages(transactions: int) -> list[pb.MemberLedgerExport]:
    pages = []
    for start in range(0, max(transactions, 1), PAGE_SIZE):
        page = pb.MemberLedgerExport(member=MEMBER)
        page.balance.name = MEMBER + "/balance"
        page.balance.available = 12_345
        for i in range(start, min(start + PAGE_SIZE, transactions)):
            exported, lot = _transaction(i)
            page.transactions.append(exported)
            if lot is not None:
                page.lots.append(lot)
            if i % 20 == 3:
                page.holds.append(_hold(i))
        pages.append(page)
    return pages


def sources(transactions: int) -> BundleSources:
    export = apb.ExportMemberDataResponse(
        member=apb.Member(name=MEMBER, phone="+8613800138000", display_name="张三")
    )
    return BundleSources(
        member_export=export,
        ledger_pages=ledger_pages(transactions),
        consents=[],
        consent_history=[],
        requests=[],
        generated_at=datetime(2026, 5, 1, 12, 0, tzinfo=UTC),
        request_name="dataRequests/r1",
        portable=False,
    )


def cpu_s(call: Callable[[], object]) -> float:
    started = time.process_time()
    call()
    return time.process_time() - started


def best_cpu_s(calls: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """The least CPU time of each call over `rounds`, the calls interleaved in every round so
    that a busy machine weighs on all of them alike."""
    timings: dict[str, list[float]] = {name: [] for name in calls}
    for done in range(rounds):
        sys.stderr.write(f"round {done + 1}/{rounds}\n")
        for name, call in calls.items():
            timings[name].append(cpu_s(call))
    return {name: min(values) for name, values in timings.items()}


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _write_csv(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue().encode()


def _message_to_dict_s(src: BundleSources, sample: int, rounds: int) -> float:
    """MessageToDict of `sample` transactions with their lots and holds, scaled."""
    page = src.ledger_pages[0]
    count = min(sample, len(page.transactions))

    def run() -> str:
        items: list[dict[str, Any]] = [
            json_format.MessageToDict(m, always_print_fields_with_no_presence=True)
            for part in (page.transactions, page.lots, page.holds)
            for m in part[: count * len(part) // len(page.transactions)]
        ]
        return _dumps(items)

    sample_s = best_cpu_s({"sample": run}, rounds)["sample"]
    return sample_s * sum(len(p.transactions) for p in src.ledger_pages) / count


def measure(options: Options) -> list[Row]:
    src = sources(options.transactions)
    bundle: Bundle = build_bundle(src)
    document = json.loads(bundle.json_bytes)
    rows = list(csv.reader(io.StringIO(bundle.ledger_csv.decode(), newline="")))
    best = best_cpu_s(
        {
            "dumps": lambda: _dumps(document).encode(),
            "floor": lambda: (_dumps(document).encode(), _write_csv(rows)),
            "build": lambda: build_bundle(src),
        },
        options.rounds,
    )
    dumps_s, floor_s, build_s = best["dumps"], best["floor"], best["build"]
    naive_s = _message_to_dict_s(src, options.sample, options.rounds)
    stream = _stream_texts(src, bundle)
    frame = frame_of(replace(src, ledger_pages=[_summary(src.ledger_pages[0])]))
    archives = best_cpu_s(
        {
            "paged": lambda: make_archive(build_bundle(src)),
            "streamed": lambda: _streamed_archive(frame, stream),
        },
        options.rounds,
    )
    size = f"{len(bundle.json_bytes) / 1e6:.1f} MB JSON, {len(bundle.ledger_csv) / 1e6:.1f} MB CSV"
    return [
        Row("json.dumps of the equivalent document", dumps_s, None),
        Row("json.dumps + csv.writer (equivalent)", floor_s, floor_s / dumps_s),
        Row("build_bundle (JSON + CSV)", build_s, build_s / dumps_s, size),
        Row("MessageToDict + json.dumps (scaled)", naive_s, naive_s / dumps_s, "JSON only"),
        Row("build_bundle + make_archive (before)", archives["paged"], archives["paged"] / dumps_s),
        Row(
            "BundleWriter from the stream (since)",
            archives["streamed"],
            archives["streamed"] / dumps_s,
            "JSON lines + CSV in, ZIP out",
        ),
    ]


def _summary(page: pb.MemberLedgerExport) -> pb.MemberLedgerExport:
    """The stream's first message: the page without its transactions, lots and holds."""
    summary = pb.MemberLedgerExport()
    summary.CopyFrom(page)
    for field in ("transactions", "lots", "holds"):
        summary.ClearField(field)
    return summary


def _stream_texts(src: BundleSources, bundle: Bundle) -> list[LedgerText]:
    """What StreamMemberLedger sends for these pages, cut in 1 MiB chunks (PostgreSQL
    renders the same text; the service test compares it byte for byte)."""
    pages = src.ledger_pages
    document = json.loads(bundle.json_bytes)["points"]
    header, _, rows = bundle.ledger_csv.partition(b"\r\n")
    sections = (
        (LedgerSection.TRANSACTIONS_CSV, header + b"\r\n"),  # a chunk of its own, first
        (LedgerSection.TRANSACTIONS_CSV, rows),
        (LedgerSection.TRANSACTIONS_JSON, _json_lines(document["transactions"])),
        (LedgerSection.LOTS_JSON, _json_lines(document["lots"])),
        (LedgerSection.HOLDS_JSON, _json_lines(document["holds"])),
    )
    assert len(document["transactions"]) == sum(len(p.transactions) for p in pages)
    return [
        LedgerText(section, data[start : start + MAX_CHUNK_BYTES])
        for section, data in sections
        for start in range(0, len(data), MAX_CHUNK_BYTES)
    ]


def _json_lines(items: list[Any]) -> bytes:
    return "".join(_dumps(item) + "\n" for item in items).encode()


def _streamed_archive(frame: BundleFrame, texts: list[LedgerText]) -> bytes:
    writer = BundleWriter(frame)
    for text in texts:
        writer.text(text)
    lines = [sum(t.data.count(b"\n") for t in texts if t.section is s) for s in LedgerSection]
    end = LedgerEnd(lines[0], lines[2], lines[3], sum(len(t.data) for t in texts))
    return writer.finish(end)


def table(rows: list[Row]) -> str:
    head = f"{'operation':<40} {'CPU s':>8} {'x dumps':>8}  note"
    lines = [head, "-" * len(head)]
    for r in rows:
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "1.00"
        lines.append(f"{r.name:<40} {r.seconds:>8.3f} {ratio:>8}  {r.note}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Options:
    transactions: int
    rounds: int
    sample: int
    output: Path


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.bench_export_bundle",
        description=(__doc__ or "").split("\n\n")[0],
    )
    parser.add_argument("--transactions", type=int, default=100_000, help="in the bundle")
    parser.add_argument("--rounds", type=int, default=3, help="measured runs; the best counts")
    parser.add_argument("--sample", type=int, default=5_000, help="for MessageToDict")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    args = parser.parse_args(argv)
    if not 1 <= args.transactions <= 1_000_000:
        parser.error("--transactions must be between 1 and 1000000")
    if not 1 <= args.rounds <= 100:
        parser.error("--rounds must be between 1 and 100")
    if not 1 <= args.sample <= PAGE_SIZE:
        parser.error(f"--sample must be between 1 and {PAGE_SIZE}")
    return Options(args.transactions, args.rounds, args.sample, args.output)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    sys.stderr.write(f"building {options.transactions} transactions...\n")
    rows = measure(options)
    print()
    print(
        f"export bundle of {options.transactions} transactions — CPU seconds, best of"
        f" {options.rounds}; reference: json.dumps of the equivalent plain document"
    )
    print()
    print(table(rows))
    report = {
        "benchmark": "export_bundle",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "transactions": options.transactions,
        "rounds": options.rounds,
        "results": [asdict(r) for r in rows],
    }
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwrote {options.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
