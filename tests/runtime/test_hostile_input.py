"""Hostile input through a real Mosquitto: poison JSON, a parser that raises, device ids
that are empty or huge, and messages beyond the announced MQTT v5 Maximum Packet Size. Each is
counted under its own reason, and the readings behind it are still served exactly."""

from __future__ import annotations

import logging
import time

import pytest

from runtime.config import load_gateway_config
from runtime.manifest import Manifest
from runtime.mqtt import max_packet_bytes
from runtime.parse import Parser, Readings, Reason, encode_json
from tests.runtime.hardening import (
    assert_windows_match,
    clean_config,
    counter,
    qos1_publisher,
    send_run,
    windows,
)
from tests.runtime.helpers import (
    Collector,
    InProcessService,
    offline_windows,
    select_runs,
    wait_until,
)

pytestmark = pytest.mark.broker


# ---- poison payloads ---------------------------------------------------------------------


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
    config = clean_config(
        tmp_path / "gw.yaml", deploy, broker.host, broker.port, debounce={"emit": "all"}
    )
    collector = Collector(broker.host, broker.port)
    service = InProcessService(config)
    try:
        publisher = qos1_publisher(broker)
        publisher.send(run.run_id, deep)
        publisher.send(run.run_id, big_int)
        send_run(publisher, run.run_id, run)
        publisher.close()
        assert wait_until(lambda: len(windows(collector, run.run_id)) >= len(reference), 10)
        assert wait_until(lambda: counter(service, "readings") >= len(run.ts), 5)
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
    assert_windows_match(windows(collector, run.run_id), reference, run.run_id)


# ---- the network thread's catch-all ------------------------------------------------------


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
    config = clean_config(
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
        publisher = qos1_publisher(broker)
        publisher.send(run.run_id, b"boom")
        send_run(publisher, run.run_id, run)
        publisher.close()
        assert wait_until(lambda: len(windows(collector, run.run_id)) >= len(reference), 10)
        assert wait_until(lambda: counter(service, "readings") >= len(run.ts), 5)
        counters = service.counters()
        assert not inner.link.network_thread_ended
        assert inner.link.connected.is_set()
    finally:
        assert service.stop() == 0
        collector.close()
    assert counters.get(Reason.HANDLER_ERROR.counter) == 1, counters
    assert counters["readings"] == len(run.ts)
    assert_windows_match(windows(collector, run.run_id), reference, run.run_id)


# ---- device ids ------------------------------------------------------------------------


def test_empty_and_huge_device_ids_are_refused_before_any_state(
    broker, deploy_dir, tiny_data, tmp_path
) -> None:
    deploy = deploy_dir("gru", None)
    manifest = Manifest.load(deploy)
    run = select_runs(tiny_data, manifest, count=1, length=20)[0]
    window = manifest.window
    # k=1, threshold 0: a full window of an accepted device raises an alert at once
    config = clean_config(
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
        publisher = qos1_publisher(broker)
        for i in range(window):
            # short values keep the packet under the gateway's announced maximum size
            values = [round(float(v), 3) for v in run.values[i]]
            publisher.send(huge_id, encode_json(float(run.ts[i]), values))
        publisher.send("", encode_json(float(run.ts[0]), run.values[0].tolist()))
        assert wait_until(lambda: counter(service, bad) >= window + 1, 10), service.counters()
        time.sleep(0.3)  # let anything that slipped through reach the engine and the outbox
        refused = service.counters()
        assert inner.outbox.rows == 0
        assert inner.outbox.dead_letters == 0
        assert inner.outbox.alert_state() == {}
        assert len(inner.engine.devices) == 0
        # the service goes on serving a normal device
        send_run(publisher, "pump-1", run)
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


# ---- MQTT v5 Maximum Packet Size ---------------------------------------------------------


def test_the_broker_drops_what_exceeds_the_announced_packet_size(
    broker, deploy_dir, tiny_data, tmp_path, caplog
) -> None:
    deploy = deploy_dir("gru", None)
    manifest = Manifest.load(deploy)
    run = select_runs(tiny_data, manifest, count=1, length=1)[0]
    config = clean_config(
        tmp_path / "gw.yaml", deploy, broker.host, broker.port, max_payload_bytes=2048
    )
    cfg = load_gateway_config(config)
    assert cfg.broker.protocol == 5
    big = b"x" * (cfg.max_payload_bytes * 3)
    assert len(big) > max_packet_bytes(cfg)  # the broker may not send it to the gateway
    with caplog.at_level(logging.INFO, logger="runtime.mqtt"):
        service = InProcessService(config)
        try:
            publisher = qos1_publisher(broker)
            publisher.send("big", big)
            publisher.close()  # waits for the broker's PUBACK: it has routed the message
            time.sleep(0.5)
            before = service.counters()
            assert service.service.link.connected.is_set()
            publisher = qos1_publisher(broker)
            send_run(publisher, "big", run)
            publisher.close()
            assert wait_until(lambda: counter(service, "readings") >= 1, 5), service.counters()
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
