"""Benchmark: readings/s `edgelstm serve` consumes against a bare paho subscriber, same run.

N devices' readings are published as fast as possible (QoS 0), JSON and binary, through
Mosquitto. Per round: the bare subscriber (bench/bare_subscriber.py, a process of its own) that
only parses the same messages on its own topics, then the runtime (parse, batch, step,
windows; emit: all, so the result of each device's last window marks the end). Reports both
rates, their ratio, CPU per reading of each, the publisher's rate and the runtime's drops.
Each figure is the median/min/max over rounds.

    python -m bench.throughput [--runs runs/demo] [--quick]  # -> bench/throughput.json
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import summarize
from bench.common import (
    REPO,
    TOPIC,
    WORKDIR,
    close,
    cpu_seconds,
    dataset,
    flush,
    publisher,
    start_gateway,
)
from edge_lstm.local_broker import LocalBroker
from edge_lstm.reporting.gateway_harness import Gateway, python_env
from runtime.manifest import Manifest
from runtime.parse import encode_binary, encode_json

log = logging.getLogger(__name__)

BARE_TOPIC = "bare/{}/data"  # the bare subscriber's own stream
FORMATS = ("json", "binary")
BASE_TS = 1.7e9
RESULT_TIMEOUT_S = 120.0
FIGURES = {  # output key -> per-round sample
    "runtime_readings_per_s": "runtime",
    "bare_subscriber_readings_per_s": "bare",
    "ratio_runtime_to_bare": "ratio",
    "publisher_msgs_per_s": "publisher",
    "runtime_cpu_us_per_reading": "runtime_cpu",
    "bare_cpu_us_per_reading": "bare_cpu",
    "cpu_ratio_bare_to_runtime": "cpu_ratio",
}


def run(runs_dir: Path, quick: bool = False) -> dict[str, Any]:
    """Both payload formats against `runs_dir/deploy`, readings from `runs_dir/data`."""
    runs_dir = Path(runs_dir)
    deploy = runs_dir / "deploy"
    manifest = Manifest.load(deploy)
    values = dataset(runs_dir, manifest)
    devices, per_device = (100, 100) if quick else (200, 150)
    rounds = 1 if quick else 3
    windows = devices * ((per_device - manifest.window) // manifest.hop + 1)
    out: dict[str, Any] = {"devices": devices, "readings_per_round": devices * per_device, "qos": 0}
    with LocalBroker() as broker:
        for fmt in FORMATS:
            workdir = runs_dir / WORKDIR / f"throughput-{fmt}"
            gateway = start_gateway(
                workdir, deploy, broker, stats_interval_s=0.5, debounce={"emit": "all"}
            )
            samples: dict[str, list[float]] = {key: [] for key in FIGURES.values()}
            try:
                for r in range(rounds):
                    messages = {
                        "runtime": _payloads(values, devices, per_device, fmt, TOPIC, f"r{r}"),
                        "bare": _payloads(values, devices, per_device, fmt, BARE_TOPIC, ""),
                    }
                    figures = _round(broker, deploy, gateway, messages, (r + 1) * windows, fmt)
                    for key, value in figures.items():
                        samples[key].append(value)
                counters = gateway.recorder.latest_stats()["counters"]
            finally:
                gateway.stop()
            out[fmt] = {name: summarize(samples[key]) for name, key in FIGURES.items()}
            out[fmt]["runtime_drops"] = {
                k: v for k, v in counters.items() if k.startswith(("dropped_", "invalid_"))
            }
            log.info("throughput %s: %s", fmt, out[fmt])
    return out


def _round(
    broker: LocalBroker,
    deploy: Path,
    gateway: Gateway,
    messages: dict[str, list[tuple[str, bytes]]],
    results_by_end: int,
    fmt: str,
) -> dict[str, float]:
    """One round: the bare subscriber's messages, then the runtime's, until `results_by_end`
    window results (all rounds so far) have arrived."""
    total = len(messages["runtime"])
    bare = _bare_round(broker, deploy, messages["bare"])
    cpu0 = cpu_seconds(gateway.pid)
    started, published = _publish_all(broker, messages["runtime"])
    done = gateway.recorder.wait_count("alerts", results_by_end, RESULT_TIMEOUT_S)
    if done is None:
        raise RuntimeError(f"runtime did not consume {total} readings ({fmt})")
    rate = total / (done.received_at - started)
    runtime_cpu = (cpu_seconds(gateway.pid) - cpu0) / total * 1e6
    bare_cpu = bare["cpu_s"] / total * 1e6
    return {
        "runtime": rate,
        "bare": bare["rate"],
        "ratio": rate / bare["rate"],
        "publisher": published,
        "runtime_cpu": runtime_cpu,
        "bare_cpu": bare_cpu,
        "cpu_ratio": bare_cpu / runtime_cpu,
    }


def _payloads(
    values: list[np.ndarray], devices: int, per_device: int, fmt: str, topic: str, prefix: str
) -> list[tuple[str, bytes]]:
    """Messages in publish order: reading i of every device, then reading i + 1, ..."""
    out = []
    for i in range(per_device):
        ts = BASE_TS + i * 0.1
        for d in range(devices):
            run = values[d % len(values)]
            row = run[i % len(run)]
            payload = (
                encode_binary(np.array([ts]), row[None, :])
                if fmt == "binary"
                else encode_json(ts, row.tolist())
            )
            out.append((topic.format(f"{prefix}d{d:04d}"), payload))
    return out


def _publish_all(broker: LocalBroker, payloads: list[tuple[str, bytes]]) -> tuple[float, float]:
    """Publishes everything as fast as paho takes it: (wall start time, messages/s)."""
    client = publisher(broker.host, broker.port)
    started = time.time()
    for topic, payload in payloads:
        client.publish(topic, payload, 0)
    flush(client)
    rate = len(payloads) / (time.time() - started)
    close(client)
    return started, rate


def _bare_round(broker: LocalBroker, deploy: Path, payloads: list[tuple[str, bytes]]) -> dict:
    """The baseline: {"rate" (messages/s received), "cpu_s"} of the bare subscriber."""
    args = [broker.host, str(broker.port), str(len(payloads)), str(deploy)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.bare_subscriber", *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=python_env(REPO),
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # "ready"
    time.sleep(0.2)
    started, _ = _publish_all(broker, payloads)
    line = proc.stdout.readline()
    proc.wait(10)
    state = json.loads(line) if line else {"n": 0, "bad": 0, "exit_code": proc.returncode}
    if state["n"] < len(payloads) or state["bad"]:
        raise RuntimeError(f"bare subscriber got {state} of {len(payloads)} messages")
    return {"rate": state["n"] / (state["last"] - started), "cpu_s": state["cpu_s"]}


if __name__ == "__main__":
    from bench.run import main_for

    main_for("throughput")
