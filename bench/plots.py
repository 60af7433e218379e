"""The benchmark's accuracy / latency / size picture: one bubble per model variant."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_lstm.plotting import pyplot, save_figure


def tradeoff_plot(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Macro-F1 against batch-1 latency (log x), bubble area proportional to size on disk.

    `rows` are comparison-table rows (model, runtime, precision, macro_f1, size_bytes,
    latency_ms_b1); rows without a latency are left out.
    """
    plt = pyplot()
    rows = [r for r in rows if r.get("latency_ms_b1")]
    if not rows:
        raise ValueError("no row has a batch-1 latency to plot")
    largest = max(r["size_bytes"] for r in rows)
    fig, ax = plt.subplots(figsize=(9, 6))
    colours = plt.get_cmap("tab10")
    for i, r in enumerate(rows):
        area = 60 + 2400 * r["size_bytes"] / largest
        ax.scatter(
            r["latency_ms_b1"],
            r["macro_f1"],
            s=area,
            alpha=0.55,
            color=colours(i % 10),
            edgecolors="black",
            linewidths=0.5,
            label=f"{r['model']} · {r['runtime']} · {r['precision']} "
            f"({r['size_bytes'] / 1024:.0f} kB)",
        )
    ax.set_xscale("log")
    ax.set_xlabel("latency per window at batch 1, ms (log scale, one thread)")
    ax.set_ylabel("macro-F1 on the test split")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", markerscale=0.4, framealpha=0.8)
    return save_figure(fig, path)
