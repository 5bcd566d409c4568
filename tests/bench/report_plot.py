"""The report's plot: throughput and p99 latency per operation, one bar each, side by side.

Agg only: `make bench` runs headless, and importing pyplot without it would pick whatever
backend the machine offers (and may fail with no display).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import Patch

from tests.bench.report_rows import Row

# beyond this spread of values a linear axis shows only the largest bars
LOG_SPREAD = 30.0
LABEL_CHARS = 64
COLOURS = ("#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb")


def _label(row: Row) -> str:
    text = f"{row.benchmark}: {row.operation}"
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def _needs_log(values: list[float]) -> bool:
    positive = [v for v in values if v > 0]
    return len(positive) > 1 and max(positive) / min(positive) > LOG_SPREAD


def _short(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.0f}"
    if value >= 1:
        return f"{value:.1f}"
    return f"{value:.2g}"


def _panel(axes: Axes, rows: list[Row], values: list[float | None], title: str) -> None:
    colours = _benchmark_colours(rows)
    present = [v for v in values if v is not None]
    log = _needs_log(present)
    for y, (row, value) in enumerate(zip(rows, values, strict=True)):
        if value is None or value <= 0:
            # a row without this figure (pgbench latency, CPU-only benchmarks) says so
            axes.text(
                0.005,
                y,
                "n/a",
                va="center",
                fontsize=7,
                color="#888888",
                transform=axes.get_yaxis_transform(),
            )
            continue
        axes.barh(
            y,
            value,
            color=colours[row.benchmark],
            hatch="///" if row.is_baseline else None,
            edgecolor="white" if row.is_baseline else colours[row.benchmark],
            alpha=0.55 if row.is_baseline else 0.95,
        )
        axes.text(value, y, f" {_short(value)}", va="center", fontsize=7)
    if log:
        axes.set_xscale("log")
    if present:  # room on the right for the value labels
        right = max(present) * (4.0 if log else 1.18)
        axes.set_xlim(right=right)
    axes.set_title(title + (" (log scale)" if log else ""), fontsize=10)
    axes.grid(axis="x", which="major", alpha=0.3)
    axes.set_axisbelow(True)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)


def _group_edges(rows: list[Row]) -> list[float]:
    """Between one benchmark's rows and the next's: a rule keeps the groups apart."""
    return [i - 0.5 for i in range(1, len(rows)) if rows[i].benchmark != rows[i - 1].benchmark]


def _benchmark_colours(rows: list[Row]) -> dict[str, str]:
    names = list(dict.fromkeys(r.benchmark for r in rows))
    return {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(names)}


def plot(rows: list[Row], path: Path, subtitle: str) -> None:
    """Writes a PNG: the operations top to bottom in report order, throughput on the left,
    p99 latency on the right; baselines hatched."""
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(14, 2.0 + 0.32 * len(rows)), sharey=True, layout="constrained"
    )
    _panel(left, rows, [r.throughput for r in rows], "throughput per second")
    _panel(right, rows, [r.p99_ms for r in rows], "p99 latency, ms")
    left.set_yticks(range(len(rows)), [_label(r) for r in rows], fontsize=8)
    left.invert_yaxis()  # the first operation on top, as in the table
    for y in _group_edges(rows):
        for axes in (left, right):
            axes.axhline(y, color="#999999", linewidth=0.6)
    colours = _benchmark_colours(rows)
    handles = [Patch(color=c, label=name) for name, c in colours.items()]
    handles.append(Patch(facecolor="#999999", hatch="///", edgecolor="white", label="baseline"))
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8)
    figure.suptitle(f"wallet-membership benchmarks — {subtitle}", fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
