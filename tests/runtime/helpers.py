"""Test helpers for the runtime: an alert subscriber, offline reference windows, a gateway
config writer, and `edgelstm serve` run in-process (thread) or as a torch-free subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from runtime.debounce import Debouncer
from runtime.manifest import Manifest
from runtime.replay import Run, load_runs

REPO = Path(__file__).resolve().parents[2]
TORCH_BLOCKER = """
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test (gateway without torch)")
        return None
sys.meta_path.insert(0, _NoTorch())
"""


def wait_until(predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()


class Collector:
    """A paho subscriber that records (topic, decoded payload) of everything it receives."""

    def __init__(self, host: str, port: int, topic: str = "edgelstm/#", client_id: str = ""):
        self.messages: list[tuple[str, object]] = []
        self.lock = threading.Lock()
        persistent = bool(client_id)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=not persistent,
        )
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        self.client.connect(host, port)
        self.client.loop_start()
        assert self.subscribed.wait(5), "subscriber did not get SUBACK"

    def _on_message(self, client, userdata, msg) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            body = msg.payload.decode(errors="replace")
        with self.lock:
            self.messages.append((msg.topic, body))

    def bodies(self, kind: str | None = None, topic_part: str = "/alerts/") -> list[dict]:
        with self.lock:
            out = [b for t, b in self.messages if topic_part in t and isinstance(b, dict)]
        return [b for b in out if kind is None or b.get("event") == kind]

    def payloads(self, topic_suffix: str) -> list[object]:
        with self.lock:
            return [b for t, b in self.messages if t.endswith(topic_suffix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def select_runs(data: Path, manifest: Manifest, count: int, length: int | None = None) -> list[Run]:
    """`count` runs spread over the classes, optionally cut to their first `length` readings."""
    _, runs = load_runs(data, manifest.features)
    step = max(len(runs) // count, 1)
    chosen = runs[::step][:count]
    if length is not None:
        chosen = [
            Run(r.run_id, r.ts[:length], r.values[:length], r.labels[:length]) for r in chosen
        ]
    return chosen


def offline_windows(
    deploy: Path, runs: list[Run], stride: int | None = None
) -> dict[tuple[str, float], np.ndarray]:
    """(device, window start ts) -> probabilities of the window graph on the same readings,
    for windows starting every `stride` readings (default: the hop, as served without resets;
    1 gives every window a restarted device can produce)."""
    m = Manifest.load(deploy)
    session = ort.InferenceSession(str(deploy / "model.onnx"))
    mean = np.asarray(m.norm_mean, np.float32)
    std = np.asarray(m.norm_std, np.float32)
    out = {}
    for run in runs:
        x = (run.values - mean) / std
        starts = list(range(0, len(x) - m.window + 1, stride or m.hop))
        windows = np.stack([x[s : s + m.window] for s in starts]).astype(np.float32)
        logits = session.run(None, {"x": windows})[0].astype(np.float64)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        for s, p in zip(starts, probs, strict=True):
            out[(run.run_id, float(run.ts[s]))] = p
    return out


def expected_events(
    windows: dict[tuple[str, float], np.ndarray], k: int, threshold: float
) -> list[tuple[str, str, float]]:
    """(device, event kind, window start ts) the debouncer must emit, from offline windows."""
    debouncer = Debouncer(k, threshold)
    events = []
    for device, start in sorted(windows):
        event = debouncer.update(device, windows[(device, start)])
        if event is not None:
            events.append((device, event.kind, start))
    return events


def gateway_config(path: Path, deploy: Path, host: str, port: int, **sections) -> Path:
    """A gateway YAML for the tests: fast stats, state under the test's folder."""
    raw = {
        "model_dir": str(deploy),
        "gateway_id": "test",
        "broker": {"host": host, "port": port, "reconnect_min_s": 1, "reconnect_max_s": 2},
        "state_dir": str(path.parent / "state"),
        "stats_interval_s": 1.0,
        "log_every_s": 60.0,
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(raw))
    return path


class ServeProcess:
    """`edgelstm serve` in a subprocess where `import torch` raises (a gateway without torch)."""

    def __init__(self, config: Path, workdir: Path) -> None:
        blocker = workdir / "no_torch"
        blocker.mkdir(parents=True, exist_ok=True)
        (blocker / "sitecustomize.py").write_text(TORCH_BLOCKER)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(blocker), str(REPO)])
        self.log_path = workdir / "serve.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "edgelstm"), "serve", "--config", str(config)],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout_s: float = 5.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


class InProcessService:
    """runtime.daemon.Service on a thread (no signal handlers); stop() = what SIGTERM does."""

    def __init__(self, config: Path) -> None:
        from runtime.config import load_gateway_config
        from runtime.daemon import Service

        self.service = Service(load_gateway_config(config))
        self.rc: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.service.link.wait_connected(10), "service did not connect"

    def _run(self) -> None:
        self.rc = self.service.run()

    def counters(self) -> dict[str, int]:
        return dict(self.service.stats.counters)

    def stop(self) -> int | None:
        self.service.request_stop()
        self.thread.join(5)
        return self.rc
