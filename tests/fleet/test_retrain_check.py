"""`edgelstm retrain-check`: one line per rule, exit 1 when retraining is recommended, from a
real feedback store, drift summaries in a file or on a real broker, and a deployment folder."""

from __future__ import annotations

import json
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import run_cli

LOW_PRECISION = {"cavitation": ["rejected", "rejected", "rejected", "confirmed"]}


def test_low_precision_recommends_retraining(feedback_store) -> None:
    state, _ = feedback_store(LOW_PRECISION)
    result = run_cli("retrain-check", "--state-dir", str(state), "--min-verdicts", "4")
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert (
        "retrain: precision of cavitation alerts over the last week is 0.25 "
        "(1 confirmed, 3 rejected) < 0.80"
    ) in lines
    assert "not checked: drift: no drift summary (give --drift or --broker)" in lines
    assert lines[-1] == "retraining recommended"


def test_too_few_verdicts_decide_nothing(feedback_store) -> None:
    state, _ = feedback_store(LOW_PRECISION)
    result = run_cli("retrain-check", "--state-dir", str(state))  # 20 verdicts by default
    assert result.exit_code == 0, result.output
    assert "not checked: precision: no class has 20 verdicts over the last week (4 in all)" in (
        result.output
    )
    assert result.output.splitlines()[-1] == "no retraining needed"


def _summaries(path: Path, shares: list[tuple[float, int]]) -> Path:
    lines = [json.dumps({"time": t, "judged": 10, "drifting": d, "devices": 12}) for t, d in shares]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_drift_must_hold_over_the_whole_span(tmp_path: Path) -> None:
    steady = _summaries(tmp_path / "steady.jsonl", [(t, 3) for t in range(0, 3601, 600)])
    result = run_cli("retrain-check", "--drift", str(steady), "--drifting-for-s", "1800")
    assert result.exit_code == 1, result.output
    assert (
        "retrain: drift: 3 of 10 judged devices drifting; at least 30% for 1800 s >= 20%"
        in result.output
    )
    dip = _summaries(tmp_path / "dip.jsonl", [(0, 3), (1200, 3), (2400, 1), (3600, 3)])
    result = run_cli("retrain-check", "--drift", str(dip), "--drifting-for-s", "1800")
    assert result.exit_code == 0, result.output
    assert "ok: drift: 3 of 10 judged devices drifting; at least 10% for 1800 s" in result.output
    result = run_cli("retrain-check", "--drift", str(dip), "--drifting-for-s", "7200")
    assert result.exit_code == 0
    assert "not checked: drift: the summaries cover 3600 s" in result.output


def test_model_age(deploy_dir) -> None:
    deploy = deploy_dir("gru", None)
    result = run_cli("retrain-check", "--model-dir", str(deploy))
    assert result.exit_code == 0, result.output
    assert "created 0 days ago" in result.output
    result = run_cli("retrain-check", "--model-dir", str(deploy), "--max-age-days", "0")
    assert result.exit_code == 1 and "retrain: age: model" in result.output


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    result = run_cli("retrain-check")
    assert result.exit_code == 2 and "nothing to check" in result.output
    bad = tmp_path / "drift.json"
    bad.write_text(json.dumps({"time": 1.0, "drifting": 2}))
    result = run_cli("retrain-check", "--drift", str(bad))
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "`judged`" in result.output


@pytest.mark.broker
def test_reads_stats_and_drift_from_the_broker(broker) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.connect(broker.host, broker.port)
    client.loop_start()
    week = {"leak": {"confirmed": 10, "rejected": 30, "precision": 0.25}}
    stats = {"counters": {}, "feedback": {"precision": {"1d": week, "7d": week}}}
    drift = {"time": time.time(), "judged": 8, "drifting": 0, "devices": 8}
    topics = {"edgelstm/gw-rc/stats": stats, "edgelstm/gw-rc/drift": drift}
    try:  # retained, so the check hears them as soon as it subscribes
        for topic, body in topics.items():
            client.publish(topic, json.dumps(body), qos=1, retain=True).wait_for_publish(5)
        started = time.monotonic()
        result = run_cli(
            "retrain-check", "--broker", f"{broker.host}:{broker.port}", "--gateway-id", "gw-rc",
            "--listen-s", "20",
        )  # fmt: skip
        assert time.monotonic() - started < 10  # it stops once it has both
    finally:
        for topic in topics:
            client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        client.loop_stop()
        client.disconnect()
    assert result.exit_code == 1, result.output
    assert "retrain: precision of leak alerts over the last week is 0.25" in result.output
    assert "ok: drift: 0 of 8 judged devices drifting" in result.output
