"""Benchmark: the MQTT runtime (`edgelstm serve`) on the demo deployment folder, through Mosquitto.

- throughput: N devices' readings published as fast as possible (QoS 0), JSON and binary;
  readings/s the runtime consumes (parse, batch, step, windows) against a bare paho subscriber
  that only parses the same messages, measured in the same round; drops reported.
- latency: 1,000 devices x 10 Hz paced evenly; time from the publish of a window's last reading
  to the arrival of its result (emit: all) at a subscriber, against the same readings' own
  publish-to-arrival time at a bare subscriber in the same run (one broker hop).
- window_close: in-process, per window close for 1 and 1,000 devices: the stream engine's round
  (one step of every open window) against recomputing the closing windows with the window graph.

Each figure is the median/min/max over rounds. `python -m bench.runtime [--runs runs/demo]
[--quick]` writes bench/runtime.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from edge_lstm.local_broker import LocalBroker
from runtime.backends.base import open_backend
from runtime.manifest import Manifest
from runtime.parse import Readings, encode_binary, encode_json
from runtime.replay import load_runs
from runtime.streams import StreamEngine

log = logging.getLogger(__name__)

OUT = Path(__file__).with_name("runtime.json")
REPO = Path(__file__).resolve().parents[1]
TOPIC = "sensors/{}/data"
BARE_TOPIC = "bare/{}/data"  # throughput rounds: the bare subscriber's own stream
LATENCY_BASE_TS = 1.7e9
LATENCY_DEVICES = (200, 1000)
WATCH_EVERY = 20  # latency rounds: every 20th device's readings also go to a bare subscriber

BARE_SUBSCRIBER = """
import json, sys, time
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from runtime.manifest import Manifest
from runtime.parse import Parser, Reason
host, port, expected, model_dir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
parser = Parser(Manifest.load(model_dir).features, 65536)
state = {"n": 0, "bad": 0, "last": None}
def on_message(client, userdata, msg):
    if isinstance(parser.parse(msg.payload), Reason):
        state["bad"] += 1
    state["n"] += 1
    state["last"] = time.time()
c = mqtt.Client(CallbackAPIVersion.VERSION2)
c.on_message = on_message
c.on_connect = lambda c, u, f, rc, p: c.subscribe("bare/+/data", 0)
c.connect(host, port)
c.loop_start()
print("ready", flush=True)
cpu0 = time.process_time()
deadline = time.time() + 120
while state["n"] < expected and time.time() < deadline:
    time.sleep(0.005)
state["cpu_s"] = time.process_time() - cpu0
print(json.dumps(state), flush=True)
"""


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def _dataset(runs_dir: Path, manifest: Manifest) -> list[np.ndarray]:
    """Each run's readings (values only, manifest feature order) from the demo data."""
    _, runs = load_runs(runs_dir / "data" / "sensors.parquet", manifest.features)
    return [r.values for r in runs]


def _cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _publisher(host: str, port: int) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_socket_open = lambda c, u, sock: sock.setsockopt(
        socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
    )
    client.connect(host, port)
    client.loop_start()
    return client


def _flush(client: mqtt.Client, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while client.want_write() and time.monotonic() < deadline:
        time.sleep(0.005)


class _Serve:
    """`edgelstm serve` in a subprocess, watched through its stats topic."""

    def __init__(self, workdir: Path, deploy: Path, broker: LocalBroker, **sections: Any):
        workdir.mkdir(parents=True, exist_ok=True)
        raw: dict[str, Any] = {
            "model_dir": str(deploy),
            "gateway_id": "bench",
            "broker": {"host": broker.host, "port": broker.port},
            "topics": {"sensor_qos": 0},
            "state_dir": str(workdir / "state"),
            "log_every_s": 60.0,
        }
        raw.update(sections)
        config = workdir / "gateway.yaml"
        config.write_text(yaml.safe_dump(raw))
        self.stats: list[dict] = []
        self.windows: list[float] = []  # arrival times of window results
        self.watch = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.watch.on_message = self._on_message
        self.watch.on_connect = lambda c, u, f, rc, p: c.subscribe("edgelstm/bench/#", 0)
        self.watch.connect(broker.host, broker.port)
        self.watch.loop_start()
        self.log = open(workdir / "serve.log", "wb")  # noqa: SIM115 - closed in stop()
        edgelstm = Path(sys.executable).parent / "edgelstm"
        self.proc = subprocess.Popen(
            [str(edgelstm), "serve", "--config", str(config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
        deadline = time.monotonic() + 30
        while not self.stats and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.stats:
            self.stop()
            raise RuntimeError(f"edgelstm serve did not start; see {workdir / 'serve.log'}")

    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic.endswith("/stats"):
            self.stats.append(json.loads(msg.payload))
        elif "/alerts/" in msg.topic:
            self.windows.append(time.time())

    def latest(self) -> dict:
        return self.stats[-1]

    def wait_windows(self, total: int, timeout_s: float) -> float | None:
        """Wall time at which `total` window results (emit: all) had arrived."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.windows) >= total:
                return self.windows[total - 1]
            time.sleep(0.005)
        return None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.watch.disconnect()
        self.watch.loop_stop()
        self.log.close()


def throughput(runs_dir: Path, workdir: Path, quick: bool) -> dict[str, Any]:
    deploy = runs_dir / "deploy"
    manifest = Manifest.load(deploy)
    values = _dataset(runs_dir, manifest)
    devices, per_device = (100, 100) if quick else (200, 150)
    rounds = 1 if quick else 3
    total = devices * per_device
    windows = devices * ((per_device - manifest.window) // manifest.hop + 1)
    out: dict[str, Any] = {"devices": devices, "readings_per_round": total, "qos": 0}
    with LocalBroker() as broker:
        for fmt in ("json", "binary"):
            # the last reading of every device closes a window: its result marks the end
            serve = _Serve(
                workdir / f"throughput-{fmt}",
                deploy,
                broker,
                stats_interval_s=0.5,
                debounce={"emit": "all"},
            )
            bare_rates, rt_rates, pub_rates, ratios = [], [], [], []
            bare_cpu, rt_cpu, cpu_ratios = [], [], []
            closed = 0
            try:
                for r in range(rounds):
                    payloads = _payloads(values, devices, per_device, fmt, TOPIC, f"r{r}")
                    bare_payloads = _payloads(values, devices, per_device, fmt, BARE_TOPIC, "")
                    bare = _bare_round(broker, deploy, bare_payloads)
                    cpu0 = _cpu_seconds(serve.proc.pid)
                    started, published = _publish_all(broker, payloads)
                    done = serve.wait_windows(closed + windows, timeout_s=120)
                    if done is None:
                        raise RuntimeError(f"runtime did not consume {total} readings ({fmt})")
                    closed += windows
                    rt = total / (done - started)
                    rt_cpu.append((_cpu_seconds(serve.proc.pid) - cpu0) / total * 1e6)
                    bare_cpu.append(bare["cpu_s"] / total * 1e6)
                    cpu_ratios.append(bare_cpu[-1] / rt_cpu[-1])
                    bare_rates.append(bare["rate"])
                    rt_rates.append(rt)
                    pub_rates.append(published)
                    ratios.append(rt / bare["rate"])
                drops = {
                    k: v
                    for k, v in serve.latest()["counters"].items()
                    if k.startswith(("dropped_", "invalid_"))
                }
            finally:
                serve.stop()
            out[fmt] = {
                "runtime_readings_per_s": _spread(rt_rates),
                "bare_subscriber_readings_per_s": _spread(bare_rates),
                "ratio_runtime_to_bare": _spread(ratios),
                "publisher_msgs_per_s": _spread(pub_rates),
                "runtime_cpu_us_per_reading": _spread(rt_cpu),
                "bare_cpu_us_per_reading": _spread(bare_cpu),
                "cpu_ratio_bare_to_runtime": _spread(cpu_ratios),
                "runtime_drops": drops,
            }
            log.info("throughput %s: %s", fmt, out[fmt])
    return out


def _payloads(
    values: list[np.ndarray], devices: int, per_device: int, fmt: str, topic: str, prefix: str
) -> list[tuple[str, bytes]]:
    """Messages in publish order: reading i of every device, then reading i + 1, ..."""
    encode = encode_binary if fmt == "binary" else None
    out = []
    base = 1.7e9
    for i in range(per_device):
        for d in range(devices):
            run = values[d % len(values)]
            row = run[i % len(run)]
            ts = base + i * 0.1
            payload = (
                encode(np.array([ts]), row[None, :]) if encode else encode_json(ts, row.tolist())
            )
            out.append((topic.format(f"{prefix}d{d:04d}"), payload))
    return out


def _publish_all(broker: LocalBroker, payloads: list[tuple[str, bytes]]) -> tuple[float, float]:
    client = _publisher(broker.host, broker.port)
    started = time.time()
    for topic, payload in payloads:
        client.publish(topic, payload, 0)
    _flush(client)
    rate = len(payloads) / (time.time() - started)
    client.disconnect()
    client.loop_stop()
    return started, rate


def _bare_round(broker: LocalBroker, deploy: Path, payloads: list[tuple[str, bytes]]) -> dict:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            BARE_SUBSCRIBER,
            broker.host,
            str(broker.port),
            str(len(payloads)),
            str(deploy),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # "ready"
    time.sleep(0.2)
    started, _ = _publish_all(broker, payloads)
    state = json.loads(proc.stdout.readline())
    proc.wait(10)
    if state["n"] < len(payloads) or state["bad"]:
        raise RuntimeError(f"bare subscriber got {state} of {len(payloads)} messages")
    return {"rate": state["n"] / (state["last"] - started), "cpu_s": state["cpu_s"]}


def latency(runs_dir: Path, workdir: Path, quick: bool) -> dict[str, Any]:
    """The 1,000 x 10 Hz point of the issue, and a 200 x 10 Hz point below saturation."""
    return {f"devices_{n}": _latency_point(runs_dir, workdir, quick, n) for n in LATENCY_DEVICES}


def _latency_point(runs_dir: Path, workdir: Path, quick: bool, devices: int) -> dict[str, Any]:
    deploy = runs_dir / "deploy"
    manifest = Manifest.load(deploy)
    rate_hz = 10.0
    seconds = manifest.window / rate_hz + (4 if quick else 10)
    rounds = 1 if quick else 3
    results = []
    with LocalBroker() as broker:
        for r in range(rounds):
            serve = _Serve(
                workdir / f"latency-{devices}-{r}",
                deploy,
                broker,
                stats_interval_s=1.0,
                debounce={"emit": "all"},
            )
            try:
                results.append(_latency_round(broker, runs_dir, devices, rate_hz, seconds, serve))
            finally:
                serve.stop()
            log.info("latency %d devices, round %d: %s", devices, r, results[-1])
    keys = ("p50", "p90", "p99", "max")
    return {
        "devices": devices,
        "rate_hz_per_device": rate_hz,
        "payload": "binary, one reading per message",
        "seconds_per_round": seconds,
        "windows_per_round": _spread([float(x["windows"]) for x in results]),
        "missing_windows": [x["missing"] for x in results],
        "reading_to_result_ms": {k: _spread([x["alert"][k] for x in results]) for k in keys},
        "bare_hop_ms": {k: _spread([x["bare"][k] for x in results]) for k in keys},
        "ratio_p99_result_to_bare_hop": _spread(
            [x["alert"]["p99"] / x["bare"]["p99"] for x in results]
        ),
        "runtime_stage_ms_p99": results[-1]["stages"],
        "publisher_msgs_per_s": _spread([x["published_per_s"] for x in results]),
    }


def _percentiles(ms: list[float]) -> dict[str, float]:
    if not ms:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "max": float("nan")}
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(max(ms))}


def _paced_publisher(
    host: str, port: int, runs_dir: str, devices: int, rate_hz: float, seconds: float, out
) -> None:
    """Publishes every device's readings evenly spread over each period (a separate process,
    so its GIL is not the subscriber's); sends back the wall-clock publish time of the
    readings that close a window and of every reading of the watched devices."""
    manifest = Manifest.load(Path(runs_dir) / "deploy")
    values = _dataset(Path(runs_dir), manifest)
    window, hop = manifest.window, manifest.hop
    pub = _publisher(host, port)
    slot = 1.0 / (rate_hz * devices)
    sent: dict[tuple[str, float], float] = {}
    started = time.perf_counter()
    count = 0
    for i in range(int(seconds * rate_hz)):
        ts = LATENCY_BASE_TS + i / rate_hz
        closes = i >= window - 1 and (i - (window - 1)) % hop == 0
        for d in range(devices):
            delay = started + count * slot - time.perf_counter()
            if delay > 0.0005:
                time.sleep(delay)
            run = values[d % len(values)]
            device = f"lat-d{d:04d}"
            payload = encode_binary(np.array([ts]), run[i % len(run)][None, :])
            pub.publish(TOPIC.format(device), payload, 0)
            if closes or d % WATCH_EVERY == 0:
                sent[(device, ts)] = time.time()
            count += 1
    published_per_s = count / (time.perf_counter() - started)
    _flush(pub)
    pub.disconnect()
    pub.loop_stop()
    out.send({"sent": sent, "published_per_s": published_per_s, "ticks": i + 1})


def _latency_round(broker, runs_dir: Path, devices, rate_hz, seconds, serve) -> dict:
    import multiprocessing

    arrived: dict[tuple[str, float], float] = {}
    bare: dict[tuple[str, float], float] = {}
    watched = [f"lat-d{d:04d}" for d in range(0, devices, WATCH_EVERY)]

    def on_message(client, userdata, msg) -> None:
        now = time.time()
        parts = msg.topic.split("/")
        if parts[0] == "sensors":
            bare[(parts[1], float(np.frombuffer(msg.payload, "<f8", 1, 6)[0]))] = now
        else:
            body = json.loads(msg.payload)
            arrived[(body["device_id"], body["window_end_ts"])] = now

    sub = mqtt.Client(CallbackAPIVersion.VERSION2)
    sub.on_socket_open = lambda c, u, sock: sock.setsockopt(
        socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
    )
    sub.on_message = on_message
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe(
        [("edgelstm/bench/alerts/+", 0)] + [(TOPIC.format(d), 0) for d in watched]
    )
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    time.sleep(0.3)
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_paced_publisher,
        args=(broker.host, broker.port, str(runs_dir), devices, rate_hz, seconds, send),
    )
    proc.start()
    if not receive.poll(seconds + 60):
        proc.kill()
        raise RuntimeError(f"the publisher process did not report (exit code {proc.exitcode})")
    report = receive.recv()
    proc.join(30)
    deadline, seen = time.monotonic() + 60, -1
    while len(arrived) != seen and time.monotonic() < deadline:  # a saturated runtime lags
        seen = len(arrived)
        time.sleep(1.0)
    sub.disconnect()
    sub.loop_stop()
    sent = report["sent"]
    alert_ms = [(t - sent[k]) * 1000 for k, t in arrived.items() if k in sent]
    bare_ms = [(t - sent[k]) * 1000 for k, t in bare.items() if k in sent]
    manifest = Manifest.load(runs_dir / "deploy")
    closes = sum(
        1
        for i in range(report["ticks"])
        if i >= manifest.window - 1 and (i - (manifest.window - 1)) % manifest.hop == 0
    )
    snap = serve.latest()
    return {
        "windows": len(alert_ms),
        "missing": closes * devices - len(alert_ms),
        "alert": _percentiles(alert_ms),
        "bare": _percentiles(bare_ms),
        "published_per_s": report["published_per_s"],
        "stages": {k: (v or {}).get("p99") for k, v in snap["latency_ms"].items()},
    }


def window_close(runs_dir: Path, quick: bool) -> dict[str, Any]:
    """Streaming round (all open windows, one step) vs window-graph recompute, per close."""
    import onnxruntime as ort

    deploy = runs_dir / "deploy"
    manifest = Manifest.load(deploy)
    values = _dataset(runs_dir, manifest)
    backend = open_backend(deploy, manifest)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    window_graph = ort.InferenceSession(
        str(manifest.verified_path(deploy, "window")), options, providers=["CPUExecutionProvider"]
    )
    mean = np.asarray(manifest.norm_mean, np.float32)
    std = np.asarray(manifest.norm_std, np.float32)
    closes = 5 if quick else 20
    out: dict[str, Any] = {"window": manifest.window, "hop": manifest.hop}
    for devices in (1, 1000):
        engine = StreamEngine(
            manifest,
            sample_period_s=0.1,
            device_queue=10**6,
            max_batch=10**6,
            count=lambda name, n: None,
        )
        history: dict[int, list[np.ndarray]] = {d: [] for d in range(devices)}
        stream_ms, recompute_ms, ratios = [], [], []
        readings = manifest.window + closes * manifest.hop
        for i in range(readings):
            for d in range(devices):
                run = values[d % len(values)]
                row = run[i % len(run)]
                history[d].append(row)
                engine.add(f"d{d}", Readings(np.array([1.7e9 + i * 0.1]), row[None, :]), 0.0)
            t0 = time.perf_counter()
            results, _ = engine.step_round(backend)
            t1 = time.perf_counter()
            if not results:
                continue
            x = np.stack([np.stack(history[d][-manifest.window :]) for d in range(devices)]).astype(
                np.float32
            )
            t2 = time.perf_counter()
            window_graph.run(None, {"x": (x - mean) / std})
            t3 = time.perf_counter()
            stream_ms.append((t1 - t0) * 1000)
            recompute_ms.append((t3 - t2) * 1000)
            ratios.append((t3 - t2) / (t1 - t0))
        out[f"devices_{devices}"] = {
            "streaming_round_ms": _spread(stream_ms),
            "recompute_window_ms": _spread(recompute_ms),
            "ratio_recompute_to_streaming": _spread(ratios),
            "closes": len(stream_ms),
        }
    return out


def run(runs_dir: Path, quick: bool = False) -> dict[str, Any]:
    """All three runtime benchmarks against `runs_dir/deploy` and `runs_dir/data`."""
    runs_dir = Path(runs_dir)
    workdir = runs_dir / "bench-runtime"
    return {
        "window_close": window_close(runs_dir, quick),
        "throughput": throughput(runs_dir, workdir, quick),
        "latency": latency(runs_dir, workdir, quick),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/demo"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--only", choices=("window_close", "throughput", "latency"), help="run one part"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.only:
        workdir = args.runs / "bench-runtime"
        part = {
            "window_close": lambda: window_close(args.runs, args.quick),
            "throughput": lambda: throughput(args.runs, workdir, args.quick),
            "latency": lambda: latency(args.runs, workdir, args.quick),
        }[args.only]
        result = {args.only: part()}
    else:
        result = run(args.runs, quick=args.quick)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
