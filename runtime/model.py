"""Loading a deployment folder for serving: manifest, verified artifact, warmed-up backend."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.backends.base import StepBackend, open_backend
from runtime.manifest import Manifest

log = logging.getLogger(__name__)

WARMUP_BATCHES = (1, 8, 64)


@dataclass
class LoadedModel:
    """A manifest with its step backend, ready for the first real batch."""

    folder: Path
    manifest: Manifest
    backend: StepBackend
    artifact: str
    backend_name: str

    @property
    def label(self) -> str:
        m = self.manifest
        return f"{m.model_name} {m.model_version} ({self.artifact} on {self.backend_name})"


def load_model(folder: Path, backend_name: str, artifact: str, threads: int) -> LoadedModel:
    """Verifies the artifact's sha256, opens it, and runs a few batches so the first real
    step does not pay ONNX Runtime's lazy initialisation."""
    started = time.perf_counter()
    manifest = Manifest.load(folder)
    backend = open_backend(folder, manifest, backend_name, artifact, threads)
    for batch in WARMUP_BATCHES:
        x = np.zeros((batch, manifest.n_features), np.float32)
        backend.step(x, manifest.zero_state(batch))
    model = LoadedModel(Path(folder), manifest, backend, artifact, backend_name)
    log.info("loaded %s from %s in %.2f s", model.label, folder, time.perf_counter() - started)
    return model
