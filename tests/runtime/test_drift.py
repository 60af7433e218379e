"""The drift monitor: mean shift, PSI and the thresholds on hand-made data, what export writes,
drift events through a real broker and the outbox (raised once, cleared once, never for a
steady device; nothing when off or when the folder predates the reference)."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from converters.drift_reference import block_means, drift_reference, shares, training_readings
from runtime.alerts import alert_id
from runtime.config import config_from_dict
from runtime.drift import DriftMonitor, psi
from runtime.errors import ManifestError
from runtime.manifest import MANIFEST_FILE, Manifest
from runtime.parse import encode_json
from tests.runtime.helpers import Collector, InProcessService, gateway_config, wait_until

FAST = {  # seconds, so that a test sees a raise and a clear within a few seconds
    "interval_s": 0.25,
    "for_s": 0.5,
    "half_life_s": 0.4,
    "min_readings": 100,
    "threshold": 4.0,
    "clear_threshold": 2.0,
}


def _manifest(n_features: int = 3, seed: int = 0) -> Manifest:
    """A manifest with a reference built from standard-normal "training" readings (raw =
    normalized: mean 0, std 1) and made-up validation probabilities."""
    rng = np.random.default_rng(seed)
    train = rng.standard_normal((20_000, n_features))
    runs = np.repeat([f"run-{i}" for i in range(20)], 1_000)
    val = rng.dirichlet([4.0, 1.0, 1.0], size=400)
    return Manifest(
        model_name="m",
        model_version="1",
        model_kind="teacher",
        features=[f"f{i}" for i in range(n_features)],
        norm_mean=[0.0] * n_features,
        norm_std=[1.0] * n_features,
        classes=["normal", "a", "b"],
        window=10,
        hop=10,
        drift_reference=drift_reference(train, runs, val, 3, block=200),
    )


def _monitor(manifest: Manifest, **drift) -> DriftMonitor:
    from runtime.stats import Stats

    cfg = config_from_dict({"model_dir": "unused", "drift": {**FAST, **drift}})
    monitor = DriftMonitor.for_model(cfg, manifest, Stats())
    assert monitor is not None
    return monitor


def test_psi_is_zero_for_the_reference_and_grows_with_a_shift() -> None:
    q = np.array([0.25, 0.25, 0.25, 0.25, 0.0])
    assert psi(q, q) == pytest.approx(0.0, abs=1e-12)  # an empty bin on both sides adds nothing
    moved = np.array([0.1, 0.2, 0.3, 0.4, 0.0])
    by_hand = sum((p - r) * np.log(p / r) for p, r in zip(moved[:4], q[:4], strict=True))
    assert psi(moved, q) == pytest.approx(by_hand)
    # everything beyond what training saw: large, yet finite (shares floored at EPS)
    outside = np.array([0.0, 0.0, 0.0, 0.0, 1.0])
    assert 5.0 < psi(outside, q) < np.inf


def test_a_shifted_device_raises_after_for_s_and_clears_the_same_way() -> None:
    manifest = _manifest()
    monitor = _monitor(manifest)
    rng = np.random.default_rng(1)
    now = 0.0
    events: list[tuple[float, str, dict]] = []

    def interval(shift: float) -> dict:
        nonlocal now
        steady = rng.standard_normal((400, 3))
        moved = rng.standard_normal((400, 3)) + np.array([shift, 0.0, 0.0])
        monitor.observe([("steady", steady[:200]), ("moving", moved), ("steady", steady[200:])])
        now += FAST["interval_s"]
        summary, new = monitor.evaluate(now)
        events.extend((now, device, body["event"], body) for device, body in new)
        return summary

    interval(0.0)  # 400 steady readings each: both judged from here on
    first = interval(3.0)
    assert not events, "raised before for_s had passed"
    assert first["top"][0]["device_id"] == "moving" and first["top"][0]["max_shift"] > 4.0
    assert first["top"][0]["features"]["f0"]["psi"] > 0.5  # reported beside the shift
    assert first["top"][0]["features"]["f0"]["mean"] > 1.0  # the shifted feature is listed first
    for _ in range(3):
        interval(3.0)
    assert [(d, e) for _, d, e, _ in events] == [("moving", "raised")]
    raised = events[0][3]
    assert raised["feature"] == "f0" and raised["value"] > 4.0 and raised["kind"] == "drift"
    assert raised["statistic"] == "max_mean_shift" and raised["shift"]["f0"] == raised["value"]
    assert type(raised["since"]) is float  # alert_id keys on its repr
    assert raised["alert_id"] == alert_id("gateway", "moving", "drift", "raised", raised["since"])
    summary = interval(3.0)
    assert summary["drifting"] == 1 and summary["top"][0]["drifting"]
    for _ in range(20):
        interval(0.0)
    assert [(d, e) for _, d, e, _ in events] == [("moving", "raised"), ("moving", "cleared")]
    assert all(d != "steady" for _, d, _, _ in events)


def test_a_device_with_few_readings_is_not_judged() -> None:
    monitor = _monitor(_manifest(), min_readings=10_000)
    for step in range(10):
        monitor.observe([("dev", np.full((100, 3), 9.0))])
        summary, events = monitor.evaluate(step * 1.0)
        assert not events
    assert summary["judged"] == 0 and summary["top"][0]["judged"] is False


def test_one_operating_point_is_not_drift_however_large_its_psi() -> None:
    """A device that stays at one value the training runs visit: PSI against the split's
    marginal is large (its readings fill one bin), yet its mean lies inside the training
    blocks' spread, so it is not drifting (the demo's normal devices behave like this)."""
    manifest = _manifest(seed=3)
    monitor = _monitor(manifest, min_readings=1)
    rng = np.random.default_rng(4)
    for step in range(10):
        monitor.observe([("one-point", 0.05 + 0.01 * rng.standard_normal((400, 3)))])
        summary, events = monitor.evaluate(step * FAST["interval_s"])
        assert not events
    top = summary["top"][0]
    assert top["features"]["f0"]["psi"] > 1.0 and top["max_shift"] < FAST["clear_threshold"]


def test_the_pool_grows_past_its_first_slots_and_forgets_evicted_devices() -> None:
    monitor = _monitor(_manifest(), min_readings=1)
    rng = np.random.default_rng(2)
    batch = [
        (f"d{i}", rng.standard_normal((5, 3)) + (9.0 if i == 150 else 0.0)) for i in range(200)
    ]
    monitor.observe(batch)
    monitor.observe(batch[:100])  # figures of earlier slots survive the growth
    summary, _ = monitor.evaluate(1.0)
    assert summary["devices"] == 200 and summary["top"][0]["device_id"] == "d150"
    assert monitor.weights[monitor.slots["d0"]] == pytest.approx(10 * monitor.decay)
    freed = monitor.slots["d150"]
    monitor.forget("d150")
    monitor.observe([("new", rng.standard_normal((5, 3)))])
    summary, _ = monitor.evaluate(2.0)
    assert summary["devices"] == 200 and monitor.slots["new"] == freed  # reused, zeroed
    assert monitor.weights[monitor.slots["new"]] == pytest.approx(5.0 * monitor.decay)


def test_confidence_and_class_mix_are_compared_with_validation() -> None:
    from runtime.streams import WindowResult

    manifest = _manifest()
    monitor = _monitor(manifest)
    sure_normal = np.array([0.98, 0.01, 0.01])  # validation was mostly normal, less sure
    results = [WindowResult("d", 0.0, 1.0, sure_normal, 0.0, 0.0, 0.0)] * 200
    monitor.observe_windows(results)
    summary, _ = monitor.evaluate(1.0)
    assert summary["confidence"]["psi"] > 1.0  # every window in the top confidence bin
    assert summary["classes"]["share"]["normal"] == pytest.approx(1.0)
    reference = manifest.drift_reference
    assert reference is not None
    expected = psi(np.array([1.0, 0.0, 0.0]), np.asarray(reference.class_share))
    assert summary["classes"]["psi"] == pytest.approx(float(expected), rel=1e-6)


def test_config_errors_name_the_key_and_the_fix() -> None:
    from runtime.errors import ConfigError

    with pytest.raises(ConfigError, match=r"drift\.clear_threshold: must be >= 0 and <= drift"):
        config_from_dict({"model_dir": "m", "drift": {"threshold": 0.1, "clear_threshold": 0.2}})
    with pytest.raises(ConfigError, match=r"topics\.drift_events: needs \{device_id\}"):
        config_from_dict({"model_dir": "m", "topics": {"drift_events": "edgelstm/drift"}})


def test_the_manifest_refuses_a_reference_of_the_wrong_shape() -> None:
    raw = _manifest().to_dict()
    raw["drift_reference"]["share"] = raw["drift_reference"]["share"][:-1]
    with pytest.raises(ManifestError, match=r"drift_reference\.share.*re-export"):
        Manifest.from_dict(raw)
    raw = _manifest().to_dict()
    raw["drift_reference"]["class_share"] = [1.0]
    with pytest.raises(ManifestError, match=r"drift_reference\.class_share"):
        Manifest.from_dict(raw)


def test_the_exported_reference_matches_its_training_readings(
    deploy_dir, tiny_config, tiny_data
) -> None:
    """Export's reference through the runtime's own binning: the training readings (raw, as a
    device would send them) have PSI ~0 against it, and the shapes are as documented."""
    from edge_lstm.data.prepare import prepare_data

    manifest = Manifest.load(deploy_dir("gru"))
    ref = manifest.drift_reference
    assert ref is not None
    assert np.asarray(ref.edges).shape == (manifest.n_features, 11)
    assert np.asarray(ref.share).shape == (manifest.n_features, 12)
    assert ref.windows > 0 and len(ref.class_share) == manifest.n_classes
    assert sum(ref.confidence_share) == pytest.approx(1.0)
    data = prepare_data(tiny_config)
    z, runs = training_readings(data, tiny_config.data.run_column)
    assert ref.readings == len(z) and ref.block == 5 * manifest.window
    blocks = block_means(z, runs, ref.block)
    np.testing.assert_allclose(ref.block_mean, blocks.mean(axis=0), atol=1e-9)
    np.testing.assert_allclose(ref.block_sd, blocks.std(axis=0, ddof=1), atol=1e-9)
    np.testing.assert_allclose(shares(z, np.asarray(ref.edges)), ref.share, atol=1e-12)
    raw = z * np.asarray(manifest.norm_std) + np.asarray(manifest.norm_mean)
    monitor = _monitor(manifest, min_readings=1)
    monitor.observe([("train", raw)])
    summary, _ = monitor.evaluate(1.0)
    top = summary["top"][0]
    assert all(f["psi"] < 1e-3 for f in top["features"].values())
    assert top["max_shift"] < 1.0  # the pooled readings' mean is the blocks' mean
    # an old folder (no reference) still loads
    old = manifest.to_dict()
    del old["drift_reference"]
    assert Manifest.from_dict(old).drift_reference is None


# ---- through the broker ---------------------------------------------------------------------


class QosRecorder:
    """Records (topic, qos, body) of every message on `topic` at subscription QoS 1."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.messages: list[tuple[str, int, dict]] = []
        self.lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        assert subscribed.wait(10), "could not subscribe"

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.qos, json.loads(msg.payload)))

    def of(self, suffix: str) -> list[tuple[str, int, dict]]:
        with self.lock:
            return [m for m in self.messages if m[0].endswith(suffix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _training_readings(tiny_config, manifest: Manifest) -> np.ndarray:
    """The training split's raw readings: what a steady device sends."""
    from edge_lstm.data.prepare import prepare_data

    z, _ = training_readings(prepare_data(tiny_config), tiny_config.data.run_column)
    return z * np.asarray(manifest.norm_std) + np.asarray(manifest.norm_mean)


def _send(client: mqtt.Client, device: str, rows: np.ndarray, ts0: float, period: float) -> float:
    ts = ts0 + period * np.arange(1, len(rows) + 1)
    payload = encode_json(ts.tolist(), rows.astype(np.float32).tolist())
    client.publish(f"sensors/{device}/data", payload, qos=0)
    return float(ts[-1])


@pytest.mark.broker
def test_a_drifting_device_raises_one_drift_event_and_clears(
    broker, deploy_dir, tiny_config, tmp_path
) -> None:
    deploy = deploy_dir("gru")
    manifest = Manifest.load(deploy)
    pool = _training_readings(tiny_config, manifest)
    shift = np.zeros(manifest.n_features)
    shift[0] = 6.0 * manifest.norm_std[0]
    config = gateway_config(tmp_path / "gw.yaml", deploy, broker.host, broker.port, drift=FAST)
    recorder = QosRecorder(broker.host, broker.port, "edgelstm/test/drift/#")
    service = InProcessService(config)
    sender = mqtt.Client(CallbackAPIVersion.VERSION2)
    sender.connect(broker.host, broker.port)
    sender.loop_start()
    rng = np.random.default_rng(0)
    period = manifest.sample_period_s or 0.1
    clock = {"steady": 1.7e9, "drifty": 1.7e9}

    def feed(seconds: float, drifting: bool, until=lambda: False) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for device in clock:
                rows = pool[rng.integers(0, len(pool), 50)]
                if drifting and device == "drifty":
                    rows = rows + shift
                clock[device] = _send(sender, device, rows, clock[device], period)
            if until():
                return True
            time.sleep(0.05)
        return until()

    try:
        raised = feed(10, True, lambda: bool(recorder.of("/drift/drifty")))
        assert raised, "no drift event within 10 s"
        cleared = feed(15, False, lambda: len(recorder.of("/drift/drifty")) >= 2)
        assert cleared, "the drift did not clear within 15 s"
        feed(1.0, False)  # an interval more: nothing else may come
        counters = service.counters()
    finally:
        sender.disconnect()
        sender.loop_stop()
        assert service.stop() == 0
        recorder.close()
    events = recorder.of("/drift/drifty")
    assert [body["event"] for _, _, body in events] == ["raised", "cleared"]
    assert all(qos == 1 for _, qos, _ in events)
    raised_body = events[0][2]
    assert raised_body["feature"] == manifest.features[0]
    assert raised_body["alert_id"] == str(uuid.UUID(raised_body["alert_id"]))
    assert raised_body["alert_id"] == alert_id(
        "test", "drifty", "drift", "raised", raised_body["since"]
    )
    assert not recorder.of("/drift/steady")
    assert counters.get("drift_raised") == 1 and counters.get("drift_cleared") == 1
    summaries = recorder.of("edgelstm/test/drift")
    assert summaries and all(qos == 0 for _, qos, _ in summaries)
    last = summaries[-1][2]
    assert last["devices"] == 2 and {d["device_id"] for d in last["top"]} == {"steady", "drifty"}
    assert last["confidence"]["windows"] > 0


def _strip_reference(deploy: Path, to: Path) -> Path:
    shutil.copytree(deploy, to)
    raw = json.loads((to / MANIFEST_FILE).read_text())
    del raw["drift_reference"]
    (to / MANIFEST_FILE).write_text(json.dumps(raw))
    return to


@pytest.mark.broker
@pytest.mark.parametrize("case", ["disabled", "old manifest"])
def test_no_monitor_publishes_nothing_and_serves(
    broker, deploy_dir, tiny_config, tmp_path, caplog, case: str
) -> None:
    deploy = deploy_dir("gru")
    drift = {**FAST, "enabled": case != "disabled"}
    if case == "old manifest":
        deploy = _strip_reference(deploy, tmp_path / "old-deploy")
    manifest = Manifest.load(deploy)
    config = gateway_config(
        tmp_path / "gw.yaml", deploy, broker.host, broker.port, drift=drift, stats_interval_s=0.3
    )
    collector = Collector(broker.host, broker.port)
    sender = mqtt.Client(CallbackAPIVersion.VERSION2)
    sender.connect(broker.host, broker.port)
    sender.loop_start()
    with caplog.at_level(logging.INFO, logger="runtime.drift"):
        service = InProcessService(config)
    try:
        assert service.service.drift is None
        rows = _training_readings(tiny_config, manifest)[: 3 * manifest.window]
        _send(sender, "dev", rows, 1.7e9, manifest.sample_period_s or 0.1)
        assert wait_until(lambda: service.counters().get("windows", 0) >= 1, 10)
        stats_seen = collector.count("stats")
        assert wait_until(lambda: collector.count("stats") >= stats_seen + 2, 5)
    finally:
        sender.disconnect()
        sender.loop_stop()
        assert service.stop() == 0
        collector.close()
    assert collector.count("drift") == 0
    noted = "no drift_reference" in caplog.text
    assert noted == (case == "old manifest")
