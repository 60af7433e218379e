"""The one interface every inference backend implements, and the factory that picks one.

A backend advances B rows (device windows) by one reading: `step(x[B, F], state) -> (logits[B,
C], new_state)`, each state tensor [L, B, H] in the manifest's order (h for GRU, h and c for
LSTM). `max_batch` is the most rows one call takes (a TensorRT engine's optimization profile;
None where there is no limit, as with ONNX Runtime): the gateway clamps its rounds to it.
`close()` releases what the backend holds (device memory, sessions); the gateway calls it when
a reload replaces the backend and at shutdown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from runtime.errors import BackendError
from runtime.manifest import Manifest

ORT_PROVIDERS = {
    "onnxruntime": ["CPUExecutionProvider"],
    "onnxruntime-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "onnxruntime-tensorrt": [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ],
}


class StepBackend(Protocol):
    @property
    def max_batch(self) -> int | None: ...

    def step(
        self, x: np.ndarray, state: tuple[np.ndarray, ...]
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]: ...

    def close(self) -> None: ...


def open_backend(
    model_dir: Path,
    manifest: Manifest,
    name: str = "onnxruntime",
    artifact: str = "step",
    threads: int = 1,
) -> StepBackend:
    """Loads `artifact` of the deployment folder (sha256 verified) into the named backend."""
    if manifest.model_kind != "student" or manifest.cell is None:
        raise BackendError(
            f"{model_dir}: the model is a {manifest.model_kind}, which cannot stream; "
            "serve a distilled student's deployment folder"
        )
    if name not in ORT_PROVIDERS and name != "tensorrt":
        raise BackendError(
            f"unknown backend {name!r}; choose one of {[*ORT_PROVIDERS, 'tensorrt']}"
        )
    path = manifest.verified_path(model_dir, artifact)
    art = manifest.artifacts[artifact]
    wanted = "tensorrt" if name == "tensorrt" else "onnx"
    if art.kind != "step" or art.format != wanted:
        raise BackendError(
            f"artifact {artifact!r} is a {art.kind} graph in {art.format} format; backend {name!r} "
            f"needs a step graph in {wanted} format (this folder has {sorted(manifest.artifacts)})"
        )
    if name == "tensorrt":
        from runtime.backends.tensorrt_backend import TensorRTStepBackend

        return TensorRTStepBackend(path, manifest)
    from runtime.backends.onnxruntime_backend import OrtStepBackend

    return OrtStepBackend(path, manifest, ORT_PROVIDERS[name], threads)
