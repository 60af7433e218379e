"""Benchmark: time from a window's last reading to its result, against one broker hop.

1,000 devices x 10 Hz (and 200 x 10 Hz, below saturation), paced evenly by a publisher in a
process of its own; binary payloads, one reading per message, through Mosquitto. The figure is
the time from the publish of a window's last reading to the arrival of its result (emit: all)
at a subscriber, against the same run's publish-to-arrival time of every 20th device's raw
readings at that subscriber (one broker hop). Each figure is the median/min/max over rounds.
Beside them, what bounds the figure here: how busy all cores were while publishing
(`machine_busy_share`, 1.0 = every core; the gateway shares them with the broker, the publisher
and the subscriber) and the gateway's CPU per reading.

Each point runs twice: the runtime on MQTT v5 (`devices_N`, the default protocol) and with
`broker.protocol: 311` (`devices_N_v311`), each against its own bare hop in the same run.

    python -m bench.latency [--runs runs/demo] [--quick]  # -> bench/latency.json
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench import summarize
from bench.common import (
    PROTOCOLS,
    WORKDIR,
    busy_share,
    close,
    cpu_seconds,
    dataset,
    flush,
    gateway_id,
    machine_cpu,
    publisher,
    sensor_topic,
    start_gateway,
)
from edge_lstm.local_broker import LocalBroker
from edge_lstm.reporting.gateway_harness import Gateway
from runtime.manifest import Manifest
from runtime.mqtt import set_nodelay
from runtime.parse import encode_binary

log = logging.getLogger(__name__)

BASE_TS = 1.7e9
DEVICES = (200, 1000)
RATE_HZ = 10.0
WATCH_EVERY = 20  # every 20th device's readings also go to the subscriber: the bare hop
SETTLE_S = 60.0  # at most this long for late results of a saturated runtime
KEYS = ("p50", "p90", "p99", "max")


def run(
    runs_dir: Path,
    quick: bool = False,
    devices: tuple[int, ...] = DEVICES,
    extra_s: float | None = None,
    rounds: int | None = None,
) -> dict[str, Any]:
    """The 1,000 x 10 Hz point of the issue and a 200 x 10 Hz point below saturation, each
    with the runtime on MQTT v5 (`devices_N`) and on 3.1.1 (`devices_N_v311`). A round
    publishes a window's worth of readings plus `extra_s` seconds (10; quick: 4), 3 rounds
    (quick: 1); `devices`, `extra_s` and `rounds` override them (a smoke test)."""
    out: dict[str, Any] = {}
    for n in devices:
        for protocol in PROTOCOLS:
            key = f"devices_{n}" if protocol == 5 else f"devices_{n}_v{protocol}"
            out[key] = _point(Path(runs_dir), quick, n, protocol, extra_s, rounds)
    return out


def _point(
    runs_dir: Path,
    quick: bool,
    devices: int,
    protocol: int = 5,
    extra_s: float | None = None,
    rounds: int | None = None,
) -> dict[str, Any]:
    deploy = runs_dir / "deploy"
    manifest = Manifest.load(deploy)
    seconds = manifest.window / RATE_HZ + (extra_s if extra_s is not None else 4 if quick else 10)
    results = []
    with LocalBroker() as broker:
        for r in range(rounds or (1 if quick else 3)):
            workdir = runs_dir / WORKDIR / f"latency-{devices}-v{protocol}-{r}"
            gateway = start_gateway(
                workdir,
                deploy,
                broker,
                protocol=protocol,
                stats_interval_s=1.0,
                debounce={"emit": "all"},
            )
            try:
                results.append(
                    _round(broker, runs_dir, manifest, devices, seconds, gateway, protocol)
                )
            finally:
                gateway.stop()
            log.info("latency %d devices, v%d, round %d: %s", devices, protocol, r, results[-1])
    return {
        "devices": devices,
        "protocol": protocol,  # the runtime's broker.protocol
        "rate_hz_per_device": RATE_HZ,
        "payload": "binary, one reading per message",
        "seconds_per_round": seconds,
        "windows_per_round": summarize([float(x["windows"]) for x in results]),
        "missing_windows": [x["missing"] for x in results],
        "reading_to_result_ms": {k: summarize([x["alert"][k] for x in results]) for k in KEYS},
        "bare_hop_ms": {k: summarize([x["bare"][k] for x in results]) for k in KEYS},
        "ratio_p99_result_to_bare_hop": summarize(
            [x["alert"]["p99"] / x["bare"]["p99"] for x in results]
        ),
        "runtime_stage_ms_p99": results[-1]["stages"],
        "publisher_msgs_per_s": summarize([x["published_per_s"] for x in results]),
        "machine_busy_share": summarize([x["busy"] for x in results]),
        "cores": os.cpu_count(),
        "gateway_cpu_us_per_reading": summarize([x["gateway_cpu_us"] for x in results]),
    }


def _percentiles(ms: list[float]) -> dict[str, float]:
    if not ms:
        return dict.fromkeys(KEYS, float("nan"))
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(max(ms))}


def _closes(tick: int, window: int, hop: int) -> bool:
    """Whether reading `tick` of a device closes a window."""
    return tick >= window - 1 and (tick - (window - 1)) % hop == 0


def _paced_publisher(
    host: str, port: int, runs_dir: str, devices: int, seconds: float, topic: str, out
) -> None:
    """Publishes every device's readings evenly spread over each period (a separate process,
    so its GIL is not the subscriber's); sends back the wall-clock publish time of the
    readings that close a window and of every reading of the watched devices."""
    manifest = Manifest.load(Path(runs_dir) / "deploy")
    values = dataset(Path(runs_dir), manifest)
    pub = publisher(host, port)
    slot = 1.0 / (RATE_HZ * devices)
    sent: dict[tuple[str, float], float] = {}
    started = time.perf_counter()
    count = 0
    ticks = int(seconds * RATE_HZ)
    for i in range(ticks):
        ts = BASE_TS + i / RATE_HZ
        closes = _closes(i, manifest.window, manifest.hop)
        for d in range(devices):
            delay = started + count * slot - time.perf_counter()
            if delay > 0.0005:
                time.sleep(delay)
            run = values[d % len(values)]
            device = f"lat-d{d:04d}"
            pub.publish(
                topic.format(device), encode_binary(np.array([ts]), run[i % len(run)][None, :]), 0
            )
            if closes or d % WATCH_EVERY == 0:
                sent[(device, ts)] = time.time()
            count += 1
    published_per_s = count / (time.perf_counter() - started)
    flush(pub)
    close(pub)
    out.send({"sent": sent, "published_per_s": published_per_s, "ticks": ticks})


class _Arrivals:
    """Arrival times of window results and of the watched devices' raw readings."""

    def __init__(self, broker: LocalBroker, devices: int, protocol: int = 5) -> None:
        self.results: dict[tuple[str, float], float] = {}
        self.bare: dict[tuple[str, float], float] = {}
        watched = [f"lat-d{d:04d}" for d in range(0, devices, WATCH_EVERY)]
        topic = sensor_topic(protocol)
        self.sensor_level = topic.split("/", 1)[0]
        alerts = f"edgelstm/{gateway_id(protocol)}/alerts/+"
        self.client = set_nodelay(mqtt.Client(CallbackAPIVersion.VERSION2))
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [(alerts, 0)] + [(topic.format(d), 0) for d in watched]
        )
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        now = time.time()
        parts = msg.topic.split("/")
        if parts[0] == self.sensor_level:
            self.bare[(parts[1], float(np.frombuffer(msg.payload, "<f8", 1, 6)[0]))] = now
        else:
            body = json.loads(msg.payload)
            self.results[(body["device_id"], body["window_end_ts"])] = now

    def settle(self, timeout_s: float) -> None:
        """Until no new result arrived for a second (a saturated runtime lags), at most
        `timeout_s`."""
        deadline, seen = time.monotonic() + timeout_s, -1
        while len(self.results) != seen and time.monotonic() < deadline:
            seen = len(self.results)
            time.sleep(1.0)

    def close(self) -> None:
        close(self.client)


def _publish_paced(
    broker: LocalBroker, runs_dir: Path, devices: int, seconds: float, topic: str
) -> dict:
    """Runs `_paced_publisher` in a spawned process; its report."""
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_paced_publisher,
        args=(broker.host, broker.port, str(runs_dir), devices, seconds, topic, send),
    )
    proc.start()
    if not receive.poll(seconds + 60):
        proc.kill()
        raise RuntimeError(f"the publisher process did not report (exit code {proc.exitcode})")
    report = receive.recv()
    proc.join(30)
    return report


def _round(
    broker: LocalBroker,
    runs_dir: Path,
    manifest: Manifest,
    devices: int,
    seconds: float,
    gateway: Gateway,
    protocol: int = 5,
) -> dict:
    arrivals = _Arrivals(broker, devices, protocol)
    try:
        time.sleep(0.3)
        cpu0, machine0 = cpu_seconds(gateway.pid), machine_cpu()
        report = _publish_paced(broker, runs_dir, devices, seconds, sensor_topic(protocol))
        busy = busy_share(machine0, machine_cpu())
        gateway_cpu_s = cpu_seconds(gateway.pid) - cpu0
        arrivals.settle(SETTLE_S)
    finally:
        arrivals.close()
    sent = report["sent"]
    alert_ms = [(t - sent[k]) * 1000 for k, t in arrivals.results.items() if k in sent]
    bare_ms = [(t - sent[k]) * 1000 for k, t in arrivals.bare.items() if k in sent]
    closes = sum(1 for i in range(report["ticks"]) if _closes(i, manifest.window, manifest.hop))
    snap = gateway.recorder.latest_stats()
    return {
        "windows": len(alert_ms),
        "missing": closes * devices - len(alert_ms),
        "alert": _percentiles(alert_ms),
        "bare": _percentiles(bare_ms),
        "published_per_s": report["published_per_s"],
        "busy": busy,
        "gateway_cpu_us": gateway_cpu_s / (report["ticks"] * devices) * 1e6,
        "stages": {k: (v or {}).get("p99") for k, v in snap["latency_ms"].items()},
    }


if __name__ == "__main__":
    from bench.run import main_for

    main_for("latency")
