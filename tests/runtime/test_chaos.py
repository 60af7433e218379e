"""Chaos: tracked devices replay runs through a real Mosquitto while a storm arrives — every kind
of malformed message in the catalogue, hypothesis-fuzzed payloads, refused device ids and
50,000 throwaway ids — and meanwhile the broker restarts and the service is killed (SIGKILL)
and started again. It proves: the process never exits on its own, every bad message is counted
under its reason (exactly, for the storm sent to the restarted process), every window of the
tracked devices equals the window graph on the same readings, every alert carries an id and a
fault is raised once per episode across the restart, and the resident memory stays bounded.
"""

from __future__ import annotations

import collections
import json
import signal
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from edge_lstm.reporting.gateway_harness import rss_mb
from runtime.manifest import Manifest
from runtime.outbox import OUTBOX_FILE
from runtime.parse import Parser, Reason, encode_json
from runtime.replay import Replayer, device_ids
from tests.runtime.helpers import (
    Collector,
    ServeProcess,
    gateway_config,
    offline_windows,
    select_runs,
    wait_until,
)
from tests.runtime.malformed import malformed_messages
from tests.runtime.test_parse_fuzz import trees

pytestmark = pytest.mark.broker

TRACKED = 6  # devices replaying whole runs, checked window by window
RATE_HZ = 12.0  # readings per second per tracked device: a run lasts ~17 s
JUNK_IDS = 50_000  # throwaway device ids, one valid reading each
MAX_DEVICES = 2_000  # the device cap under test (the default is 10,000)
FUZZ_PER_PHASE = 1_000  # hypothesis payloads sent to each of the two processes
CATALOGUE_REPEATS = 5  # each malformed kind, per phase
STORM_RATE = 6_000.0  # storm messages per second
RSS_BOUND_MB = 250.0  # the stated bound on the service's resident memory
MAX_PAYLOAD = 65_536
STATUS = "edgelstm/test/status"


def fuzzed_payloads(n: int, seed: int) -> list[bytes]:
    """n payloads drawn by hypothesis: raw bytes and serialized arbitrary JSON trees."""
    drawn: list[bytes] = []
    payloads = st.binary(max_size=512) | trees.map(lambda t: json.dumps(t).encode())

    @settings(
        max_examples=n,
        database=None,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(payloads)
    def draw(payload: bytes) -> None:
        drawn.append(payload)

    draw()
    rng = np.random.default_rng(seed)
    return [drawn[i] for i in rng.permutation(len(drawn))]


def storm_messages(n_features: int, junk: range, seed: int) -> list[tuple[str, bytes, int]]:
    """(topic, payload, qos) of one phase's storm, interleaved: bad messages at QoS 1 so that
    each reaches the gateway exactly as counted, throwaway ids at QoS 0."""
    bad: list[tuple[str, bytes, int]] = []
    for _ in range(CATALOGUE_REPEATS):
        for entry in malformed_messages(n_features, MAX_PAYLOAD):
            bad.append((f"sensors/bad-{entry.name}/data", entry.payload, 1))
        bad.append((f"sensors/{'x' * 65_520}/data", b"{}", 1))  # id over the 128-byte limit
        bad.append(("sensors//data", b"{}", 1))  # empty id
    bad += [("sensors/fuzz/data", p, 1) for p in fuzzed_payloads(FUZZ_PER_PHASE, seed)]
    row = [0.5] * n_features
    throwaway = [(f"sensors/junk-{i}/data", encode_json(1.7e9, row), 0) for i in junk]
    every = max(len(throwaway) // max(len(bad), 1), 1)
    mixed: list[tuple[str, bytes, int]] = []
    for i, message in enumerate(throwaway):
        if i % every == 0 and bad:
            mixed.append(bad.pop())
        mixed.append(message)
    return mixed + bad


def expected_counts(parser: Parser, storm: list[tuple[str, bytes, int]]) -> collections.Counter:
    """The invalid_* counters the gateway must report for the storm's bad messages."""
    counts: collections.Counter = collections.Counter()
    for topic, payload, qos in storm:
        if qos == 0:
            continue
        device = topic.split("/")[1]
        if not 0 < len(device.encode()) <= 128:
            counts[Reason.BAD_DEVICE_ID.counter] += 1
            continue
        parsed = parser.parse(payload)
        if isinstance(parsed, Reason):
            counts[parsed.counter] += 1
    return counts


class Storm:
    """A publisher of its own that sends a phase's storm at a steady rate on a thread."""

    def __init__(self, host: str, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.max_inflight_messages_set(1_000)
        self.client.reconnect_delay_set(1, 1)
        self.client.connect(host, port)
        self.client.loop_start()
        self.thread: threading.Thread | None = None
        self.last: mqtt.MQTTMessageInfo | None = None

    def start(self, messages: list[tuple[str, bytes, int]]) -> None:
        self.thread = threading.Thread(target=self._send, args=(messages,), daemon=True)
        self.thread.start()

    def _send(self, messages: list[tuple[str, bytes, int]]) -> None:
        started = time.monotonic()
        for i, (topic, payload, qos) in enumerate(messages):
            delay = started + i / STORM_RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            info = self.client.publish(topic, payload, qos=qos)
            if qos:
                self.last = info

    def join(self, timeout_s: float) -> None:
        assert self.thread is not None
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the storm did not finish in time"
        if self.last is not None:
            self.last.wait_for_publish(timeout_s)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Watch:
    """Samples a serving process: whether it is alive and its resident memory."""

    def __init__(self) -> None:
        self.proc: ServeProcess | None = None
        self.expected_exit = False
        self.unexpected_exits: list[int] = []
        self.rss_mb: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def follow(self, proc: ServeProcess) -> None:
        self.proc, self.expected_exit = proc, False

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            proc = self.proc
            if proc is None:
                continue
            rc = proc.proc.poll()
            if rc is not None:
                if not self.expected_exit and rc not in self.unexpected_exits:
                    self.unexpected_exits.append(rc)
                continue
            try:
                self.rss_mb.append(rss_mb(proc.proc.pid))
            except OSError:
                continue  # it has just exited

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


def latest_counters(collector: Collector, after: int = 0) -> dict[str, int]:
    stats = collector.payloads("/stats")[after:]
    return stats[-1]["counters"] if stats else {}


def settled(collector: Collector, after: int) -> bool:
    """Two stats messages in a row with the same bad-input totals and an empty queue."""
    stats = collector.payloads("/stats")[after:]
    if len(stats) < 2:
        return False
    a, b = stats[-2], stats[-1]

    def bad(snap: dict) -> int:
        return sum(v for k, v in snap["counters"].items() if k.startswith("invalid_"))

    return bad(a) == bad(b) and b["gauges"].get("queue", 0) == 0


def check_episodes(bodies: list[dict], classes: list[str]) -> dict[str, int]:
    """Every alert has a UUID; one id is one event; per device, raised and cleared alternate
    (a fault is never raised again while it is active). Returns each device's active fault."""
    by_id: dict[str, dict] = {}
    for body in bodies:
        uuid.UUID(body["alert_id"])
        key = (body["device_id"], body["event"], body["class"], body["window_end_ts"])
        seen = by_id.setdefault(body["alert_id"], {"key": key})
        assert seen["key"] == key, f"one alert id for two events: {seen['key']} / {key}"
    events = sorted((v["key"] for v in by_id.values()), key=lambda k: (k[0], k[3]))
    active: dict[str, int] = {}
    for device, kind, name, end_ts in events:
        now = active.get(device, 0)
        index = classes.index(name)
        if kind == "raised":
            assert index != now, f"{device}: {name} raised again at {end_ts} while active"
            active[device] = index
        else:
            assert index == now, f"{device}: {name} cleared at {end_ts} but was not active"
            active[device] = 0
    return {d: c for d, c in active.items() if c}


def test_chaos(broker, deploy_dir, tiny_data, tmp_path: Path) -> None:
    deploy = deploy_dir("gru", None)
    manifest = Manifest.load(deploy)
    runs = select_runs(tiny_data, manifest, count=TRACKED)
    tracked = {run.run_id for run in runs}
    reference = offline_windows(deploy, runs, stride=1)
    parser = Parser(manifest.features, MAX_PAYLOAD)
    storm_a = storm_messages(manifest.n_features, range(JUNK_IDS // 2), seed=1)
    storm_b = storm_messages(manifest.n_features, range(JUNK_IDS // 2, JUNK_IDS), seed=2)
    kinds = {topic.split("/")[1] for topic, _, qos in storm_a if qos}
    assert len(kinds) >= 25 + 1  # catalogue kinds, two refused ids, "fuzz"
    config = gateway_config(
        tmp_path / "gw.yaml",
        deploy,
        broker.host,
        broker.port,
        debounce={"k": 2, "threshold": 0.0, "emit": "all", "results_qos": 1},
        limits={"max_devices": MAX_DEVICES, "new_device_idle_s": 1.0},
        max_payload_bytes=MAX_PAYLOAD,
    )
    collector = Collector(broker.host, broker.port, client_id="chaos-collector")
    watch = Watch()
    storm = Storm(broker.host, broker.port)
    publisher = Replayer(broker.host, broker.port, qos=1)
    sender = threading.Thread(
        target=publisher.replay, args=(device_ids(runs, len(runs)), RATE_HZ), daemon=True
    )
    first = ServeProcess(config, tmp_path / "first")
    second: ServeProcess | None = None
    watch.follow(first)
    try:
        assert wait_until(lambda: collector.payloads(STATUS)[-1:] == ["online"], 15), first.log
        sender.start()
        storm.start(storm_a)
        time.sleep(2.0)
        broker.restart()  # sessions and queued QoS 1 messages survive (persistence)
        storm.join(30)
        stats_before = len(collector.payloads("/stats"))
        assert wait_until(lambda: settled(collector, stats_before), 20), first.log
        counters_a = latest_counters(collector)

        watch.expected_exit = True
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(5)
        statuses = len(collector.payloads(STATUS))
        second = ServeProcess(config, tmp_path / "second")
        watch.follow(second)
        assert wait_until(lambda: "online" in collector.payloads(STATUS)[statuses:], 15)
        stats_b = len(collector.payloads("/stats"))
        storm.start(storm_b)
        storm.join(30)
        sender.join(30)
        publisher.close()
        assert wait_until(lambda: settled(collector, stats_b), 20), second.log
        assert wait_until(
            lambda: collector.payloads("/stats")[-1]["gauges"].get("outbox_unacked", 1) == 0, 10
        )
        counters_b = latest_counters(collector, stats_b)
        watch.expected_exit = True
        assert second.stop() == 0, second.log
    finally:
        watch.expected_exit = True
        first.stop()
        if second is not None:
            second.stop()
        storm.close()
        collector.close()
        watch.close()

    # the process never exited on its own, and said why nothing went wrong
    assert watch.unexpected_exits == [], first.log + (second.log if second else "")
    assert "Traceback" not in first.log + second.log
    # phase A (with the broker restart, which may lose or redeliver): every reason was counted
    for reason in expected_counts(parser, storm_a):
        assert counters_a.get(reason, 0) > 0, reason
    # phase B (the restarted process): exactly as many of each reason as were sent
    want_b = expected_counts(parser, storm_b)
    got_b = {k: v for k, v in counters_b.items() if k.startswith("invalid_")}
    assert got_b == dict(want_b)
    assert counters_b.get("invalid_handler_error", 0) == 0
    # the device cap held while 25,000 throwaway ids arrived
    assert counters_b.get("evicted_devices", 0) + counters_b.get("dropped_device_limit", 0) > 0
    assert all(s["gauges"]["devices"] <= MAX_DEVICES for s in collector.payloads("/stats"))

    # every window of the tracked devices is the window graph on W consecutive readings
    windows = [b for b in collector.bodies("window") if b["device_id"] in tracked]
    distinct = {(b["device_id"], b["window_start_ts"]) for b in windows}
    for body in windows:
        probs = reference[(body["device_id"], body["window_start_ts"])]
        assert np.abs(np.asarray(body["probs"]) - probs).max() <= 1e-4
    uninterrupted = sum((len(r.ts) - manifest.window) // manifest.hop + 1 for r in runs)
    assert len(distinct) >= 0.5 * uninterrupted, (len(distinct), uninterrupted)

    # alerts: an id each, one raise per episode across the SIGKILL, state kept for the rest
    alerts = [b for b in collector.bodies() if b["event"] in ("raised", "cleared")]
    alerts = [b for b in alerts if b["device_id"] in tracked]
    assert alerts, "the storm run raised no alert on the tracked devices"
    active = check_episodes(alerts, manifest.classes)
    db = sqlite3.connect(f"file:{tmp_path / 'state' / OUTBOX_FILE}?mode=ro", uri=True)
    with db:
        stored = dict(db.execute("SELECT device_id, active FROM alert_state").fetchall())
    assert {d: c for d, c in stored.items() if d in tracked} == active

    # memory stayed bounded
    assert watch.rss_mb and max(watch.rss_mb) <= RSS_BOUND_MB, max(watch.rss_mb)
    print(
        f"chaos: {len(kinds)} bad kinds, storm {len(storm_a)} + {len(storm_b)} messages, "
        f"rss max {max(watch.rss_mb):.0f} MB, windows {len(distinct)} of {uninterrupted} "
        f"uninterrupted, alerts {len({b['alert_id'] for b in alerts})} "
        f"({len(alerts)} deliveries), evicted {counters_b.get('evicted_devices', 0)}, "
        f"refused {counters_b.get('dropped_device_limit', 0)}, phase B counters {got_b}"
    )
