"""TensorRT step backend: runs a step engine with pycuda buffers on the CUDA primary context.

Buffers are allocated once per tensor name for the largest batch of the engine's optimization
profile (page-locked on the host, so copies are truly asynchronous); each call sets the input
shapes for its batch. TensorRT 8.5+ has named I/O tensors and execute_async_v3, which 10.x
requires; older 8.x engines go through bindings and execute_async_v2.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends.cuda_helpers import (
    device_facts,
    import_cuda_driver,
    import_tensorrt,
    mismatch,
)
from runtime.errors import BackendError
from runtime.manifest import LOGITS, STATE_OUTPUT_SUFFIX, STEP_INPUT, Artifact, Manifest

log = logging.getLogger(__name__)


def _artifact_for(manifest: Manifest, engine_path: Path) -> Artifact:
    for art in manifest.artifacts.values():
        if art.file == engine_path.name and art.format == "tensorrt":
            return art
    raise BackendError(
        f"{engine_path.name} is not a TensorRT engine listed in the manifest; build it with "
        "`edgelstm build-engine` so its TensorRT version and GPU are recorded"
    )


class _EngineIO:
    """The I/O tensors of an engine through whichever API this TensorRT has."""

    def __init__(self, engine: Any, context: Any, trt: Any) -> None:
        self.engine, self.context, self.trt = engine, context, trt
        self.named = hasattr(context, "execute_async_v3")
        if self.named:
            self.names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        else:
            self.names = [engine.get_binding_name(i) for i in range(engine.num_bindings)]

    def dtype(self, name: str) -> np.dtype:
        if self.named:
            return np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))
        return np.dtype(self.trt.nptype(self.engine.get_binding_dtype(self.names.index(name))))

    def max_shape(self, name: str) -> tuple[int, ...]:
        """Largest shape of an input in optimization profile 0."""
        if self.named:
            shapes = self.engine.get_tensor_profile_shape(name, 0)
        else:
            shapes = self.engine.get_profile_shape(0, self.names.index(name))
        return tuple(int(d) for d in shapes[2])

    def set_shape(self, name: str, shape: tuple[int, ...]) -> None:
        ok = (
            self.context.set_input_shape(name, shape)
            if self.named
            else self.context.set_binding_shape(self.names.index(name), shape)
        )
        if ok is False:
            raise BackendError(f"the engine refuses shape {shape} for {name!r}")

    def shape(self, name: str) -> tuple[int, ...]:
        if self.named:
            return tuple(self.context.get_tensor_shape(name))
        return tuple(self.context.get_binding_shape(self.names.index(name)))

    def bind(self, addresses: dict[str, int]) -> list[int]:
        """Registers device addresses (named API) or returns the bindings list (v2)."""
        if self.named:
            for name, address in addresses.items():
                self.context.set_tensor_address(name, address)
            return []
        return [addresses[name] for name in self.names]

    def execute(self, bindings: list[int], stream: Any) -> None:
        ok = (
            self.context.execute_async_v3(stream_handle=stream.handle)
            if self.named
            else self.context.execute_async_v2(bindings=bindings, stream_handle=stream.handle)
        )
        if not ok:
            raise BackendError("TensorRT failed to run the step engine (see its log above)")


class TensorRTStepBackend:
    """StepBackend over a TensorRT step engine; refuses engines built for another device."""

    def __init__(self, engine_path: Path, manifest: Manifest, device: int = 0) -> None:
        engine_path = Path(engine_path)
        trt = import_tensorrt()
        self._cuda = import_cuda_driver()
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
        self._context = self._cuda.Device(device).retain_primary_context()
        self._context.push()
        try:
            self._load(trt, engine_path)
        finally:
            self._context.pop()
        log.info(
            "loaded %s on %s (TensorRT %s, batch <= %d)",
            engine_path.name,
            facts.gpu_name,
            facts.tensorrt_version,
            self.max_batch,
        )

    def _load(self, trt: Any, engine_path: Path) -> None:
        self._trt_logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._trt_logger)
        self._engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self._engine is None:
            raise BackendError(
                f"{engine_path}: TensorRT cannot deserialize it (corrupt, or built by another "
                "TensorRT version); rebuild it with `edgelstm build-engine`"
            )
        self._io = _EngineIO(self._engine, self._engine.create_execution_context(), trt)
        expected = sorted(self._inputs + self._outputs)
        if sorted(self._io.names) != expected:
            raise BackendError(
                f"{engine_path.name}: engine tensors {sorted(self._io.names)} are not the step "
                f"graph's {expected}"
            )
        max_shapes = {name: self._io.max_shape(name) for name in self._inputs}
        self.max_batch = max_shapes[STEP_INPUT][0]
        for name, shape in max_shapes.items():
            self._io.set_shape(name, shape)
        cuda = self._cuda
        self._host: dict[str, np.ndarray] = {}
        self._device: dict[str, Any] = {}
        for name in self._io.names:
            shape = max_shapes.get(name) or self._io.shape(name)
            self._host[name] = cuda.pagelocked_empty(int(np.prod(shape)), self._io.dtype(name))
            self._device[name] = cuda.mem_alloc(self._host[name].nbytes)
        self._bindings = self._io.bind({n: int(d) for n, d in self._device.items()})
        self._stream = cuda.Stream()

    def step(
        self, x: np.ndarray, state: tuple[np.ndarray, ...]
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        batch = x.shape[0]
        if batch > self.max_batch:
            raise BackendError(
                f"batch {batch} exceeds the engine's profile (max {self.max_batch}); rebuild with "
                "a larger --max-batch or lower the gateway's batch limit"
            )
        cuda = self._cuda
        self._context.push()
        try:
            for name, array in zip(self._inputs, (x, *state), strict=True):
                self._io.set_shape(name, array.shape)
                host = self._host[name][: array.size]
                host[:] = array.ravel()
                cuda.memcpy_htod_async(self._device[name], host, self._stream)
            self._io.execute(self._bindings, self._stream)
            results = []
            for name in self._outputs:
                shape = self._io.shape(name)
                host = self._host[name][: int(np.prod(shape))]
                cuda.memcpy_dtoh_async(host, self._device[name], self._stream)
                results.append((host, shape))
            self._stream.synchronize()
        finally:
            self._context.pop()
        logits, *new_state = (h.astype(np.float32).reshape(s) for h, s in results)
        return logits, tuple(new_state)

    def close(self) -> None:
        """Frees the device buffers while the engine's CUDA context is current."""
        self._context.push()
        try:
            for buffer in self._device.values():
                buffer.free()
            self._device.clear()
        finally:
            self._context.pop()
            self._context.detach()
