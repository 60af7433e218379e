"""The builder-side differences between TensorRT 8.5/8.6, 10.x and 11.x, in one place.

- 8.x needs the EXPLICIT_BATCH network flag for ONNX; 10.x makes it the default.
- The workspace limit is `set_memory_pool_limit` since 8.4 (`max_workspace_size` before).
- TF32 is on by default for fp32 layers on Ampere and newer GPUs.
- 8.x/10.x build weakly typed networks where FP16/INT8 builder flags allow lower precision;
  11.x removed those flags (strongly typed only): FP16 comes from an fp16 ONNX model and INT8
  from the Q/DQ nodes of the static-quantized model.
"""

from __future__ import annotations

import logging
from typing import Any


def major_version(trt: Any) -> int:
    return int(trt.__version__.split(".")[0])


def strongly_typed(trt: Any) -> bool:
    """True where precision must live in the graph (TensorRT 11+: no FP16/INT8 flags)."""
    return not hasattr(trt.BuilderFlag, "FP16")


def network_flags(trt: Any) -> int:
    flags = 0
    creation = trt.NetworkDefinitionCreationFlag
    if major_version(trt) < 10:
        flags |= 1 << int(creation.EXPLICIT_BATCH)
    if strongly_typed(trt) and hasattr(creation, "STRONGLY_TYPED"):
        flags |= 1 << int(creation.STRONGLY_TYPED)
    return flags


def set_workspace(config: Any, trt: Any, workspace_bytes: int) -> None:
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    else:
        config.max_workspace_size = workspace_bytes


def set_precision(config: Any, trt: Any, precision: str) -> None:
    """Builder flags of the precision. fp32 turns TF32 off (on by default for Ampere and
    newer), so an fp32 engine matches ONNX Runtime; FP16/INT8 flags exist only for weakly
    typed builds."""
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    if strongly_typed(trt):
        return
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        # Q/DQ nodes carry the scales (explicit quantization); no calibrator is set
        config.set_flag(trt.BuilderFlag.INT8)


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
