"""Importing TensorRT and pycuda lazily, the facts of the CUDA device an engine is tied to, and
the thread that owns a backend's CUDA work.

Shared by the engine builder and the TensorRT backend so that the TensorRT version, compute
capability, GPU name and multiprocessor count recorded at build time are read exactly the way
they are checked at load time.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from runtime.errors import BackendError

T = TypeVar("T")

TENSORRT_HINT = (
    "on a Jetson it comes with JetPack (`sudo apt install nvidia-jetpack`, or just "
    "python3-libnvinfer); on a desktop GPU `pip install tensorrt` next to an NVIDIA driver"
)
PYCUDA_HINT = (
    "`pip install pycuda` (needs the CUDA toolkit headers: on a Jetson they come with "
    "`sudo apt install nvidia-jetpack`; on a desktop with the CUDA toolkit)"
)
# an engine built with a hardware compatibility level other than NONE runs on other GPU models
PORTABLE_LEVELS = ("AMPERE_PLUS", "SAME_COMPUTE_CAPABILITY")


def import_tensorrt() -> Any:
    """The tensorrt module, or BackendError naming how to install it."""
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendError(f"TensorRT is not installed ({exc}): {TENSORRT_HINT}") from None
    return tensorrt


def import_cuda_driver() -> Any:
    """pycuda.driver, initialised, or BackendError naming how to install it."""
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise BackendError(f"pycuda is not installed ({exc}): {PYCUDA_HINT}") from None
    try:
        cuda.init()
    except cuda.Error as exc:
        raise BackendError(
            f"CUDA cannot start ({exc}): no NVIDIA driver or GPU is usable here; check "
            "`nvidia-smi` (desktop) or that JetPack is installed (Jetson)"
        ) from None
    return cuda


def version_tuple(version: str) -> tuple[int, ...]:
    """ "10.3.0.26" -> (10, 3, 0, 26); non-numeric parts end the tuple."""
    parts = []
    for part in str(version).split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


@dataclass(frozen=True)
class DeviceFacts:
    """What a TensorRT engine is bound to: the TensorRT build and the GPU it was tuned for."""

    tensorrt_version: str
    compute_capability: str  # e.g. "8.7"
    gpu_name: str
    multiprocessors: int | None = None  # SM count: tells an Orin NX from an AGX Orin

    @property
    def gpu_slug(self) -> str:
        """The GPU name as a file-name part: "NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3"."""
        return re.sub(r"[^a-z0-9]+", "-", self.gpu_name.lower()).strip("-") or "gpu"

    @property
    def tensorrt_major_minor(self) -> str:
        return ".".join(self.tensorrt_version.split(".")[:2])

    def as_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "tensorrt_version": self.tensorrt_version,
            "compute_capability": self.compute_capability,
            "gpu": self.gpu_name,
        }
        if self.multiprocessors is not None:
            info["multiprocessors"] = self.multiprocessors
        return info


def device_facts(device: int = 0) -> DeviceFacts:
    """TensorRT version and the GPU's name, compute capability and multiprocessor count
    (BackendError when TensorRT, pycuda or the GPU is absent)."""
    trt = import_tensorrt()
    cuda = import_cuda_driver()
    if cuda.Device.count() <= device:
        raise BackendError(
            f"no CUDA device #{device} (found {cuda.Device.count()}): TensorRT needs an NVIDIA "
            "GPU; check `nvidia-smi` or the Jetson's JetPack install"
        )
    dev = cuda.Device(device)
    major, minor = dev.compute_capability()
    sms = int(dev.get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT))
    return DeviceFacts(trt.__version__, f"{major}.{minor}", dev.name(), sms)


def mismatch(recorded: dict[str, Any], here: DeviceFacts) -> str | None:
    """Why an engine built with `recorded` facts cannot run here (None when it can).

    TensorRT version and compute capability must match. An engine built at the default
    hardware compatibility level (NONE) is also tied to the GPU model it was tuned on: with the
    same compute capability another model loads it silently but may run it slowly or not at
    all, so the GPU name (and the multiprocessor count, where recorded) must match too."""
    for key, actual in (
        ("tensorrt_version", here.tensorrt_version),
        ("compute_capability", here.compute_capability),
    ):
        wanted = recorded.get(key)
        if wanted is None:
            return f"its manifest entry does not record {key}"
        if str(wanted) != actual:
            return f"it was built for {key.replace('_', ' ')} {wanted}, this device has {actual}"
    level = str(recorded.get("hardware_compatibility_level") or "NONE").upper()
    if level in PORTABLE_LEVELS:
        return None
    gpu = recorded.get("gpu")
    if gpu is None:
        return "its manifest entry does not record gpu"
    if str(gpu) != here.gpu_name:
        return (
            f"it was built for the GPU {gpu!r}, this device is a {here.gpu_name!r} (same compute "
            "capability, but an engine is tuned for one GPU model)"
        )
    sms = recorded.get("multiprocessors")
    if sms is not None and here.multiprocessors is not None and int(sms) != here.multiprocessors:
        return (
            f"it was built for a {gpu} with {sms} multiprocessors, this one has "
            f"{here.multiprocessors}"
        )
    return None


class _Job:
    __slots__ = ("args", "done", "error", "fn", "result")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn(*self.args)
        except BaseException as exc:  # handed to the caller's thread
            self.error = exc
        finally:
            self.done.set()


class CudaThread:
    """One thread that owns a CUDA context: it retains the device's primary context, makes it
    current on itself for its whole life, runs every call handed to it with `call`, and pops
    and releases the context when it stops.

    A backend does all its CUDA and TensorRT work here (load, every step, freeing), so its
    buffers, stream, engine and execution context are created, used and destroyed on one
    thread with its context current, whichever thread loads it (the reload thread), steps it
    (the processing loop) or closes it. The price is one hand-off between threads per call.
    """

    def __init__(self, cuda: Any, device: int = 0, name: str = "edgelstm-cuda") -> None:
        self._cuda = cuda
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._started = _Job(lambda: None, ())
        self._thread = threading.Thread(target=self._main, args=(device,), name=name, daemon=True)
        self._stopped = False
        self._thread.start()
        self._wait(self._started)

    @property
    def name(self) -> str:
        return self._thread.name

    def _main(self, device: int) -> None:
        cuda = self._cuda
        try:
            context = cuda.Device(device).retain_primary_context()
            context.push()
        except BaseException as exc:
            self._started.error = BackendError(f"cannot make the CUDA context current: {exc}")
            self._started.done.set()
            return
        self._started.done.set()
        try:
            while (job := self._jobs.get()) is not None:
                job.run()
        finally:
            cuda.Context.pop()
            context.detach()

    def _wait(self, job: _Job) -> Any:
        while not job.done.wait(0.5):
            if not self._thread.is_alive():
                raise BackendError(f"the CUDA thread {self.name} has ended")
        if job.error is not None:
            raise job.error
        return job.result

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs fn(*args) on this thread and returns its result (or raises what it raised)."""
        if threading.current_thread() is self._thread:
            return fn(*args)
        if self._stopped:
            raise BackendError(f"the CUDA thread {self.name} was stopped")
        job = _Job(fn, args)
        self._jobs.put(job)
        return self._wait(job)

    def stop(self, last: Callable[[], Any] | None = None, timeout_s: float = 5.0) -> None:
        """Runs `last` (freeing what the thread allocated), then ends the thread, which pops
        the context. Idempotent; `last`'s errors are raised after the thread has ended."""
        if self._stopped:
            return
        error: BaseException | None = None
        if last is not None and self._thread.is_alive():
            try:
                self.call(last)
            except BaseException as exc:
                error = exc
        self._stopped = True
        self._jobs.put(None)
        self._thread.join(timeout_s)
        if error is not None:
            raise error
