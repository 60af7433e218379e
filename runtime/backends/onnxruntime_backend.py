"""ONNX Runtime step backend (CPU by default; CUDA or TensorRT execution providers on request)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from runtime.errors import BackendError
from runtime.manifest import LOGITS, STATE_OUTPUT_SUFFIX, STEP_INPUT, Manifest

log = logging.getLogger(__name__)


class OrtStepBackend:
    """One InferenceSession over the step graph; one intra-op thread by default
    (docs/ARCHITECTURE.md, "Facts measured": more threads are far slower on a busy 2-core box)."""

    def __init__(self, path: Path, manifest: Manifest, providers: list[str], threads: int = 1):
        import onnxruntime as ort

        missing = [p for p in providers[:1] if p not in ort.get_available_providers()]
        if missing:
            raise BackendError(
                f"ONNX Runtime here has no {missing[0]} (available: "
                f"{ort.get_available_providers()}); install onnxruntime-gpu or use "
                "backend: onnxruntime"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # ORT raises its own untyped errors for bad graphs
            raise BackendError(f"{path}: ONNX Runtime cannot load it ({exc})") from None
        self.state_names = manifest.state_names
        self.outputs = [LOGITS, *(n + STATE_OUTPUT_SUFFIX for n in self.state_names)]
        have_in = {i.name for i in self.session.get_inputs()}
        have_out = {o.name for o in self.session.get_outputs()}
        need_in = {STEP_INPUT, *self.state_names}
        if not need_in <= have_in or not set(self.outputs) <= have_out:
            raise BackendError(
                f"{path}: not a step graph of a {manifest.cell} (inputs {sorted(have_in)}, "
                f"outputs {sorted(have_out)}; expected {sorted(need_in)} -> {self.outputs})"
            )
        self.providers = self.session.get_providers()
        log.debug("loaded %s on %s", path, self.providers)

    @property
    def max_batch(self) -> None:
        """ONNX Runtime takes any batch (the graph's batch axis is dynamic)."""
        return None

    def step(
        self, x: np.ndarray, state: tuple[np.ndarray, ...]
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        if self.session is None:
            raise BackendError("the ONNX Runtime backend was closed")
        feeds = {STEP_INPUT: x, **dict(zip(self.state_names, state, strict=True))}
        logits, *new_state = self.session.run(self.outputs, feeds)
        return logits, tuple(new_state)

    def close(self) -> None:
        """Drops the session (with a CUDA or TensorRT provider, its device memory). Idempotent."""
        self.session = None
