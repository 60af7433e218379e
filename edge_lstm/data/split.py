"""Splits runs (never windows) into train/val/test by fractions, stratified by each run's fault
class, optionally keeping every group (device, asset) of runs whole in one split."""

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


def _needed(fractions: SplitConfig) -> list[str]:
    """The splits a fraction split must fill: all but val when its fraction is 0."""
    return [name for name in SPLITS if name != "val" or fractions.val > 0]


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
    needed = [name for name in _needed(fractions) if not out[name]]
    if needed:
        sizes = ", ".join(f"{cls}: {len(runs)}" for cls, runs in sorted(by_class.items()))
        raise DataError(
            f"too few runs to fill the {'/'.join(needed)} split(s) (runs per class: {sizes}); "
            "splits are made by run, so each class needs at least 3 runs, or record more runs"
        )
    return {name: sorted(runs) for name, runs in out.items()}


def split_groups(
    classes_of_runs: dict[str, str],
    groups_of_runs: dict[str, str],
    fractions: SplitConfig,
    seed: int,
) -> dict[str, list[str]]:
    """Assigns every group of runs, whole, to one split, keeping each class near its fractions.

    Greedy, largest group first (ties in a `seed`-shuffled order): a group goes to the split
    where it brings the per-class run counts closest to fractions × class totals (squared
    deviation, each class scaled by its total), except that once only as many groups are left
    as needed splits are still empty, each goes to an empty split. How close the classes come
    to their fractions depends on how the classes spread over the groups.
    """
    classes = sorted(set(classes_of_runs.values()))
    members: dict[str, list[str]] = {}
    for run, group in groups_of_runs.items():
        members.setdefault(group, []).append(run)
    names = sorted(members)
    needed = [SPLITS.index(name) for name in _needed(fractions)]
    if len(names) < len(needed):
        raise DataError(
            f"{len(names)} group(s) cannot fill the {'/'.join(_needed(fractions))} splits: "
            "a group (data.group_column) stays in one split; record runs of more groups"
        )
    counts = np.zeros((len(names), len(classes)))
    for i, group in enumerate(names):
        for run in members[group]:
            counts[i, classes.index(classes_of_runs[run])] += 1
    shares = np.array([fractions.train, fractions.val, fractions.test])
    totals = counts.sum(axis=0)
    target = shares[:, None] * totals
    tie = np.random.default_rng(seed).permutation(len(names))
    order = sorted(range(len(names)), key=lambda i: (-counts[i].sum(), tie[i]))
    taken = np.zeros_like(target)
    chosen: dict[int, list[int]] = {k: [] for k in range(len(SPLITS))}
    for position, i in enumerate(order):
        empty = [k for k in needed if not chosen[k]]
        candidates = empty if len(order) - position <= len(empty) else needed
        costs = []
        for k in candidates:
            trial = taken.copy()
            trial[k] += counts[i]
            costs.append((((trial - target) ** 2) / totals).sum())
        k = candidates[int(np.argmin(costs))]
        taken[k] += counts[i]
        chosen[k].append(i)
    return {
        name: sorted(run for i in chosen[k] for run in members[names[i]])
        for k, name in enumerate(SPLITS)
    }
