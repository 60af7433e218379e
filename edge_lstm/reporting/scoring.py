"""One model's figures on one split's windows: classification metrics, run-level intervals, the
onset/steady split and offline detection, computed the same way for the artifact and the
baseline beside it, so their rows in metrics.json compare like with like.

Onset windows straddle a label change (`WindowSet.onset`): the fault is only partly visible in
them, so they are where a model errs most, and where detection happens. Steady windows are the
rest. Each part gets its own interval, from resampling whole runs (`edge_lstm.uncertainty`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_lstm.metrics import compute_metrics
from edge_lstm.reporting.offline_detection import detection_lines, offline_detection
from edge_lstm.reporting.recordings import RunTruth
from edge_lstm.uncertainty import Interval, run_bootstrap
from runtime.config import DebounceConfig

PARTS = ("onset", "steady")


@dataclass
class SplitWindows:
    """What every model is scored against on one split, whatever its feature order: each
    window's run, end timestamp and onset flag, and each run's ground truth."""

    run_ids: np.ndarray
    end_ts: np.ndarray
    onset: np.ndarray  # bool [N]
    truths: dict[str, RunTruth]
    rule: DebounceConfig
    hop_readings: int
    sample_period_s: float


def intervals(labels: np.ndarray, pred: np.ndarray, run_ids: np.ndarray, n_classes: int) -> dict:
    """{"accuracy", "macro_f1"}: Interval dicts over resampled runs (None without windows)."""
    if len(labels) == 0:
        return {"accuracy": None, "macro_f1": None}
    boot = run_bootstrap(labels, pred, run_ids, n_classes)
    return {name: interval.to_dict() for name, interval in boot.items()}


def score(
    probs: np.ndarray, labels: np.ndarray, classes: list[str], windows: SplitWindows
) -> dict[str, Any]:
    """compute_metrics plus "intervals", "onset", "steady" and "detection"."""
    metrics = compute_metrics(probs, labels, classes)
    pred = np.asarray(probs).argmax(axis=1)
    run_ids = np.asarray(windows.run_ids).astype(str)
    onset = np.asarray(windows.onset, bool)
    parts = {}
    for name, mask in zip(PARTS, (onset, ~onset), strict=True):
        parts[name] = {
            "windows": int(mask.sum()),
            "runs": len(set(run_ids[mask].tolist())),
            **intervals(labels[mask], pred[mask], run_ids[mask], len(classes)),
        }
    detection = offline_detection(
        probs,
        run_ids,
        windows.end_ts,
        classes,
        windows.truths,
        rule=windows.rule,
        hop_readings=windows.hop_readings,
        sample_period_s=windows.sample_period_s,
    )
    return {
        **metrics,
        "intervals": intervals(labels, pred, run_ids, len(classes)),
        **parts,
        "detection": detection,
    }


def _interval_text(raw: dict[str, Any] | None) -> str:
    return "n/a" if raw is None else Interval(**raw).text()


def score_lines(scored: dict[str, Any]) -> list[str]:
    """Intervals, onset/steady and detection of a `score` result, as printed lines."""
    lines = [
        f"macro-F1 {_interval_text(scored['intervals']['macro_f1'])}; "
        f"accuracy {_interval_text(scored['intervals']['accuracy'])}",
    ]
    for name in PARTS:
        part = scored[name]
        lines.append(
            f"{name} windows {part['windows']}: macro-F1 {_interval_text(part['macro_f1'])}; "
            f"accuracy {_interval_text(part['accuracy'])}"
        )
    return lines + detection_lines(scored["detection"])
