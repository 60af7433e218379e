"""One prediction interface for a torch checkpoint, an ONNX graph and a TensorRT engine.

Every predictor takes normalized windows `x[N, W, F]` and returns logits or class
probabilities `[N, C]`, and says which features, classes and normalization it expects, so
`evaluate` and the comparison table score every artifact with the same code. Step artifacts
(step.onnx, engines) are driven W times from the zero state, exactly as the streaming runtime
runs them, and their probabilities are the manifest's (`Manifest.probabilities`: softmax of
logits / the folder's temperature), so evaluation scores what the gateway serves. A torch
checkpoint stores no temperature: its probabilities are the plain softmax (T = 1).

The deployment-folder schema and the step backends live in `runtime/`, the ONNX Runtime
runners in `converters.parity`; TensorRT itself is imported only when an engine is opened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from converters.parity import BackendSteps, StepGraph, ort_session, step_graph_logits
from edge_lstm.data.normalization import Normalization
from edge_lstm.errors import EdgeLstmError
from edge_lstm.metrics import softmax
from runtime.errors import EdgeRuntimeError, ManifestError
from runtime.manifest import LOGITS, MANIFEST_FILE, WINDOW_INPUT, Manifest

log = logging.getLogger(__name__)

BATCH = 256
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


class Predictor(Protocol):
    """Anything that turns normalized windows into class probabilities."""

    name: str
    kind: str  # "torch" | "onnx-window" | "onnx-step" | "tensorrt"
    size_bytes: int
    features: list[str]
    classes: list[str]
    window: int
    normalization: Normalization
    config: dict[str, Any] | None  # the training Config dump, to rebuild the data splits
    path: Path
    temperature: float  # probabilities = softmax(logits / temperature)
    temperature_source: str  # where the temperature comes from, for the report

    def predict_logits(self, x: np.ndarray) -> np.ndarray: ...

    def probabilities(self, logits: np.ndarray) -> np.ndarray: ...

    def predict_proba(self, x: np.ndarray) -> np.ndarray: ...


@dataclass
class TorchPredictor:
    """A checkpoint directory (model.pt + model.json)."""

    name: str
    size_bytes: int
    features: list[str]
    classes: list[str]
    window: int
    normalization: Normalization
    config: dict[str, Any] | None
    path: Path
    model: Any
    kind: str = "torch"
    temperature: float = 1.0
    temperature_source: str = "none stored in a checkpoint"

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        from edge_lstm.training.predict import predict_logits

        return predict_logits(self.model, np.ascontiguousarray(x, np.float32), BATCH)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return softmax(logits, self.temperature)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.probabilities(self.predict_logits(x))


@dataclass
class ManifestPredictor:
    """An artifact of a deployment folder: ONNX window/step graph or TensorRT step engine."""

    name: str
    kind: str
    size_bytes: int
    features: list[str]
    classes: list[str]
    window: int
    normalization: Normalization
    config: dict[str, Any] | None
    path: Path
    manifest: Manifest
    run: Callable[[np.ndarray], np.ndarray]
    temperature_source: str = MANIFEST_FILE

    @property
    def temperature(self) -> float:
        return self.manifest.temperature

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        return self.run(np.asarray(x, np.float32))

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return self.manifest.probabilities(logits)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.probabilities(self.predict_logits(x))


def open_torch(path: Path) -> TorchPredictor:
    from edge_lstm.checkpoint import WEIGHTS_FILE, load_checkpoint

    ckpt = load_checkpoint(path)
    meta = ckpt.meta
    return TorchPredictor(
        name=meta.name,
        size_bytes=(ckpt.path / WEIGHTS_FILE).stat().st_size,
        features=list(meta.features),
        classes=list(meta.classes),
        window=meta.window,
        normalization=Normalization.from_dict(meta.normalization),
        config=meta.config,
        path=ckpt.path,
        model=ckpt.model,
    )


def _load_manifest(path: Path) -> Manifest:
    try:
        return Manifest.load(path.parent)
    except ManifestError as exc:
        raise EdgeLstmError(
            f"{path}: needs the {MANIFEST_FILE} of its deployment folder for features, classes "
            f"and normalization ({exc})"
        ) from None


def _artifact_name(manifest: Manifest, path: Path) -> str | None:
    """The manifest's name for this file, after checking its sha256 (None if not listed)."""
    for name, art in manifest.artifacts.items():
        if art.file == path.name:
            try:
                manifest.verified_path(path.parent, name)
            except ManifestError as exc:
                raise EdgeLstmError(str(exc)) from None
            return name
    return None


def _manifest_fields(manifest: Manifest, path: Path) -> dict[str, Any]:
    return {
        "features": list(manifest.features),
        "classes": list(manifest.classes),
        "window": manifest.window,
        "normalization": Normalization(mean=manifest.norm_mean, std=manifest.norm_std),
        "config": manifest.provenance.get("config"),
        "path": path,
        "size_bytes": path.stat().st_size,
        "manifest": manifest,
    }


def open_onnx(path: Path, threads: int = 1) -> ManifestPredictor:
    """A window graph (x[B, W, F]) or a step graph (x[B, F] + state), told apart by x's rank."""
    manifest = _load_manifest(path)
    listed = _artifact_name(manifest, path)
    try:
        session = ort_session(path, threads)
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise EdgeLstmError(f"{path}: ONNX Runtime cannot load it ({exc})") from None
    inputs = {i.name: i for i in session.get_inputs()}
    if WINDOW_INPUT not in inputs:
        raise EdgeLstmError(f"{path}: graph has no input {WINDOW_INPUT!r} (has {sorted(inputs)})")
    name = f"{manifest.model_name}:{listed or path.stem}"
    fields = _manifest_fields(manifest, path)
    if len(inputs[WINDOW_INPUT].shape) == 3:
        return ManifestPredictor(
            name=name,
            kind="onnx-window",
            run=lambda x: session.run([LOGITS], {WINDOW_INPUT: x})[0],
            **fields,
        )
    missing = [s for s in manifest.state_names if s not in inputs]
    if missing:
        raise EdgeLstmError(f"{path}: step graph lacks the state inputs {missing}")
    graph = StepGraph(session, manifest)
    return ManifestPredictor(
        name=name,
        kind="onnx-step",
        run=lambda x: step_graph_logits(graph, x, batch=BATCH),
        **fields,
    )


def open_engine(path: Path) -> ManifestPredictor:
    """A TensorRT step engine, run through the runtime's TensorRT backend."""
    manifest = _load_manifest(path)
    listed = _artifact_name(manifest, path)
    if listed is None:
        raise EdgeLstmError(
            f"{path}: not listed in {path.parent}/manifest.json; build it with "
            "`edgelstm build-engine` so its build facts are recorded"
        )
    from runtime.backends.base import open_backend

    try:
        backend = open_backend(path.parent, manifest, name="tensorrt", artifact=listed)
    except (EdgeRuntimeError, ImportError) as exc:
        raise EdgeLstmError(
            f"{path}: cannot run a TensorRT engine here ({exc}); evaluate engines on the device "
            "they were built for (TensorRT and a CUDA GPU are required)"
        ) from None
    graph = BackendSteps(backend, manifest)
    batch = min(BATCH, backend.max_batch or BATCH)  # an engine takes at most its profile's max
    return ManifestPredictor(
        name=f"{manifest.model_name}:{listed}",
        kind="tensorrt",
        run=lambda x: step_graph_logits(graph, np.ascontiguousarray(x, np.float32), batch=batch),
        **_manifest_fields(manifest, path),
    )


def open_predictor(path: Path) -> Predictor:
    """Picks the implementation: checkpoint dir / model.pt, .onnx file, or engine file."""
    path = Path(path)
    if not path.exists():
        raise EdgeLstmError(f"{path}: no such file or directory")
    if path.is_dir() or path.suffix == ".pt":
        return open_torch(path)
    if path.suffix == ".onnx":
        return open_onnx(path)
    if path.suffix in ENGINE_SUFFIXES:
        return open_engine(path)
    raise EdgeLstmError(
        f"{path}: unknown artifact type {path.suffix!r}; give a checkpoint directory (or its "
        f"model.pt), an .onnx file or a TensorRT engine ({', '.join(ENGINE_SUFFIXES)})"
    )
