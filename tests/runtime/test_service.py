"""The service through a real Mosquitto: exact windows, debounced alerts, a bad-input storm."""

from __future__ import annotations

import json

import numpy as np
import pytest

from runtime.manifest import Manifest
from runtime.parse import encode_binary, encode_json
from runtime.replay import Replayer, device_ids
from tests.runtime.helpers import (
    Collector,
    InProcessService,
    expected_events,
    gateway_config,
    offline_windows,
    select_runs,
    wait_until,
)

pytestmark = pytest.mark.broker


PLAIN = "sensors/+/data"
# a worker of an MQTT v5 shared subscription receives on the plain topic
SHARED = "$share/workers/sensors/+/data"
# a group of its own: the v5 case's persistent session stays a member of `workers` after it
# stopped, and Mosquitto keeps handing that offline member its share of the readings
SHARED_311 = "$share/workers-311/sensors/+/data"


@pytest.mark.parametrize(
    ("cell", "hop", "sensors", "protocol"),
    [
        ("gru", None, PLAIN, 5),
        ("gru", 20, PLAIN, 5),
        ("lstm", None, PLAIN, 5),
        ("lstm", 20, PLAIN, 5),
        ("gru", None, SHARED, 5),
        # broker.protocol: 311 (MQTT 3.1.1) end to end: readings in, windows and alerts out;
        # Mosquitto shares subscriptions with 3.1.1 clients too
        ("lstm", 20, PLAIN, 311),
        ("gru", None, SHARED_311, 311),
    ],
)
def test_windows_and_alerts_match_the_offline_model(
    broker,
    deploy_dir,
    tiny_data,
    tmp_path,
    cell: str,
    hop: int | None,
    sensors: str,
    protocol: int,
) -> None:
    deploy = deploy_dir(cell, hop)
    manifest = Manifest.load(deploy)
    runs = select_runs(tiny_data, manifest, count=4, length=120)
    reference = offline_windows(deploy, runs)
    events = expected_events(reference, k=2, threshold=0.0)
    config = gateway_config(
        tmp_path / "gw.yaml",
        deploy,
        broker.host,
        broker.port,
        broker={"protocol": protocol},
        topics={"sensors": sensors},
        debounce={"k": 2, "threshold": 0.0, "emit": "all"},
    )
    collector = Collector(broker.host, broker.port)
    service = InProcessService(config)
    assert service.service.link.client.protocol == (5 if protocol == 5 else 4)  # paho: 3.1.1 = 4
    try:
        publisher = Replayer(broker.host, broker.port, binary=(cell == "lstm"))
        publisher.replay(device_ids(runs, len(runs)))
        publisher.close()
        wait_until(lambda: len(collector.bodies("window")) >= len(reference), 20)
    finally:
        assert service.stop() == 0
        collector.close()
    windows = {(b["device_id"], b["window_start_ts"]): b for b in collector.bodies("window")}
    assert set(windows) == set(reference)
    for key, probs in reference.items():
        got = windows[key]
        assert np.abs(np.asarray(got["probs"]) - probs).max() <= 1e-4
        assert got["class_index"] == int(probs.argmax())
        assert got["model_version"] == manifest.model_version
    alerts = [
        (b["device_id"], b["event"], b["window_start_ts"])
        for b in collector.bodies()
        if b["event"] in ("raised", "cleared")
    ]
    assert events and sorted(alerts) == sorted(events)
    assert all(b["class_index"] != 0 for b in collector.bodies("raised"))


def test_bad_input_storm_is_counted_and_valid_windows_survive(
    broker, deploy_dir, tiny_data, tmp_path
) -> None:
    deploy = deploy_dir("gru", None)
    manifest = Manifest.load(deploy)
    runs = select_runs(tiny_data, manifest, count=3, length=80)
    reference = offline_windows(deploy, runs)
    config = gateway_config(
        tmp_path / "gw.yaml",
        deploy,
        broker.host,
        broker.port,
        debounce={"emit": "all"},
        max_payload_bytes=2048,
        broker={"host": broker.host, "port": broker.port, "protocol": 311},
    )
    f = manifest.n_features
    bad = {
        "not_json": b"\x00garbage{",
        "bad_schema": b'{"values": [1]}',
        "wrong_length": encode_json(1.0, [0.0] * (f - 1)),
        "non_finite": json.dumps({"ts": 1.0, "values": [float("nan")] * f}).encode(),
        "unknown_feature": json.dumps({"ts": 1.0, "values": {"nope": 1.0}}).encode(),
        "oversized": encode_json(1.0, [1.0] * 1000),
        "bad_binary": b"EL\x01\x00\x05\x00short",
    }
    collector = Collector(broker.host, broker.port)
    service = InProcessService(config)
    publisher = Replayer(broker.host, broker.port, qos=1)
    sent = dict.fromkeys(bad, 0)
    try:
        for i in range(len(runs[0].ts)):
            for j, run in enumerate(runs):
                ts, values = run.ts[i : i + 1], run.values[i : i + 1]
                payload = (
                    encode_binary(ts, values)
                    if j == 0
                    else encode_json(float(ts[0]), values[0].tolist())
                )
                publisher.send(run.run_id, payload)
                for reason, junk in bad.items():
                    # the storm hits the valid devices' own topics and a rogue device
                    for device in (run.run_id, "rogue"):
                        publisher.send(device, junk)
                        sent[reason] += 1
        publisher.close()
        total_bad = sum(sent.values())
        assert total_bad >= 3000
        wait_until(lambda: len(collector.bodies("window")) >= len(reference), 30)
        wait_until(
            lambda: (
                sum(v for k, v in service.counters().items() if k.startswith("invalid_"))
                >= total_bad
            ),
            10,
        )
        counters = service.counters()
    finally:
        assert service.stop() == 0
        collector.close()
    assert {r: counters.get(f"invalid_{r}", 0) for r in bad} == sent
    windows = {(b["device_id"], b["window_start_ts"]): b for b in collector.bodies("window")}
    assert set(windows) == set(reference)
    assert (
        max(np.abs(np.asarray(windows[k]["probs"]) - p).max() for k, p in reference.items()) <= 1e-4
    )
    assert counters["readings"] == sum(len(r.ts) for r in runs)


def test_reload_to_another_cell_resets_windows_and_serves_the_new_model(
    broker, deploy_dir, tiny_data, tmp_path, caplog
) -> None:
    import logging
    import shutil

    from runtime.replay import Run

    deploy = shutil.copytree(deploy_dir("gru", None), tmp_path / "deploy")
    runs = select_runs(tiny_data, Manifest.load(deploy), count=2, length=120)
    first = [Run(r.run_id, r.ts[:50], r.values[:50], []) for r in runs]
    second = [Run(r.run_id, r.ts[50:], r.values[50:], []) for r in runs]
    before = offline_windows(deploy, first)
    config = gateway_config(
        tmp_path / "gw.yaml", deploy, broker.host, broker.port, debounce={"emit": "all"}
    )
    collector = Collector(broker.host, broker.port)
    service = InProcessService(config)
    try:
        publisher = Replayer(broker.host, broker.port)
        publisher.replay(device_ids(first, len(first)))
        assert wait_until(lambda: len(collector.bodies("window")) >= len(before), 10)
        shutil.copytree(deploy_dir("lstm", None), deploy, dirs_exist_ok=True)
        with caplog.at_level(logging.INFO, logger="runtime.daemon"):
            service.service.request_reload()
            assert wait_until(lambda: service.counters().get("reloads") == 1, 10)
        after = offline_windows(deploy, second)  # the LSTM, on readings after the reset
        publisher.replay(device_ids(second, len(second)))
        publisher.close()
        total = len(before) + len(after)
        assert wait_until(lambda: len(collector.bodies("window")) >= total, 10)
    finally:
        assert service.stop() == 0
        collector.close()
    windows = {(b["device_id"], b["window_start_ts"]): b for b in collector.bodies("window")}
    assert set(windows) == set(before) | set(after)
    for key, probs in after.items():
        assert np.abs(np.asarray(windows[key]["probs"]) - probs).max() <= 1e-4
        assert windows[key]["model"].startswith("student-lstm")
    assert "restarted 6 open windows" in caplog.text
