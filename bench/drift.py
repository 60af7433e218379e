"""Benchmark: what the drift monitor costs per reading, against the stream engine's own cost.

In-process, for 100 and 1,000 devices sending one reading each per round (a drain of one
message per device, as `serve` sees a fleet): every round is timed twice on the same readings,
the engine's part (queueing the readings and the batched step round on one intra-op thread)
and the monitor's (`observe` of the drain and `observe_windows` of the round's closed windows),
so the ratio monitor / engine comes from one run on one machine. `evaluate` (PSI of every
device, once per `drift.interval_s`) is timed on its own. Figures are per reading in µs
(median/min/max over rounds) and ms per evaluation. `drift.enabled: false` costs nothing: the
daemon then has no monitor.

    python -m bench.drift [--runs runs/demo] [--quick]  # -> bench/drift.json

The folder must carry a drift reference (exported by an edgelstm that writes one).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import summarize
from bench.common import dataset, unbounded_engine
from runtime.backends.base import open_backend
from runtime.config import config_from_dict
from runtime.drift import DriftMonitor
from runtime.manifest import Manifest
from runtime.parse import Readings
from runtime.stats import Stats

DEVICES = (100, 1000)
BASE_TS = 1.7e9


def run(runs_dir: Path, quick: bool = False) -> dict[str, Any]:
    """Monitor vs engine cost per reading, and the cost of one evaluation."""
    deploy = Path(runs_dir) / "deploy"
    manifest = Manifest.load(deploy)
    if manifest.drift_reference is None:
        raise RuntimeError(f"{deploy} has no drift_reference: re-export it with `edgelstm export`")
    values = dataset(Path(runs_dir), manifest)
    backend = open_backend(deploy, manifest)
    rounds = 2 * manifest.window if quick else 6 * manifest.window
    out: dict[str, Any] = {"window": manifest.window, "features": manifest.n_features}
    for devices in DEVICES:
        out[f"devices_{devices}"] = _rounds(manifest, values, backend, devices, rounds)
    return out


def _rounds(
    manifest: Manifest, values: list[np.ndarray], backend: Any, devices: int, rounds: int
) -> dict[str, Any]:
    engine = unbounded_engine(manifest)
    cfg = config_from_dict({"model_dir": "unused"})
    monitor = DriftMonitor(cfg, manifest, Stats())
    ids = [f"d{d}" for d in range(devices)]
    engine_us, drift_us, ratios = [], [], []
    for i in range(rounds):
        batch = []
        for d, device_id in enumerate(ids):
            run = values[d % len(values)]
            batch.append((device_id, run[i % len(run)][None, :]))
        t0 = time.perf_counter()
        for device_id, row in batch:
            engine.add(device_id, Readings(np.array([BASE_TS + i * 0.1]), row), 0.0)
        results, _ = engine.step_round(backend)
        t1 = time.perf_counter()
        monitor.observe(batch)
        monitor.observe_windows(results)
        t2 = time.perf_counter()
        engine_us.append((t1 - t0) / devices * 1e6)
        drift_us.append((t2 - t1) / devices * 1e6)
        ratios.append((t2 - t1) / (t1 - t0))
    evaluate_ms = []
    for k in range(5):
        t0 = time.perf_counter()
        monitor.evaluate(float(k))
        evaluate_ms.append((time.perf_counter() - t0) * 1000)
    return {
        "engine_us_per_reading": summarize(engine_us),
        "drift_us_per_reading": summarize(drift_us),
        "ratio_drift_to_engine": summarize(ratios),
        "evaluate_ms": summarize(evaluate_ms),
        "rounds": rounds,
    }


if __name__ == "__main__":
    from bench.run import main_for

    main_for("drift")
