"""The benchmark report (tests/bench/report.py) on small inputs in the shapes the benchmarks
write (trimmed copies of real bench-results/*.json)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.bench import report
from tests.bench.report_rows import READERS

MACHINE = {"cpu_count": 2, "cpus_usable": 2, "cpu_model": "AMD EPYC", "python": "3.11.7"}


def result(
    name: str, throughput: float, p50: float, p99: float, reference: str = "", concurrency: int = 16
) -> dict[str, Any]:
    """tests.bench.common.Result as asdict() writes it."""
    return {
        "name": name,
        "calls": 100,
        "concurrency": concurrency,
        "seconds": 1.0,
        "throughput": throughput,
        "p50_ms": p50,
        "p99_ms": p99,
        "mean_ms": p50,
        "ratio_throughput": None,
        "ratio_p50": None,
        "reference": reference,
        "note": "",
    }


EMPTY = "empty gRPC call (Health/Check)"
RAW = "raw AES-GCM, 3 fields"
ACCOUNTS: dict[str, Any] = {
    "benchmark": "accounts",
    "created_at": "2026-11-22T09:00:51+00:00",
    "machine": MACHINE,
    "baseline": EMPTY,
    "results": [
        result(EMPTY, 1000.0, 12.0, 20.0),
        result("RegisterMember", 100.0, 160.0, 340.0, EMPTY),
    ],
    "encrypt_fields_one_in_flight": result(
        "EncryptFields, 3 fields, 1 in flight", 300.0, 2.7, 6.2, RAW, 1
    ),
    "raw_aesgcm": result(RAW, 120000.0, 0.007, 0.013, concurrency=1),
    "encrypt_fields_vs_raw_aesgcm": {"throughput_ratio": 217.3, "p50_ratio_one_in_flight": 391.2},
}


def _round_load(name: str, throughput: float, p50: float, p99: float) -> dict[str, Any]:
    return result(name, throughput, p50, p99, concurrency=32)


SETTLEMENT: dict[str, Any] = {
    "benchmark": "settlement",
    "created_at": "2026-11-22T09:05:00+00:00",
    "rounds": [
        {
            "pgbench_tps": 1500.0,
            "noop": _round_load("health Check", 2000.0, 15.0, 27.0),
            "single": _round_load("SettlePayment", 690.0, 44.0, 93.0),
            "batch": _round_load("SettlePayments (batches of 100)", 2400.0, 166.0, 284.0),
            "cpu_us": {"noop": {"service": 516.0, "postgres": 0.5, "callers": 1.0, "total": 2.0}},
        }
    ],
    "median": {
        "pgbench_tps": 1500.0,
        "noop_per_s": 2000.0,
        "single_per_s": 690.0,
        "batch_per_s": 2400.0,
        "noop_ratio": 1.333,
        "single_ratio": 0.46,
        "batch_ratio": 1.6,
    },
    "targets": {"single_ratio": 0.5, "batch_ratio": 5.0},
    "reconcile": {"ok": True, "violations": 0, "transactions": 1234},
    "machine": MACHINE,
    "settings": {"single_callers": 32, "batch_callers": 4, "batch_size": 100, "pgbench_clients": 8},
    "preloaded_ledger_rows": 0,
}

GETBAL = "GetBalance (same member)"
GETBAL_5 = "GetBalance (5-txn members)"
PRIVACY: dict[str, Any] = {
    "benchmark": "privacy",
    "created_at": "2026-11-22T09:10:00+00:00",
    "machine": MACHINE,
    "access": {"target_s": 2.0, "completed_median_s": 16.6, "ratio_to_get_balance_p50": 1419.2},
    "deletion": {
        "target_s": 0.2,
        "median_s": 0.043,
        "p95_s": 0.062,
        "completed_within_call": 3,
        "outcomes": ["DELETION_OUTCOME_RETAINED_RESTRICTED"] * 3,
    },
    "consent": {"ratio_throughput_to_empty_rpc": 2.23},
    "results": [
        result(GETBAL, 87.4, 11.7, 18.1, concurrency=1),
        result("ACCESS approve -> COMPLETED", 0.057, 16613.0, 19263.0, GETBAL, 1),
        result(GETBAL_5, 406.8, 2.27, 5.68, concurrency=1),
        result("DELETION approve -> COMPLETED (5 txns)", 20.2, 43.2, 138.5, GETBAL_5, 1),
    ],
    "throughput_baseline": "empty RPC (Health/Check)",
    "throughput_results": [
        result("empty RPC (Health/Check)", 1196.7, 24.7, 59.9, concurrency=32),
        result("CheckConsent", 536.9, 57.6, 89.0, "empty RPC (Health/Check)", 32),
    ],
}


def _gateway_median(throughput: float, ratio: float) -> dict[str, float]:
    return {"throughput": throughput, "p50_ms": 30.0, "p99_ms": 80.0, "ratio": ratio}


GATEWAY: dict[str, Any] = {
    "benchmark": "gateway",
    "created_at": "2026-11-22T09:20:00+00:00",
    "rounds": [
        {
            "direct": result("SettlePayment direct (points gRPC)", 500.0, 29.0, 75.0),
            "passthrough": result("SettlePayment gateway gRPC pass-through", 374.0, 40.0, 81.0),
            "rest": result("SettlePayment gateway REST", 380.0, 40.0, 84.0),
            "noop": result("health Check direct (no-op)", 2000.0, 7.0, 16.0),
            "cpu_us": {},
        }
    ],
    "median": {
        "direct": _gateway_median(500.0, 1.0),
        "passthrough": _gateway_median(374.0, 0.745),
        "rest": _gateway_median(380.0, 0.798),
        "noop": _gateway_median(2000.0, 3.855),
    },
    "targets": {"passthrough": 0.8, "rest": 0.5},
    "verdicts": {"passthrough": "MISSED", "rest": "met"},
    "settings": {"callers": 16, "rounds": 1, "seconds": 5.0, "warmup_s": 2.0, "members": 200},
    "machine": MACHINE,
}

EXPORT_BUNDLE: dict[str, Any] = {
    "benchmark": "export_bundle",
    "created_at": "2026-11-22T09:15:00+00:00",
    "machine": MACHINE,
    "transactions": 1000,
    "rounds": 1,
    "results": [
        {
            "name": "json.dumps of the equivalent document",
            "seconds": 0.5,
            "ratio": None,
            "note": "",
        },
        {"name": "build_bundle (JSON + CSV)", "seconds": 1.0, "ratio": 2.0, "note": ""},
    ],
}

NONE = "settlement batch, no campaigns"
CAMPAIGNS = {
    "created_at": "2026-11-22T09:12:00+00:00",
    "machine": MACHINE,
    "ratio": 0.92,
    "stacked_ratio": 0.7,
    "goal": 0.9,
    "results": [
        result(NONE, 8000, 40, 60, concurrency=4),
        result(
            "settlement batch, 20 campaigns (10 reach the load, 1-3 per payment)",
            7360,
            44,
            66,
            NONE,
            4,
        ),
        result(
            "settlement batch, 20 campaigns (10 stacked on every payment)", 5600, 55, 80, NONE, 4
        ),
    ],
    "quote": {
        "ratio": 0.64,
        "goal": 0.5,
        "met": True,
        "balance": result("balance", 3000, 5, 9),
        "quote": result("quote", 1920, 8, 14),
    },
}
INPUTS = {
    "accounts": ACCOUNTS,
    "settlement": SETTLEMENT,
    "privacy": PRIVACY,
    "export_bundle": EXPORT_BUNDLE,
    "gateway": GATEWAY,
    "campaigns": CAMPAIGNS,
}
README = (
    "# project\n\nintro\n\n## Benchmarks\n\nprose\n\n"
    "<!-- bench:start -->\nold\n<!-- bench:end -->\n\n## After\n\nkept\n"
)


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "bench-results"
    directory.mkdir()
    for stem, data in INPUTS.items():
        (directory / f"{stem}.json").write_text(json.dumps(data))
    return directory


def _run(results_dir: Path, readme: Path, publish: Path) -> None:
    argv = ["--results-dir", str(results_dir), "--readme", str(readme), "--publish", str(publish)]
    assert report.main(argv) == 0


def test_every_benchmark_has_an_input() -> None:
    assert set(INPUTS) == set(READERS)


def test_writes_json_markdown_and_png(results_dir: Path, tmp_path: Path) -> None:
    readme, publish = tmp_path / "README.md", tmp_path / "docs" / "bench"
    readme.write_text(README)
    _run(results_dir, readme, publish)

    rows = json.loads((results_dir / "report.json").read_text())["rows"]
    by_op = {(r["benchmark"], r["operation"]): r for r in rows}
    register = by_op["accounts", "RegisterMember (16 in flight)"]
    assert register["baseline"] == EMPTY
    assert register["ratio"] == pytest.approx(0.1)
    assert by_op["accounts", RAW]["is_baseline"]
    single = by_op["settlement", "SettlePayment (32 callers)"]
    assert (single["ratio"], single["met"], single["target"]) == (0.46, False, "≥ 0.5x pgbench")
    rest = by_op["gateway", "SettlePayment gateway REST (16 callers)"]
    assert (rest["ratio"], rest["met"]) == (0.798, True)  # the benchmark's own median ratio
    deletion = by_op["privacy", "DELETION approve -> COMPLETED (5 txns)"]
    assert (deletion["met"], deletion["baseline"]) == (True, "GetBalance (5-txn members)")
    assert by_op["privacy", "ACCESS approve -> COMPLETED"]["met"] is False
    build = by_op["export_bundle", "build_bundle (JSON + CSV)"]
    assert (build["throughput"], build["ratio"]) == (1000.0, 0.5)

    table = (results_dir / "report.md").read_text()
    assert "| benchmark | operation | throughput /s |" in table
    assert "| settlement | SettlePayment (32 callers) | 690 settlements/s | 44.0 | 93.0 |" in table
    assert "≥ 0.8x direct: **missed**" in table
    assert "2 CPUs (AMD EPYC)" in table
    for png in (results_dir / "report.png", publish / "report.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_readme_section_replaced_idempotently(results_dir: Path, tmp_path: Path) -> None:
    readme, publish = tmp_path / "README.md", tmp_path / "docs" / "bench"
    readme.write_text(README)
    _run(results_dir, readme, publish)
    once = readme.read_text()
    _run(results_dir, readme, publish)
    assert readme.read_text() == once
    before, rest = once.split("<!-- bench:start -->\n")
    section, after = rest.split("<!-- bench:end -->")
    assert before == README.split("<!-- bench:start -->", maxsplit=1)[0]
    assert after == "\n\n## After\n\nkept\n"
    assert "old" not in section
    assert "![throughput and p99 latency per operation](docs/bench/report.png)" in section
    assert "| gateway | SettlePayment direct (points gRPC) (16 callers) |" in section
    assert "2026-11-22 09:20 UTC" in section  # the run's date: its latest result


def test_readme_without_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="bench:start"):
        report.replace_section("# no markers\n", "table")


def test_results_of_an_earlier_run_are_left_out(results_dir: Path) -> None:
    # `make bench` touches the stamp first; gateway.json is older: an earlier run's
    stamp = results_dir / report.STAMP
    stamp.touch()
    started = (results_dir / "accounts.json").stat().st_mtime - 30
    os.utime(stamp, (started, started))
    os.utime(results_dir / "gateway.json", (started - 30, started - 30))
    (results_dir / "privacy.json").unlink()
    sections, warnings = report.read_run(results_dir)
    assert [s.benchmark for s in sections] == [
        "accounts",
        "settlement",
        "export_bundle",
        "campaigns",
    ]
    assert any(w.startswith("gateway.json: from an earlier run") for w in warnings)
    assert any(w.startswith("privacy.json: missing") for w in warnings)


def test_no_results_fails(tmp_path: Path) -> None:
    assert report.main(["--results-dir", str(tmp_path)]) == 1


def test_the_batch_statements_alone_are_a_row_of_settlement_when_measured() -> None:
    rounds = [{**SETTLEMENT["rounds"][0], "sql_only": _round_load("SQL", 4800.0, 60.0, 90.0)}]
    median = {**SETTLEMENT["median"], "sql_only_per_s": 4800.0, "sql_only_ratio": 3.2}
    section = READERS["settlement"]({**SETTLEMENT, "rounds": rounds, "median": median})
    floor = section.rows[-1]
    assert floor.operation == "the same batches' statements alone, batches of 100 (4 callers)"
    assert (floor.throughput, floor.ratio, floor.baseline) == (4800.0, 3.2, "pgbench")
    # a result from before the row existed still reads
    assert len(READERS["settlement"](SETTLEMENT).rows) == 4


def test_campaigns_carry_the_mixed_goal_and_show_the_stacked_cost() -> None:
    section = READERS["campaigns"](CAMPAIGNS)
    base, mixed, stacked, balance, quote = section.rows
    assert base.is_baseline
    assert (mixed.ratio, mixed.met, mixed.target) == (0.92, True, "≥ 0.9x none")
    assert (stacked.ratio, stacked.met) == (0.7, None)
    assert "no goal" in stacked.note
    assert balance.is_baseline and (quote.ratio, quote.met) == (0.64, True)
