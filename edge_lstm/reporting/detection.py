"""Alerts and detection delay: what the gateway raised for each replayed run, against the
run's fault onset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_lstm.reporting.recordings import RunTruth


@dataclass
class RunDetection:
    """What the gateway raised for one replayed run."""

    run_id: str
    true_class: str  # the run's fault class, or the normal class
    onset_ts: float | None
    first_alert: str | None  # class of the first alert raised at/after onset (any, normal run)
    first_alert_ts: float | None
    delay_s: float | None  # onset -> end of the window that raised the right class
    false_alarms: int  # alerts before the onset, or any alert on a normal run


def _raised_by_device(events: list[dict[str, Any]]) -> dict[str, list[tuple[float, str]]]:
    """(window end, class) of every `raised` alert, per device, in time order."""
    raised: dict[str, list[tuple[float, str]]] = {}
    for e in events:
        if e.get("event") == "raised":
            raised.setdefault(e["device_id"], []).append((float(e["window_end_ts"]), e["class"]))
    return {device: sorted(alerts) for device, alerts in raised.items()}


def _detection(
    run_id: str, truth: RunTruth, alerts: list[tuple[float, str]], normal: str
) -> RunDetection:
    onset = truth.onset(normal)
    if onset is None:
        first = alerts[0] if alerts else (None, None)
        return RunDetection(run_id, normal, None, first[1], first[0], None, len(alerts))
    fault, onset_ts = onset
    after = [a for a in alerts if a[0] >= onset_ts]
    right = [a for a in after if a[1] == fault]
    return RunDetection(
        run_id,
        fault,
        onset_ts,
        after[0][1] if after else None,
        after[0][0] if after else None,
        right[0][0] - onset_ts if right else None,
        len(alerts) - len(after),
    )


def detections(
    events: list[dict[str, Any]], truths: dict[str, RunTruth], normal: str
) -> list[RunDetection]:
    """Per run: first alert after the fault onset, delay to the right alert, false alarms."""
    raised = _raised_by_device(events)
    return [
        _detection(run_id, truth, raised.get(run_id, []), normal)
        for run_id, truth in truths.items()
    ]


def alert_confusion(rows: list[RunDetection], classes: list[str]) -> np.ndarray:
    """Runs by true class (rows) and first alerted class (columns; none = the normal class)."""
    index = {name: i for i, name in enumerate(classes)}
    cm = np.zeros((len(classes), len(classes)), np.int64)
    for row in rows:
        cm[index[row.true_class], index[row.first_alert or classes[0]]] += 1
    return cm


def delay_table(rows: list[RunDetection], classes: list[str]) -> list[dict[str, Any]]:
    """Per fault class: runs, detected with the right class, missed, delay median/min/max."""
    table = []
    for name in classes[1:]:
        runs = [r for r in rows if r.true_class == name]
        if not runs:
            continue
        delays = [r.delay_s for r in runs if r.delay_s is not None]
        table.append(
            {
                "class": name,
                "runs": len(runs),
                "detected": len(delays),
                "missed": len(runs) - len(delays),
                "false_alarms": sum(r.false_alarms for r in runs),
                "median_s": float(np.median(delays)) if delays else None,
                "min_s": float(min(delays)) if delays else None,
                "max_s": float(max(delays)) if delays else None,
            }
        )
    return table
