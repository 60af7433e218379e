"""Splits runs (never windows) into train/val/test, stratified by each run's fault class."""

from __future__ import annotations

from collections import Counter

import numpy as np

from edge_lstm.config import SplitConfig
from edge_lstm.errors import DataError

SPLITS = ("train", "val", "test")


def run_class(labels: list[str] | np.ndarray, normal: str) -> str:
    """A run's class: its most frequent fault label, or the normal class if it has none."""
    faults = Counter(str(v) for v in labels if str(v) != normal)
    return faults.most_common(1)[0][0] if faults else normal


def _counts(n: int, fractions: SplitConfig) -> tuple[int, int, int]:
    """(train, val, test) run counts for a class of n runs; train keeps at least one run."""
    if n == 1:
        return 1, 0, 0
    n_test = max(1, round(n * fractions.test))
    n_val = max(1, round(n * fractions.val)) if fractions.val > 0 and n >= 3 else 0
    while n - n_test - n_val < 1:
        if n_val and n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n - n_val - n_test, n_val, n_test


def split_runs(
    classes_of_runs: dict[str, str], fractions: SplitConfig, seed: int
) -> dict[str, list[str]]:
    """Assigns every run to one split, per class, shuffled deterministically by `seed`."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[str]] = {}
    for run, cls in classes_of_runs.items():
        by_class.setdefault(cls, []).append(run)
    out: dict[str, list[str]] = {name: [] for name in SPLITS}
    for cls in sorted(by_class):
        runs = sorted(by_class[cls])
        order = [runs[i] for i in rng.permutation(len(runs))]
        n_train, n_val, _ = _counts(len(runs), fractions)
        out["train"] += order[:n_train]
        out["val"] += order[n_train : n_train + n_val]
        out["test"] += order[n_train + n_val :]
    needed = [name for name in SPLITS if not out[name] and (name != "val" or fractions.val > 0)]
    if needed:
        sizes = ", ".join(f"{cls}: {len(runs)}" for cls, runs in sorted(by_class.items()))
        raise DataError(
            f"too few runs to fill the {'/'.join(needed)} split(s) (runs per class: {sizes}); "
            "splits are made by run, so each class needs at least 3 runs, or record more runs"
        )
    return {name: sorted(runs) for name, runs in out.items()}
