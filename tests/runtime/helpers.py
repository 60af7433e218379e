"""Test helpers for the runtime: offline reference windows and the events they imply, the
test defaults of a gateway config, and `edgelstm serve` in-process (thread) or as a torch-free
subprocess. Subscribing, config writing and the subprocess are the gateway harness's
(edge_lstm/reporting/gateway_harness.py); the names below keep the tests' spelling."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge_lstm.reporting import gateway_harness
from edge_lstm.reporting.gateway_harness import TORCH_BLOCKER, wait_until
from runtime.debounce import Debouncer
from runtime.manifest import Manifest
from runtime.replay import Run, load_runs

__all__ = [
    "REPO",
    "TORCH_BLOCKER",
    "Collector",
    "InProcessService",
    "ServeProcess",
    "expected_events",
    "gateway_config",
    "offline_windows",
    "select_runs",
    "wait_until",
]

REPO = Path(__file__).resolve().parents[2]
TEST_DEFAULTS = {
    "broker": {"reconnect_min_s": 1, "reconnect_max_s": 2},
    "stats_interval_s": 1.0,
    "log_every_s": 60.0,
}

Collector = gateway_harness.Recorder  # records (topic, body, received_at) of edgelstm/#


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
        probs = m.probabilities(session.run(None, {"x": windows})[0])
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
    """A gateway YAML for the tests: fast stats and reconnects, state under the test's folder,
    and an MQTT client id of its own, so a persistent session never hands one test the readings
    another test left queued (every process started from this file shares the session)."""
    base = {**TEST_DEFAULTS, "broker": {**TEST_DEFAULTS["broker"]}}
    base["broker"]["client_id"] = f"edgelstm-test-{uuid.uuid4().hex[:12]}"
    return gateway_harness.write_gateway_config(
        path, deploy, host, port, gateway_id="test", base=base, **sections
    )


class ServeProcess(gateway_harness.ServeProcess):
    """`edgelstm serve` in a subprocess where `import torch` raises (a gateway without torch)."""

    def __init__(self, config: Path, workdir: Path) -> None:
        super().__init__(config, workdir, block_torch=True)


class InProcessService:
    """runtime.daemon.Service on a thread (no signal handlers); stop() = what SIGTERM does.
    It waits until the service is subscribed, unless connect_timeout_s is None (a test of a
    broker that must refuse it, or that is not up yet)."""

    def __init__(self, config: Path, connect_timeout_s: float | None = 10.0) -> None:
        from runtime.config import load_gateway_config
        from runtime.daemon import Service

        self.service = Service(load_gateway_config(config))
        self.rc: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if connect_timeout_s is not None:
            connected = self.service.link.wait_subscribed(connect_timeout_s)
            assert connected, "service did not connect"

    def _run(self) -> None:
        self.rc = self.service.run()

    def counters(self) -> dict[str, int]:
        return dict(self.service.stats.counters)

    def stop(self) -> int | None:
        self.service.request_stop()
        self.thread.join(5)
        assert not self.thread.is_alive(), "the service did not stop within 5 s"
        return self.rc
