"""The table of conversion targets, and `convert`, which runs one (after Ultralytics' exporter).

Each row says what the target is made from, the manifest name and file name of what it writes,
whether it is built on (and bound to) a GPU, the options it takes, the function that makes it
and the command that comes next. `edgelstm export`, `quantize` and `build-engine` look their
target up here and call `convert`: a misspelled target gets a "did you mean", an option the
target does not take is refused by name, and no converter spells a file name by hand.
"""

from __future__ import annotations

import difflib
import importlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converters.errors import ConverterError

if TYPE_CHECKING:
    from converters.outcome import Outcome
    from runtime.backends.cuda_helpers import DeviceFacts

# file stem of each graph kind: the window graph is model.onnx, the step graph step.onnx
STEMS = {"window": "model", "step": "step"}


@dataclass(frozen=True)
class Target:
    """One kind of deployable artifact and how it is made."""

    name: str  # e.g. "onnx-int8-static"
    command: str  # the edgelstm command that makes it
    variant: str  # that command's --mode / --precision value ("" for export)
    precision: str  # manifest precision of what it writes
    artifact: str  # manifest name; {graph} is "window" or "step"
    file: str  # file name; {stem} of the graph, {tensorrt} and {gpu} of the building device
    needs_gpu: bool  # built on the GPU that runs it, so the file name carries that device
    sources: tuple[str, ...]  # artifacts it converts (none: a checkpoint); engines: first found
    args: frozenset[str]  # keyword options its function takes
    function: str  # "module:function" making it: f(target, path, **options) -> Outcome
    next: str  # the command that uses what it wrote; {folder}, {artifact}

    def artifact_name(self, graph: str) -> str:
        """Manifest name of what it makes of `graph`, e.g. "step.int8-static"."""
        return self.artifact.format(graph=graph)

    def file_name(self, graph: str, device: DeviceFacts | None = None) -> str:
        """File it writes for `graph`, e.g. "model.int8-static.onnx" or, for a GPU target,
        "step.fp16.trt10.3.nvidia-h100-80gb-hbm3.engine" (needs the building device)."""
        facts: dict[str, str] = {}
        if self.needs_gpu:
            if device is None:
                raise ConverterError(f"{self.name} files are named after the GPU that builds them")
            facts = {"tensorrt": device.tensorrt_major_minor, "gpu": device.gpu_slug}
        return self.file.format(stem=STEMS[graph], **facts)

    def next_step(self, folder: Path) -> str:
        """The command to run on `folder` once this target is written."""
        return self.next.format(folder=folder, artifact=self.artifact_name("step"))


_INT8_ARGS = frozenset({"tolerance_points", "data_path", "guard_split"})
_ENGINE_ARGS = frozenset({"max_batch", "opt_batch", "workspace_mb", "data_path"})


def _engine(precision: str, *sources: str) -> Target:
    return Target(
        name=f"tensorrt-{precision}",
        command="build-engine",
        variant=precision,
        precision=precision,
        artifact=f"{{graph}}.trt-{precision}",
        file=f"{{stem}}.{precision}.trt{{tensorrt}}.{{gpu}}.engine",
        needs_gpu=True,
        sources=sources,  # the first one the folder has
        args=_ENGINE_ARGS,
        function="converters.tensorrt_build:build_tensorrt_engine",
        next="edgelstm serve --model-dir {folder} --backend tensorrt --artifact {artifact}",
    )


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            name="onnx",
            command="export",
            variant="",
            precision="fp32",
            artifact="{graph}",
            file="{stem}.onnx",
            needs_gpu=False,
            sources=(),
            args=frozenset({"out_dir", "cfg", "data_path"}),
            function="converters.export_onnx:export_onnx",
            next="edgelstm quantize {folder}",
        ),
        Target(
            name="onnx-int8-dynamic",
            command="quantize",
            variant="dynamic",
            precision="int8-dynamic",
            artifact="{graph}.int8-dynamic",
            file="{stem}.int8-dynamic.onnx",
            needs_gpu=False,
            sources=("window", "step"),
            args=_INT8_ARGS,
            function="converters.quantize:quantize_int8_dynamic",
            next="edgelstm quantize {folder} --mode static",
        ),
        Target(
            name="onnx-int8-static",
            command="quantize",
            variant="static",
            precision="int8-static",
            artifact="{graph}.int8-static",
            file="{stem}.int8-static.onnx",
            needs_gpu=False,
            sources=("window", "step"),
            args=_INT8_ARGS | {"calibration_windows"},
            function="converters.quantize:quantize_int8_static",
            next="edgelstm build-engine {folder} --precision int8",
        ),
        Target(
            name="onnx-int8-tensorrt",
            command="quantize",
            variant="tensorrt",  # `edgelstm quantize --mode static --for tensorrt`
            precision="int8-static",
            artifact="{graph}.int8-tensorrt",
            file="{stem}.int8-tensorrt.onnx",
            needs_gpu=False,
            sources=("step",),  # engines are built from the step graph only
            args=_INT8_ARGS | {"calibration_windows"},
            function="converters.quantize:quantize_int8_tensorrt",
            next="edgelstm build-engine {folder} --precision int8",
        ),
        _engine("fp32", "step"),
        _engine("fp16", "step"),
        # explicit quantization from a QDQ graph: TensorRT's form, else ONNX Runtime's
        _engine("int8", "step.int8-tensorrt", "step.int8-static"),
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


def convert(target: Target, path: Path, **options: Any) -> Outcome:
    """Runs `target` on `path` (a checkpoint or a deployment folder) with `options`, timed.

    Options left None count as not given; any other option the target does not take is refused.
    """
    check_args(target, options)
    module, attr = target.function.split(":")
    function = getattr(importlib.import_module(module), attr)
    options = {k: v for k, v in options.items() if v is not None}
    started = time.perf_counter()
    outcome = function(target, Path(path), **options)
    outcome.seconds = time.perf_counter() - started
    return outcome
