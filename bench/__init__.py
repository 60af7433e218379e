"""Benchmarks (`make bench`): each module's `run(runs_dir, quick) -> dict` measures one thing
against a baseline taken in the same run; `python -m bench.run` runs them all. Not benchmarks:
`run`, `plots`, `common` (what the gateway benchmarks share) and `bare_subscriber` (the
throughput baseline's process); the gateway itself is driven through
edge_lstm/reporting/gateway_harness.py.

Figures are reported as `summarize(samples)`: the median of repeated runs with min and max.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def summarize(samples: Sequence[float]) -> dict[str, float | int]:
    """Median, min and max of repeated measurements (and how many there were)."""
    if not samples:
        raise ValueError("summarize() needs at least one sample")
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "n": len(samples),
    }
