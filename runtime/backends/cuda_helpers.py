"""Importing TensorRT and pycuda lazily, and the facts of the CUDA device an engine is tied to.

Shared by the engine builder and the TensorRT backend so that the TensorRT version and compute
capability recorded at build time are read exactly the way they are checked at load time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from runtime.errors import BackendError

TENSORRT_HINT = (
    "on a Jetson it comes with JetPack (`sudo apt install nvidia-jetpack`, or just "
    "python3-libnvinfer); on a desktop GPU `pip install tensorrt` next to an NVIDIA driver"
)
PYCUDA_HINT = (
    "`pip install pycuda` (needs the CUDA toolkit headers: on a Jetson they come with "
    "`sudo apt install nvidia-jetpack`; on a desktop with the CUDA toolkit)"
)


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


@dataclass(frozen=True)
class DeviceFacts:
    """What a TensorRT engine is bound to: the TensorRT build and the GPU it was tuned for."""

    tensorrt_version: str
    compute_capability: str  # e.g. "8.7"
    gpu_name: str

    @property
    def gpu_slug(self) -> str:
        """The GPU name as a file-name part: "NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3"."""
        return re.sub(r"[^a-z0-9]+", "-", self.gpu_name.lower()).strip("-") or "gpu"

    @property
    def tensorrt_major_minor(self) -> str:
        return ".".join(self.tensorrt_version.split(".")[:2])

    def as_info(self) -> dict[str, str]:
        return {
            "tensorrt_version": self.tensorrt_version,
            "compute_capability": self.compute_capability,
            "gpu": self.gpu_name,
        }


def device_facts(device: int = 0) -> DeviceFacts:
    """TensorRT version and the GPU's name and compute capability (BackendError when absent)."""
    trt = import_tensorrt()
    cuda = import_cuda_driver()
    if cuda.Device.count() <= device:
        raise BackendError(
            f"no CUDA device #{device} (found {cuda.Device.count()}): TensorRT needs an NVIDIA "
            "GPU; check `nvidia-smi` or the Jetson's JetPack install"
        )
    dev = cuda.Device(device)
    major, minor = dev.compute_capability()
    return DeviceFacts(trt.__version__, f"{major}.{minor}", dev.name())


def mismatch(recorded: dict[str, Any], here: DeviceFacts) -> str | None:
    """Why an engine built with `recorded` facts cannot run here (None when it can)."""
    for key, actual in (
        ("tensorrt_version", here.tensorrt_version),
        ("compute_capability", here.compute_capability),
    ):
        wanted = recorded.get(key)
        if wanted is None:
            return f"its manifest entry does not record {key}"
        if str(wanted) != actual:
            return f"it was built for {key.replace('_', ' ')} {wanted}, this device has {actual}"
    return None
