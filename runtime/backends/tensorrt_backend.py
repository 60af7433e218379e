"""TensorRT step backend: runs a step engine with pycuda buffers, all of it on one CUDA thread.

The engine's I/O goes through the named-tensor API that TensorRT 8.5 introduced and 10.x kept
alone (`set_input_shape`, `set_tensor_address`, `execute_async_v3`); edgelstm supports
TensorRT 8.6 (JetPack 6.0), 10.x (JetPack 6.1/6.2 ship 10.3) and 11.x, all of which have it.

Buffers are allocated once per tensor for the largest shapes of the engine's optimization
profile (page-locked on the host, so copies are truly asynchronous) and their addresses are
set once; each call sets the input shapes of its batch. `max_batch` is the profile's largest
batch: the gateway never sends more rows than that.

Thread ownership (docs/ARCHITECTURE.md, "Threads of serve"): a backend owns a `CudaThread`
that makes the device's primary context current on itself and does every CUDA and TensorRT
call of the backend: deserializing and allocating (on `__init__`, from whichever thread loads
it, e.g. the reload thread), every `step` (from the processing loop) and `close` (freeing in
reverse order, then popping the context). Nothing CUDA is ever created on one thread and freed
on another.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends.cuda_helpers import (
    CudaThread,
    device_facts,
    import_cuda_driver,
    import_tensorrt,
    mismatch,
    version_tuple,
)
from runtime.errors import BackendError
from runtime.manifest import LOGITS, STATE_OUTPUT_SUFFIX, STEP_INPUT, Artifact, Manifest

log = logging.getLogger(__name__)

OLDEST_TENSORRT = (8, 6)


def _artifact_for(manifest: Manifest, engine_path: Path) -> Artifact:
    for art in manifest.artifacts.values():
        if art.file == engine_path.name and art.format == "tensorrt":
            return art
    raise BackendError(
        f"{engine_path.name} is not a TensorRT engine listed in the manifest; build it with "
        "`edgelstm build-engine` so its TensorRT version and GPU are recorded"
    )


class TensorRTStepBackend:
    """StepBackend over a TensorRT step engine; refuses engines built for another device."""

    def __init__(self, engine_path: Path, manifest: Manifest, device: int = 0) -> None:
        engine_path = Path(engine_path)
        trt = import_tensorrt()
        if version_tuple(trt.__version__) < OLDEST_TENSORRT:
            raise BackendError(
                f"TensorRT {trt.__version__} is older than 8.6, the oldest edgelstm runs "
                "(JetPack 6.0); upgrade JetPack or use backend: onnxruntime"
            )
        cuda = import_cuda_driver()
        facts = device_facts(device)
        reason = mismatch(_artifact_for(manifest, engine_path).info, facts)
        if reason:
            raise BackendError(
                f"{engine_path.name} cannot run here: {reason} ({facts.gpu_name}); engines are "
                f"not portable, rebuild it on this device with `edgelstm build-engine "
                f"{engine_path.parent}`"
            )
        self.state_names = manifest.state_names
        self._inputs = [STEP_INPUT, *self.state_names]
        self._outputs = [LOGITS, *(n + STATE_OUTPUT_SUFFIX for n in self.state_names)]
        self._cuda = cuda
        self._host: dict[str, np.ndarray] = {}
        self._device: dict[str, Any] = {}
        self._closed = False
        self._max_batch = 0
        self._thread = CudaThread(cuda, device, name=f"edgelstm-cuda-{engine_path.stem}")
        try:
            self._thread.call(self._load, trt, engine_path)
        except BaseException:
            try:
                self._thread.stop(self._release)
            except Exception as exc:  # the load's error is the one to report
                log.warning("freeing a half-loaded %s failed: %s", engine_path.name, exc)
            raise
        log.info(
            "loaded %s on %s (TensorRT %s, batch <= %d, CUDA thread %s)",
            engine_path.name,
            facts.gpu_name,
            facts.tensorrt_version,
            self._max_batch,
            self._thread.name,
        )

    @property
    def max_batch(self) -> int:
        """The largest batch of the engine's optimization profile."""
        return self._max_batch

    # ---- on the CUDA thread -----------------------------------------------------------

    def _load(self, trt: Any, engine_path: Path) -> None:
        self._trt_logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._trt_logger)
        self._engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self._engine is None:
            raise BackendError(
                f"{engine_path}: TensorRT cannot deserialize it (corrupt, or built by another "
                "TensorRT version); rebuild it with `edgelstm build-engine`"
            )
        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        expected = sorted(self._inputs + self._outputs)
        if sorted(names) != expected:
            raise BackendError(
                f"{engine_path.name}: engine tensors {sorted(names)} are not the step graph's "
                f"{expected}"
            )
        self._context = engine.create_execution_context()
        if self._context is None:
            raise BackendError(
                f"{engine_path.name}: TensorRT could not create an execution context"
            )
        # [min, opt, max] of profile 0; the batch is axis 0 of x and axis 1 of each state
        profile = {n: [tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(n, 0)]
                   for n in self._inputs}  # fmt: skip
        batch_axis = {n: 0 if n == STEP_INPUT else 1 for n in self._inputs}
        self._max_batch = min(profile[n][2][batch_axis[n]] for n in self._inputs)
        if min(profile[n][0][batch_axis[n]] for n in self._inputs) > 1:
            raise BackendError(
                f"{engine_path.name}: its optimization profile does not start at batch 1"
            )
        for name in self._inputs:
            self._set_shape(name, profile[name][2])
        cuda = self._cuda
        for name in names:
            shape = (
                profile[name][2] if name in profile else tuple(self._context.get_tensor_shape(name))
            )
            if any(d < 0 for d in shape):
                raise BackendError(f"{engine_path.name}: no static size for {name!r} {shape}")
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            self._host[name] = cuda.pagelocked_empty(int(np.prod(shape)), dtype)
            self._device[name] = cuda.mem_alloc(self._host[name].nbytes)
            if self._context.set_tensor_address(name, int(self._device[name])) is False:
                raise BackendError(f"{engine_path.name}: TensorRT refused the address of {name!r}")
        self._stream = cuda.Stream()

    def _set_shape(self, name: str, shape: tuple[int, ...]) -> None:
        if self._context.set_input_shape(name, shape) is False:
            raise BackendError(f"the engine refuses shape {shape} for {name!r}")

    def _step(
        self, x: np.ndarray, state: tuple[np.ndarray, ...]
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        cuda, context, stream = self._cuda, self._context, self._stream
        for name, array in zip(self._inputs, (x, *state), strict=True):
            self._set_shape(name, array.shape)
            host = self._host[name][: array.size]
            host[:] = array.ravel()
            cuda.memcpy_htod_async(self._device[name], host, stream)
        if not context.execute_async_v3(stream_handle=stream.handle):
            raise BackendError("TensorRT failed to run the step engine (see its log above)")
        results = []
        for name in self._outputs:
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            host = self._host[name][: int(np.prod(shape))]
            cuda.memcpy_dtoh_async(host, self._device[name], stream)
            results.append((host, shape))
        stream.synchronize()
        # copies: the page-locked buffers are reused by the next call
        logits, *new_state = (h.astype(np.float32).reshape(s) for h, s in results)
        return logits, tuple(new_state)

    def _release(self) -> None:
        """Frees buffers, stream, execution context, engine and runtime, in that order, while
        the context is current (the CUDA thread pops it afterwards)."""
        for buffer in self._device.values():
            buffer.free()
        for host in self._host.values():
            allocation = host.base
            while isinstance(allocation, np.ndarray):
                allocation = allocation.base
            if hasattr(allocation, "free"):
                allocation.free()
        self._device.clear()
        self._host.clear()
        for attr in ("_stream", "_context", "_engine", "_runtime"):
            if hasattr(self, attr):
                setattr(self, attr, None)

    # ---- from any thread --------------------------------------------------------------

    def step(
        self, x: np.ndarray, state: tuple[np.ndarray, ...]
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        if self._closed:
            raise BackendError("the TensorRT backend was closed")
        batch = x.shape[0]
        if not 1 <= batch <= self._max_batch:
            raise BackendError(
                f"batch {batch} exceeds the engine's profile (max {self._max_batch}); rebuild "
                "with a larger --max-batch or lower the gateway's batch limit"
            )
        return self._thread.call(self._step, x, state)

    def close(self) -> None:
        """Frees everything on the CUDA thread and ends it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._thread.stop(self._release)
