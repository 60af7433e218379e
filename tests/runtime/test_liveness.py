"""Liveness that tells the truth: READY=1 only after the first CONNACK (failed attempts
logged), the systemd watchdog fed only while paho's network thread makes progress, and a
warning for a broker password without TLS."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest

from edge_lstm.local_broker import LocalBroker, free_port
from runtime.config import load_gateway_config
from runtime.daemon import Service
from tests.runtime.hardening import (
    NotifyListener,
    clean_config,
    qos1_publisher,
)
from tests.runtime.helpers import (
    InProcessService,
    wait_until,
)

pytestmark = pytest.mark.broker


# ---- READY=1 after the first CONNACK -----------------------------------------------------


def test_ready_only_after_the_first_connack_and_failures_are_logged(
    deploy_dir, tmp_path, monkeypatch, caplog
) -> None:
    listener = NotifyListener(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    port = free_port()  # nothing listens here yet
    config = clean_config(tmp_path / "gw.yaml", deploy_dir("gru", None), "127.0.0.1", port)
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


# ---- the watchdog follows the network thread ---------------------------------------------


def test_watchdog_is_fed_only_while_the_network_thread_makes_progress(
    broker, deploy_dir, tmp_path, monkeypatch
) -> None:
    listener = NotifyListener(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # a ping every 0.2 s
    config = clean_config(
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
        publisher = qos1_publisher(broker)
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


# ---- password without TLS ----------------------------------------------------------------


def test_a_password_without_tls_is_warned_about(broker, deploy_dir, tmp_path, caplog) -> None:
    deploy = deploy_dir("gru", None)
    for password, warned in ((None, False), ("secret", True)):
        config = clean_config(
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
