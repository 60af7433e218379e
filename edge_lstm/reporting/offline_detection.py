"""Detection delay and false alarms offline: a model's per-window probabilities replayed run by
run, in time order, through the gateway's own debounce rule (`runtime.debounce.Debouncer`).

The alerts it yields have the gateway's alert fields, so the live demo's delay and false-alarm
code (`detection.detections`, `detection.delay_table`) scores them unchanged: the delay is from
a run's first fault reading to the end of the window that raised the right class; an alert
before the onset, or any alert on a normal run, is a false alarm.

The windows come every `data.stride` readings of the config that rebuilt the split; a gateway
closes one every `hop` readings of its deployment folder. Where the two differ, so do the
delays, which is why the result names the hop it used.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from edge_lstm.reporting.detection import RunDetection, delay_table, detections
from edge_lstm.reporting.recordings import RunTruth
from runtime.config import DebounceConfig
from runtime.debounce import Debouncer


def replay_alerts(
    probs: np.ndarray,
    run_ids: np.ndarray,
    end_ts: np.ndarray,
    classes: list[str],
    rule: DebounceConfig,
) -> list[dict[str, Any]]:
    """The events the gateway would publish for these windows, one device per run, each run's
    windows in the order of their end timestamps."""
    runs = np.asarray(run_ids).astype(str)
    debouncer = Debouncer(rule.k, rule.threshold)
    events = []
    for i in np.lexsort((np.asarray(end_ts, np.float64), runs)):
        event = debouncer.update(runs[i], probs[i])
        if event is not None:
            events.append(
                {
                    "event": event.kind,
                    "device_id": runs[i],
                    "class": classes[event.class_index],
                    "confidence": event.confidence,
                    "window_end_ts": float(end_ts[i]),
                }
            )
    return events


def normal_hours(truths: dict[str, RunTruth], normal: str, sample_period_s: float) -> float:
    """Hours of readings where a false alarm can happen: whole normal runs, and fault runs up
    to their onset (readings × the sample period, so gaps do not count as operation)."""
    readings = 0
    for truth in truths.values():
        onset = truth.onset(normal)
        readings += len(truth.ts) if onset is None else int(np.sum(truth.ts < onset[1]))
    return readings * sample_period_s / 3600.0


def _fraction(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def detection_summary(
    rows: list[RunDetection],
    classes: list[str],
    *,
    hours: float,
    rule: DebounceConfig,
    hop_readings: int,
    sample_period_s: float,
) -> dict[str, Any]:
    """Per fault class the median delay and the share of runs detected with the right class;
    false alarms per hour of normal readings; every run's row."""
    per_class = [
        {**row, "detected_fraction": _fraction(row["detected"], row["runs"])}
        for row in delay_table(rows, classes)
    ]
    faulty = [r for r in rows if r.onset_ts is not None]
    delays = [r.delay_s for r in faulty if r.delay_s is not None]
    false_alarms = sum(r.false_alarms for r in rows)
    return {
        "debounce": {"k": rule.k, "threshold": rule.threshold},
        "hop_readings": hop_readings,
        "hop_s": hop_readings * sample_period_s,
        "fault_runs": len(faulty),
        "detected_runs": len(delays),
        "detected_fraction": _fraction(len(delays), len(faulty)),
        "median_delay_s": float(np.median(delays)) if delays else None,
        "false_alarms": false_alarms,
        "normal_hours": hours,
        "false_alarms_per_hour": false_alarms / hours if hours > 0 else None,
        "per_class": per_class,
        "runs": [asdict(r) for r in rows],
    }


def offline_detection(
    probs: np.ndarray,
    run_ids: np.ndarray,
    end_ts: np.ndarray,
    classes: list[str],
    truths: dict[str, RunTruth],
    *,
    rule: DebounceConfig,
    hop_readings: int,
    sample_period_s: float,
) -> dict[str, Any]:
    """The detection figures of one model's window probabilities on one split (its runs'
    ground truth in `truths`, class index 0 the normal class)."""
    events = replay_alerts(probs, run_ids, end_ts, classes, rule)
    rows = detections(events, truths, classes[0])
    return detection_summary(
        rows,
        classes,
        hours=normal_hours(truths, classes[0], sample_period_s),
        rule=rule,
        hop_readings=hop_readings,
        sample_period_s=sample_period_s,
    )


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def detection_lines(detection: dict[str, Any]) -> list[str]:
    """The printed summary: the rule and hop used, then one line per fault class."""
    rule = detection["debounce"]
    rate = detection["false_alarms_per_hour"]
    lines = [
        f"detection (gateway debounce k={rule['k']}, threshold {rule['threshold']:g}; windows "
        f"every {detection['hop_readings']} readings = {detection['hop_s']:g} s, the split's "
        "stride in the config, not necessarily the live hop): "
        f"{detection['detected_runs']}/{detection['fault_runs']} fault runs detected with the "
        f"right class, median delay {_seconds(detection['median_delay_s'])}; "
        f"{detection['false_alarms']} false alarms over {detection['normal_hours']:.2f} h of "
        f"normal readings ({'n/a' if rate is None else f'{rate:.2f}'}/h)",
    ]
    for row in detection["per_class"]:
        lines.append(
            f"  {row['class']}: median delay {_seconds(row['median_s'])}, "
            f"{row['detected']}/{row['runs']} detected"
        )
    return lines
