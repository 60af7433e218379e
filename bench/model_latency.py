"""Benchmark: streaming step vs recomputing the window, fp32 vs int8, under ONNX Runtime.

On the demo deployment folder, each round times (one intra-op thread) the window graph and the
step graph at batch 1 and 256 for every precision present, back to back, so each ratio compares
figures from the same round; the report gives median/min/max over rounds.

    python -m bench.model_latency [--runs runs/demo] [--quick]  # -> bench/model_latency.json
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench import summarize
from converters.parity import StepGraph, ort_session, step_call, window_call
from edge_lstm.errors import EdgeLstmError
from edge_lstm.latency import measure_latency
from runtime.manifest import Manifest

BATCHES = (1, 256)
PRECISIONS = ("fp32", "int8-dynamic", "int8-static")


def _artifact(graph: str, precision: str) -> str:
    return graph if precision == "fp32" else f"{graph}.{precision}"


def _callables(
    deploy: Path, manifest: Manifest, precision: str
) -> dict[tuple[str, int], Callable[[np.ndarray], Any]] | None:
    """{(graph, batch): f(input)} for one precision: the window graph takes x[B, W, F], the
    step graph x_t[B, F] with a zero state of batch B."""
    names = {g: _artifact(g, precision) for g in ("window", "step")}
    if not all(n in manifest.artifacts for n in names.values()):
        return None
    window = ort_session(manifest.verified_path(deploy, names["window"]))
    step = StepGraph(ort_session(manifest.verified_path(deploy, names["step"])), manifest)
    calls: dict[tuple[str, int], Callable[[np.ndarray], Any]] = {}
    for batch in BATCHES:
        calls[("window", batch)] = window_call(window)
        calls[("step", batch)] = step_call(step, step.zero_state(batch))
    return calls


Samples = dict[tuple[str, str, int], list[float]]  # (precision, graph, batch) -> ms per round


def run(runs_dir: Path, quick: bool = False) -> dict[str, Any]:
    """Times every precision's window and step graph; returns the figures and ratios."""
    deploy = Path(runs_dir) / "deploy"
    manifest = Manifest.load(deploy)
    if manifest.model_kind != "student":
        raise EdgeLstmError(
            f"{deploy} holds a {manifest.model_kind}; the benchmark needs a student"
        )
    variants = {p: c for p in PRECISIONS if (c := _callables(deploy, manifest, p)) is not None}
    rounds = 2 if quick else 5
    samples = _measure(manifest, variants, rounds, quick)
    step_vs_window, int8_vs_fp32 = _comparisons(samples, list(variants))
    sizes = {
        name: art.size_bytes for name, art in manifest.artifacts.items() if art.format == "onnx"
    }
    return {
        "benchmark": "model_latency",
        "what": (
            "ONNX Runtime, 1 intra-op thread, ms per call: the window graph recomputes W readings, "
            "the step graph advances one reading; ratios are within one round"
        ),
        "model": manifest.model_name,
        "cell": manifest.cell,
        "layers": manifest.layers,
        "hidden_size": manifest.hidden_size,
        "window": manifest.window,
        "rounds": rounds,
        "quick": quick,
        "sizes_bytes": sizes,
        "step_vs_window": step_vs_window,
        "int8_vs_fp32": int8_vs_fp32,
    }


def _measure(
    manifest: Manifest,
    variants: dict[str, dict[tuple[str, int], Callable[[np.ndarray], Any]]],
    rounds: int,
    quick: bool,
) -> Samples:
    """Every (precision, graph, batch) once per round, back to back, on fixed random input."""
    rng = np.random.default_rng(0)
    inputs = {
        b: np.ascontiguousarray(
            rng.standard_normal((b, manifest.window, manifest.n_features), np.float32)
        )
        for b in BATCHES
    }
    step_inputs = {b: np.ascontiguousarray(x[:, -1]) for b, x in inputs.items()}
    samples: Samples = {}
    for _ in range(rounds):
        for precision, calls in variants.items():
            for (graph, batch), call in calls.items():
                repeats = (100 if graph == "step" else 30) if batch == 1 else 10
                if quick:
                    repeats = max(5, repeats // 5)
                arg = inputs[batch] if graph == "window" else step_inputs[batch]
                ms = measure_latency(call, arg, repeats=repeats, warmup=3)["median_ms"]
                samples.setdefault((precision, graph, batch), []).append(ms)
    return samples


def _comparisons(samples: Samples, precisions: list[str]) -> tuple[dict, dict]:
    """(step vs window per precision, int8 vs fp32 per int8 precision), ratios within rounds."""

    def ratio(a: tuple[str, str, int], b: tuple[str, str, int]) -> dict[str, float]:
        return summarize([x / y for x, y in zip(samples[a], samples[b], strict=True)])

    step_vs_window = {
        p: {
            f"b{b}": {
                "window_ms": summarize(samples[(p, "window", b)]),
                "step_ms": summarize(samples[(p, "step", b)]),
                "window_over_step": ratio((p, "window", b), (p, "step", b)),
            }
            for b in BATCHES
        }
        for p in precisions
    }
    int8_vs_fp32 = {
        p: {
            g: {
                f"b{b}": {
                    "fp32_ms": summarize(samples[("fp32", g, b)]),
                    "int8_ms": summarize(samples[(p, g, b)]),
                    "int8_over_fp32": ratio((p, g, b), ("fp32", g, b)),
                }
                for b in BATCHES
            }
            for g in ("window", "step")
        }
        for p in precisions
        if p != "fp32"
    }
    return step_vs_window, int8_vs_fp32


if __name__ == "__main__":
    from bench.run import main_for

    main_for("model_latency")
