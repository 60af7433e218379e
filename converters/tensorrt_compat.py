"""The builder-side differences between TensorRT 8.6, 10.x and 11.x, in one place.

- 8.x needs the EXPLICIT_BATCH network flag for ONNX; 10.x makes it the default (the flag is
  deprecated there) and 11.x removed it.
- The workspace limit is `set_memory_pool_limit` since 8.4 (`max_workspace_size` before).
- TF32 is on by default for fp32 layers on Ampere and newer GPUs; fp32 builds turn it off.
- Typing. 8.6 builds weakly typed networks: FP16/INT8 builder flags let TensorRT pick lower
  precision. 10.x offers STRONGLY_TYPED networks, where precision lives in the graph and no
  precision flag may be set; NVIDIA directs explicit quantization (Q/DQ graphs) there, and from
  10.12 deprecates the FP16/INT8 flags altogether. 11.x is strongly typed only (no FP16/INT8
  flags; STRONGLY_TYPED is the default and its flag is deprecated). So (`strongly_typed`):
  int8 is strongly typed wherever the API offers it (10.x, 11.x), fp16 and fp32 from 10.12 on;
  older 10.x and 8.6 keep the FP16 flag, and 8.6 int8 sets INT8 alone (the layers without Q/DQ
  stay fp32, as in the strongly typed builds). A strongly typed FP16 engine is built from an
  fp16 copy of the ONNX graph; INT8 comes from the Q/DQ nodes of the quantized graph.
- Timing caches: one written by another TensorRT version or GPU may be refused by
  `create_timing_cache` (None) or `set_timing_cache` (False, or an exception); it is then
  discarded with a warning and a fresh cache is used (`use_timing_cache`).
"""

from __future__ import annotations

import logging
from typing import Any

from runtime.backends.cuda_helpers import version_tuple

# from this version on the FP16/INT8 builder flags are deprecated (NvInfer.h, BuilderFlag)
WEAK_TYPING_DEPRECATED = (10, 12)


def major_version(trt: Any) -> int:
    return int(trt.__version__.split(".")[0])


def strongly_typed(trt: Any, precision: str) -> bool:
    """True where the network is built strongly typed for `precision` (module docstring)."""
    if not hasattr(trt.BuilderFlag, "FP16"):
        return True  # 11.x: no weak typing left
    creation = getattr(trt, "NetworkDefinitionCreationFlag", None)
    if creation is None or not hasattr(creation, "STRONGLY_TYPED"):
        return False  # 8.x
    if precision == "int8":
        return True  # explicit quantization: NVIDIA's direction on every 10.x
    return version_tuple(getattr(trt, "__version__", "0")) >= WEAK_TYPING_DEPRECATED


def network_flags(trt: Any, strongly: bool) -> int:
    """create_network flags: EXPLICIT_BATCH on 8.x, STRONGLY_TYPED on 10.x when `strongly`,
    nothing on 11.x (strongly typed by default; its flag is deprecated and ignored)."""
    flags = 0
    creation = trt.NetworkDefinitionCreationFlag
    major = major_version(trt)
    if major < 10:
        flags |= 1 << int(creation.EXPLICIT_BATCH)
    elif major == 10 and strongly:
        flags |= 1 << int(creation.STRONGLY_TYPED)
    return flags


def set_workspace(config: Any, trt: Any, workspace_bytes: int) -> None:
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    else:
        config.max_workspace_size = workspace_bytes


def set_precision(config: Any, trt: Any, precision: str, strongly: bool) -> list[str]:
    """Builder flags of the precision; returns the names of the flags set. fp32 turns TF32
    off (on by default for Ampere and newer), so an fp32 engine matches ONNX Runtime; a
    strongly typed network takes no precision flag."""
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    if strongly:
        return []
    wanted = {"fp16": ["FP16"], "int8": ["INT8"]}.get(precision, [])
    for name in wanted:
        # int8: the Q/DQ nodes carry the scales (explicit quantization); no calibrator is set
        config.set_flag(getattr(trt.BuilderFlag, name))
    return wanted


def use_timing_cache(config: Any, cache: bytes, log: logging.Logger, label: str) -> bool:
    """Gives the builder the serialized timing cache `cache` (b"" for a new one). One that
    this TensorRT cannot use is discarded with a warning; returns False then."""
    if cache:
        try:
            timing = config.create_timing_cache(cache)
            if timing is not None and config.set_timing_cache(timing, ignore_mismatch=False):
                return True
            reason = "TensorRT refused it"
        except Exception as exc:  # pybind raises RuntimeError/TypeError for a foreign cache
            reason = f"{type(exc).__name__}: {exc}"
        log.warning(
            "%s was written by another TensorRT version or GPU (%s); discarding it and "
            "starting a new one",
            label,
            reason,
        )
    config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=True)
    return not cache


def builder_logger(trt: Any, target: logging.Logger) -> Any:
    """A TensorRT logger that forwards INFO and above to Python logging."""
    severity = trt.ILogger.Severity
    levels = {
        severity.INTERNAL_ERROR: logging.CRITICAL,
        severity.ERROR: logging.ERROR,
        severity.WARNING: logging.WARNING,
        severity.INFO: logging.INFO,
    }

    class Forward(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, level: Any, msg: str) -> None:
            if level in levels:
                target.log(levels[level], "TensorRT: %s", msg)

    return Forward()
