"""Loading a deployment folder for serving: manifest, verified artifact, warmed-up backend."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.backends.base import StepBackend, open_backend
from runtime.errors import BackendError
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

    def close(self) -> None:
        """Releases the backend (device memory, sessions); the model cannot step afterwards."""
        self.backend.close()


def warmup_batches(max_batch: int | None) -> tuple[int, ...]:
    """WARMUP_BATCHES within the backend's limit, plus the limit itself when it is below the
    largest of them (an engine built with --max-batch 4 warms up at 1 and 4)."""
    if max_batch is None:
        return WARMUP_BATCHES
    within = {b for b in WARMUP_BATCHES if b <= max_batch}
    return tuple(sorted(within | {min(max_batch, WARMUP_BATCHES[-1])}))


def load_model(folder: Path, backend_name: str, artifact: str, threads: int) -> LoadedModel:
    """Verifies the artifact's sha256, opens it, and runs a few batches so the first real
    step does not pay ONNX Runtime's lazy initialisation. A backend that cannot step one
    device's open windows in one call is refused; on any failure the backend is closed."""
    started = time.perf_counter()
    manifest = Manifest.load(folder)
    backend = open_backend(folder, manifest, backend_name, artifact, threads)
    try:
        limit = backend.max_batch
        if limit is not None and limit < manifest.max_open_windows:
            raise BackendError(
                f"{artifact} takes at most {limit} rows per step, but one device keeps up to "
                f"{manifest.max_open_windows} windows open (window {manifest.window}, hop "
                f"{manifest.hop}); rebuild the engine with `edgelstm build-engine {folder} "
                f"--max-batch N`, N >= {manifest.max_open_windows}"
            )
        for batch in warmup_batches(limit):
            x = np.zeros((batch, manifest.n_features), np.float32)
            backend.step(x, manifest.zero_state(batch))
    except BaseException:
        backend.close()
        raise
    model = LoadedModel(Path(folder), manifest, backend, artifact, backend_name)
    log.info("loaded %s from %s in %.2f s", model.label, folder, time.perf_counter() - started)
    return model
