"""The benchmarks' JSON, each in its own shape, as one kind of row for the report.

Every ratio here is `throughput / baseline throughput` (higher is better, 1.0 = as fast as
the baseline) whatever the benchmark printed itself: the accounts and privacy tables print
"x slower" (the inverse), settlement and gateway print this one. One direction in one table
keeps the targets readable (settlement's "≥ 0.5x pgbench", the gateway's "≥ 0.8x direct").
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

Json = dict[str, Any]


@dataclass(frozen=True)
class Row:
    benchmark: str
    operation: str
    throughput: float | None  # per second, in `unit`
    p50_ms: float | None
    p99_ms: float | None
    baseline: str | None = None  # None: this row is a baseline of its benchmark
    ratio: float | None = None  # throughput / the baseline's throughput
    p50_ratio: float | None = None  # p50 / the baseline's p50
    target: str | None = None
    met: bool | None = None
    unit: str = "ops/s"
    note: str = ""

    @property
    def is_baseline(self) -> bool:
        return self.baseline is None


@dataclass(frozen=True)
class Section:
    """One benchmark's rows plus what it checked beside speed (e.g. Reconcile)."""

    benchmark: str
    rows: list[Row]
    checks: list[str] = field(default_factory=list)
    machine: Json = field(default_factory=dict)
    created_at: str = ""


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def related(row: Row, baseline: Row, name: str | None = None) -> Row:
    """`row` compared with `baseline` (called `name` in the table, if shorter)."""
    return replace(
        row,
        baseline=name or baseline.operation,
        ratio=_div(row.throughput, baseline.throughput),
        p50_ratio=_div(row.p50_ms, baseline.p50_ms),
    )


def at_least(row: Row, target: float, baseline_short: str) -> Row:
    """A throughput target as a ratio to the baseline."""
    met = None if row.ratio is None else row.ratio >= target
    return replace(row, target=f"≥ {target:g}x {baseline_short}", met=met)


def _result_row(benchmark: str, result: Json, operation: str | None = None) -> Row:
    """A row from tests.bench.common.Result as asdict() wrote it."""
    concurrency = result.get("concurrency")
    suffix = f" ({concurrency} in flight)" if concurrency and concurrency > 1 else ""
    name = operation or str(result["name"])
    if "in flight" in name:  # the benchmark already says so
        suffix = ""
    return Row(
        benchmark=benchmark,
        operation=name + suffix,
        throughput=float(result["throughput"]),
        p50_ms=float(result["p50_ms"]),
        p99_ms=float(result["p99_ms"]),
        note=str(result.get("note", "")),
    )


def _results_rows(benchmark: str, results: Iterable[Json]) -> list[Row]:
    """Results that name their reference (`reference`), related to it; the rest baselines."""
    results = list(results)
    by_name = {str(r["name"]): _result_row(benchmark, r) for r in results}
    rows = []
    for result in results:
        row = by_name[str(result["name"])]
        name = str(result.get("reference") or "")
        reference = by_name.get(name)
        rows.append(related(row, reference, name) if reference else row)
    return rows


# --- one function per benchmark's JSON -----------------------------------------------------


def accounts(data: Json) -> Section:
    rows = _results_rows("accounts", data["results"])
    rows += _results_rows("accounts", [data["raw_aesgcm"], data["encrypt_fields_one_in_flight"]])
    return Section("accounts", rows, machine=data.get("machine", {}))


def _at_most(row: Row, value_s: float, target_s: float, what: str) -> Row:
    return replace(row, target=f"{what} ≤ {target_s * 1000:g} ms", met=value_s <= target_s)


def privacy(data: Json) -> Section:
    rows = _results_rows("privacy", [*data["results"], *data["throughput_results"]])
    access, deletion = data["access"], data["deletion"]

    def target(row: Row) -> Row:
        if row.operation.startswith("ACCESS approve -> COMPLETED"):
            return _at_most(row, access["completed_median_s"], access["target_s"], "median")
        if row.operation.startswith("DELETION approve"):
            return _at_most(row, deletion["p95_s"], deletion["target_s"], "p95")
        return row

    checks = [
        f"DELETION: {deletion['completed_within_call']} of {len(deletion['outcomes'])}"
        " completed within the approving call"
    ]
    return Section("privacy", [target(r) for r in rows], checks, data.get("machine", {}))


def _median_of_rounds(rounds: list[Json], load: str, key: str) -> float:
    return float(statistics.median(r[load][key] for r in rounds))


def settlement(data: Json) -> Section:
    median, rounds, settings = data["median"], data["rounds"], data["settings"]
    targets = data.get("targets", {})
    pgbench = Row(
        "settlement",
        f"pgbench -M prepared tpcb-like ({settings['pgbench_clients']} clients)",
        float(median["pgbench_tps"]),
        None,  # pgbench's own latency is not recorded by the benchmark
        None,
        unit="transactions/s",
    )

    def load(key: str, operation: str, per_second: str, unit: str = "ops/s") -> Row:
        row = Row(
            "settlement",
            operation,
            float(median[per_second]),
            _median_of_rounds(rounds, key, "p50_ms"),
            _median_of_rounds(rounds, key, "p99_ms"),
            unit=unit,
        )
        # the benchmark's own ratio: the median of ratios, which its verdict uses
        return replace(related(row, pgbench, "pgbench"), ratio=float(median[f"{key}_ratio"]))

    noop = load("noop", f"health Check no-op ({settings['single_callers']} callers)", "noop_per_s")
    single = load(
        "single",
        f"SettlePayment ({settings['single_callers']} callers)",
        "single_per_s",
        "settlements/s",
    )
    batches = f"batches of {settings['batch_size']} ({settings['batch_callers']} callers)"
    batch = load(
        "batch",
        f"SettlePayments, {batches}",
        "batch_per_s",
        "settlements/s",
    )
    batch = replace(batch, note="latency is per batch call")
    rows_floor = []
    if "sql_only_per_s" in median:  # since 2026-12-07 (issue 14)
        floor = load(
            "sql_only",
            f"the same batches' statements alone, {batches}",
            "sql_only_per_s",
            "settlements/s",
        )
        rows_floor = [replace(floor, note="the database floor of SettlePayments: no service")]
    if "single_ratio" in targets:
        single = at_least(single, float(targets["single_ratio"]), "pgbench")
    if "batch_ratio" in targets:
        batch = at_least(batch, float(targets["batch_ratio"]), "pgbench")
    reconcile = data.get("reconcile", {})
    checks = [
        f"Reconcile after the load: ok={reconcile.get('ok')},"
        f" {reconcile.get('violations')} violation(s) over"
        f" {reconcile.get('transactions', 0):,} transactions"
    ]
    rows = [pgbench, noop, single, batch, *rows_floor]
    return Section("settlement", rows, checks, data.get("machine", {}))


GATEWAY_LOADS = ("direct", "passthrough", "rest", "noop")


def gateway(data: Json) -> Section:
    median, first = data["median"], data["rounds"][0]
    callers = data.get("settings", {}).get("callers")
    suffix = f" ({callers} callers)" if callers else ""
    rows = {
        load: Row(
            "gateway",
            str(first[load]["name"]) + suffix,
            float(median[load]["throughput"]),
            float(median[load]["p50_ms"]),
            float(median[load]["p99_ms"]),
        )
        for load in GATEWAY_LOADS
    }
    direct = rows.pop("direct")
    for load, row in rows.items():
        # the benchmark's own ratio (median of the rounds' ratios), which its verdicts use
        rows[load] = replace(
            related(row, direct, "SettlePayment direct"), ratio=float(median[load]["ratio"])
        )
    for load, target in data.get("targets", {}).items():
        rows[load] = at_least(rows[load], float(target), "direct")
    rows["noop"] = replace(rows["noop"], note="the ceiling on this machine")
    return Section("gateway", [direct, *rows.values()], machine=data.get("machine", {}))


def export_bundle(data: Json) -> Section:
    """CPU seconds of one bundle, best of the rounds: throughput in transactions per CPU
    second; no latency distribution (one bundle per round)."""
    transactions = int(data["transactions"])
    results = data["results"]
    reference = results[0]  # the benchmark's reference comes first (ratio None)
    base = Row(
        "export_bundle",
        str(reference["name"]),
        transactions / reference["seconds"],
        None,
        None,
        unit="transactions/CPU s",
        note=f"{reference['seconds']:.3f} CPU s per bundle",
    )
    rows = [base]
    for result in results[1:]:
        row = Row(
            "export_bundle",
            str(result["name"]),
            transactions / result["seconds"],
            None,
            None,
            unit="transactions/CPU s",
            note=f"{result['seconds']:.3f} CPU s per bundle",
        )
        rows.append(related(row, base))
    return Section("export_bundle", rows, machine=data.get("machine", {}))


# file stem -> its reader, in the order of the report (and of `make bench`)
def campaigns(data: Json) -> Section:
    """Settlement batches with campaigns against none (tests/bench/bench_campaigns.py): the
    mixed program carries the goal, the stacked one shows the cost per award."""
    rows = _results_rows("campaigns", data["results"])
    goal = float(data.get("goal", 0.9))
    rows = [
        replace(at_least(row, goal, "none"), ratio=float(data["ratio"]))
        if "1-3 per payment" in row.operation
        else (
            replace(row, ratio=float(data["stacked_ratio"]), note="no goal: 10 awards per payment")
            if "stacked" in row.operation
            else row
        )
        for row in rows
    ]
    if rows and rows[1].ratio is not None:
        rows[1] = replace(rows[1], met=rows[1].ratio >= goal)
    quote = data.get("quote")
    if quote:
        balance = _result_row("campaigns", quote["balance"], "GetBalance (use case)")
        quoted = _result_row("campaigns", quote["quote"], "QuoteCheckout (use case)")
        quoted = replace(related(quoted, balance, "GetBalance"), ratio=float(quote["ratio"]))
        rows += [balance, at_least(quoted, float(quote["goal"]), "GetBalance")]
    return Section("campaigns", rows, machine=data.get("machine", {}))


READERS: dict[str, Callable[[Json], Section]] = {
    "accounts": accounts,
    "settlement": settlement,
    "privacy": privacy,
    "export_bundle": export_bundle,
    "gateway": gateway,
    "campaigns": campaigns,
}
