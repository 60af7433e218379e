"""Offline detection on runs built by hand: delays, detection with the right class, false alarms
per hour of normal readings, under the gateway's own debounce rule and whatever the window order."""

from __future__ import annotations

import numpy as np
import pytest

from edge_lstm.reporting.offline_detection import detection_lines, offline_detection
from edge_lstm.reporting.recordings import RunTruth
from runtime.config import DebounceConfig

CLASSES = ["normal", "bearing", "cavitation"]
PERIOD = 0.1
NORMAL_P = [0.9, 0.05, 0.05]


def _truth(onset_s: float | None, fault: str = "bearing") -> RunTruth:
    ts = np.round(np.arange(300) * PERIOD, 3)  # 30 s of readings
    labels = np.full(300, "normal", dtype=object)
    if onset_s is not None:
        labels[ts >= onset_s] = fault
    return RunTruth(ts, labels.astype(str))


def _case():
    """Windows ending every second from 5 s to 29 s of four runs:
    f1 (bearing from 10 s) is called bearing from the window ending at 12 s;
    f2 (bearing from 10 s) is called cavitation from 12 s: detected, but wrongly;
    n1 (normal) is called cavitation at 0.7 in the windows ending at 10-12 s;
    n2 (normal) is called cavitation at 0.55, under the threshold, at 10-14 s."""
    ends = np.arange(5.0, 30.0)
    rows = []
    for run in ("f1", "f2", "n1", "n2"):
        for end in ends:
            p = NORMAL_P
            if run == "f1" and end >= 12:
                p = [0.1, 0.8, 0.1]
            elif run == "f2" and end >= 12:
                p = [0.1, 0.1, 0.8]
            elif run == "n1" and 10 <= end <= 12:
                p = [0.2, 0.1, 0.7]
            elif run == "n2" and 10 <= end <= 14:
                p = [0.4, 0.05, 0.55]
            rows.append((run, end, p))
    truths = {"f1": _truth(10.0), "f2": _truth(10.0), "n1": _truth(None), "n2": _truth(None)}
    run_ids = np.array([r[0] for r in rows], dtype=object)
    end_ts = np.array([r[1] for r in rows])
    probs = np.array([r[2] for r in rows])
    return probs, run_ids, end_ts, truths


def _detect(probs, run_ids, end_ts, truths, rule=None):
    return offline_detection(
        probs,
        run_ids,
        end_ts,
        CLASSES,
        truths,
        rule=rule or DebounceConfig(),
        hop_readings=10,
        sample_period_s=PERIOD,
    )


def test_delays_detection_and_false_alarms() -> None:
    got = _detect(*_case())
    runs = {r["run_id"]: r for r in got["runs"]}
    # k = 3 bearing votes at 12, 13, 14 s: raised with the window ending at 14 s
    assert runs["f1"]["delay_s"] == pytest.approx(4.0) and runs["f1"]["first_alert"] == "bearing"
    assert runs["f2"]["delay_s"] is None and runs["f2"]["first_alert"] == "cavitation"
    assert runs["n1"]["false_alarms"] == 1 and runs["n2"]["false_alarms"] == 0
    (bearing,) = got["per_class"]
    assert bearing["class"] == "bearing" and bearing["runs"] == 2 and bearing["detected"] == 1
    assert bearing["detected_fraction"] == 0.5 and bearing["median_s"] == pytest.approx(4.0)
    assert got["fault_runs"] == 2 and got["detected_fraction"] == 0.5
    # normal readings: two whole runs of 300 and 100 readings before each onset
    hours = (300 + 300 + 100 + 100) * PERIOD / 3600
    assert got["normal_hours"] == pytest.approx(hours)
    assert got["false_alarms"] == 1
    assert got["false_alarms_per_hour"] == pytest.approx(1 / hours)
    assert got["debounce"] == {"k": 3, "threshold": 0.6}
    assert got["hop_readings"] == 10 and got["hop_s"] == pytest.approx(1.0)
    text = "\n".join(detection_lines(got))
    assert "1/2 fault runs detected" in text and "every 10 readings = 1 s" in text
    assert "bearing: median delay 4.0 s, 1/2 detected" in text


def test_windows_are_replayed_in_time_order_per_run() -> None:
    probs, run_ids, end_ts, truths = _case()
    order = np.random.default_rng(0).permutation(len(probs))
    assert _detect(probs[order], run_ids[order], end_ts[order], truths) == _detect(
        probs, run_ids, end_ts, truths
    )


def test_the_gateway_rule_is_the_one_given() -> None:
    case = _case()
    slower = {r["run_id"]: r for r in _detect(*case, rule=DebounceConfig(k=5))["runs"]}
    assert slower["f1"]["delay_s"] == pytest.approx(6.0)  # votes at 12..16 s
    assert slower["n1"]["false_alarms"] == 0  # three votes are not five
    looser = _detect(*case, rule=DebounceConfig(threshold=0.5))
    assert {r["run_id"]: r["false_alarms"] for r in looser["runs"]} == {
        "f1": 0,
        "f2": 0,
        "n1": 1,
        "n2": 1,
    }


def test_a_split_without_fault_runs() -> None:
    probs, run_ids, end_ts, truths = _case()
    normal_only = np.isin(run_ids, ["n1", "n2"])
    got = _detect(
        probs[normal_only],
        run_ids[normal_only],
        end_ts[normal_only],
        {k: truths[k] for k in ("n1", "n2")},
    )
    assert got["fault_runs"] == 0 and got["detected_fraction"] is None
    assert got["median_delay_s"] is None and got["per_class"] == []
    assert "0/0 fault runs detected" in detection_lines(got)[0]
