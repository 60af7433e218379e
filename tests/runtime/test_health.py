"""Health figures: CPU, RSS, backend on the stats topic and on the real Prometheus endpoint of
a torch-free `edgelstm serve`, beside the open windows, outbox depth and drift gauges."""

from __future__ import annotations

import re
import urllib.request

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_lstm.local_broker import free_port
from runtime.health import cpu_seconds, rss_bytes
from runtime.manifest import Manifest
from runtime.parse import encode_json
from tests.runtime.helpers import Collector, ServeProcess, gateway_config, wait_until


def test_rss_and_cpu_are_this_process_s() -> None:
    before = cpu_seconds()
    held = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB touched: RSS must show it
    assert rss_bytes() >= held.nbytes
    sum(range(2_000_000))
    assert cpu_seconds() > before


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def _value(text: str, pattern: str) -> float | None:
    match = re.search(rf"^{pattern} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


@pytest.mark.broker
def test_health_is_on_the_stats_topic_and_in_prometheus(broker, deploy_dir, tmp_path) -> None:
    deploy = deploy_dir("gru")
    manifest = Manifest.load(deploy)
    port = free_port()
    config = gateway_config(
        tmp_path / "gw.yaml",
        deploy,
        broker.host,
        broker.port,
        prometheus_port=port,
        stats_interval_s=0.3,
        drift={"interval_s": 0.3, "min_readings": 1},
    )
    collector = Collector(broker.host, broker.port)
    serve = ServeProcess(config, tmp_path)
    sender = mqtt.Client(CallbackAPIVersion.VERSION2)
    try:
        assert collector.wait_status("online", 30, serve), serve.tail()
        sender.connect(broker.host, broker.port)
        sender.loop_start()
        n = manifest.window // 2  # windows stay open: open_windows > 0 from here on
        ts = (1.7e9 + 0.1 * np.arange(n)).tolist()
        rows = np.tile(np.asarray(manifest.norm_mean, np.float32), (n, 1)).tolist()
        sender.publish("sensors/dev/data", encode_json(ts, rows), qos=1).wait_for_publish(5)

        def stats_with_windows() -> bool:
            return collector.latest_stats().get("gauges", {}).get("open_windows", 0) > 0

        assert wait_until(stats_with_windows, 10), serve.tail()
        assert wait_until(lambda: collector.count("drift") >= 1, 10), serve.tail()
        text = _scrape(port)
        stats = collector.latest_stats()
    finally:
        sender.disconnect()
        sender.loop_stop()
        assert serve.stop() == 0
        collector.close()
    health = stats["health"]
    assert health["rss_bytes"] > 10 << 20 and health["cpu_seconds"] > 0
    assert health["cpu_percent"] >= 0 and health["threads"] >= 2
    assert (health["backend"], health["artifact"], health["gpu_memory_bytes"]) == (
        "onnxruntime",
        "step",
        None,
    )
    label = f"{manifest.model_name} {manifest.model_version}"
    info = f'edgelstm_backend_info{{artifact="step",backend="onnxruntime",model="{label}"}}'
    assert _value(text, re.escape(info)) == 1.0
    assert (_value(text, "process_resident_memory_bytes") or 0) > 10 << 20
    assert (_value(text, "process_cpu_seconds_total") or 0) > 0
    assert (_value(text, "edgelstm_open_windows") or 0) > 0
    assert _value(text, "edgelstm_outbox_unacked") == 0
    assert _value(text, "edgelstm_drift_devices") == 0
    assert _value(text, 'edgelstm_drift_psi{device="dev",feature="[^"]+"}') is not None
    assert "edgelstm_gpu_memory_bytes" not in text  # a CPU backend has none
