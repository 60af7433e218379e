"""Loading a deployment folder again (SIGHUP) on a side thread, so serving never waits for it.

The processing loop starts a load with `start()` and asks `result()` between two rounds; the
swap itself (runtime/daemon.py) happens on the loop's own thread.
"""

from __future__ import annotations

import logging
import threading

from runtime.config import GatewayConfig
from runtime.errors import BackendError, EdgeRuntimeError
from runtime.model import LoadedModel, load_model

log = logging.getLogger(__name__)


def close_quietly(model: LoadedModel) -> None:
    """Releases a model's backend; a failure is logged, never raised into the loop."""
    try:
        model.close()
    except Exception as exc:
        log.warning("closing %s failed: %s", model.label, exc)


class BackgroundLoader:
    """One load of the deployment folder at a time, on the `edgelstm-reload` thread."""

    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self._thread: threading.Thread | None = None
        self._loaded: LoadedModel | EdgeRuntimeError | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._load, name="edgelstm-reload", daemon=True)
        self._thread.start()

    def result(self) -> LoadedModel | EdgeRuntimeError | None:
        """The finished load (a model, or why it failed); None while none has finished."""
        if self._thread is None or self._thread.is_alive():
            return None
        self._thread = None
        loaded, self._loaded = self._loaded, None
        return loaded

    def close(self) -> None:
        """At shutdown: releases a model that finished loading but was never swapped in (a load
        still running ends with the process)."""
        loaded = self.result()
        if isinstance(loaded, LoadedModel):
            close_quietly(loaded)

    def _load(self) -> None:
        cfg = self.cfg
        try:
            self._loaded = load_model(cfg.model_dir, cfg.backend, cfg.artifact, cfg.threads)
        except EdgeRuntimeError as exc:
            self._loaded = exc
        except Exception as exc:  # a driver or TensorRT error must not pass unseen
            self._loaded = BackendError(f"{type(exc).__name__}: {exc}")
