"""Benchmark: the cost of a window close, streaming against recomputing the window.

In-process, for 1 and 1,000 devices: the stream engine's round (one step of every open window,
one backend call) against recomputing the closing windows with the window graph (one intra-op
thread), timed on the same closes. Each figure is the median/min/max over closes.

    python -m bench.window_close [--runs runs/demo] [--quick]  # -> bench/window_close.json
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import summarize
from bench.common import dataset, unbounded_engine
from runtime.backends.base import open_backend
from runtime.manifest import Manifest
from runtime.parse import Readings

DEVICES = (1, 1000)
BASE_TS = 1.7e9


def run(runs_dir: Path, quick: bool = False) -> dict[str, Any]:
    """Streaming round (all open windows, one step) vs window-graph recompute, per close."""
    import onnxruntime as ort

    deploy = Path(runs_dir) / "deploy"
    manifest = Manifest.load(deploy)
    values = dataset(Path(runs_dir), manifest)
    backend = open_backend(deploy, manifest)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    window_graph = ort.InferenceSession(
        str(manifest.verified_path(deploy, "window")), options, providers=["CPUExecutionProvider"]
    )
    closes = 5 if quick else 20
    out: dict[str, Any] = {"window": manifest.window, "hop": manifest.hop}
    for devices in DEVICES:
        out[f"devices_{devices}"] = _closes(
            manifest, values, backend, window_graph, devices, closes
        )
    return out


def _closes(
    manifest: Manifest, values: list[np.ndarray], backend, window_graph, devices: int, closes: int
) -> dict[str, Any]:
    """Feeds `devices` devices reading by reading, timing each round that closes windows and
    the window graph on the same closing windows."""
    engine = unbounded_engine(manifest)
    mean = np.asarray(manifest.norm_mean, np.float32)
    std = np.asarray(manifest.norm_std, np.float32)
    history: dict[int, list[np.ndarray]] = {d: [] for d in range(devices)}
    stream_ms, recompute_ms, ratios = [], [], []
    for i in range(manifest.window + closes * manifest.hop):
        for d in range(devices):
            run = values[d % len(values)]
            row = run[i % len(run)]
            history[d].append(row)
            engine.add(f"d{d}", Readings(np.array([BASE_TS + i * 0.1]), row[None, :]), 0.0)
        t0 = time.perf_counter()
        results, _ = engine.step_round(backend)
        t1 = time.perf_counter()
        if not results:
            continue
        x = np.stack([np.stack(history[d][-manifest.window :]) for d in range(devices)])
        x = x.astype(np.float32)
        t2 = time.perf_counter()
        window_graph.run(None, {"x": (x - mean) / std})
        t3 = time.perf_counter()
        stream_ms.append((t1 - t0) * 1000)
        recompute_ms.append((t3 - t2) * 1000)
        ratios.append((t3 - t2) / (t1 - t0))
    return {
        "streaming_round_ms": summarize(stream_ms),
        "recompute_window_ms": summarize(recompute_ms),
        "ratio_recompute_to_streaming": summarize(ratios),
        "closes": len(stream_ms),
    }


if __name__ == "__main__":
    from bench.run import main_for

    main_for("window_close")
