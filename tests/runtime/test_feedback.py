"""Operator feedback: strict verdict parsing, the readings kept around alerts, and the gateway
storing verdicts from a real Mosquitto, publishing precision on stats and Prometheus."""

from __future__ import annotations

import json
import sqlite3
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edge_lstm.local_broker import free_port
from runtime.alert_buffer import AlertBuffer
from runtime.config import FeedbackConfig, config_from_dict
from runtime.feedback import DB_FILE, Feedback, FeedbackReason, Verdict, open_db, parse_verdict
from runtime.manifest import Manifest
from runtime.parse import Readings
from runtime.replay import Replayer, device_ids
from runtime.stats import Stats
from tests.runtime.helpers import (
    Collector,
    InProcessService,
    gateway_config,
    select_runs,
    wait_until,
)

ALERT = str(uuid.uuid4())


def _payload(**fields: object) -> bytes:
    return json.dumps({"alert_id": ALERT, "verdict": "confirmed", **fields}).encode()


def test_a_valid_verdict_parses() -> None:
    got = parse_verdict(_payload(by="ops", note="pump 3 bearing"), 4096)
    assert got == Verdict(ALERT, "confirmed", "ops", "pump 3 bearing")
    assert parse_verdict(_payload(verdict="rejected"), 4096) == Verdict(ALERT, "rejected")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xffnot json", FeedbackReason.NOT_JSON),
        (b"[" * 100_000, FeedbackReason.OVERSIZED),
        (b"[1, 2]", FeedbackReason.BAD_SCHEMA),
        (json.dumps({"alert_id": ALERT}).encode(), FeedbackReason.BAD_SCHEMA),
        (_payload(verdict="maybe"), FeedbackReason.BAD_SCHEMA),
        (_payload(alert_id="not-a-uuid"), FeedbackReason.BAD_SCHEMA),
        (_payload(alert_id=ALERT.upper()), FeedbackReason.BAD_SCHEMA),
        (_payload(alert_id=7), FeedbackReason.BAD_SCHEMA),
        (_payload(by=["ops"]), FeedbackReason.BAD_SCHEMA),
        (_payload(note="x" * 1025), FeedbackReason.BAD_SCHEMA),
        (_payload(extra=1), FeedbackReason.BAD_SCHEMA),
    ],
)
def test_a_bad_verdict_names_its_reason(payload: bytes, reason: FeedbackReason) -> None:
    assert parse_verdict(payload, 4096) is reason


def _alert(device: str, start: float, end: float) -> dict:
    return {
        "event": "raised",
        "alert_id": str(uuid.uuid4()),
        "device_id": device,
        "class": "leak",
        "window_start_ts": start,
        "window_end_ts": end,
        "model_version": "1",
    }


def _readings(ts: list[float], features: int = 2) -> Readings:
    stamps = np.asarray(ts, np.float64)
    return Readings(stamps, np.tile(stamps[:, None], (1, features)).astype(np.float32))


def _stored(db: sqlite3.Connection, alert_id: str) -> list[float]:
    rows = db.execute(
        "SELECT r.ts FROM alert_readings r JOIN alerts a ON a.seq = r.alert_seq "
        "WHERE a.alert_id = ? ORDER BY r.ts",
        (alert_id,),
    )
    return [ts for (ts,) in rows]


def test_the_buffer_keeps_before_window_and_after_readings(tmp_path: Path) -> None:
    db = open_db(tmp_path / DB_FILE)
    buffer = AlertBuffer(db, FeedbackConfig(before=3, after=2), 4, ["a", "b"])
    for start in range(0, 16, 4):  # messages of four readings, stepped at once
        buffer.observe("d", _readings([float(t) for t in range(start, start + 4)]), 4)
    # then five readings (one a repeat) queued behind the window that raises the alert
    buffer.observe("d", _readings([16.0, 17.0, 18.0, 19.0]), 4)
    buffer.observe("d", _readings([19.0]), 5)
    alert = _alert("d", 12.0, 15.0)  # the window 12..15, readings 16..19 already queued
    buffer.record(alert, "normal")
    assert _stored(db, alert["alert_id"]) == [float(t) for t in range(9, 18)]
    assert buffer.captures == {}  # the two after readings were already there
    (values,) = db.execute("SELECT vals FROM alert_readings WHERE ts = 9").fetchone()
    assert np.frombuffer(values, "<f4").tolist() == [9.0, 9.0]


def test_after_readings_arrive_later_and_the_oldest_alerts_go_first(tmp_path: Path) -> None:
    db = open_db(tmp_path / DB_FILE)
    buffer = AlertBuffer(db, FeedbackConfig(before=0, after=3, max_rows=10), 2, ["a", "b"])
    buffer.observe("d", _readings([1.0, 2.0]), 0)
    first = _alert("d", 1.0, 2.0)
    buffer.record(first, "normal")
    buffer.observe("d", _readings([3.0, 3.0, 4.0]), 0)  # a duplicate is left out
    assert _stored(db, first["alert_id"]) == [1.0, 2.0, 3.0, 4.0]
    buffer.observe("e", _readings([1.0, 2.0, 3.0]), 0)
    second = _alert("e", 2.0, 3.0)
    buffer.record(second, "normal")
    buffer.observe("d", _readings([5.0, 6.0]), 0)
    assert _stored(db, first["alert_id"]) == [1.0, 2.0, 3.0, 4.0, 5.0]
    third = _alert("d", 5.0, 6.0)
    buffer.record(third, "normal")  # 5 + 2 + 2 rows > 10 after the next readings
    buffer.observe("d", _readings([7.0, 8.0]), 0)
    assert buffer.rows <= 10
    assert _stored(db, first["alert_id"]) == []
    assert buffer.evicted == 1 and buffer.alerts == 2
    assert _stored(db, third["alert_id"]) == [5.0, 6.0, 7.0, 8.0]


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def _feedback_config(tmp_path: Path, deploy: Path, broker, prometheus_port: int | None) -> Path:
    return gateway_config(
        tmp_path / "gw.yaml",
        deploy,
        broker.host,
        broker.port,
        debounce={"k": 2, "threshold": 0.0},
        feedback={"enabled": True, "before": 5, "after": 5},
        prometheus_port=prometheus_port,
    )


@pytest.mark.broker
def test_verdicts_are_stored_with_their_alerts_and_give_precision(
    broker, deploy_dir, tiny_data, tmp_path
) -> None:
    deploy = deploy_dir("gru", None)
    manifest = Manifest.load(deploy)
    runs = select_runs(tiny_data, manifest, count=4, length=120)
    config = _feedback_config(tmp_path, deploy, broker, free_port())
    collector = Collector(broker.host, broker.port)
    service = InProcessService(config)
    verdicts = Replayer(broker.host, broker.port, topic="edgelstm/test/feedback/{device_id}", qos=1)
    try:
        # QoS 1 readings: with manual acks (feedback on) the gateway acks them itself
        publisher = Replayer(broker.host, broker.port, qos=1)
        publisher.replay(device_ids(runs, len(runs)))
        publisher.close()
        sent = sum(len(r.ts) for r in runs)
        assert wait_until(lambda: service.counters().get("readings") == sent, 20)
        assert wait_until(lambda: len(collector.bodies("raised")) >= 2, 10)
        first, second = collector.bodies("raised")[:2]
        send = verdicts.send
        send(
            first["device_id"],
            json.dumps(
                {"alert_id": first["alert_id"], "verdict": "confirmed", "by": "ops"}
            ).encode(),
        )
        send(
            second["device_id"],
            json.dumps({"alert_id": second["alert_id"], "verdict": "rejected"}).encode(),
        )
        send("elsewhere", json.dumps({"alert_id": ALERT, "verdict": "confirmed"}).encode())
        other = "nobody" if first["device_id"] != "nobody" else "somebody"
        send(other, json.dumps({"alert_id": first["alert_id"], "verdict": "rejected"}).encode())
        send(first["device_id"], b'{"alert_id": "x", "verdict": "confirmed"}')
        verdicts.close()

        def stats_with_verdicts() -> bool:
            feedback = collector.latest_stats().get("feedback", {})
            return feedback.get("unknown_alert_verdicts") == 1 and bool(
                feedback.get("precision", {}).get("7d")
            )

        assert wait_until(stats_with_verdicts, 10)
        metrics = _scrape(service.service.cfg.prometheus_port)
        counters = service.counters()
    finally:
        assert service.stop() == 0
        collector.close()
    assert counters["feedback_messages"] == 5
    assert counters["feedback_invalid_bad_schema"] == 1
    assert counters["feedback_invalid_device_mismatch"] == 1
    assert counters["feedback_unknown_alert"] == 1
    feedback = collector.latest_stats()["feedback"]
    week = feedback["precision"]["7d"]
    if first["class"] == second["class"]:
        assert week == {first["class"]: {"confirmed": 1, "rejected": 1, "precision": 0.5}}
    else:
        assert week[first["class"]] == {"confirmed": 1, "rejected": 0, "precision": 1.0}
        assert week[second["class"]] == {"confirmed": 0, "rejected": 1, "precision": 0.0}
    assert feedback["precision"]["1d"] == week
    precision = 0.5 if first["class"] == second["class"] else 1.0
    assert f'edgelstm_feedback_precision{{class="{first["class"]}",window="7d"}} {precision}' in (
        metrics
    )
    assert 'edgelstm_feedback_verdicts_total{class="unknown",verdict="confirmed"} 1.0' in metrics
    db = sqlite3.connect(tmp_path / "state" / DB_FILE)
    stored = dict(db.execute("SELECT alert_id, verdict FROM verdicts"))
    assert stored == {
        first["alert_id"]: "confirmed",
        second["alert_id"]: "rejected",
        ALERT: "confirmed",
    }
    ts = _stored(db, first["alert_id"])
    window = [t for t in ts if first["window_start_ts"] <= t <= first["window_end_ts"]]
    assert len(window) == manifest.window
    assert ts == sorted(set(ts)) and len(ts) <= manifest.window + 10


@pytest.mark.broker
def test_stored_verdicts_survive_a_restart_and_are_not_redelivered(
    broker, deploy_dir, tiny_data, tmp_path
) -> None:
    deploy = deploy_dir("gru", None)
    manifest = Manifest.load(deploy)
    runs = select_runs(tiny_data, manifest, count=2, length=30)
    config = _feedback_config(tmp_path, deploy, broker, None)
    service = InProcessService(config)
    verdicts = Replayer(broker.host, broker.port, topic="edgelstm/test/feedback/{device_id}", qos=1)
    try:
        readings = Replayer(broker.host, broker.port, qos=1)
        readings.replay(device_ids(runs, len(runs)))
        readings.close()
        sent = sum(len(r.ts) for r in runs)
        assert wait_until(lambda: service.counters().get("readings") == sent, 10)
        for i in range(3):
            alert = str(uuid.UUID(int=i + 1))
            verdicts.send(f"d{i}", json.dumps({"alert_id": alert, "verdict": "rejected"}).encode())
        verdicts.close()
        assert wait_until(lambda: service.counters().get("feedback_unknown_alert") == 3, 10)
    finally:
        assert service.stop() == 0
    # the same client id: the persistent session would hand over any message not acknowledged
    # (the client runs with manual acks: readings are acked on arrival, verdicts once stored)
    again = InProcessService(config)
    try:
        wait_until(lambda: again.counters().get("messages", 0) > 0, 2)
        counters = again.counters()
    finally:
        assert again.stop() == 0
    assert counters.get("feedback_messages", 0) == 0
    assert counters.get("messages", 0) == 0
    db = sqlite3.connect(tmp_path / "state" / DB_FILE)
    assert db.execute("SELECT COUNT(*) FROM verdicts WHERE class IS NULL").fetchone()[0] == 3


def test_a_failing_store_is_counted_and_acknowledges_nothing(tmp_path: Path) -> None:
    cfg = config_from_dict({"model_dir": str(tmp_path), "state_dir": str(tmp_path)})
    manifest = SimpleNamespace(window=4, features=["a", "b"], classes=["normal", "leak"])
    stats = Stats()
    feedback = Feedback(cfg, stats, manifest)  # type: ignore[arg-type]
    assert feedback.on_message("d", _payload(), 7, 1)
    feedback.db.close()  # what a broken file or a full disk does to the next statement
    acks: list[tuple[int, int]] = []
    assert feedback.drain(lambda mid, qos: acks.append((mid, qos))) == 0
    feedback.on_alert(_alert("d", 1.0, 4.0))
    assert "error" in feedback.refresh()
    assert acks == [] and stats.counters["feedback_store_errors"] == 3
