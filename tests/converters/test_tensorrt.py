"""TensorRT: build-engine's refusals everywhere; engine build and backend parity where a GPU is.

The GPU tests run only where `tensorrt` imports and pycuda finds a CUDA device.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from converters.export_onnx import export
from converters.parity import BackendSteps, StepGraph, ort_session, step_graph_logits
from converters.targets import convert, target_for
from runtime.backends.cuda_helpers import DeviceFacts, mismatch
from runtime.errors import BackendError
from runtime.manifest import Manifest
from tests.conftest import run_cli


def _gpu_missing() -> str | None:
    """Why the TensorRT tests cannot run here (None when they can)."""
    if importlib.util.find_spec("tensorrt") is None:
        return "the tensorrt Python package is not installed"
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() == 0:
            return "pycuda finds no CUDA device"
    except Exception as exc:  # ImportError, or pycuda's driver errors without a GPU
        return f"no usable CUDA device through pycuda ({type(exc).__name__}: {exc})"
    return None


GPU_MISSING = _gpu_missing()
needs_gpu = pytest.mark.skipif(GPU_MISSING is not None, reason=f"needs a GPU: {GPU_MISSING}")


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here"
)
def test_build_engine_without_tensorrt_exits_2(gru_deploy: Path) -> None:
    before = sorted(p.name for p in gru_deploy.iterdir())
    result = run_cli("build-engine", str(gru_deploy))
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: cannot build a TensorRT engine here: TensorRT is not")
    assert "JetPack" in lines[0] and "pip install tensorrt" in lines[0]
    assert sorted(p.name for p in gru_deploy.iterdir()) == before


def test_int8_engine_needs_the_static_qdq_graph(gru_deploy: Path) -> None:
    result = run_cli("build-engine", str(gru_deploy), "--precision", "int8")
    assert result.exit_code == 2
    assert "has no 'step.int8-static' graph" in result.output
    assert "--mode static" in result.output


def test_teacher_folder_has_no_engine(teacher_checkpoint: Path, tmp_path: Path) -> None:
    export(teacher_checkpoint, tmp_path / "deploy")
    result = run_cli("build-engine", str(tmp_path / "deploy"))
    assert result.exit_code == 2
    assert "holds a teacher, which has no step graph" in result.output


def test_engine_facts_must_match_the_device() -> None:
    here = DeviceFacts("10.3.0", "8.7", "Orin")
    built = {"tensorrt_version": "10.3.0", "compute_capability": "8.7", "gpu": "Orin"}
    assert mismatch(built, here) is None
    assert "compute capability 8.6, this device has 8.7" in mismatch(
        {**built, "compute_capability": "8.6"}, here
    )
    assert "tensorrt version 8.6.2" in mismatch({**built, "tensorrt_version": "8.6.2"}, here)
    assert "does not record" in mismatch({"gpu": "Orin"}, here)
    assert DeviceFacts("10.3.0", "9.0", "NVIDIA H100 80GB HBM3").gpu_slug == "nvidia-h100-80gb-hbm3"


def test_build_engine_files_with_a_stand_in_builder(
    gru_deploy: Path, copy_deploy, monkeypatch
) -> None:
    """Everything around the TensorRT builder (names, stage, cache, manifest, summary) on a
    machine without TensorRT: the builder, the device and the engine parity are stood in for."""
    import converters.tensorrt_build as tb
    from edge_lstm.units import human_size

    deploy = copy_deploy(gru_deploy)
    weakly_typed = SimpleNamespace(BuilderFlag=SimpleNamespace(FP16=1))
    devices = iter([DeviceFacts("10.3.0", "8.7", "Orin"), DeviceFacts("10.4.1", "8.7", "Orin")])
    monkeypatch.setattr(tb, "_device", lambda: (weakly_typed, next(devices)))
    monkeypatch.setattr(
        tb,
        "_build",
        lambda _trt, _path, _m, precision, _b, _ws, cache: (precision.encode(), cache + b"+"),
    )
    monkeypatch.setattr(tb, "_parity", lambda *_args: {"argmax_agreement": 1.0})

    result = run_cli("build-engine", str(deploy), "--max-batch", "8")
    assert result.exit_code == 0, result.output
    art = Manifest.load(deploy).artifacts["step.trt-fp16"]
    assert art.file == "step.fp16.trt10.3.orin.engine" and art.format == "tensorrt"
    assert art.info["profile_batches"] == {"min": 1, "opt": 8, "max": 8}
    assert art.info["parity_vs_onnx"] == {"argmax_agreement": 1.0}
    served = f"edgelstm serve --model-dir {deploy} --backend tensorrt --artifact step.trt-fp16"
    summary = rf"wrote {re.escape(f'{art.file} ({human_size(4)}) into {deploy}')} in \d+\.\d s"
    assert re.fullmatch(rf"{summary}; next: {re.escape(served)}", result.output.strip())

    assert run_cli("build-engine", str(deploy), "--max-batch", "8").exit_code == 0
    manifest = Manifest.load(deploy)
    assert manifest.artifacts["step.trt-fp16"].file == "step.fp16.trt10.4.orin.engine"
    manifest.verified_path(deploy, "step.trt-fp16")
    assert not (deploy / art.file).exists()  # the engine of the older TensorRT is replaced
    assert (deploy / tb.TIMING_CACHE).read_bytes() == b"++"
    assert not list(deploy.glob(".build-*"))


def build_engine(deploy: Path, precision: str, **options) -> Path:
    """`edgelstm build-engine --precision PRECISION` in-process; returns the engine path."""
    return convert(target_for("build-engine", precision), deploy, **options).result


def _engine_logits(deploy: Path, artifact: str, x: np.ndarray) -> np.ndarray:
    from runtime.backends.base import open_backend

    manifest = Manifest.load(deploy)
    backend = open_backend(deploy, manifest, name="tensorrt", artifact=artifact)
    try:
        return step_graph_logits(BackendSteps(backend, manifest), x)
    finally:
        backend.close()


@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 1e-3), ("fp16", 5e-2)])
def test_engine_matches_the_onnx_step_graph(
    precision: str, tolerance: float, lstm_deploy: Path, copy_deploy, prepared
) -> None:
    from converters.tensorrt_build import TIMING_CACHE

    deploy = copy_deploy(lstm_deploy)
    engine = build_engine(deploy, precision, max_batch=32, opt_batch=8)
    assert re.fullmatch(rf"step\.{precision}\.trt\d+\.\d+\.[a-z0-9-]+\.engine", engine.name)
    assert (deploy / TIMING_CACHE).is_file()
    manifest = Manifest.load(deploy)
    art = manifest.artifacts[f"step.trt-{precision}"]
    assert art.format == "tensorrt" and manifest.verified_path(deploy, f"step.trt-{precision}")
    assert {"tensorrt_version", "compute_capability", "gpu"} <= set(art.info)
    assert art.info["profile_batches"] == {"min": 1, "opt": 8, "max": 32}
    x = prepared.test.x[:32]
    graph = StepGraph(ort_session(deploy / "step.onnx"), manifest)
    reference = step_graph_logits(graph, x)
    logits = _engine_logits(deploy, f"step.trt-{precision}", x)
    assert np.abs(logits - reference).max() <= tolerance
    assert not list(deploy.glob(".build-*"))


@needs_gpu
@pytest.mark.gpu
def test_backend_refuses_an_engine_built_elsewhere_and_oversized_batches(
    gru_deploy: Path, copy_deploy
) -> None:
    from runtime.backends.tensorrt_backend import TensorRTStepBackend

    deploy = copy_deploy(gru_deploy)
    engine = build_engine(deploy, "fp32", max_batch=4)
    manifest = Manifest.load(deploy)
    backend = TensorRTStepBackend(engine, manifest)
    with pytest.raises(BackendError, match="exceeds the engine's profile"):
        backend.step(np.zeros((5, manifest.n_features), np.float32), manifest.zero_state(5))
    backend.close()
    manifest.artifacts["step.trt-fp32"].info["compute_capability"] = "1.0"
    with pytest.raises(BackendError, match=r"built for compute capability 1\.0"):
        TensorRTStepBackend(engine, manifest)


@needs_gpu
@pytest.mark.gpu
def test_int8_engine_from_the_qdq_graph(gru_deploy: Path, copy_deploy) -> None:
    deploy = copy_deploy(gru_deploy)
    convert(target_for("quantize", "static"), deploy, calibration_windows=16)
    result = run_cli("build-engine", str(deploy), "--precision", "int8", "--max-batch", "32")
    assert result.exit_code == 0, result.output
    art = Manifest.load(deploy).artifacts["step.trt-int8"]
    assert f"wrote {art.file} (" in result.output
    assert f"next: edgelstm serve --model-dir {deploy} --backend tensorrt" in result.output
    info = art.info
    assert info["source"] == "step.int8-static"
    assert info["parity_vs_onnx"]["argmax_agreement"] >= 0.9
