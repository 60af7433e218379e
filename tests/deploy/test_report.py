"""The demo report: its analysis on hand-made recordings, then the live stage end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_lstm.reporting.detection import (
    RunDetection,
    alert_confusion,
    delay_table,
    detections,
)
from edge_lstm.reporting.recordings import RunTruth, agreement, live_windows

CLASSES = ["normal", "cavitation", "overheating"]


def _truth(labels: list[str], start: float = 100.0, period: float = 0.1) -> RunTruth:
    ts = start + period * np.arange(len(labels))
    return RunTruth(ts, np.array(labels))


def _raised(device: str, end_ts: float, cls: str) -> dict:
    return {"event": "raised", "device_id": device, "window_end_ts": end_ts, "class": cls}


def test_label_lookup_and_onset() -> None:
    truth = _truth(["normal"] * 5 + ["cavitation"] * 5)
    assert truth.label_at(100.4) == "normal"
    assert truth.label_at(100.5) == "cavitation"
    assert truth.label_at(100.5004) == "cavitation"  # float noise of JSON round trips
    assert truth.label_at(100.45) is None  # no reading there
    assert truth.label_at(99.0) is None
    assert truth.onset("normal") == ("cavitation", pytest.approx(100.5))
    assert _truth(["normal"] * 3).onset("normal") is None


def test_detections_delay_wrong_class_and_false_alarms() -> None:
    truths = {
        "a": _truth(["normal"] * 20 + ["cavitation"] * 80),  # onset 102.0
        "b": _truth(["normal"] * 10 + ["overheating"] * 90),  # onset 101.0, never detected
        "n": _truth(["normal"] * 100),
    }
    events = [
        _raised("a", 101.0, "overheating"),  # before the onset: a false alarm
        {"event": "cleared", "device_id": "a", "window_end_ts": 101.5, "class": "overheating"},
        _raised("a", 103.0, "overheating"),  # first alert after onset, wrong class
        _raised("a", 104.5, "cavitation"),  # right class: delay 2.5 s
        _raised("a", 106.0, "cavitation"),
        _raised("n", 105.0, "cavitation"),  # normal run: false alarm
        {"event": "window", "device_id": "b", "window_end_ts": 105.0, "class": "overheating"},
    ]
    rows = {r.run_id: r for r in detections(events, truths, "normal")}
    a = rows["a"]
    assert (a.true_class, a.first_alert, a.false_alarms) == ("cavitation", "overheating", 1)
    assert a.first_alert_ts == pytest.approx(103.0)
    assert a.delay_s == pytest.approx(2.5)
    b = rows["b"]
    assert (b.first_alert, b.delay_s, b.false_alarms) == (None, None, 0)
    n = rows["n"]
    assert (n.true_class, n.first_alert, n.false_alarms, n.delay_s) == (
        "normal",
        "cavitation",
        1,
        None,
    )

    cm = alert_confusion(list(rows.values()), CLASSES)
    assert cm.tolist() == [[0, 1, 0], [0, 0, 1], [1, 0, 0]]

    table = {row["class"]: row for row in delay_table(list(rows.values()), CLASSES)}
    assert table["cavitation"] == {
        "class": "cavitation",
        "runs": 1,
        "detected": 1,
        "missed": 0,
        "false_alarms": 1,
        "median_s": pytest.approx(2.5),
        "min_s": pytest.approx(2.5),
        "max_s": pytest.approx(2.5),
    }
    assert table["overheating"]["missed"] == 1
    assert table["overheating"]["median_s"] is None


def test_delay_table_median_over_runs() -> None:
    rows = [
        RunDetection(f"r{i}", "cavitation", 0.0, "cavitation", d, d, 0)
        for i, d in enumerate([3.0, 1.0, 8.0])
    ]
    (row,) = delay_table(rows, CLASSES)
    assert (row["median_s"], row["min_s"], row["max_s"], row["detected"]) == (3.0, 1.0, 8.0, 3)


def test_live_windows_join_truth_and_count_strays() -> None:
    truths = {"a": _truth(["normal"] * 5 + ["overheating"] * 5)}
    msgs = [
        {"event": "window", "device_id": "a", "window_end_ts": 100.4, "probs": [0.7, 0.2, 0.1]},
        {"event": "window", "device_id": "a", "window_end_ts": 100.9, "probs": [0.1, 0.1, 0.8]},
        {"event": "window", "device_id": "ghost", "window_end_ts": 100.9, "probs": [1, 0, 0]},
        {"event": "window", "device_id": "a", "window_end_ts": 250.0, "probs": [1, 0, 0]},
        _raised("a", 100.9, "overheating"),
    ]
    w = live_windows(msgs, truths, CLASSES)
    assert w.keys == [("a", 100.4), ("a", 100.9)]
    assert w.labels.tolist() == [0, 2]
    assert w.probs.shape == (2, 3)
    assert w.unmatched == 2


def test_agreement_counts_mismatches_and_differences() -> None:
    live_keys = [("a", 1.0), ("a", 2.0), ("a", 3.0), ("b", 1.0)]
    live = np.array([[0.9, 0.1, 0], [0.4, 0.6, 0], [0.2, 0.3, 0.5], [1, 0, 0]])
    off_keys = [("a", 3.0), ("a", 2.0), ("a", 1.0), ("c", 9.0)]
    off = np.array([[0.2, 0.3, 0.5], [0.6, 0.4, 0], [0.9, 0.1, 0]])
    off = np.vstack([off, [[1, 0, 0]]])
    result = agreement(live_keys, live, off_keys, off)
    assert result["matched"] == 3
    assert result["live_only"] == 1 and result["offline_only"] == 1
    assert result["disagreements"] == 1
    assert result["argmax_agreement"] == pytest.approx(2 / 3)
    assert result["max_abs_prob_diff"] == pytest.approx(0.2)


@pytest.mark.broker
def test_live_stage_and_report_agree_with_offline(
    tmp_path: Path, tiny_data: Path, tiny_config_path: Path, tiny_deploy_dir: Path
) -> None:
    """Serve over a real broker, replay the test runs, then the report: the live results must
    equal the offline evaluation of the same file on the same windows."""
    from edge_lstm.local_broker import find_mosquitto
    from edge_lstm.reporting.demo_live import run_live
    from edge_lstm.reporting.report import write_report

    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    runs = tmp_path / "runs"
    (runs / "data").mkdir(parents=True)
    shutil.copy(tiny_data, runs / "data" / "sensors.parquet")
    shutil.copytree(tiny_deploy_dir, runs / "deploy")

    summary = run_live(runs, tiny_config_path, "step", speedup=50, replay_timeout_s=60)
    assert summary["serve_exit_code"] == 0
    assert summary["serve_stop_seconds"] < 2.0
    assert summary["offline_status_published"]
    assert summary["received"]["window"] == summary["expected_windows"] > 0
    assert summary["broker"] == "mosquitto"

    drifting = summary["drifting_device"]  # a normal run replayed once more, a sensor drifting
    assert drifting is not None and drifting["device_id"] == f"drift-{drifting['run_id']}"
    last_stats = json.loads((runs / "live/stats.jsonl").read_text().splitlines()[-1])
    served = summary["expected_windows"] + drifting["windows"]
    assert last_stats["payload"]["counters"]["windows"] == served

    report = write_report(runs)
    text = report.read_text()
    figures = json.loads((runs / "report.json").read_text())
    agree = figures["agreement"]
    assert agree["matched"] == summary["expected_windows"]
    assert agree["live_only"] == agree["offline_only"] == 0
    assert agree["max_abs_prob_diff"] <= 1e-4
    assert agree["argmax_agreement"] == 1.0
    assert figures["live_metrics"]["macro_f1"] == pytest.approx(
        figures["offline_metrics"]["macro_f1"]
    )
    assert (runs / "live_confusion.png").stat().st_size > 10_000
    assert (runs / "latency.png").is_file()
    for heading in ("## 1. Pipeline", "## 2. The live gateway", "## 4. Detection delay"):
        assert heading in text
    assert "## 4b. Drift monitor" in text and f"`{drifting['device_id']}`" in text
    assert (runs / "live" / "drift.jsonl").is_file()


def test_the_report_says_how_each_training_run_ended(tmp_path: Path) -> None:
    from edge_lstm.reporting.render import pipeline_section

    runs = tmp_path / "runs"
    for role, reason in (("teacher", "time budget"), ("student", "patience")):
        (runs / role).mkdir(parents=True)
        training = {"stop_reason": reason, "epochs_run": 7, "best_epoch": 4}
        (runs / role / "metrics.json").write_text(json.dumps({"training": training}))
    (runs / "student" / "comparison.json").write_text(json.dumps({"rows": []}))
    text = "\n".join(pipeline_section(runs))
    assert "The teacher trained 7 epochs (best 4) and was cut by the time budget" in text
    assert "not reproducible" in text
    assert "The student trained 7 epochs (best 4) and stopped early" in text
