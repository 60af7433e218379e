"""Running exported graphs with ONNX Runtime and checking them against PyTorch.

The same runners serve the parity check of every export, the evaluation of quantized graphs,
engine parity and the latency figures: `step_graph_logits` is the one loop that drives a step
graph (`StepGraph`) or a runtime step backend (`BackendSteps`) W times over each window, so "the
step graph driven W times" means one thing everywhere.

The parity sample (`sample_windows`, `save_parity_sample`, `load_parity_sample`) is the set of
real held-out windows (test and validation splits) an engine is checked on: every class, from
several runs each, stored in the
deployment folder by `edgelstm quantize --for tensorrt` so a gateway without the training data
can check the engine it builds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from converters.errors import ConverterError
from runtime.manifest import (
    LOGITS,
    STATE_OUTPUT_SUFFIX,
    STEP_INPUT,
    WINDOW_INPUT,
    Manifest,
    sha256_file,
)

EVAL_BATCH = 512
LATENCY_BATCHES = (1, 256)


def ort_session(path: Path, threads: int = 1) -> Any:
    """A CPU ONNX Runtime session on `threads` intra-op threads (1 keeps latency steady)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class Steps(Protocol):
    """Anything driven one reading at a time: a step graph session or a runtime step backend."""

    def zero_state(self, batch: int) -> Any: ...

    def step(self, x_t: np.ndarray, state: Any) -> tuple[np.ndarray, Any]: ...


@dataclass
class StepGraph:
    """A step graph session with the state layout of its manifest (state by input name)."""

    session: Any
    manifest: Manifest

    @property
    def state_names(self) -> tuple[str, ...]:
        return self.manifest.state_names

    def zero_state(self, batch: int) -> dict[str, np.ndarray]:
        return dict(zip(self.state_names, self.manifest.zero_state(batch), strict=True))

    def step(
        self, x_t: np.ndarray, state: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One reading per row: x_t[B, F] -> (logits[B, C], next state by input name)."""
        outputs = [LOGITS, *(n + STATE_OUTPUT_SUFFIX for n in self.state_names)]
        logits, *new = self.session.run(outputs, {STEP_INPUT: x_t, **state})
        return logits, dict(zip(self.state_names, new, strict=True))


@dataclass
class BackendSteps:
    """A runtime step backend (tuple state, e.g. a TensorRT engine) as `Steps`, starting from
    the manifest's zero state."""

    backend: Any
    manifest: Manifest

    def zero_state(self, batch: int) -> tuple[np.ndarray, ...]:
        return self.manifest.zero_state(batch)

    def step(self, x_t: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        logits, new = self.backend.step(x_t, state)
        return np.asarray(logits, np.float32), new


def window_logits(session: Any, x: np.ndarray, batch: int = EVAL_BATCH) -> np.ndarray:
    """Logits of a window graph for x[N, W, F], run in chunks of `batch` windows."""
    parts = [
        session.run([LOGITS], {WINDOW_INPUT: x[i : i + batch]})[0] for i in range(0, len(x), batch)
    ]
    return np.concatenate(parts)


def step_graph_logits(
    graph: Steps,
    x: np.ndarray,
    batch: int = EVAL_BATCH,
    on_step: Callable[[np.ndarray, Any], None] | None = None,
) -> np.ndarray:
    """Logits of `graph` driven W times from its zero state for every window of x[N, W, F],
    `batch` windows at a time: the one W-step loop (parity, int8 scores, engines, evaluation).

    `on_step(x_t, state)` sees each step's input before it runs (calibration collects them).
    """
    parts = []
    for i in range(0, len(x), batch):
        chunk = np.ascontiguousarray(x[i : i + batch], np.float32)
        state = graph.zero_state(len(chunk))
        logits = np.empty(0, np.float32)
        for t in range(chunk.shape[1]):
            x_t = np.ascontiguousarray(chunk[:, t, :])
            if on_step is not None:
                on_step(x_t, state)
            logits, state = graph.step(x_t, state)
        parts.append(logits)
    return np.concatenate(parts)


def window_call(session: Any) -> Callable[[np.ndarray], Any]:
    """f(x[B, W, F]) running a window graph session, for latency measurements."""
    return lambda x: session.run([LOGITS], {WINDOW_INPUT: x})


def step_call(graph: Steps, state: Any) -> Callable[[np.ndarray], Any]:
    """f(x_t[B, F]) advancing a step graph by one reading from a fixed state."""
    return lambda x_t: graph.step(x_t, state)


def graph_latency(path: Path, manifest: Manifest, kind: str, x: np.ndarray) -> dict[str, Any]:
    """ONNX Runtime latency (1 thread) of a window or step graph at batch 1 and 256, on real
    windows x[N, W, F] (tiled when fewer than 256); a step call is one reading per row."""
    from edge_lstm.latency import measure_latency

    session = ort_session(path, threads=1)
    graph = StepGraph(session, manifest)
    result: dict[str, Any] = {}
    for batch in LATENCY_BATCHES:
        xb = np.ascontiguousarray(np.resize(x, (batch, *x.shape[1:])), dtype=np.float32)
        repeats = 200 if batch == 1 else 20
        if kind == "window":
            stats = measure_latency(window_call(session), xb, repeats=repeats)
        else:
            call = step_call(graph, graph.zero_state(batch))
            stats = measure_latency(call, np.ascontiguousarray(xb[:, -1]), repeats=repeats * 5)
        result[f"b{batch}"] = {k: stats[k] for k in ("median_ms", "min_ms", "max_ms")}
    return result


def torch_logits(model: Any, x: np.ndarray) -> np.ndarray:
    """Reference logits of the PyTorch model (eval mode, no grad) for x[N, W, F]."""
    import torch

    with torch.inference_mode():
        return model(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def compare_logits(graph: str, reference: np.ndarray, actual: np.ndarray, tolerance: float) -> dict:
    """Max abs difference and argmax agreement; raises ConverterError when either fails."""
    diff = float(np.abs(reference - actual).max())
    mismatched = int((reference.argmax(axis=1) != actual.argmax(axis=1)).sum())
    result = {"max_abs_diff": diff, "argmax_mismatches": mismatched, "windows": len(reference)}
    if not diff <= tolerance or mismatched:
        raise ConverterError(
            f"parity failed for the {graph} graph: max |logits diff| vs PyTorch = {diff:.3g} "
            f"(tolerance {tolerance:g}), argmax differs on {mismatched} of {len(reference)} "
            "windows; the exported graph does not compute what the checkpoint computes "
            "(try another --opset or report the torch/onnx versions)"
        )
    return result


# ---- the parity sample: real test windows of every class, from several runs ---------------

PARITY_SAMPLE_FILE = "parity-windows.npz"
PARITY_SAMPLE_KEY = "parity_sample"  # its entry in manifest.metrics (file, sha256, figures)
PER_CLASS = 16
RUNS_PER_CLASS = 4


@dataclass
class ParitySample:
    """Windows x[N, W, F] (normalized) with their labels and runs, and where they came from."""

    x: np.ndarray
    y: np.ndarray
    run_ids: np.ndarray
    source: str

    def describe(self, classes: list[str]) -> dict[str, Any]:
        """What the sample covers: windows, classes (and those missing), runs per class."""
        present = sorted({int(c) for c in self.y})
        return {
            "windows": len(self.y),
            "classes": len(present),
            "missing_classes": [c for i, c in enumerate(classes) if i not in present],
            "runs": len(set(self.run_ids.tolist())),
            "runs_per_class": {
                classes[c]: len(set(self.run_ids[self.y == c].tolist())) for c in present
            },
            "source": self.source,
        }


def stratified_indices(
    y: np.ndarray,
    run_ids: np.ndarray,
    per_class: int = PER_CLASS,
    runs_per_class: int = RUNS_PER_CLASS,
    seed: int = 0,
) -> np.ndarray:
    """Indices of up to `per_class` windows of every class present in `y`, spread evenly over
    up to `runs_per_class` runs of that class (seeded choice of runs, evenly spaced windows
    within each run), so every class and several runs of it are checked, not one long run."""
    rng = np.random.default_rng(seed)
    picked: list[np.ndarray] = []
    for c in np.unique(y):
        of_class = np.flatnonzero(y == c)
        runs = np.unique(run_ids[of_class])
        if len(runs) > runs_per_class:
            runs = np.sort(rng.choice(runs, size=runs_per_class, replace=False))
        share = -(-per_class // len(runs))  # ceil
        chosen: list[np.ndarray] = []
        for run in runs:
            in_run = of_class[run_ids[of_class] == run]
            take = min(share, len(in_run))
            chosen.append(in_run[np.linspace(0, len(in_run) - 1, take).round().astype(int)])
        # round-robin over runs, so truncating to per_class keeps every run
        merged = [i for group in _zip_longest(chosen) for i in group]
        picked.append(np.asarray(merged[:per_class], dtype=np.intp))
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, np.intp)


def _zip_longest(arrays: list[np.ndarray]) -> list[list[int]]:
    """[[a0, b0, ...], [a1, b1, ...], ...] over arrays of unequal length."""
    longest = max((len(a) for a in arrays), default=0)
    return [[int(a[i]) for a in arrays if i < len(a)] for i in range(longest)]


def sample_windows(splits: list[Any], source: str, **options: Any) -> ParitySample:
    """The stratified sample of held-out splits (each with x, y, run_ids: a WindowSet), pooled
    so that a class with one test run still gets several."""
    x = np.concatenate([np.asarray(s.x, np.float32) for s in splits])
    y = np.concatenate([np.asarray(s.y) for s in splits])
    run_ids = np.concatenate([np.asarray(s.run_ids).astype(str) for s in splits])
    idx = stratified_indices(y, run_ids, **options)
    return ParitySample(np.ascontiguousarray(x[idx]), y[idx], run_ids[idx], source)


def save_parity_sample(folder: Path, sample: ParitySample, manifest: Manifest) -> dict[str, Any]:
    """Writes the sample into `folder` and returns its manifest.metrics entry (with sha256),
    so that `build-engine` on a gateway, which has no training data, checks on real windows."""
    path = Path(folder) / PARITY_SAMPLE_FILE
    with open(path, "wb") as fh:
        np.savez_compressed(fh, x=sample.x, y=sample.y, run_ids=sample.run_ids)
    return {
        "file": PARITY_SAMPLE_FILE,
        "sha256": sha256_file(path),
        **sample.describe(manifest.classes),
    }


def load_parity_sample(folder: Path, manifest: Manifest) -> ParitySample | None:
    """The folder's parity sample (None when the manifest lists none); ConverterError when the
    file is missing, altered or does not fit the model."""
    entry = manifest.metrics.get(PARITY_SAMPLE_KEY)
    if not entry:
        return None
    path = Path(folder) / str(entry.get("file", PARITY_SAMPLE_FILE))
    if not path.is_file() or sha256_file(path) != entry.get("sha256"):
        raise ConverterError(
            f"{path} is missing or does not match its manifest sha256; copy the deployment "
            "folder again or re-run `edgelstm quantize --for tensorrt` on the training machine"
        )
    with np.load(path, allow_pickle=False) as data:
        x, y, run_ids = data["x"], data["y"], data["run_ids"]
    if x.ndim != 3 or x.shape[1:] != (manifest.window, manifest.n_features) or len(y) != len(x):
        raise ConverterError(
            f"{path} holds windows of shape {x.shape[1:]}, the model takes "
            f"{(manifest.window, manifest.n_features)}; re-run `edgelstm quantize --for tensorrt`"
        )
    return ParitySample(x.astype(np.float32), y, run_ids, f"{path.name} ({entry.get('source')})")
