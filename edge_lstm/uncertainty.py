"""How far a figure can be trusted: run-level bootstrap intervals, mean ± sd over seeds, and
printing a figure with no more decimals than its uncertainty supports.

Windows of one run overlap and share the run's device and fault, so they are not independent
samples: the bootstrap resamples whole runs. It works on per-run confusion matrices, so one
resample costs a sum, not a re-scoring.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edge_lstm.errors import EdgeLstmError

LEVEL = 0.95
N_BOOT = 2000


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided `level` interval from `n_boot` resamples of `units`."""

    estimate: float
    low: float
    high: float
    level: float = LEVEL
    n_boot: int = N_BOOT
    units: int = 0  # the number of runs resampled

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        """`0.993 (95% CI 0.985–0.998, 27 runs)`, decimals from the interval's half-width."""
        d = decimals_for((self.high - self.low) / 2, least=2)
        return (
            f"{self.estimate:.{d}f} ({self.level:.0%} CI {self.low:.{d}f}–{self.high:.{d}f}, "
            f"{self.units} runs)"
        )


@dataclass(frozen=True)
class SeedSummary:
    """A figure measured once per seed: the values, their mean and sample sd (0 for one seed),
    and a Student-t interval for the mean (None for one seed)."""

    values: tuple[float, ...]
    mean: float
    sd: float
    low: float | None
    high: float | None
    level: float = LEVEL

    @property
    def n(self) -> int:
        return len(self.values)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "n": self.n}

    def text(self) -> str:
        """`0.991 ± 0.003 (3 seeds)`; one seed says so instead of showing an sd of 0."""
        if self.n == 1:
            return f"{self.mean:.4f} (1 seed: no spread measured)"
        d = decimals_for(self.sd)
        return f"{self.mean:.{d}f} ± {self.sd:.{d}f} ({self.n} seeds)"


def decimals_for(uncertainty: float, most: int = 4, least: int = 1) -> int:
    """Decimals that show the first significant digit of `uncertainty` (`least` to `most`)."""
    if not math.isfinite(uncertainty) or uncertainty <= 0:
        return most
    return int(min(most, max(least, -math.floor(math.log10(uncertainty)))))


def summarize_seeds(values: Sequence[float], level: float = LEVEL) -> SeedSummary:
    """Mean, sample sd and t-interval of a figure over seeds."""
    from scipy import stats

    vals = tuple(float(v) for v in values)
    if not vals:
        raise EdgeLstmError("no per-seed values to summarize")
    mean = float(np.mean(vals))
    if len(vals) == 1:
        return SeedSummary(vals, mean, 0.0, None, None, level)
    sd = float(np.std(vals, ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, len(vals) - 1)) * sd / math.sqrt(len(vals))
    return SeedSummary(vals, mean, sd, mean - half, mean + half, level)


def confusion_by_run(
    labels: np.ndarray, pred: np.ndarray, run_ids: np.ndarray, n_classes: int
) -> tuple[np.ndarray, list[str]]:
    """Confusion matrices [R, C, C] (true × predicted) of each run, and the runs' ids."""
    labels, pred = np.asarray(labels, np.int64), np.asarray(pred, np.int64)
    runs, run_index = np.unique(np.asarray(run_ids).astype(str), return_inverse=True)
    if labels.shape != pred.shape or labels.shape != run_index.shape:
        raise EdgeLstmError(
            f"labels, predictions and run ids must have one entry per window, got "
            f"{labels.shape}, {pred.shape} and {run_index.shape}"
        )
    flat = (run_index * n_classes + labels) * n_classes + pred
    counts = np.bincount(flat, minlength=len(runs) * n_classes * n_classes)
    return counts.reshape(len(runs), n_classes, n_classes), [str(r) for r in runs]


def accuracy_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Accuracy of each confusion matrix in a stack [..., C, C]."""
    total = cm.sum(axis=(-2, -1))
    return np.trace(cm, axis1=-2, axis2=-1) / np.maximum(total, 1)


def macro_f1_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Macro-F1 of each confusion matrix in a stack [..., C, C], averaged over the classes that
    occur in the labels or the predictions (scikit-learn's `f1_score(average="macro")`)."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(np.float64)
    true = cm.sum(axis=-1).astype(np.float64)
    predicted = cm.sum(axis=-2).astype(np.float64)
    denominator = true + predicted
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    present = denominator > 0
    return f1.sum(axis=-1) / np.maximum(present.sum(axis=-1), 1)


METRICS_FROM_CONFUSION = {"accuracy": accuracy_from_confusion, "macro_f1": macro_f1_from_confusion}


def run_strata(per_run: np.ndarray) -> np.ndarray:
    """Each run's class from its confusion matrix: its most frequent fault label, or class 0
    (the normal class) for a run without one — the rule the split stratifies by."""
    true = per_run.sum(axis=2)
    faults = true[:, 1:]
    return np.where(faults.sum(axis=1) > 0, faults.argmax(axis=1) + 1, 0)


def resample_weights(strata: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, R] counts of each run in each resample: runs drawn with replacement within
    their stratum, so every resample keeps the split's runs per class."""
    rng = np.random.default_rng(seed)
    weights = np.zeros((n_boot, len(strata)), dtype=np.int64)
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        draws = rng.multinomial(len(members), np.full(len(members), 1 / len(members)), n_boot)
        weights[:, members] = draws
    return weights


def _resampled_confusions(
    labels: np.ndarray,
    preds: Sequence[np.ndarray],
    run_ids: np.ndarray,
    n_classes: int,
    n_boot: int,
    seed: int,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], int]:
    """For each prediction array: the confusion matrix of all runs [C, C] and of each resample
    [n_boot, C, C], and the number of runs. The resamples are drawn once, from the labels, and
    shared, so figures of several models on the same windows are paired."""
    per_run = [confusion_by_run(labels, pred, run_ids, n_classes) for pred in preds]
    runs = per_run[0][1]
    if not runs:
        raise EdgeLstmError("no windows to bootstrap (the split is empty)")
    weights = resample_weights(run_strata(per_run[0][0]), n_boot, seed)
    confusions = [(cm.sum(axis=0), np.einsum("br,rij->bij", weights, cm)) for cm, _ in per_run]
    return confusions, len(runs)


def _percentile_interval(
    estimate: float, resampled: np.ndarray, level: float, units: int
) -> Interval:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(resampled, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high), level, len(resampled), units)


def run_bootstrap(
    labels: np.ndarray,
    pred: np.ndarray,
    run_ids: np.ndarray,
    n_classes: int,
    *,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = 0,
) -> dict[str, Interval]:
    """Percentile intervals of accuracy and macro-F1 over resamples of whole runs, stratified
    by run class: a resample without any run of a class would score that class's false
    positives as F1 0 and say more about the resampling than about the model."""
    [(whole, resampled)], units = _resampled_confusions(
        labels, [pred], run_ids, n_classes, n_boot, seed
    )
    return {
        name: _percentile_interval(fn(whole), fn(resampled), level, units)
        for name, fn in METRICS_FROM_CONFUSION.items()
    }


def paired_bootstrap(
    labels: np.ndarray,
    pred: np.ndarray,
    reference: np.ndarray,
    run_ids: np.ndarray,
    n_classes: int,
    *,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = 0,
) -> dict[str, Interval]:
    """Percentile intervals of accuracy and macro-F1 of `pred` minus those of `reference` (two
    models' predictions on the same windows), each resample scoring both on the same runs: the
    runs' shared difficulty cancels, so the interval is narrower than two marginal intervals
    compared side by side, and still honest about the runs drawn (same resamples as
    `run_bootstrap` with the same seed)."""
    [(whole, resampled), (ref_whole, ref_resampled)], units = _resampled_confusions(
        labels, [pred, reference], run_ids, n_classes, n_boot, seed
    )
    return {
        name: _percentile_interval(
            fn(whole) - fn(ref_whole), fn(resampled) - fn(ref_resampled), level, units
        )
        for name, fn in METRICS_FROM_CONFUSION.items()
    }
