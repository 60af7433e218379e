"""Benchmark: readings/s and p99 latency of 1, 2 and 3 `serve` workers sharing devices through
RabbitMQ (input.mode: amqp, deploy/rabbitmq/), as ratios to one worker.

A throwaway RabbitMQ node (tests/runtime/rabbitmq.py) with the topology of
runtime/amqp_topology.py for N shards, fresh queues for every round:

- throughput (best of 2 rounds): every queue is filled first (the demo's readings of D
  devices, JSON, one reading per message, published over AMQP to `amq.topic` with the routing
  keys the MQTT plugin makes), then N workers start together; readings/s counts from the moment
  the last of them consumes (the start skew is reported) to the last reading. Beside it: CPU
  per reading of each worker and of the broker, and how busy all cores were.
- latency: the same devices paced at a fixed offered load well below one worker's rate;
  p99 of receive -> infer and of infer, over every worker's latest 8,192 windows.

What a machine with more cores should expect follows from the CPU figures, which do not
depend on how many cores there are: each reading costs a worker `cpu_us_per_reading` and the
broker `broker_cpu_us_per_reading`, so N workers on C free cores reach about
min(N / c_w, C / (c_w + c_b)) readings/s. On this 2-core machine the broker, the
publisher and the workers share two cores (machine_busy_share 1.0 = both saturated).

    python -m bench.scaleout [--runs runs/demo] [--quick]  # -> bench/scaleout.json
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import summarize
from bench.common import busy_share, cpu_seconds, dataset, machine_cpu
from edge_lstm.reporting.gateway_harness import (
    Recorder,
    ServeProcess,
    wait_until,
    write_gateway_config,
)
from runtime.amqp_topology import declare, queue_names
from runtime.manifest import Manifest
from runtime.parse import encode_json

log = logging.getLogger(__name__)
logging.getLogger("pika").setLevel(logging.WARNING)  # INFO: lines per connection event

WORKER_COUNTS = (1, 2, 3)
ROUNDS = 2  # throughput rounds per worker count (1 with --quick)
START_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 300.0
PACED_READINGS_PER_S = 1_000.0  # offered load of the latency round, all devices together
PACED_SECONDS = 8.0
STATS_INTERVAL_S = 0.25  # workers' stats cadence: the resolution of the throughput clock
_CONSUMING = re.compile(r"^(\S+ \S+) INFO runtime\.amqp_input: consuming queue \S+ \(primary\)")


def run(runs_dir: Path, quick: bool = False) -> dict[str, Any]:
    from tests.runtime.rabbitmq import LocalRabbit, find_rabbitmq

    if find_rabbitmq() is None:
        return {"skipped": "rabbitmq-server is not installed (apt-get install rabbitmq-server)"}
    runs_dir = Path(runs_dir)
    deploy = runs_dir / "deploy"
    manifest = Manifest.load(deploy)
    values = dataset(runs_dir, manifest)
    devices, per_device = (120, 100) if quick else (300, 200)
    messages = _messages(values, devices, per_device)
    out: dict[str, Any] = {
        "devices": devices,
        "readings": len(messages),
        "format": "json, one reading per message",
        "workers": {},
    }
    with tempfile.TemporaryDirectory(prefix="edgelstm-scaleout-") as tmp:
        rabbit = LocalRabbit(Path(tmp) / "rabbitmq")
        with rabbit:
            for n in WORKER_COUNTS:
                base = Path(tmp) / f"n{n}"
                rounds = [
                    _throughput_round(rabbit, deploy, base / f"throughput{r}", n, messages)
                    for r in range(1 if quick else ROUNDS)
                ]
                # other work on the machine only ever slows a round down: the best one counts
                best = max(rounds, key=lambda f: f["readings_per_s"])
                best["readings_per_s_rounds"] = summarize([f["readings_per_s"] for f in rounds])
                paced = _latency_round(rabbit, deploy, base / "latency", n, messages)
                out["workers"][str(n)] = {**best, **paced}
                log.info("scaleout %d workers: %s", n, out["workers"][str(n)])
    one = out["workers"]["1"]
    for figures in out["workers"].values():
        figures["throughput_ratio_to_1"] = round(
            figures["readings_per_s"] / one["readings_per_s"], 3
        )
        figures["p99_receive_to_infer_ratio_to_1"] = round(
            figures["receive_to_infer_p99_ms"] / max(one["receive_to_infer_p99_ms"], 1e-9), 3
        )
    return out


def group_cpu_seconds(pgid: int) -> float:
    """user + system CPU of every process in a process group (the broker: a shell script,
    beam.smp, epmd and erl_child_setup), from /proc."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) == pgid:  # its group
                total += cpu_seconds(int(stat.parent.name))
        except OSError:  # ended meanwhile
            continue
    return total


def _messages(values: list, devices: int, per_device: int) -> list[tuple[str, bytes]]:
    """(routing key, JSON payload) in time order: device i replays run i mod runs."""
    out = []
    for t in range(per_device):
        for i in range(devices):
            run = values[i % len(values)]
            row = run[t % len(run)]
            out.append((f"sensors.dev{i:04d}.data", encode_json(1.7e9 + 0.1 * t, row.tolist())))
    return out


def _publisher(url: str):
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    return connection, connection.channel()


def _publish(url: str, messages: list[tuple[str, bytes]], rate: float | None = None) -> float:
    """Publishes to amq.topic as the MQTT plugin would; paced at `rate` messages/s if given."""
    connection, channel = _publisher(url)
    started = time.monotonic()
    try:
        for i, (key, body) in enumerate(messages):
            if rate:
                delay = started + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            channel.basic_publish("amq.topic", key, body)
        connection.process_data_events(time_limit=0)
    finally:
        connection.close()
    return time.monotonic() - started


def _queued(url: str, queues: list[str]) -> int:
    connection, channel = _publisher(url)
    try:
        return sum(channel.queue_declare(q, passive=True).method.message_count for q in queues)
    finally:
        connection.close()


def _drop(url: str, queues: list[str]) -> None:
    connection, channel = _publisher(url)
    try:
        for q in queues:
            channel.queue_delete(q)
    finally:
        connection.close()


class _Workers:
    """n `edgelstm serve` processes on shards 0..n-1 of `prefix`, and a stats recorder."""

    def __init__(self, rabbit, deploy: Path, folder: Path, n: int, prefix: str) -> None:
        self.recorder = Recorder(rabbit.host, rabbit.mqtt_port, "edgelstm/+/stats")
        self.procs: list[ServeProcess] = []
        for k in range(n):
            config = write_gateway_config(
                folder / f"w{k}" / "gateway.yaml",
                deploy,
                rabbit.host,
                rabbit.mqtt_port,
                gateway_id=f"bench-w{k}",
                broker={"protocol": 311, "client_id": f"bench-{prefix}-w{k}"},
                stats_interval_s=STATS_INTERVAL_S,
                log_every_s=60.0,
                input={
                    "mode": "amqp",
                    "amqp": {
                        "url": rabbit.amqp_url,
                        "queue_prefix": prefix,
                        "shard": k,
                        "shards": n,
                        "standby": 0,
                        "prefetch": 60_000,
                    },
                },
            )
            self.procs.append(ServeProcess(config, folder / f"w{k}"))

    def readings(self) -> int:
        total = 0
        for k in range(len(self.procs)):
            stats = self.recorder.payloads(f"bench-w{k}/stats")
            total += stats[-1]["counters"].get("readings", 0) if stats else 0
        return total

    def readings_at(self, when: float) -> int:
        """Readings all workers had consumed by wall time `when` (their stats before it)."""
        total = 0
        for k in range(len(self.procs)):
            before = [
                m.body for m in self.recorder.of_kind("stats")
                if m.topic == f"edgelstm/bench-w{k}/stats" and m.received_at <= when
            ]  # fmt: skip
            total += before[-1]["counters"].get("readings", 0) if before else 0
        return total

    def final_stats(self) -> list[dict[str, Any]]:
        return [
            (self.recorder.payloads(f"bench-w{k}/stats") or [{}])[-1]
            for k in range(len(self.procs))
        ]

    def consume_started(self, timeout_s: float) -> list[float]:
        """Wall time each worker registered its primary consumer (from its log)."""
        found: dict[int, float] = {}

        def scan() -> bool:
            for k, proc in enumerate(self.procs):
                if k not in found:
                    for line in proc.log.splitlines():
                        match = _CONSUMING.match(line)
                        if match:
                            stamp = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f")
                            found[k] = stamp.timestamp()
                            break
            return len(found) == len(self.procs)

        if not wait_until(scan, timeout_s, step_s=0.05):
            raise RuntimeError("a worker did not start consuming:\n" + self.procs[0].tail())
        return [found[k] for k in range(len(self.procs))]

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop(10)
        self.recorder.close()


def _throughput_round(rabbit, deploy: Path, folder: Path, n: int, messages: list) -> dict:
    prefix = f"bench{n}t.shard"
    queues = declare(rabbit.amqp_url, n, prefix)
    _publish(rabbit.amqp_url, messages)
    assert wait_until(lambda: _queued(rabbit.amqp_url, queues) == len(messages), 30, 0.2)
    cpu_before = machine_cpu()
    workers = _Workers(rabbit, deploy, folder, n, prefix)
    try:
        starts = workers.consume_started(START_TIMEOUT_S)
        cpu_at_start = [cpu_seconds(p.proc.pid) for p in workers.procs]  # not the start-up's
        broker_at_start = group_cpu_seconds(rabbit.proc.pid)
        done = wait_until(lambda: workers.readings() >= len(messages), DRAIN_TIMEOUT_S, 0.05)
        finished = time.time()
        if not done:
            raise RuntimeError(f"{n} workers consumed {workers.readings()} of {len(messages)}")
        cpu = [
            cpu_seconds(p.proc.pid) - c for p, c in zip(workers.procs, cpu_at_start, strict=True)
        ]
        busy = busy_share(cpu_before, machine_cpu())
        broker_cpu = group_cpu_seconds(rabbit.proc.pid) - broker_at_start
        stats = workers.final_stats()
    finally:
        workers.stop()
        _drop(rabbit.amqp_url, queue_names(n, prefix))
    # from the moment every worker consumes: a worker that started late does not count
    # against the others (the skew is reported)
    span = finished - max(starts)
    left = len(messages) - workers.readings_at(max(starts) + STATS_INTERVAL_S)
    per_worker = [s["counters"].get("readings", 0) for s in stats]
    return {
        "readings_per_s": round(left / max(span - STATS_INTERVAL_S, 1e-3), 1),
        "seconds": round(finished - min(starts), 2),
        "start_skew_s": round(max(starts) - min(starts), 2),
        "readings_per_worker": per_worker,
        "cpu_us_per_reading": [
            round(c / max(r, 1) * 1e6, 1) for c, r in zip(cpu, per_worker, strict=True)
        ],
        "broker_cpu_us_per_reading": round(broker_cpu / len(messages) * 1e6, 1),
        "machine_busy_share": round(busy, 3),
    }


def _latency_round(rabbit, deploy: Path, folder: Path, n: int, messages: list) -> dict:
    prefix = f"bench{n}l.shard"
    declare(rabbit.amqp_url, n, prefix)
    count = int(PACED_READINGS_PER_S * PACED_SECONDS)
    paced = messages[:count]
    workers = _Workers(rabbit, deploy, folder, n, prefix)
    try:
        workers.consume_started(START_TIMEOUT_S)
        sender = threading.Thread(
            target=_publish, args=(rabbit.amqp_url, paced, PACED_READINGS_PER_S), daemon=True
        )
        sender.start()
        sender.join(PACED_SECONDS * 4 + 30)
        wait_until(lambda: workers.readings() >= len(paced), 60, 0.05)
        time.sleep(0.6)  # one more stats message with the last windows' latency
        stats = workers.final_stats()
    finally:
        workers.stop()
        _drop(rabbit.amqp_url, queue_names(n, prefix))

    def p99(stage: str) -> float:
        values = [
            s["latency_ms"][stage]["p99"] for s in stats if s.get("latency_ms", {}).get(stage)
        ]
        return round(max(values), 3) if values else float("nan")

    return {
        "paced_readings_per_s": PACED_READINGS_PER_S,
        "receive_to_infer_p99_ms": p99("receive_to_infer"),
        "infer_p99_ms": p99("infer"),
        "receive_to_infer_p99_per_worker_ms": summarize(
            [
                s["latency_ms"]["receive_to_infer"]["p99"]
                for s in stats
                if s.get("latency_ms", {}).get("receive_to_infer")
            ]
            or [float("nan")]
        ),
    }


if __name__ == "__main__":
    from bench.run import main_for

    main_for("scaleout")
