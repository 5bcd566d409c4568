"""One report over every benchmark of one `make bench` run (not a test).

Reads each benchmark's JSON from --results-dir, writes report.json, report.md (a Markdown
table) and report.png (throughput and p99 latency per operation) there, prints every ratio
against its baseline, and with --readme replaces the README's section between
`<!-- bench:start -->` and `<!-- bench:end -->` (the plot copied under --publish, a
committed path, so the README can show it).

`make bench` touches <results-dir>/.run-started first: a JSON older than that is from an
earlier run (its benchmark failed or was skipped this time) and is left out with a warning
rather than mixed into this run's figures.

    python -m tests.bench.report [--results-dir bench-results] [--readme README.md]
        [--publish docs/bench] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.bench.report_plot import plot
from tests.bench.report_rows import READERS, Row, Section

ROOT = Path(__file__).resolve().parents[2]
STAMP = ".run-started"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


@dataclass(frozen=True)
class Run:
    sections: list[Section]
    warnings: list[str]
    facts: dict[str, Any]

    @property
    def rows(self) -> list[Row]:
        return [row for section in self.sections for row in section.rows]


# --- reading -------------------------------------------------------------------------------


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _read_one(path: Path, stem: str, started: float | None) -> Section | str:
    """The section of one benchmark's JSON, or why it is left out."""
    if not path.is_file():
        return f"{path.name}: missing (the benchmark did not run)"
    mtime = path.stat().st_mtime
    if started is not None and mtime < started:
        return f"{path.name}: from an earlier run ({_iso(mtime)}), left out"
    try:
        data = json.loads(path.read_text())
        section = READERS[stem](data)
    except (ValueError, KeyError, TypeError, IndexError) as error:
        return f"{path.name}: not in the expected shape ({error!r}), left out"
    return replace(section, created_at=str(data.get("created_at") or _iso(mtime)))


def read_run(results_dir: Path) -> tuple[list[Section], list[str]]:
    stamp = results_dir / STAMP
    started = stamp.stat().st_mtime if stamp.is_file() else None
    sections: list[Section] = []
    warnings: list[str] = []
    for stem in READERS:
        outcome = _read_one(results_dir / f"{stem}.json", stem, started)
        if isinstance(outcome, str):
            warnings.append(outcome)
        else:
            sections.append(outcome)
    return sections, warnings


def _commit(repo: Path) -> str:
    """Short commit, `-dirty` when the tree has changes: figures of uncommitted code say so."""
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if status else "")


def facts(sections: list[Section], quick: bool, repo: Path = ROOT) -> dict[str, Any]:
    machine = next((s.machine for s in sections if s.machine), {})
    dates = sorted(s.created_at for s in sections if s.created_at)
    return {
        "date": dates[-1] if dates else "",
        "commit": _commit(repo),
        "cpus": machine.get("cpus_usable") or machine.get("cpu_count"),
        "cpu_model": machine.get("cpu_model", ""),
        "python": machine.get("python", ""),
        "platform": machine.get("platform", ""),
        "mode": "quick" if quick else "full",
        "benchmarks": {s.benchmark: s.created_at for s in sections},
    }


# --- writing -------------------------------------------------------------------------------


def number(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 0.1:
        return f"{value:.2f}"
    return f"{value:.2g}"


def _throughput(row: Row) -> str:
    if row.throughput is None:
        return "—"
    unit = "" if row.unit == "ops/s" else f" {row.unit}"
    return number(row.throughput) + unit


def _target(row: Row) -> str:
    if row.target is None:
        return ""
    return f"{row.target}: {'met' if row.met else '**missed**'}"


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| benchmark | operation | throughput /s | p50 ms | p99 ms | baseline"
        " | × baseline throughput | target |",
        "|---|---|--:|--:|--:|---|--:|---|",
    ]
    for row in rows:
        baseline = "*(baseline)*" if row.is_baseline else row.baseline
        ratio = "1" if row.is_baseline else number(row.ratio)
        lines.append(
            f"| {row.benchmark} | {row.operation} | {_throughput(row)} | {number(row.p50_ms)}"
            f" | {number(row.p99_ms)} | {baseline} | {ratio} | {_target(row)} |"
        )
    return "\n".join(lines)


def when(iso: str) -> str:
    """2026-11-22T16:38:57+00:00 as 2026-11-22 16:38 UTC: what a reader of the README needs."""
    try:
        return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return iso


def facts_line(run: Run) -> str:
    f = run.facts
    mode = (
        "**quick mode** (`make bench-quick`: smoke sizes, not representative)"
        if f["mode"] == "quick"
        else "full run (`make bench`)"
    )
    return (
        f"{mode}; {when(f['date'])}; commit `{f['commit']}`; {f['cpus']} CPUs ({f['cpu_model']}),"
        f" Python {f['python']}, {f['platform']}"
    )


def markdown(run: Run, image: str | None = None) -> str:
    parts = [facts_line(run), "", markdown_table(run.rows)]
    checks = [f"- {s.benchmark}: {c}" for s in run.sections for c in s.checks]
    notes = [f"- {w}" for w in run.warnings]
    if checks:
        parts += ["", "Checked beside speed:", "", *checks]
    if notes:
        parts += ["", "Left out of this report:", "", *notes]
    parts += [
        "",
        "× baseline throughput = the operation's throughput / its baseline's, measured side"
        " by side in the same run (higher is faster; 1 = as fast as the baseline).",
    ]
    if image:
        parts += ["", f"![throughput and p99 latency per operation]({image})"]
    return "\n".join(parts) + "\n"


def report_json(run: Run) -> dict[str, Any]:
    return {
        "facts": run.facts,
        "rows": [{**asdict(row), "is_baseline": row.is_baseline} for row in run.rows],
        "checks": {s.benchmark: s.checks for s in run.sections if s.checks},
        "warnings": run.warnings,
    }


def console(run: Run) -> str:
    """The ratios against their baselines, one line per compared operation."""
    width = max((len(r.operation) for r in run.rows), default=10)
    lines = [facts_line(run).replace("**", "").replace("`", ""), ""]
    for row in run.rows:
        if row.is_baseline:
            continue
        verdict = f"   target {row.target}: {'met' if row.met else 'MISSED'}" if row.target else ""
        lines.append(
            f"{row.benchmark:<13} {row.operation:<{width}} {number(row.ratio):>7}x"
            f"  {row.baseline}{verdict}"
        )
    lines += [f"warning: {w}" for w in run.warnings]
    return "\n".join(lines)


def replace_section(text: str, section: str) -> str:
    """`text` with what lies between the markers replaced by `section`; idempotent."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no {START} ... {END} section")
    return text[: start + len(START)] + "\n" + section.rstrip("\n") + "\n" + text[end:]


def update_readme(readme: Path, run: Run, png: Path) -> None:
    image = os.path.relpath(png, readme.parent)
    new = replace_section(readme.read_text(), markdown(run, image))
    if new != readme.read_text():  # an unchanged file keeps its mtime
        readme.write_text(new)


def write(run: Run, results_dir: Path, readme: Path | None, publish: Path | None) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "report.json").write_text(
        json.dumps(report_json(run), indent=2, ensure_ascii=False) + "\n"
    )
    (results_dir / "report.md").write_text(markdown(run, "report.png"))
    png = results_dir / "report.png"
    f = run.facts
    subtitle = f"{f['mode']} run, {when(f['date'])}, commit {f['commit']}, {f['cpus']} CPUs"
    plot(run.rows, png, subtitle)
    if publish is not None:
        publish.mkdir(parents=True, exist_ok=True)
        png = Path(shutil.copyfile(png, publish / "report.png"))
    if readme is not None:
        update_readme(readme, run, png)
    return png


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.report", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench-results")
    parser.add_argument("--readme", type=Path, help="README to update between the markers")
    parser.add_argument("--publish", type=Path, help="directory for the README's copy of the PNG")
    parser.add_argument("--quick", action="store_true", help="the figures are from quick sizes")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sections, warnings = read_run(args.results_dir)
    if not sections:
        print("\n".join(["no benchmark results to report", *warnings]), file=sys.stderr)
        return 1
    run = Run(sections, warnings, facts(sections, args.quick))
    write(run, args.results_dir, args.readme, args.publish)
    print(console(run))
    print(f"\nwrote {args.results_dir / 'report.json'}, report.md, report.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
