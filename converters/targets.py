"""The table of export targets: what each writes, whether it needs a GPU, which options it takes.

Every converter command resolves its target here first, so a misspelled mode gets a "did you
mean" and an option the target does not use is refused instead of silently ignored.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from converters.errors import ConverterError


@dataclass(frozen=True)
class Target:
    """One kind of deployable artifact and how it is made."""

    name: str  # e.g. "onnx-int8-static"
    command: str  # the edgelstm command that makes it
    variant: str  # the command's --mode / --precision value ("" for plain export)
    precision: str  # manifest precision of the artifacts it writes
    suffix: str  # file name suffix of its artifacts
    needs_gpu: bool
    sources: tuple[str, ...]  # manifest artifacts it converts ("" = a checkpoint)
    args: frozenset[str]  # keyword options it accepts
    summary: str

    def artifact_name(self, source: str) -> str:
        """Manifest name of the artifact made from `source`, e.g. "step.int8-static"."""
        if self.command == "quantize":
            return f"{source}.int8-{self.variant}"
        if self.command == "build-engine":
            return f"step.trt-{self.variant}"
        return source


_ENGINE_ARGS = frozenset({"max_batch", "opt_batch", "workspace_mb"})

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "onnx",
            "export",
            "",
            "fp32",
            ".onnx",
            False,
            ("",),
            frozenset({"cfg", "data_path"}),
            "window graph + loop-free step graph, parity-checked against PyTorch",
        ),
        Target(
            "onnx-int8-dynamic",
            "quantize",
            "dynamic",
            "int8-dynamic",
            ".int8-dynamic.onnx",
            False,
            ("window", "step"),
            frozenset({"tolerance_points"}),
            "int8 weights, activations quantized per call (ONNX Runtime CPU)",
        ),
        Target(
            "onnx-int8-static",
            "quantize",
            "static",
            "int8-static",
            ".int8-static.onnx",
            False,
            ("window", "step"),
            frozenset({"tolerance_points", "calibration_windows"}),
            "QDQ int8 calibrated on training windows (ONNX Runtime, TensorRT explicit INT8)",
        ),
        Target(
            "tensorrt-fp32",
            "build-engine",
            "fp32",
            "fp32",
            ".engine",
            True,
            ("step",),
            _ENGINE_ARGS,
            "TensorRT engine of the step graph in fp32",
        ),
        Target(
            "tensorrt-fp16",
            "build-engine",
            "fp16",
            "fp16",
            ".engine",
            True,
            ("step",),
            _ENGINE_ARGS,
            "TensorRT engine of the step graph with fp16 kernels allowed",
        ),
        Target(
            "tensorrt-int8",
            "build-engine",
            "int8",
            "int8",
            ".engine",
            True,
            ("step.int8-static",),
            _ENGINE_ARGS,
            "TensorRT engine from the QDQ step graph (explicit quantization, no calibrator)",
        ),
    )
}


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def get_target(name: str) -> Target:
    """The target called `name`; unknown names get the list and the nearest spelling."""
    if name in TARGETS:
        return TARGETS[name]
    raise ConverterError(
        f"unknown export target {name!r} (choose from {', '.join(TARGETS)})"
        + _suggest(name, list(TARGETS))
    )


def target_for(command: str, variant: str) -> Target:
    """The target a command's --mode/--precision value selects, e.g. ("quantize", "static")."""
    variants = {t.variant: t for t in TARGETS.values() if t.command == command}
    if variant in variants:
        return variants[variant]
    raise ConverterError(
        f"`edgelstm {command}` has no {variant!r} option (choose from {', '.join(variants)})"
        + _suggest(variant, list(variants))
    )


def check_args(target: Target, given: Mapping[str, Any]) -> None:
    """Refuses options (those not None) that the target does not use, naming them."""
    unused = sorted(k for k, v in given.items() if v is not None and k not in target.args)
    if unused:
        accepted = ", ".join(sorted(target.args)) or "none"
        raise ConverterError(
            f"target {target.name!r} does not accept {', '.join(unused)} (it accepts {accepted})"
        )
