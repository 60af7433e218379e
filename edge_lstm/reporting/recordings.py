"""What the demo's live stage recorded, joined with ground truth: window results against the
label of each window's last reading, and against the offline evaluation of the same windows.

The recordings are live/*.jsonl, one {"topic", "received_at", "payload"} per line, written by
the live stage's recorder (`edge_lstm/reporting/demo_live.py`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_lstm.errors import EdgeLstmError

# The gateway measures this stage against the readings' own timestamps; the demo replays the
# recorded (historic) timestamps, so it is not a latency there.
SENSOR_CLOCK_STAGE = "reading_to_alert"


def gateway_latency(latency: dict[str, Any]) -> dict[str, Any]:
    """The stats' latency stages measured on the gateway's own clock (non-empty ones)."""
    return {k: v for k, v in latency.items() if v and k != SENSOR_CLOCK_STAGE}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Payloads of a recorder file (one {"topic", "received_at", "payload"} per line)."""
    path = Path(path)
    if not path.is_file():
        raise EdgeLstmError(f"{path} is missing: run the live stage (scripts/demo.sh) first")
    return [json.loads(line)["payload"] for line in path.read_text().splitlines() if line.strip()]


@dataclass
class RunTruth:
    """Ground truth of one replayed run: reading timestamps and their labels."""

    ts: np.ndarray
    labels: np.ndarray

    def label_at(self, ts: float, tolerance: float = 1e-3) -> str | None:
        """The label of the reading at `ts` (a window's last reading), None if there is none."""
        i = int(np.searchsorted(self.ts, ts - tolerance))
        if i < len(self.ts) and abs(self.ts[i] - ts) <= tolerance:
            return str(self.labels[i])
        return None

    def onset(self, normal: str) -> tuple[str, float] | None:
        """(fault class, timestamp of its first reading), or None for a normal run."""
        faulty = np.flatnonzero(self.labels != normal)
        if faulty.size == 0:
            return None
        first = int(faulty[0])
        return str(self.labels[first]), float(self.ts[first])


def run_truths(
    readings: Any, run_column: str, ts_column: str, label_column: str, runs: list[str]
) -> dict[str, RunTruth]:
    """Per replayed run, its readings' timestamps and labels in time order."""
    out: dict[str, RunTruth] = {}
    subset = readings[readings[run_column].astype(str).isin(runs)]
    for run_id, group in subset.groupby(run_column, sort=False):
        group = group.sort_values(ts_column, kind="stable")
        out[str(run_id)] = RunTruth(
            group[ts_column].to_numpy(np.float64), group[label_column].astype(str).to_numpy()
        )
    return out


@dataclass
class LiveWindows:
    """Every window result the gateway published, keyed by (device, window end), with truth."""

    keys: list[tuple[str, float]]
    probs: np.ndarray  # [N, C]
    labels: np.ndarray  # [N] true class index
    unmatched: int  # results whose device or window end has no ground truth


def live_windows(
    messages: list[dict[str, Any]], truths: dict[str, RunTruth], classes: list[str]
) -> LiveWindows:
    """The `event: window` results joined with the label of each window's last reading."""
    index = {name: i for i, name in enumerate(classes)}
    keys, probs, labels, unmatched = [], [], [], 0
    for msg in messages:
        if msg.get("event") != "window":
            continue
        truth = truths.get(msg["device_id"])
        label = truth.label_at(msg["window_end_ts"]) if truth else None
        if label is None or label not in index:
            unmatched += 1
            continue
        keys.append((msg["device_id"], round(float(msg["window_end_ts"]), 3)))
        probs.append(msg["probs"])
        labels.append(index[label])
    return LiveWindows(
        keys,
        np.asarray(probs, np.float64).reshape(len(keys), len(classes)),
        np.asarray(labels, np.int64),
        unmatched,
    )


def agreement(
    live_keys: list[tuple[str, float]],
    live_probs: np.ndarray,
    offline_keys: list[tuple[str, float]],
    offline_probs: np.ndarray,
) -> dict[str, Any]:
    """How closely the live results match the offline evaluation on the same windows."""
    offline = {key: i for i, key in enumerate(offline_keys)}
    pairs = [(i, offline[key]) for i, key in enumerate(live_keys) if key in offline]
    matched = len(pairs)
    if not matched:
        return {"matched": 0, "live_only": len(live_keys), "offline_only": len(offline_keys)}
    li = np.array([p[0] for p in pairs])
    oi = np.array([p[1] for p in pairs])
    same = live_probs[li].argmax(axis=1) == offline_probs[oi].argmax(axis=1)
    return {
        "matched": matched,
        "live_only": len(live_keys) - matched,
        "offline_only": len(offline_keys) - matched,
        "argmax_agreement": float(same.mean()),
        "disagreements": int((~same).sum()),
        "max_abs_prob_diff": float(np.abs(live_probs[li] - offline_probs[oi]).max()),
    }
