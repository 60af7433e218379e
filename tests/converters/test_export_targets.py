"""The target table: every target's names, lookup with "did you mean", refused options."""

from __future__ import annotations

from pathlib import Path

import pytest

from converters.errors import ConverterError
from converters.targets import TARGETS, check_args, convert, get_target, target_for
from runtime.backends.cuda_helpers import DeviceFacts


def test_table_lists_every_target_with_its_names() -> None:
    assert set(TARGETS) == {
        "onnx",
        "onnx-int8-dynamic",
        "onnx-int8-static",
        "onnx-int8-tensorrt",
        "tensorrt-fp32",
        "tensorrt-fp16",
        "tensorrt-int8",
    }
    onnx, static = get_target("onnx"), get_target("onnx-int8-static")
    assert (onnx.file_name("window"), onnx.file_name("step")) == ("model.onnx", "step.onnx")
    assert onnx.artifact_name("step") == "step"
    assert static.artifact_name("window") == "window.int8-static"
    assert static.file_name("window") == "model.int8-static.onnx"
    assert get_target("onnx-int8-dynamic").file_name("step") == "step.int8-dynamic.onnx"
    assert not static.needs_gpu and static.sources == ("window", "step")
    assert get_target("tensorrt-int8").sources == ("step.int8-tensorrt", "step.int8-static")
    assert get_target("onnx-int8-tensorrt").file_name("step") == "step.int8-tensorrt.onnx"
    assert get_target("tensorrt-fp16").artifact_name("step") == "step.trt-fp16"


def test_gpu_targets_name_their_files_after_the_building_device() -> None:
    fp16 = get_target("tensorrt-fp16")
    assert fp16.needs_gpu
    facts = DeviceFacts("10.3.0", "8.7", "Orin Nano")
    assert fp16.file_name("step", facts) == "step.fp16.trt10.3.orin-nano.engine"
    with pytest.raises(ConverterError, match="named after the GPU"):
        fp16.file_name("step")


def test_next_steps_follow_the_pipeline() -> None:
    folder = Path("runs/demo/deploy")
    assert get_target("onnx").next_step(folder) == "edgelstm quantize runs/demo/deploy"
    assert target_for("quantize", "dynamic").next_step(folder).endswith("--mode static")
    assert target_for("quantize", "static").next_step(folder) == (
        "edgelstm build-engine runs/demo/deploy --precision int8"
    )
    assert target_for("build-engine", "int8").next_step(folder) == (
        "edgelstm serve --model-dir runs/demo/deploy --backend tensorrt --artifact step.trt-int8"
    )


def test_misspelled_target_gets_a_suggestion() -> None:
    with pytest.raises(ConverterError, match="did you mean 'tensorrt-fp16'"):
        get_target("tensorrt-fp61")
    with pytest.raises(ConverterError, match="did you mean 'dynamic'"):
        target_for("quantize", "dynamik")
    assert target_for("build-engine", "int8").name == "tensorrt-int8"


def test_options_a_target_does_not_take_are_refused() -> None:
    dynamic = get_target("onnx-int8-dynamic")
    check_args(dynamic, {"tolerance_points": 1.0, "calibration_windows": None})
    with pytest.raises(ConverterError, match="does not accept calibration_windows"):
        check_args(dynamic, {"calibration_windows": 8})
    # convert refuses before it imports or runs anything
    with pytest.raises(ConverterError, match=r"'tensorrt-fp16' does not accept tolerance_points"):
        convert(get_target("tensorrt-fp16"), Path("nowhere"), tolerance_points=1.0)


def test_every_target_function_exists_and_takes_its_options() -> None:
    import importlib
    import inspect

    for target in TARGETS.values():
        module, attr = target.function.split(":")
        params = inspect.signature(getattr(importlib.import_module(module), attr)).parameters
        keywords = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        assert keywords == set(target.args), target.name
