"""Benchmark: readings/s `edgelstm serve` consumes against a bare paho subscriber, same run.

N devices' readings are published as fast as possible (QoS 0), JSON and binary, through
Mosquitto. Per round: the bare subscriber (bench/bare_subscriber.py, a process of its own) that
only parses the same messages on its own topics, on the gateway's MQTT protocol (v5), then the
runtime (parse, batch, step, windows; emit: all, so the result of each device's last window
marks the end). Reports both rates, their ratio, CPU per reading of each, the publisher's rate
and the runtime's drops. Each figure is the median/min/max over rounds.

What bounds the ratio is measured beside it: the bare subscriber again on MQTT v3.1.1 (the
difference is paho's own per-message cost of v5 properties, which the gateway pays too), the
CPU the broker and this process (the publisher and the results recorder) use per reading while
the runtime consumes, and how busy all cores were then (`machine_busy_share`, 1.0 = every core:
the runtime can only go faster by taking CPU from the broker and the publisher).

The runtime is measured with `broker.protocol: 311` too (a second gateway, `bench-v311`, on its
own sensor topic, consuming the same readings in the same round): `runtime_v311_*` and its
ratios to both bare subscribers, so v5 and 3.1.1 are compared within one run.

    python -m bench.throughput [--runs runs/demo] [--quick]  # -> bench/throughput.json
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import summarize
from bench.common import (
    PROTOCOLS,
    REPO,
    WORKDIR,
    busy_share,
    close,
    cpu_seconds,
    dataset,
    flush,
    machine_cpu,
    publisher,
    sensor_topic,
    start_gateway,
)
from edge_lstm.local_broker import LocalBroker
from edge_lstm.reporting.gateway_harness import Gateway, python_env
from runtime.config import BrokerConfig
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
    "bare_v311_readings_per_s": "bare_v311",
    "bare_v311_cpu_us_per_reading": "bare_v311_cpu",
    # the runtime with broker.protocol: 311, same round
    "runtime_v311_readings_per_s": "runtime_v311",
    "runtime_v311_cpu_us_per_reading": "runtime_v311_cpu",
    "ratio_runtime_v311_to_bare_v311": "ratio_v311",
    "ratio_runtime_v311_to_bare": "ratio_v311_to_bare",
    "broker_cpu_us_per_reading": "broker_cpu",
    "publisher_and_recorder_cpu_us_per_reading": "publisher_cpu",
    "machine_busy_share": "busy",
}
GATEWAY_PROTOCOL = BrokerConfig.protocol  # the gateway's default, the main figures' protocol


def run(
    runs_dir: Path,
    quick: bool = False,
    devices: int | None = None,
    per_device: int | None = None,
    rounds: int | None = None,
) -> dict[str, Any]:
    """Both payload formats against `runs_dir/deploy`, readings from `runs_dir/data`, the
    runtime on MQTT v5 and on 3.1.1. Sizes: 200 devices x 150 readings, 3 rounds (quick:
    100 x 100, 1 round); `devices`, `per_device` and `rounds` override them (a smoke test)."""
    runs_dir = Path(runs_dir)
    deploy = runs_dir / "deploy"
    manifest = Manifest.load(deploy)
    values = dataset(runs_dir, manifest)
    devices = devices or (100 if quick else 200)
    per_device = per_device or (100 if quick else 150)
    rounds = rounds or (1 if quick else 3)
    if per_device < manifest.window:
        raise ValueError(f"per_device ({per_device}) must be >= the window ({manifest.window})")
    windows = devices * ((per_device - manifest.window) // manifest.hop + 1)
    out: dict[str, Any] = {
        "devices": devices,
        "readings_per_round": devices * per_device,
        "qos": 0,
        "protocol": GATEWAY_PROTOCOL,  # of the runtime_* figures; runtime_v311_*: 311
        "protocols": list(PROTOCOLS),
    }
    with LocalBroker() as broker:
        for fmt in FORMATS:
            gateways: dict[int, Gateway] = {}
            samples: dict[str, list[float]] = {key: [] for key in FIGURES.values()}
            try:
                for protocol in PROTOCOLS:
                    suffix = "" if protocol == GATEWAY_PROTOCOL else f"-v{protocol}"
                    workdir = runs_dir / WORKDIR / f"throughput-{fmt}{suffix}"
                    gateways[protocol] = start_gateway(
                        workdir,
                        deploy,
                        broker,
                        protocol=protocol,
                        stats_interval_s=0.5,
                        debounce={"emit": "all"},
                    )
                for r in range(rounds):
                    messages = {
                        f"runtime_v{p}": _payloads(
                            values, devices, per_device, fmt, sensor_topic(p), f"r{r}"
                        )
                        for p in PROTOCOLS
                    }
                    messages["bare"] = _payloads(values, devices, per_device, fmt, BARE_TOPIC, "")
                    messages["bare_v311"] = _payloads(
                        values, devices, per_device, fmt, BARE_TOPIC, "v"
                    )
                    figures = _round(broker, deploy, gateways, messages, (r + 1) * windows, fmt)
                    for key, value in figures.items():
                        samples[key].append(value)
                counters = gateways[GATEWAY_PROTOCOL].recorder.latest_stats()["counters"]
                counters_v311 = gateways[311].recorder.latest_stats()["counters"]
            finally:
                for gateway in gateways.values():
                    gateway.stop()
            out[fmt] = {name: summarize(samples[key]) for name, key in FIGURES.items()}
            out[fmt]["runtime_drops"] = _drops(counters)
            out[fmt]["runtime_v311_drops"] = _drops(counters_v311)
            out[fmt]["bounds"] = bounds(out[fmt])
            log.info("throughput %s: %s", fmt, out[fmt])
    return out


def _drops(counters: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counters.items() if k.startswith(("dropped_", "invalid_"))}


def _round(
    broker: LocalBroker,
    deploy: Path,
    gateways: dict[int, Gateway],
    messages: dict[str, list[tuple[str, bytes]]],
    results_by_end: int,
    fmt: str,
) -> dict[str, float]:
    """One round: the bare subscribers' messages (v5, then 3.1.1), then the runtime's on each
    protocol in turn, each until `results_by_end` window results (all rounds so far) arrived."""
    total = len(messages["bare"])
    bare = _bare_round(broker, deploy, messages["bare"], str(GATEWAY_PROTOCOL))
    bare_v311 = _bare_round(broker, deploy, messages["bare_v311"], "311")
    main, v311 = (
        _runtime_round(broker, gateways[p], messages[f"runtime_v{p}"], results_by_end, fmt)
        for p in (GATEWAY_PROTOCOL, 311)
    )
    bare_cpu = bare["cpu_s"] / total * 1e6
    return {
        "bare_v311": bare_v311["rate"],
        "bare_v311_cpu": bare_v311["cpu_s"] / total * 1e6,
        "broker_cpu": main["broker_cpu"],
        "publisher_cpu": main["publisher_cpu"],
        "busy": main["busy"],
        "runtime": main["rate"],
        "bare": bare["rate"],
        "ratio": main["rate"] / bare["rate"],
        "publisher": main["published"],
        "runtime_cpu": main["cpu"],
        "bare_cpu": bare_cpu,
        "cpu_ratio": bare_cpu / main["cpu"],
        "runtime_v311": v311["rate"],
        "runtime_v311_cpu": v311["cpu"],
        "ratio_v311": v311["rate"] / bare_v311["rate"],
        "ratio_v311_to_bare": v311["rate"] / bare["rate"],
    }


def _runtime_round(
    broker: LocalBroker,
    gateway: Gateway,
    payloads: list[tuple[str, bytes]],
    results_by_end: int,
    fmt: str,
) -> dict[str, float]:
    """Publishes `payloads` to one gateway as fast as possible until `results_by_end` results
    arrived: its rate, CPU per reading of it, the broker and this process, cores busy."""
    total = len(payloads)
    assert broker.proc is not None
    pids = (gateway.pid, broker.proc.pid, os.getpid())
    cpu0, machine0 = [cpu_seconds(pid) for pid in pids], machine_cpu()
    started, published = _publish_all(broker, payloads)
    done = gateway.recorder.wait_count("alerts", results_by_end, RESULT_TIMEOUT_S)
    if done is None:
        raise RuntimeError(f"runtime ({gateway.config}) did not consume {total} readings ({fmt})")
    cpu, broker_cpu, publisher_cpu = (
        (cpu_seconds(pid) - c) / total * 1e6 for pid, c in zip(pids, cpu0, strict=True)
    )
    return {
        "rate": total / (done.received_at - started),
        "cpu": cpu,
        "broker_cpu": broker_cpu,
        "publisher_cpu": publisher_cpu,
        "busy": busy_share(machine0, machine_cpu()),
        "published": published,
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


def bounds(figures: dict[str, Any]) -> dict[str, Any]:
    """What the medians say bounds the runtime's rate here, in the figures' own units."""
    median = {name: value["median"] for name, value in figures.items() if "median" in value}
    cores = os.cpu_count() or 1
    ours = (
        median["runtime_readings_per_s"]
        * (
            median["runtime_cpu_us_per_reading"]
            + median["broker_cpu_us_per_reading"]
            + median["publisher_and_recorder_cpu_us_per_reading"]
        )
        / 1e6
    )
    busy = median["machine_busy_share"] * cores
    return {
        "paho_v5_cost_us_per_reading": round(
            median["bare_cpu_us_per_reading"] - median["bare_v311_cpu_us_per_reading"], 2
        ),
        # what broker.protocol: 311 saves the runtime per reading (same round)
        "runtime_v5_cost_us_per_reading": round(
            median["runtime_cpu_us_per_reading"] - median["runtime_v311_cpu_us_per_reading"], 2
        ),
        "runtime_beyond_bare_us_per_reading": round(
            median["runtime_cpu_us_per_reading"] - median["bare_cpu_us_per_reading"], 2
        ),
        "cores": cores,
        "cores_busy_while_runtime_consumed": round(busy, 2),
        "cores_used_by_runtime_broker_publisher": round(ours, 2),
        "cores_used_by_other_processes": round(max(busy - ours, 0.0), 2),
    }


def _bare_round(
    broker: LocalBroker, deploy: Path, payloads: list[tuple[str, bytes]], protocol: str
) -> dict:
    """The baseline: {"rate" (messages/s received), "cpu_s"} of the bare subscriber."""
    args = [broker.host, str(broker.port), str(len(payloads)), str(deploy), protocol]
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
