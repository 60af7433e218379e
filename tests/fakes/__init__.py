"""Version-faithful stand-ins for `tensorrt` and `pycuda.driver`, for machines without a GPU.

They test OUR use of the TensorRT and pycuda APIs (which names we call, in which order, with
which flags, shapes and buffers, on which thread), never TensorRT itself: kernels, precision,
speed and the real parser stay unverified without hardware (`scripts/gpu_check.sh`).

`install(monkeypatch, generation)` puts a fresh fake GPU, `tensorrt` and `pycuda` into
sys.modules for one test (monkeypatch restores the previous entries) and returns the FakeGpu,
whose `calls` list every call made into either fake.
"""

from __future__ import annotations

import sys
from typing import Any

from tests.fakes.gpu import Call, FakeGpu
from tests.fakes.pycuda import make_pycuda
from tests.fakes.tensorrt import make_tensorrt
from tests.fakes.trt_names import VERSIONS

GENERATIONS = tuple(VERSIONS)  # "8.6", "10.3", "10.x", "11.x"

__all__ = ["GENERATIONS", "Call", "FakeGpu", "install", "make_pycuda", "make_tensorrt"]


def install(
    monkeypatch: Any,
    generation: str,
    gpu: FakeGpu | None = None,
    *,
    perturb: float = 0.0,
    driver_works: bool = True,
) -> FakeGpu:
    """Fake `tensorrt` of `generation` and `pycuda` over `gpu` (a new one by default)."""
    gpu = gpu or FakeGpu()
    modules = {
        "tensorrt": make_tensorrt(generation, gpu, perturb=perturb),
        **make_pycuda(gpu, driver_works=driver_works),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return gpu
