"""systemd notification datagrams and the Prometheus endpoint, against real sockets."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

from edge_lstm.local_broker import free_port
from runtime.sdnotify import Notifier
from runtime.stats import Stats, start_prometheus


@pytest.mark.parametrize("abstract", [False, True])
def test_notifier_sends_ready_status_and_watchdog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, abstract: bool
) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"edgelstm-test-{tmp_path.name}"
    server.bind("\0" + name if abstract else str(tmp_path / "notify"))
    server.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name if abstract else str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    notifier = Notifier()
    assert notifier.watchdog_every_s == 1.0
    notifier.ready("serving m")
    notifier.watchdog()
    notifier.watchdog()  # within half the timeout: not sent again
    notifier.stopping()
    got = [server.recv(1024).decode() for _ in range(3)]
    assert got == ["READY=1\nSTATUS=serving m", "WATCHDOG=1", "STOPPING=1\nSTATUS=stopping"]
    notifier.close()
    server.close()


def test_notifier_is_a_no_op_outside_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    notifier.ready("x")
    notifier.watchdog()


def test_stats_snapshot_and_prometheus_endpoint() -> None:
    stats = Stats()
    stats.count("readings", 500)
    stats.count("invalid_not_json", 3)
    for ms in range(1, 101):
        stats.observe("infer", ms / 1000)
    snap = stats.snapshot()
    assert snap["counters"]["readings"] == 500
    assert snap["latency_ms"]["infer"]["p50"] == pytest.approx(50.5)
    assert snap["latency_ms"]["infer"]["max"] == pytest.approx(100.0)
    assert snap["latency_ms"]["publish"] is None
    port = free_port()
    start_prometheus(stats, port)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "edgelstm_readings_total 500.0" in body
    summary = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in body.splitlines()
        if line.startswith("edgelstm_latency_infer_seconds")
    }
    assert summary['edgelstm_latency_infer_seconds{quantile="0.5"}'] == pytest.approx(0.0505)
    assert summary['edgelstm_latency_infer_seconds{quantile="0.99"}'] == pytest.approx(0.09901)
    assert summary["edgelstm_latency_infer_seconds_count"] == 100
    assert summary["edgelstm_latency_infer_seconds_sum"] == pytest.approx(5.05)
    assert summary["edgelstm_latency_infer_seconds_max"] == pytest.approx(0.1)
    assert "# TYPE edgelstm_latency_infer_seconds summary" in body
