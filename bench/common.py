"""What the gateway benchmarks (throughput, latency, rss) share: the demo's readings, a
TCP_NODELAY publisher and a gateway started through the harness.

Not a benchmark itself (bench/run.py skips it).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_lstm.local_broker import LocalBroker
from edge_lstm.reporting.gateway_harness import Gateway
from runtime.manifest import Manifest
from runtime.mqtt import set_nodelay
from runtime.replay import load_runs
from runtime.streams import StreamEngine

REPO = Path(__file__).resolve().parents[1]  # the checkout: bench/ is never installed
WORKDIR = "bench-runtime"  # under the runs folder: each gateway's config, log and state
TOPIC = "sensors/{}/data"
GATEWAY_ID = "bench"
START_TIMEOUT_S = 30.0


def dataset(runs_dir: Path, manifest: Manifest) -> list[np.ndarray]:
    """Each run's readings (values only, manifest feature order) from the demo data."""
    _, runs = load_runs(runs_dir / "data" / "sensors.parquet", manifest.features)
    return [r.values for r in runs]


def unbounded_engine(manifest: Manifest) -> StreamEngine:
    """A stream engine without queue or batch limits and without counters: the in-process
    benchmarks time its bookkeeping, not its back-pressure."""
    return StreamEngine(
        manifest,
        sample_period_s=0.1,
        device_queue=10**6,
        max_batch=10**6,
        count=lambda name, n: None,
    )


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of all cores so far (Linux /proc/stat): what the benchmark,
    the broker, the publisher and anything else on the machine used between two calls."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick


def busy_share(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Share of all cores busy between two `machine_cpu()` readings (1.0: every core)."""
    return (after[0] - before[0]) / max(after[1] - before[1], 1e-9)


def publisher(host: str, port: int) -> mqtt.Client:
    """A connected paho client (TCP_NODELAY) with its network thread running."""
    client = set_nodelay(mqtt.Client(CallbackAPIVersion.VERSION2))
    client.connect(host, port)
    client.loop_start()
    return client


def flush(client: mqtt.Client, timeout_s: float = 30.0) -> None:
    """Waits (at most `timeout_s`) until paho has written everything queued to the socket."""
    deadline = time.monotonic() + timeout_s
    while client.want_write() and time.monotonic() < deadline:
        time.sleep(0.005)


def close(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


PROTOCOLS = (5, 311)  # broker.protocol values the gateway benchmarks run the runtime with


def gateway_id(protocol: int = 5) -> str:
    """`bench` for the default protocol, `bench-v311` for MQTT 3.1.1: two gateways may run at
    once, each with its own alerts, stats and status."""
    return GATEWAY_ID if protocol == 5 else f"{GATEWAY_ID}-v{protocol}"


def sensor_topic(protocol: int = 5) -> str:
    """The readings' topic template of the gateway of `protocol` (TOPIC for the default)."""
    return TOPIC if protocol == 5 else f"sensors-v{protocol}/{{}}/data"


def start_gateway(
    workdir: Path, deploy: Path, broker: LocalBroker, protocol: int = 5, **sections: Any
) -> Gateway:
    """`edgelstm serve` on `deploy` (gateway id `gateway_id(protocol)`, readings on
    `sensor_topic(protocol)` at QoS 0, `broker.protocol: protocol`), recorded at QoS 0, once
    online and its first stats snapshot arrived; `sections` add to the config."""
    gateway = Gateway(
        workdir,
        deploy,
        broker.host,
        broker.port,
        gateway_id=gateway_id(protocol),
        qos=0,
        online_timeout_s=START_TIMEOUT_S,
        broker={"protocol": protocol},
        topics={"sensor_qos": 0, "sensors": sensor_topic(protocol).format("+")},
        log_every_s=60.0,
        **sections,
    )
    if gateway.recorder.wait_count("stats", 1, START_TIMEOUT_S, gateway.serve) is None:
        gateway.stop()
        raise RuntimeError(f"edgelstm serve published no stats; see {gateway.serve.log_path}")
    return gateway
