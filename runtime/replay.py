"""Replays a dataset's runs as live MQTT devices (the demo, the tests and the benchmarks use it).

Torch- and pandas-free so it also runs on a gateway: Parquet is read with pyarrow (when
installed), CSV with the csv module. Each run becomes a device; devices advance in lockstep,
one chunk of readings per device per tick, paced by --rate or --speedup, bounded in readings
and seconds.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from runtime.config import parse_host_port
from runtime.errors import EdgeRuntimeError
from runtime.manifest import Manifest
from runtime.mqtt import set_nodelay
from runtime.parse import encode_binary, encode_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Columns:
    """Names of the long-format columns (a training config's data.run_column, ...)."""

    run: str = "run_id"
    ts: str = "ts"
    label: str = "label"


@dataclass
class Run:
    """One run's readings in time order: ts float64 [N], values float32 [N, F], labels [N]."""

    run_id: str
    ts: np.ndarray
    values: np.ndarray
    labels: list[str]


def _read_columns(path: Path) -> dict[str, list]:
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise EdgeRuntimeError(
                f"{path}: reading Parquet needs pyarrow (pip install pyarrow) or use a .csv"
            ) from None
        return pq.read_table(path).to_pydict()
    if path.suffix != ".csv":
        raise EdgeRuntimeError(f"{path}: expected a .csv or .parquet file")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise EdgeRuntimeError(f"{path}: no rows")
    return {key: [row[key] for row in rows] for key in rows[0]}


def load_runs(
    path: Path,
    features: list[str] | None = None,
    runs: list[str] | None = None,
    columns: Columns = Columns(),
) -> tuple[list[str], list[Run]]:
    """Reads long-format readings (run id, ts, feature columns, optional label) into runs.

    `features` fixes the value order (a manifest's feature list); by default every column
    other than the run id, ts and label columns, in file order. `runs` selects and orders run
    ids.
    """
    path = Path(path)
    if not path.is_file():
        raise EdgeRuntimeError(f"{path}: data file not found")
    table = _read_columns(path)
    missing = [c for c in (columns.run, columns.ts) if c not in table]
    if missing:
        raise EdgeRuntimeError(
            f"{path}: missing column(s) {missing}; name the columns with --run-column and "
            "--ts-column (or --config)"
        )
    own = (columns.run, columns.ts, columns.label)
    names = features or [c for c in table if c not in own]
    absent = [c for c in names if c not in table]
    if absent:
        raise EdgeRuntimeError(f"{path}: the model's features {absent[:3]} are not columns")
    run_ids = np.asarray([str(r) for r in table[columns.run]])
    ts = np.asarray(table[columns.ts], dtype=np.float64)
    values = np.column_stack([np.asarray(table[c], dtype=np.float32) for c in names])
    labels = np.asarray([str(v) for v in table.get(columns.label, [""] * len(ts))])
    wanted = runs if runs is not None else list(dict.fromkeys(run_ids.tolist()))
    out = []
    for run_id in wanted:
        mask = run_ids == run_id
        if not mask.any():
            raise EdgeRuntimeError(f"{path}: no run {run_id!r}")
        order = np.argsort(ts[mask], kind="stable")
        out.append(Run(run_id, ts[mask][order], values[mask][order], labels[mask][order].tolist()))
    return names, out


def rate_for_speedup(runs: list[Run], speedup: float, source: Path) -> float:
    """Readings per second per device that replay the data `speedup` times its own rate."""
    period = float(np.median(np.concatenate([np.diff(r.ts) for r in runs])))
    if not period > 0:
        raise EdgeRuntimeError(f"{source}: cannot infer the sample period from timestamps")
    return speedup / period


def device_ids(runs: list[Run], devices: int) -> list[tuple[str, Run]]:
    """Device i replays run i mod len(runs); ids are the run ids, suffixed when reused."""
    if not runs:
        raise EdgeRuntimeError("no runs to replay")
    pairs = []
    for i in range(devices):
        run = runs[i % len(runs)]
        cycle = i // len(runs)
        name = run.run_id if cycle == 0 else f"{run.run_id}.{cycle}"
        pairs.append((name.replace("/", "_").replace("+", "_").replace("#", "_"), run))
    return pairs


class Replayer:
    """A paho publisher (TCP_NODELAY) that sends runs to `sensors/{device}/data`."""

    def __init__(
        self,
        host: str,
        port: int,
        topic: str = "sensors/{device_id}/data",
        qos: int = 0,
        binary: bool = False,
        chunk: int = 1,
        live_ts: bool = False,
    ) -> None:
        """live_ts shifts each run's timestamps to start now (spacing kept), for runtimes that
        measure reading-to-alert latency against their own clock."""
        self.topic, self.qos, self.binary, self.chunk, self.live_ts = (
            topic,
            qos,
            binary,
            chunk,
            live_ts,
        )
        self.client = set_nodelay(mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311))
        self.client.max_inflight_messages_set(1000)
        self._last: mqtt.MQTTMessageInfo | None = None
        try:
            self.client.connect(host, port, keepalive=30)
        except OSError as exc:
            raise EdgeRuntimeError(f"cannot reach the broker at {host}:{port} ({exc})") from None
        self.client.loop_start()

    def send(self, device_id: str, payload: bytes) -> None:
        """Publishes one payload as `device_id` (remembered so close() can wait for it)."""
        self._last = self.client.publish(self.topic.format(device_id=device_id), payload, self.qos)

    def payload(self, ts: np.ndarray, values: np.ndarray) -> bytes:
        if self.binary:
            return encode_binary(ts, values)
        if len(ts) == 1:
            return encode_json(float(ts[0]), values[0].tolist())
        return encode_json(ts.tolist(), values.tolist())

    def replay(
        self,
        devices: list[tuple[str, Run]],
        rate_hz: float | None = None,
        limit: int | None = None,
        max_seconds: float | None = None,
    ) -> dict:
        """Publishes every device's readings; rate_hz = readings per second per device
        (None = as fast as possible). Returns counts and the achieved rate."""
        longest = max(len(run.ts) for _, run in devices)
        n = min(longest, limit) if limit else longest
        ticks = -(-n // self.chunk)
        period = self.chunk / rate_hz if rate_hz else 0.0
        started, wall_start = time.monotonic(), time.time()
        messages = readings = 0
        for tick in range(ticks):
            if period:
                delay = started + tick * period - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if max_seconds is not None and time.monotonic() - started > max_seconds:
                break
            lo = tick * self.chunk
            hi = min(lo + self.chunk, n)
            for device_id, run in devices:
                if lo >= len(run.ts):
                    continue
                ts = run.ts[lo:hi]
                if self.live_ts:
                    ts = ts - run.ts[0] + wall_start
                self.send(device_id, self.payload(ts, run.values[lo:hi]))
                messages += 1
                readings += len(ts)
        elapsed = time.monotonic() - started
        return {
            "devices": len(devices),
            "messages": messages,
            "readings": readings,
            "seconds": round(elapsed, 3),
            "readings_per_s": round(readings / elapsed, 1) if elapsed > 0 else None,
        }

    def close(self, timeout_s: float = 10.0) -> None:
        """Waits until paho has sent (QoS 1: had acknowledged) the last message, then
        disconnects; messages go out in order, so every earlier one was sent before it."""
        deadline = time.monotonic() + timeout_s
        if self._last is not None:
            self._last.wait_for_publish(timeout_s)
        while self.client.want_write() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.client.disconnect()
        self.client.loop_stop()


@dataclass(frozen=True)
class ReplayRequest:
    """Everything `edgelstm replay` is asked to do (its options, by name)."""

    data: Path
    broker: str = "127.0.0.1:1883"
    devices: int | None = None
    rate: float | None = None
    speedup: float | None = None
    binary: bool = False
    chunk: int = 1
    run_ids: str | None = None  # comma-separated
    split: str | None = None
    config_path: Path | None = None
    model_dir: Path | None = None
    run_column: str = "run_id"
    ts_column: str = "ts"
    label_column: str = "label"
    limit: int | None = None
    max_seconds: float | None = None
    qos: int = 0
    live_ts: bool = False
    topic: str = "sensors/{device_id}/data"

    def problem(self) -> str | None:
        """What makes the request impossible, in the words of its options."""
        if self.rate is not None and self.speedup is not None:
            return "give --rate or --speedup, not both"
        if (self.split is None) != (self.config_path is None):
            return "--split and --config go together"
        if "{device_id}" not in self.topic:
            return "--topic needs {device_id}"
        return None


def replay_dataset(request: ReplayRequest) -> dict:
    """Loads the runs, paces and publishes them; returns Replayer.replay's summary."""
    features = Manifest.load(request.model_dir).features if request.model_dir else None
    columns = Columns(request.run_column, request.ts_column, request.label_column)
    run_ids = request.run_ids.split(",") if request.run_ids else None
    _, runs = load_runs(request.data, features, run_ids, columns)
    rate = request.rate
    if request.speedup is not None:
        rate = rate_for_speedup(runs, request.speedup, request.data)
    host, port = parse_host_port(request.broker)
    publisher = Replayer(
        host, port, request.topic, request.qos, request.binary, request.chunk, request.live_ts
    )
    try:
        devices = device_ids(runs, request.devices or len(runs))
        return publisher.replay(devices, rate, request.limit, request.max_seconds)
    finally:
        publisher.close()
