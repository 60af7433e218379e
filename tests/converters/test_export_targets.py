"""The export target table: lookup, "did you mean", and refusing options a target ignores."""

from __future__ import annotations

import pytest

from converters.errors import ConverterError
from converters.targets import TARGETS, check_args, get_target, target_for


def test_table_lists_every_target_with_its_facts() -> None:
    assert set(TARGETS) == {
        "onnx",
        "onnx-int8-dynamic",
        "onnx-int8-static",
        "tensorrt-fp32",
        "tensorrt-fp16",
        "tensorrt-int8",
    }
    assert not get_target("onnx-int8-static").needs_gpu
    assert get_target("tensorrt-fp16").needs_gpu
    assert get_target("tensorrt-int8").sources == ("step.int8-static",)
    assert get_target("onnx-int8-static").artifact_name("step") == "step.int8-static"
    assert get_target("tensorrt-fp16").artifact_name("step") == "step.trt-fp16"


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
