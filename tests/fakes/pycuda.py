"""A fake `pycuda` package with the part of `pycuda.driver` edgelstm uses, over a `FakeGpu`.

Like the real driver API it needs `init()` first, and every call that touches memory or streams
needs a context current on the calling thread (`retain_primary_context().push()` there): a call
from a thread without one raises `LogicError`, the way pycuda reports CUDA_ERROR_INVALID_CONTEXT.
That is how the tests check that one thread owns all CUDA work of a backend. Host buffers from
`pagelocked_empty` are numpy arrays whose `.base` has `free()`, as in pycuda.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np

from tests.fakes.gpu import FakeGpu


def make_pycuda(gpu: FakeGpu, *, driver_works: bool = True, devices: int = 1) -> dict[str, Any]:
    """{"pycuda": package, "pycuda.driver": module} for sys.modules."""
    driver = types.ModuleType("pycuda.driver")
    state = {"initialised": False}

    class Error(Exception):
        pass

    class LogicError(Error):
        pass

    def need_init() -> None:
        if not state["initialised"]:
            raise LogicError("cuInit has not been called")

    def need_context(api: str) -> None:
        need_init()
        if gpu.current_context() is None:
            raise LogicError(f"{api} failed: invalid device context")

    def init(flags: int = 0) -> None:
        gpu.record("pycuda.init")
        if not driver_works:
            raise Error("cuInit failed: no CUDA-capable device is detected")
        state["initialised"] = True

    class device_attribute:
        MULTIPROCESSOR_COUNT = "MULTIPROCESSOR_COUNT"

    class Context:
        def __init__(self, device: Device) -> None:
            self.device = device
            self.detached = False

        def push(self) -> None:
            gpu.record("pycuda.Context.push")
            if self.detached:
                raise LogicError("cannot push a detached context")
            gpu.stack().append(self)

        @staticmethod
        def pop() -> None:
            gpu.record("pycuda.Context.pop")
            if not gpu.stack():
                raise LogicError("cuCtxPopCurrent failed: no context is current")
            gpu.stack().pop()

        def detach(self) -> None:
            gpu.record("pycuda.Context.detach")
            self.detached = True

        @staticmethod
        def synchronize() -> None:
            need_context("cuCtxSynchronize")

    class Device:
        def __init__(self, number: int) -> None:
            need_init()
            if not 0 <= number < devices:
                raise LogicError(f"cuDeviceGet failed: invalid device ordinal {number}")
            self.number = number

        @staticmethod
        def count() -> int:
            need_init()
            return devices

        def name(self) -> str:
            return gpu.name

        def compute_capability(self) -> tuple[int, int]:
            return gpu.compute_capability

        def get_attribute(self, attribute: str) -> int:
            if attribute == device_attribute.MULTIPROCESSOR_COUNT:
                return gpu.multiprocessors
            raise NotImplementedError(attribute)

        def total_memory(self) -> int:
            return gpu.total_bytes

        def retain_primary_context(self) -> Context:
            gpu.record("pycuda.Device.retain_primary_context")
            return Context(self)

    class DeviceAllocation:
        def __init__(self, nbytes: int) -> None:
            self.address = gpu.allocate(nbytes)
            self.nbytes = nbytes
            self.freed = False

        def __int__(self) -> int:
            return self.address

        __index__ = __int__

        def free(self) -> None:
            gpu.record("pycuda.DeviceAllocation.free", self.nbytes)
            need_context("cuMemFree")
            if not self.freed:
                gpu.release(self.address)
                self.freed = True

    class HostAllocation(bytearray):
        """Page-locked host memory: the `.base` of what pagelocked_empty returns."""

        def free(self) -> None:
            gpu.record("pycuda.HostAllocation.free", len(self))
            need_context("cuMemFreeHost")
            gpu.host_pinned.pop(id(self), None)

    def pagelocked_empty(shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> Any:
        dtype = np.dtype(dtype)
        count = int(np.prod(shape))
        gpu.record("pycuda.pagelocked_empty", count, dtype.name)
        need_context("cuMemHostAlloc")
        block = HostAllocation(count * dtype.itemsize)
        gpu.host_pinned[id(block)] = len(block)
        return np.ndarray(shape, dtype, buffer=block)  # .base is the allocation, as in pycuda

    def mem_alloc(nbytes: int) -> DeviceAllocation:
        gpu.record("pycuda.mem_alloc", int(nbytes))
        need_context("cuMemAlloc")
        return DeviceAllocation(int(nbytes))

    def _address(target: Any) -> int:
        return int(target)

    def memcpy_htod_async(dest: Any, src: np.ndarray, stream: Any = None) -> None:
        gpu.record("pycuda.memcpy_htod_async", src.nbytes)
        need_context("cuMemcpyHtoDAsync")
        _pinned(src, "memcpy_htod_async")
        gpu.buffer(_address(dest), src.nbytes)[:] = np.ascontiguousarray(src).tobytes()

    def memcpy_dtoh_async(dest: np.ndarray, src: Any, stream: Any = None) -> None:
        gpu.record("pycuda.memcpy_dtoh_async", dest.nbytes)
        need_context("cuMemcpyDtoHAsync")
        _pinned(dest, "memcpy_dtoh_async")
        data = gpu.buffer(_address(src), dest.nbytes)
        dest.reshape(-1).view(np.uint8)[:] = np.frombuffer(data, np.uint8)

    def _pinned(array: np.ndarray, api: str) -> None:
        base = array
        while isinstance(base, np.ndarray) and base.base is not None:
            base = base.base
        if isinstance(base, memoryview):
            base = base.obj
        if not isinstance(base, HostAllocation):
            raise AssertionError(
                f"{api} with pageable host memory (asynchronous copies need it pinned)"
            )

    class Stream:
        _handles = iter(range(0x5000, 1 << 30))

        def __init__(self, flags: int = 0) -> None:
            gpu.record("pycuda.Stream")
            need_context("cuStreamCreate")
            self.handle = next(Stream._handles)

        def synchronize(self) -> None:
            gpu.record("pycuda.Stream.synchronize")
            need_context("cuStreamSynchronize")

    def mem_get_info() -> tuple[int, int]:
        need_context("cuMemGetInfo")
        return gpu.total_bytes - gpu.used_bytes, gpu.total_bytes

    for name, value in {
        "Error": Error,
        "LogicError": LogicError,
        "init": init,
        "device_attribute": device_attribute,
        "Context": Context,
        "Device": Device,
        "DeviceAllocation": DeviceAllocation,
        "HostAllocation": HostAllocation,
        "pagelocked_empty": pagelocked_empty,
        "mem_alloc": mem_alloc,
        "memcpy_htod_async": memcpy_htod_async,
        "memcpy_dtoh_async": memcpy_dtoh_async,
        "Stream": Stream,
        "mem_get_info": mem_get_info,
    }.items():
        setattr(driver, name, value)
    package = types.ModuleType("pycuda")
    package.__path__ = []  # a package, so `import pycuda.driver` finds the entry below
    package.driver = driver
    return {"pycuda": package, "pycuda.driver": driver}
