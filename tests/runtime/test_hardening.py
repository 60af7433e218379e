"""The hardened gateway daemon, end to end: real Mosquitto, real ONNX Runtime, real SQLite state.

What this file proves, one test each:
- poison JSON (deep nesting, a 401-digit integer) is counted under its own `invalid_*` counter
  and the readings behind it on the same device still make exact windows;
- anything a parser raises on paho's network thread is caught, counted as
  `invalid_handler_error`, and the network thread keeps reading;
- device ids that are empty or longer than `limits.max_device_id_bytes` (even a legal 65,520-byte
  MQTT topic level) are refused before they reach any state or the outbox;
- READY=1 goes to systemd only after the first CONNACK, and failed attempts are logged;
- the systemd watchdog is fed only while the network thread makes progress;
- readings lost in gaps are counted per device, named in the stats message with a warning that
  points at the broker settings, and no window spans a gap;
- a broker password without TLS is warned about at start;
- the MQTT v5 Maximum Packet Size makes the broker drop oversized messages before paho reads
  them;
- alerts carry a deterministic `alert_id`, and a restart restores the raised faults, so it
  neither raises an active fault again nor forgets to clear it.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_lstm.local_broker import LocalBroker, free_port
from runtime.alerts import alert_id
from runtime.config import load_gateway_config
from runtime.daemon import Service
from runtime.manifest import Manifest
from runtime.mqtt import max_packet_bytes
from runtime.parse import Parser, Readings, Reason, encode_json
from runtime.replay import Replayer, Run, load_runs
from tests.runtime.helpers import (
    Collector,
    InProcessService,
    gateway_config,
    offline_windows,
    select_runs,
    wait_until,
)

pytestmark = pytest.mark.broker

GATEWAY = "test"
STATS = f"edgelstm/{GATEWAY}/stats"


# ---- helpers --------------------------------------------------------------------------------


def _config(path: Path, deploy: Path, host: str, port: int, **sections) -> Path:
    """gateway_config with a clean MQTT session: the gateway's client id is shared by every
    runtime test on the session broker, and a persistent session could hand this test
    readings another test left queued."""
    broker = {"host": host, "port": port, "clean_start": True, **sections.pop("broker", {})}
    return gateway_config(path, deploy, host, port, broker=broker, **sections)


def _publisher(broker) -> Replayer:
    return Replayer(broker.host, broker.port, qos=1)


def _send_run(publisher: Replayer, device_id: str, run: Run, lo: int = 0, hi: int | None = None):
    """Publishes readings lo..hi of a run as single JSON readings with their own timestamps."""
    for i in range(lo, len(run.ts) if hi is None else hi):
        publisher.send(device_id, encode_json(float(run.ts[i]), run.values[i].tolist()))


def _counter(service: InProcessService, name: str) -> int:
    return service.counters().get(name, 0)


def _windows(collector: Collector, device_id: str) -> dict[float, dict]:
    return {
        b["window_start_ts"]: b
        for b in collector.bodies("window")
        if b.get("device_id") == device_id
    }


def _assert_windows_match(
    got: dict[float, dict], reference: dict[tuple[str, float], np.ndarray], device_id: str
) -> None:
    expected = {start for dev, start in reference if dev == device_id}
    assert set(got) == expected
    for start, body in got.items():
        probs = reference[(device_id, start)]
        assert np.abs(np.asarray(body["probs"]) - probs).max() <= 1e-4
        assert body["class_index"] == int(probs.argmax())


def _has_line(datagram: str, field: str) -> bool:
    lines = datagram.split("\n")
    if field.endswith("="):
        return any(line.startswith(field) for line in lines)
    return field in lines


class NotifyListener:
    """A service manager's end of $NOTIFY_SOCKET: records (monotonic time, datagram)."""

    def __init__(self, path: Path) -> None:
        assert len(str(path)) < 100, f"Unix socket path too long: {path}"
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.got: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                self.got.append((time.monotonic(), data.decode(errors="replace")))

    def received(self, field: str, after: float = 0.0) -> list[tuple[float, str]]:
        """(time, datagram) of those with the line `field` ("READY=1"; "STATUS=" matches any
        status line) that arrived after the monotonic time `after`."""
        with self.lock:
            got = list(self.got)
        return [(t, text) for t, text in got if t > after and _has_line(text, field)]

    def times(self, field: str, after: float = 0.0) -> list[float]:
        return [t for t, _ in self.received(field, after)]

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.sock.close()


# ---- 1. poison payloads ---------------------------------------------------------------------


def test_poison_json_is_counted_and_ingestion_goes_on(
    broker, deploy_dir, tiny_data, tmp_path
) -> None:
    deploy = deploy_dir("gru", None)
    manifest = Manifest.load(deploy)
    run = select_runs(tiny_data, manifest, count=1, length=30)[0]
    reference = offline_windows(deploy, [run])
    assert len(reference) >= 2
    deep = b"[" * 1500 + b"]" * 1500  # ~3 kB, deeper than the JSON decoder recurses
    # a 401-digit integer among the values, timestamped just before the run: were it accepted,
    # it would shift every window of the device
    huge = "9" * 401
    rest = ",".join(["0.0"] * (manifest.n_features - 1))
    big_int = f'{{"ts":{float(run.ts[0]) - 0.1!r},"values":[{huge},{rest}]}}'.encode()
    config = _config(
        tmp_path / "gw.yaml", deploy, broker.host, broker.port, debounce={"emit": "all"}
    )
    collector = Collector(broker.host, broker.port)
    service = InProcessService(config)
    try:
        publisher = _publisher(broker)
        publisher.send(run.run_id, deep)
        publisher.send(run.run_id, big_int)
        _send_run(publisher, run.run_id, run)
        publisher.close()
        assert wait_until(lambda: len(_windows(collector, run.run_id)) >= len(reference), 10)
        assert wait_until(lambda: _counter(service, "readings") >= len(run.ts), 5)
        counters = service.counters()
        assert not service.service.link.network_thread_ended
    finally:
        assert service.stop() == 0
        collector.close()
    assert counters.get(Reason.TOO_DEEP.counter) == 1, counters
    assert counters.get(Reason.OUT_OF_RANGE.counter) == 1, counters
    assert counters.get(Reason.HANDLER_ERROR.counter, 0) == 0, counters
    assert counters["messages"] == len(run.ts) + 2
    assert counters["readings"] == len(run.ts)
    _assert_windows_match(_windows(collector, run.run_id), reference, run.run_id)


# ---- 2. the network thread's catch-all ------------------------------------------------------


class _FaultyParser(Parser):
    """A deliberately faulty parser, standing in for a bug anywhere on the network thread: it
    tests the daemon's catch-all, not the parser (which never raises)."""

    def parse(self, payload: bytes) -> Readings | Reason:
        if payload == b"boom":
            raise RuntimeError("test-induced parser bug")
        return super().parse(payload)


def test_an_exception_on_the_network_thread_is_counted_and_reading_goes_on(
    broker, deploy_dir, tiny_data, tmp_path
) -> None:
    deploy = deploy_dir("gru", None)
    manifest = Manifest.load(deploy)
    run = select_runs(tiny_data, manifest, count=1, length=30)[0]
    reference = offline_windows(deploy, [run])
    config = _config(
        tmp_path / "gw.yaml", deploy, broker.host, broker.port, debounce={"emit": "all"}
    )
    collector = Collector(broker.host, broker.port)
    service = InProcessService(config)
    inner = service.service
    try:
        inner.parsing = (
            _FaultyParser(manifest.features, inner.cfg.max_payload_bytes),
            inner.parsing[1],
        )
        publisher = _publisher(broker)
        publisher.send(run.run_id, b"boom")
        _send_run(publisher, run.run_id, run)
        publisher.close()
        assert wait_until(lambda: len(_windows(collector, run.run_id)) >= len(reference), 10)
        assert wait_until(lambda: _counter(service, "readings") >= len(run.ts), 5)
        counters = service.counters()
        assert not inner.link.network_thread_ended
        assert inner.link.connected.is_set()
    finally:
        assert service.stop() == 0
        collector.close()
    assert counters.get(Reason.HANDLER_ERROR.counter) == 1, counters
    assert counters["readings"] == len(run.ts)
    _assert_windows_match(_windows(collector, run.run_id), reference, run.run_id)


# ---- 3. device ids ------------------------------------------------------------------------


def test_empty_and_huge_device_ids_are_refused_before_any_state(
    broker, deploy_dir, tiny_data, tmp_path
) -> None:
    deploy = deploy_dir("gru", None)
    manifest = Manifest.load(deploy)
    run = select_runs(tiny_data, manifest, count=1, length=20)[0]
    window = manifest.window
    # k=1, threshold 0: a full window of an accepted device raises an alert at once
    config = _config(
        tmp_path / "gw.yaml",
        deploy,
        broker.host,
        broker.port,
        debounce={"k": 1, "threshold": 0.0},
    )
    huge_id = "d" * 65_520  # sensors/<id>/data is 65,533 bytes: a legal MQTT topic
    assert len(f"sensors/{huge_id}/data".encode()) <= 65_535
    collector = Collector(broker.host, broker.port)
    service = InProcessService(config)
    inner = service.service
    bad = Reason.BAD_DEVICE_ID.counter
    try:
        publisher = _publisher(broker)
        for i in range(window):
            # short values keep the packet under the gateway's announced maximum size
            values = [round(float(v), 3) for v in run.values[i]]
            publisher.send(huge_id, encode_json(float(run.ts[i]), values))
        publisher.send("", encode_json(float(run.ts[0]), run.values[0].tolist()))
        assert wait_until(lambda: _counter(service, bad) >= window + 1, 10), service.counters()
        time.sleep(0.3)  # let anything that slipped through reach the engine and the outbox
        refused = service.counters()
        assert inner.outbox.rows == 0
        assert inner.outbox.dead_letters == 0
        assert inner.outbox.alert_state() == {}
        assert len(inner.engine.devices) == 0
        # the service goes on serving a normal device
        _send_run(publisher, "pump-1", run)
        publisher.close()
        assert wait_until(lambda: len(collector.bodies("raised")) >= 1, 10), service.counters()
        after = service.counters()
        assert not inner.link.network_thread_ended and service.thread.is_alive()
    finally:
        assert service.stop() == 0
        collector.close()
    assert refused[bad] == window + 1, refused
    assert refused["messages"] == window + 1
    assert refused.get("readings", 0) == 0 and refused.get("alerts", 0) == 0
    assert after[bad] == window + 1
    assert after["readings"] == window and after["alerts"] == 1
    assert {b["device_id"] for b in collector.bodies()} == {"pump-1"}


# ---- 4. READY=1 after the first CONNACK -----------------------------------------------------


def test_ready_only_after_the_first_connack_and_failures_are_logged(
    deploy_dir, tmp_path, monkeypatch, caplog
) -> None:
    listener = NotifyListener(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    port = free_port()  # nothing listens here yet
    config = _config(tmp_path / "gw.yaml", deploy_dir("gru", None), "127.0.0.1", port)
    service: InProcessService | None = None
    try:
        with caplog.at_level(logging.WARNING, logger="runtime.mqtt"):
            service = InProcessService(config, connect_timeout_s=None)
            time.sleep(2.0)
            assert listener.times("READY=1") == []
            assert listener.times("STATUS=") != []  # the notifier works: it is not ready
            assert not service.service.link.connected.is_set()
            assert service.thread.is_alive()
            assert f"connection to mqtt://127.0.0.1:{port} failed:" in caplog.text
            assert "retrying in" in caplog.text
            # the broker must not inherit $NOTIFY_SOCKET: Mosquitto itself sends READY=1 there
            # when built with systemd support (the service read it at construction)
            monkeypatch.delenv("NOTIFY_SOCKET")
            up = time.monotonic()
            with LocalBroker(port=port) as late:
                assert late.port == port
                assert wait_until(lambda: listener.times("READY=1") != [], 10)
                ready = listener.received("READY=1")
                assert len(ready) == 1 and ready[0][0] >= up
                assert "STATUS=serving student-" in ready[0][1], ready
                assert service.service.link.connected.is_set()
                assert service.stop() == 0
    finally:
        if service is not None and service.thread.is_alive():
            service.stop()
        listener.close()


# ---- 5. the watchdog follows the network thread ---------------------------------------------


def test_watchdog_is_fed_only_while_the_network_thread_makes_progress(
    broker, deploy_dir, tmp_path, monkeypatch
) -> None:
    listener = NotifyListener(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # a ping every 0.2 s
    config = _config(
        tmp_path / "gw.yaml",
        deploy_dir("gru", None),
        broker.host,
        broker.port,
        liveness={"heartbeat_s": 0.2, "stall_after_s": 1.0},
    )
    release = threading.Event()
    entered = threading.Event()
    try:
        service = InProcessService(config)
    except BaseException:
        listener.close()
        raise
    inner = service.service
    try:
        connected = time.monotonic()
        assert wait_until(lambda: len(listener.times("WATCHDOG=1", connected)) >= 3, 3)
        assert inner.stats.counters["liveness_failures"] == 0  # echoes arrive in time
        original: Callable[[str, bytes, float], None] = inner.link.on_payload

        def stalling(device_id: str, payload: bytes, received: float) -> None:
            # a test-induced stall of the real network thread: paho calls this on it
            if device_id == "stall":
                entered.set()
                release.wait(8)
                return
            original(device_id, payload, received)

        inner.link.on_payload = stalling
        publisher = _publisher(broker)
        publisher.send("stall", b"{}")
        publisher.close()
        assert entered.wait(5)
        stalled_at = time.monotonic()
        assert wait_until(lambda: inner.stats.counters["liveness_failures"] > 0, 3)
        detected = time.monotonic()
        assert detected - stalled_at < 2.0
        time.sleep(1.2)
        # the processing loop lives on (it counts the failures and sends its STATUS= line)...
        assert listener.times("WATCHDOG=1", detected + 0.1) == []
        assert listener.times("STATUS=", detected) != []
        failures = inner.stats.counters["liveness_failures"]
        assert failures > 1 and service.thread.is_alive()
        # ... and feeds the watchdog again once the network thread reads again
        release.set()
        resumed = time.monotonic()
        assert wait_until(lambda: listener.times("WATCHDOG=1", resumed) != [], 3)
        assert not inner.link.network_thread_ended
    finally:
        release.set()
        assert service.stop() == 0
        listener.close()


# ---- 6. missing readings ------------------------------------------------------------------


def _expected_starts(kept: list[int], window: int, hop: int) -> set[int]:
    """Window start indices a device produces from readings `kept` (indices into its run):
    windows restart at the first reading after each gap."""
    segments: list[list[int]] = [[kept[0]]]
    for prev, index in itertools.pairwise(kept):
        if index == prev + 1:
            segments[-1].append(index)
        else:
            segments.append([index])
    starts = set()
    for seg in segments:
        starts |= {seg[k] for k in range(0, len(seg) - window + 1, hop)}
    return starts


def test_missing_readings_are_counted_named_and_never_inside_a_window(
    broker, deploy_dir, tiny_data, tmp_path
) -> None:
    deploy = deploy_dir("gru", None)
    manifest = Manifest.load(deploy)
    clean, lossy = select_runs(tiny_data, manifest, count=2, length=200)
    assert len(clean.ts) >= 2 * manifest.window
    # every 7th reading of the first half goes missing: segments of 6 readings make no window,
    # the intact second half then restarts the device's windows off the hop grid
    n = len(lossy.ts)
    removed = [i for i in range(n) if i % 7 == 6 and i < n // 2]
    kept = [i for i in range(n) if i not in set(removed)]
    sent = Run(lossy.run_id, lossy.ts[kept], lossy.values[kept], [])
    reference = offline_windows(deploy, [clean, lossy], stride=1)
    config = _config(
        tmp_path / "gw.yaml", deploy, broker.host, broker.port, debounce={"emit": "all"}
    )
    expected_clean = _expected_starts(list(range(len(clean.ts))), manifest.window, manifest.hop)
    expected_lossy = _expected_starts(kept, manifest.window, manifest.hop)
    assert expected_lossy  # the second half makes windows
    total = len(expected_clean) + len(expected_lossy)
    collector = Collector(broker.host, broker.port)
    service = InProcessService(config)
    try:
        publisher = _publisher(broker)
        publisher.replay([(clean.run_id, clean), (lossy.run_id, sent)])
        publisher.close()
        assert wait_until(lambda: len(collector.bodies("window")) >= total, 10)

        def named() -> bool:
            stats = collector.payloads(STATS)
            return any(
                s.get("missing_by_device", {}).get(lossy.run_id) == len(removed) for s in stats
            )

        assert wait_until(named, 5), collector.payloads(STATS)[-1:]
        counters = service.counters()
    finally:
        assert service.stop() == 0
        collector.close()
    assert counters["readings"] == len(clean.ts) + len(kept)
    assert counters["missing_readings"] == len(removed), counters
    assert counters[Reason.GAP.counter] == len(removed), counters
    assert counters.get("device_outages", 0) == 0
    stats = [s for s in collector.payloads(STATS) if isinstance(s, dict)]
    assert all(clean.run_id not in s.get("missing_by_device", {}) for s in stats)
    warnings = [w for s in stats for w in s.get("warnings", [])]
    assert warnings and all("max_queued_messages" in w for w in warnings), warnings
    removed_ts = lossy.ts[removed]
    for run, expected in ((clean, expected_clean), (lossy, expected_lossy)):
        got = _windows(collector, run.run_id)
        assert set(got) == {float(run.ts[i]) for i in expected}
        for start, body in got.items():
            probs = reference[(run.run_id, start)]
            assert np.abs(np.asarray(body["probs"]) - probs).max() <= 1e-4
            if run is lossy:
                spans = (removed_ts >= start) & (removed_ts <= body["window_end_ts"])
                assert not spans.any(), (start, body["window_end_ts"])


# ---- 7. password without TLS ----------------------------------------------------------------


def test_a_password_without_tls_is_warned_about(broker, deploy_dir, tmp_path, caplog) -> None:
    deploy = deploy_dir("gru", None)
    for password, warned in ((None, False), ("secret", True)):
        config = _config(
            tmp_path / f"gw-{warned}.yaml",
            deploy,
            broker.host,
            broker.port,
            broker={"username": "gateway", "password": password},
        )
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="runtime.mqtt"):
            service = Service(load_gateway_config(config))
            service.request_stop()
            assert service.run() == 0
        mqtt_warnings = [
            r.getMessage()
            for r in caplog.records
            if r.name == "runtime.mqtt" and r.levelno == logging.WARNING
        ]
        assert any("broker.tls" in m for m in mqtt_warnings) is warned, mqtt_warnings


# ---- 8. MQTT v5 Maximum Packet Size ---------------------------------------------------------


def test_the_broker_drops_what_exceeds_the_announced_packet_size(
    broker, deploy_dir, tiny_data, tmp_path, caplog
) -> None:
    deploy = deploy_dir("gru", None)
    manifest = Manifest.load(deploy)
    run = select_runs(tiny_data, manifest, count=1, length=1)[0]
    config = _config(tmp_path / "gw.yaml", deploy, broker.host, broker.port, max_payload_bytes=2048)
    cfg = load_gateway_config(config)
    assert cfg.broker.protocol == 5
    big = b"x" * (cfg.max_payload_bytes * 3)
    assert len(big) > max_packet_bytes(cfg)  # the broker may not send it to the gateway
    with caplog.at_level(logging.INFO, logger="runtime.mqtt"):
        service = InProcessService(config)
        try:
            publisher = _publisher(broker)
            publisher.send("big", big)
            publisher.close()  # waits for the broker's PUBACK: it has routed the message
            time.sleep(0.5)
            before = service.counters()
            assert service.service.link.connected.is_set()
            publisher = _publisher(broker)
            _send_run(publisher, "big", run)
            publisher.close()
            assert wait_until(lambda: _counter(service, "readings") >= 1, 5), service.counters()
            after = service.counters()
            assert service.service.link.connected.is_set()
        finally:
            assert service.stop() == 0
    assert before.get("messages", 0) == 0, before
    assert before.get(Reason.OVERSIZED.counter, 0) == 0, before
    assert after["messages"] == 1 and after["readings"] == 1, after
    assert after.get(Reason.OVERSIZED.counter, 0) == 0, after
    connects = [r for r in caplog.records if "connected to the broker" in r.getMessage()]
    assert len(connects) == 1  # never dropped and reconnected


# ---- 9. alert ids and restarts --------------------------------------------------------------


def _steady_fault_run(deploy: Path, tiny_data: Path, manifest: Manifest) -> tuple[Run, int]:
    """A run whose every window, whatever reading it starts at, has the same top class, a
    fault: then a restart that re-raised it could not blame a change of class."""
    _, runs = load_runs(tiny_data, manifest.features)
    for run in runs:
        tops = {int(p.argmax()) for p in offline_windows(deploy, [run], stride=1).values()}
        if len(tops) == 1 and 0 not in tops:
            return run, tops.pop()
    raise AssertionError("no run of the tiny data set is one steady fault for the tiny model")


def test_alert_ids_and_a_restart_keep_the_raised_fault(
    broker, deploy_dir, tiny_data, tmp_path
) -> None:
    deploy = deploy_dir("gru", None)
    manifest = Manifest.load(deploy)
    run, fault = _steady_fault_run(deploy, tiny_data, manifest)
    device, name = run.run_id, manifest.classes[fault]
    window = manifest.window
    cuts = [(0, 60), (60, 140), (140, 200)]
    assert len(run.ts) >= cuts[-1][1]
    phases = [
        offline_windows(deploy, [Run(device, run.ts[lo:hi], run.values[lo:hi], [])])
        for lo, hi in cuts
    ]
    assert max(float(p.max()) for p in phases[2].values()) < 1.0
    raise_cfg = _config(
        tmp_path / "raise.yaml",
        deploy,
        broker.host,
        broker.port,
        debounce={"k": 1, "threshold": 0.0, "emit": "all"},
    )
    # the same gateway (state dir) with a threshold no window reaches: every window votes normal
    clear_cfg = _config(
        tmp_path / "clear.yaml",
        deploy,
        broker.host,
        broker.port,
        debounce={"k": 1, "threshold": 1.0, "emit": "all"},
    )
    collector = Collector(broker.host, broker.port)

    def replay_phase(service: InProcessService, index: int) -> None:
        """Sends phase `index`'s readings (timestamps continue) and waits for their windows."""
        lo, hi = cuts[index]
        publisher = _publisher(broker)
        _send_run(publisher, device, run, lo, hi)
        publisher.close()
        done = sum(len(p) for p in phases[: index + 1])
        assert wait_until(lambda: len(_windows(collector, device)) >= done, 10), service.counters()

    def alerts(kind: str) -> dict[str, dict]:
        return {b["alert_id"]: b for b in collector.bodies(kind) if b["device_id"] == device}

    try:
        first = InProcessService(raise_cfg)
        try:
            replay_phase(first, 0)
            assert wait_until(lambda: len(alerts("raised")) >= 1, 5)
            assert first.service.debouncer.active(device) == fault
            assert wait_until(lambda: first.service.outbox.rows == 0, 3)
        finally:
            assert first.stop() == 0
        raised = alerts("raised")
        assert len(raised) == 1, raised
        ((first_id, body),) = raised.items()
        assert uuid.UUID(first_id).version == 5
        end_ts = float(run.ts[window - 1])
        assert body["class"] == name and body["window_end_ts"] == end_ts
        assert first_id == alert_id(GATEWAY, device, "raised", name, end_ts)

        second = InProcessService(raise_cfg)  # a new process's service, same state dir
        try:
            assert second.service.debouncer.active(device) == fault  # before any reading
            replay_phase(second, 1)
            time.sleep(0.3)  # an alert would follow its window at once
            assert second.service.debouncer.active(device) == fault
            assert second.counters().get("alerts", 0) == 0
        finally:
            assert second.stop() == 0
        # redeliveries keep their id; a new id would be the same fault raised again
        assert set(alerts("raised")) == {first_id}
        assert alerts("cleared") == {}

        third = InProcessService(clear_cfg)
        try:
            assert third.service.debouncer.active(device) == fault
            replay_phase(third, 2)
            assert wait_until(lambda: len(alerts("cleared")) >= 1, 5)
            assert third.service.debouncer.active(device) == 0
            assert third.service.outbox.alert_state() == {}
        finally:
            assert third.stop() == 0
    finally:
        collector.close()
    # every window of the three services is the window graph on its readings
    reference = offline_windows(deploy, [run], stride=1)
    served = _windows(collector, device)
    assert len(served) == sum(len(p) for p in phases)
    for start, body in served.items():
        assert np.abs(np.asarray(body["probs"]) - reference[(device, start)]).max() <= 1e-4
    cleared = alerts("cleared")
    assert len(cleared) == 1, cleared
    ((clear_id, body),) = cleared.items()
    clear_end = float(run.ts[cuts[2][0] + window - 1])
    assert body["class"] == name and body["window_end_ts"] == clear_end
    assert clear_id == alert_id(GATEWAY, device, "cleared", name, clear_end)
    assert set(alerts("raised")) == {first_id}
