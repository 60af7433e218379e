"""report.md's words follow the data: the manifest's sample period decides how the reading rate
reads and whether sensor times are seconds (the pump at 10 Hz) or minutes (process data read
once a minute); the features and classes come from the manifest, never from the pump."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_lstm.reporting.detection import RunDetection, alert_confusion, delay_table
from edge_lstm.reporting.drift_section import DriftSeen
from edge_lstm.reporting.evidence import Scored
from edge_lstm.reporting.recordings import LiveWindows
from edge_lstm.reporting.render import ReportInputs, render
from edge_lstm.reporting.sensor_time import (
    MINUTES,
    SECONDS,
    delay_unit,
    duration_text,
    rate_text,
)

METRICS = {"n": 4, "accuracy": 0.75, "macro_f1": 0.7, "weighted_f1": 0.7, "cohen_kappa": 0.5}
CLASSES = ["healthy", "leak", "fouling"]


def _inputs(tmp_path: Path, period_s: float, delays_s: list[float]) -> ReportInputs:
    """A report's inputs with fault delays `delays_s` (sensor seconds), a drifting device that
    raised 7 wall seconds into a replay at 3000x, and offline detection figures."""
    rows = [RunDetection(f"r{i}", "leak", 0.0, "leak", d, d, 0) for i, d in enumerate(delays_s)] + [
        RunDetection("n0", "healthy", None, None, None, None, 0)
    ]
    manifest = {
        "model_name": "student",
        "model_version": "v1",
        "features": ["flow", "reactor_temp_b", "level"],
        "window": 120,
        "hop": 10,
        "sample_period_s": period_s,
        "artifacts": {"step": {"file": "step.onnx", "precision": "fp32"}},
    }
    summary = {
        "artifact": "step",
        "broker": "mosquitto",
        "speedup": 3000.0,
        "runs": [r.run_id for r in rows],
        "expected_windows": 4,
        "received": {"window": 4},
        "serve_exit_code": 0,
        "serve_stop_seconds": 0.1,
        "replay_started_at": 1000.0,
        "drifting_device": {
            "device_id": "drift-n0",
            "run_id": "n0",
            "feature": "reactor_temp_b",
            "sigmas": 6.0,
            "windows": 3,
        },
    }
    raised = {
        "event": "raised",
        "device_id": "drift-n0",
        "feature": "reactor_temp_b",
        "value": 6.5,
        "psi": {},
        "published_at": 1007.0,
        "alert_id": "a",
    }
    detection = {
        "debounce": {"k": 3, "threshold": 0.6},
        "hop_readings": 10,
        "hop_s": 10 * period_s,
        "detected_runs": 2,
        "fault_runs": 2,
        "median_delay_s": float(np.median(delays_s)),
        "false_alarms": 0,
        "normal_hours": 1.0,
        "false_alarms_per_hour": 0.0,
    }
    return ReportInputs(
        runs_dir=tmp_path,
        summary=summary,
        manifest=manifest,
        classes=CLASSES,
        live_metrics=METRICS,
        offline_metrics=METRICS,
        agree={"matched": 4, "argmax_agreement": 1.0, "max_abs_prob_diff": 0.0},
        windows=LiveWindows([], np.zeros((0, 3)), np.zeros(0, int), 0),
        rows=rows,
        delays=delay_table(rows, CLASSES),
        alert_cm=alert_confusion(rows, CLASSES),
        stats=[],
        latency={},
        evidence=[Scored("teacher", {"n": 4, "detection": detection})],
        drift=DriftSeen([raised], []),
    )


def test_process_data_reads_in_minutes(tmp_path: Path) -> None:
    text = render(_inputs(tmp_path, 60.0, [2400.0, 4800.0, 3000.0]))
    assert "Data: 3 sensors, one reading every 1 min; 3 classes (healthy and 2 faults)." in text
    assert "Windows of 120 readings (2 h), a new one every 10 readings (10 min)." in text
    assert "median delay 50.0 min of sensor time after the fault onset" in text
    assert "at 3000× their recorded rate (one reading every 1 min, so 50 readings/s" in text
    assert "Minutes of sensor time from a fault's first labelled reading" in text
    assert "| median min | shortest min | longest min |" in text
    assert "| leak | 3 | 3 | 0 | 0 | 50.0 | 40.0 | 80.0 |" in text
    assert "one window every 10 readings = 10 min)" in text  # section 1b's hop
    assert "| teacher | 2 / 2 | 50.0 |" in text
    assert "7.0 s after the replay began (about 350 min of sensor time at 3000×)" in text
    assert "of which 0 on a healthy run" in text  # the manifest's normal class
    assert "Hz" not in text and "Seconds of sensor time" not in text


def test_pump_data_reads_in_seconds(tmp_path: Path) -> None:
    text = render(_inputs(tmp_path, 0.1, [2.5, 4.0, 3.0]))
    assert "one reading every 0.1 s (10 Hz)" in text
    assert "Windows of 120 readings (12 s), a new one every 10 readings (1 s)." in text
    assert "median delay 3.0 s of sensor time" in text
    assert "Seconds of sensor time from a fault's first labelled reading" in text
    assert "| median s | shortest s | longest s |" in text
    assert "| leak | 3 | 3 | 0 | 0 | 3.0 | 2.5 | 4.0 |" in text
    assert "one window every 10 readings = 1 s)" in text
    assert "(about 21000 s of sensor time at 3000×)" in text


def test_a_folder_without_a_sample_period_keeps_seconds(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path, 0.1, [3.0])
    del inputs.manifest["sample_period_s"]
    text = render(inputs)
    assert "Data: 3 sensors, its recorded rate;" in text
    assert "Windows of 120 readings, a new one every 10 readings." in text
    assert "at 3000× their recorded rate, and `edgelstm serve`" in text


@pytest.mark.parametrize(
    ("period", "unit", "rate"),
    [
        (0.1, SECONDS, "one reading every 0.1 s (10 Hz)"),
        (1.0, SECONDS, "one reading every 1 s"),
        (10.0, MINUTES, "one reading every 10 s"),
        (60.0, MINUTES, "one reading every 1 min"),
        (None, SECONDS, "its recorded rate"),
    ],
)
def test_units_and_rates(period: float | None, unit, rate: str) -> None:
    assert delay_unit(period) == unit
    assert rate_text(period) == rate
    assert duration_text(7200.0) == "2 h" and duration_text(5400.0) == "90 min"
    assert MINUTES.text(4260.0) == "71.0 min" and SECONDS.text(None) == "–"
