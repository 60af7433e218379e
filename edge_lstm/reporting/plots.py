"""The demo report's PNGs beside the confusion matrices: detection delay and gateway latency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_lstm.plotting import pyplot, save_figure
from edge_lstm.reporting.sensor_time import SECONDS, TimeUnit


def plot_delays(table: list[dict[str, Any]], path: Path, unit: TimeUnit = SECONDS) -> Path:
    """Median detection delay per class with min–max whiskers, in `unit`; missed runs
    annotated."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.45 * max(len(table), 3) + 1.5))
    names = [row["class"] for row in table]

    def at(row: dict[str, Any], key: str) -> float:
        return (row[key] or 0.0) / unit.seconds

    med = [at(row, "median_s") for row in table]
    lo = [at(row, "median_s") - at(row, "min_s") for row in table]
    hi = [at(row, "max_s") - at(row, "median_s") for row in table]
    y = np.arange(len(table))
    ax.barh(y, med, xerr=[lo, hi], color="#4c72b0", capsize=3)
    for i, row in enumerate(table):
        ax.text(
            at(row, "max_s"),
            i,
            f"   {row['detected']}/{row['runs']} detected",
            va="center",
            fontsize=8,
        )
    ax.margins(x=0.15)
    ax.set_yticks(y, labels=names)
    ax.invert_yaxis()
    ax.set_xlabel(f"{unit.word} from fault onset to the first correct alert (sensor time)")
    ax.set_title("Detection delay per fault class (median, min–max)")
    return save_figure(fig, path)


def plot_latency(latency: dict[str, dict[str, float] | None], path: Path) -> Path:
    """p50/p95/p99/max per runtime stage (log scale: stages differ by orders of magnitude)."""
    plt = pyplot()
    stages = [s for s, v in latency.items() if v]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.2
    x = np.arange(len(stages))
    for k, q in enumerate(("p50", "p95", "p99", "max")):
        ax.bar(x + (k - 1.5) * width, [latency[s][q] for s in stages], width, label=q)
    ax.set_xticks(x, labels=[s.replace("_", " ") for s in stages])
    ax.set_yscale("log")
    ax.set_ylabel("milliseconds")
    ax.set_title("Gateway latency per stage (live demo)")
    ax.legend()
    return save_figure(fig, path)
