"""`edgelstm quantize --for tensorrt` and `edgelstm build-engine` through each TensorRT API
generation (8.6 of JetPack 6.0, 10.3 of JetPack 6.1/6.2, current 10.x, 11.x), on fakes.

These tests check OUR use of the TensorRT API, not TensorRT: the fake modules in tests/fakes/
expose exactly the names of each generation (a missing name raises AttributeError, as the real
module would) and record every call, so the tests assert which flags, profiles, precision
settings and timing-cache calls the builder code makes, and that it refuses what it must.
Whether TensorRT then builds a fast, accurate engine is only checked on a GPU
(tests/converters/test_tensorrt.py's gpu tests, scripts/gpu_check.sh).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from converters.parity import PARITY_SAMPLE_FILE, PARITY_SAMPLE_KEY, stratified_indices
from converters.targets import convert, target_for
from runtime.manifest import Manifest
from tests.conftest import REPO, run_cli
from tests.fakes import GENERATIONS, FakeGpu, install, make_tensorrt

# what build-engine must ask of each generation, per precision: network creation flags and the
# builder flags it sets (fp32 always clears TF32 instead)
EXPECTED = {
    ("8.6", "fp32"): (1 << 0, []),  # EXPLICIT_BATCH
    ("8.6", "fp16"): (1 << 0, ["FP16"]),
    ("8.6", "int8"): (1 << 0, ["INT8"]),
    ("10.3", "fp32"): (0, []),
    ("10.3", "fp16"): (0, ["FP16"]),  # 10.3 < 10.12: the FP16 flag is not deprecated yet
    ("10.3", "int8"): (1 << 1, []),  # STRONGLY_TYPED, no precision flag
    ("10.x", "fp32"): (1 << 1, []),
    ("10.x", "fp16"): (1 << 1, []),
    ("10.x", "int8"): (1 << 1, []),
    ("11.x", "fp32"): (0, []),  # strongly typed by default; its flag is deprecated
    ("11.x", "fp16"): (0, []),
    ("11.x", "int8"): (0, []),
}


@pytest.fixture(scope="module")
def trt_ready(lstm_deploy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer LSTM folder after `edgelstm quantize --mode static --for tensorrt`."""
    deploy = Path(shutil.copytree(lstm_deploy, tmp_path_factory.mktemp("trt") / "deploy"))
    result = run_cli(
        "quantize", str(deploy), "--mode", "static", "--for", "tensorrt",
        "--calibration-windows", "16",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return deploy


@pytest.fixture
def ready(trt_ready: Path, copy_deploy) -> Path:
    return copy_deploy(trt_ready)


def _calls(gpu: FakeGpu, api: str) -> list[tuple]:
    return [c.args for c in gpu.calls if c.api == api]


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---- the fakes themselves keep each generation's names -------------------------------------


def test_the_fakes_expose_exactly_each_generations_names() -> None:
    gpu = FakeGpu()
    trt = {g: make_tensorrt(g, gpu) for g in GENERATIONS}
    assert hasattr(trt["8.6"].IExecutionContext, "execute_async_v2")
    assert hasattr(trt["8.6"].ICudaEngine, "get_binding_name")
    assert not hasattr(trt["8.6"].NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    for g in ("10.3", "10.x", "11.x"):
        assert not hasattr(trt[g].IExecutionContext, "execute_async_v2")
        assert not hasattr(trt[g].ICudaEngine, "get_binding_name")
        assert not hasattr(trt[g].IBuilderConfig, "max_workspace_size")
        assert hasattr(trt[g].IExecutionContext, "execute_async_v3")
    assert int(trt["10.3"].NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 1
    assert int(trt["11.x"].NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 0
    assert not hasattr(trt["11.x"].NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    assert not hasattr(trt["11.x"].BuilderFlag, "FP16")
    assert not hasattr(trt["11.x"].BuilderFlag, "INT8")
    assert hasattr(trt["10.x"].HardwareCompatibilityLevel, "SAME_COMPUTE_CAPABILITY")
    assert not hasattr(trt["10.3"].HardwareCompatibilityLevel, "SAME_COMPUTE_CAPABILITY")
    with pytest.raises(AttributeError):
        trt["10.3"].ICudaEngine.num_bindings  # noqa: B018 (the access is the test)


# ---- quantize --for tensorrt -------------------------------------------------------------


def test_quantize_for_tensorrt_writes_the_qdq_form_tensorrt_parses(trt_ready: Path) -> None:
    manifest = Manifest.load(trt_ready)
    art = manifest.artifacts["step.int8-tensorrt"]
    assert art.file == "step.int8-tensorrt.onnx" and art.precision == "int8-static"
    assert "window.int8-tensorrt" not in manifest.artifacts  # engines take the step graph
    graph = onnx.load(str(manifest.verified_path(trt_ready, "step.int8-tensorrt"))).graph
    inits = {i.name: i for i in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    dq = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    q = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    assert dq and len(dq) == len(q)
    # AddQDQPairToWeight and QuantizeBias=False: every DequantizeLinear dequantizes the output
    # of a QuantizeLinear; no int8 or int32 initializer feeds one
    assert all(producers[n.input[0]].op_type == "QuantizeLinear" for n in dq)
    assert not [i for i in graph.initializer if i.data_type == onnx.TensorProto.INT32]
    # symmetric: zero points are all 0
    for node in q + dq:
        assert not np.any(numpy_helper.to_array(inits[node.input[2]]))
    # per-channel weight scales
    weight_qs = [n for n in q if n.input[0] in inits]
    assert weight_qs and all(len(inits[n.input[1]].dims) == 1 for n in weight_qs)
    assert any(inits[n.input[1]].dims[0] > 1 for n in weight_qs)
    # the recurrent state: h and c are never quantized, the h @ W_hh MatMuls stay fp32, the
    # state outputs and the logits are not dequantized values
    assert not {n.input[0] for n in q} & {"h", "c"}
    state = {o for n in graph.node if n.op_type == "Gather" and n.input[0] in ("h", "c")
             for o in n.output}  # fmt: skip
    recurrent = [n for n in graph.node if n.op_type == "MatMul" and state & set(n.input)]
    assert len(recurrent) == 2  # one per layer
    assert all(producers[i].op_type != "DequantizeLinear" for n in recurrent for i in n.input
               if i in producers)  # fmt: skip
    for out in ("logits", "h_out", "c_out"):
        assert producers[out].op_type != "DequantizeLinear"
    assert sorted(art.info["fp32_nodes"]) == sorted(n.name for n in recurrent)
    assert art.info["argmax_agreement"] > 0.5


def test_quantize_for_tensorrt_stores_a_stratified_parity_sample(trt_ready: Path) -> None:
    manifest = Manifest.load(trt_ready)
    entry = manifest.metrics[PARITY_SAMPLE_KEY]
    assert entry["file"] == PARITY_SAMPLE_FILE and (trt_ready / PARITY_SAMPLE_FILE).is_file()
    assert entry["classes"] == len(manifest.classes) and not entry["missing_classes"]
    assert all(runs >= 2 for runs in entry["runs_per_class"].values()), entry
    with np.load(trt_ready / PARITY_SAMPLE_FILE) as data:
        assert data["x"].shape[1:] == (manifest.window, manifest.n_features)
        assert set(data["y"].tolist()) == set(range(len(manifest.classes)))


def test_stratified_indices_cover_every_class_and_spread_over_runs() -> None:
    y = np.repeat([0, 1, 2], [300, 40, 3])
    runs = np.concatenate([np.repeat(["a", "b", "c", "d", "e"], 60), np.repeat(["f", "g"], 20),
                           ["h", "h", "i"]])  # fmt: skip
    idx = stratified_indices(y, runs, per_class=8, runs_per_class=4, seed=0)
    assert list(np.bincount(y[idx])) == [8, 8, 3]
    assert len(set(runs[idx][y[idx] == 0])) == 4  # 4 of the 5 runs of class 0
    assert set(runs[idx][y[idx] == 1]) == {"f", "g"}
    assert np.array_equal(idx, stratified_indices(y, runs, per_class=8, runs_per_class=4, seed=0))


def test_tensorrt_quantization_takes_static_only(gru_deploy: Path) -> None:
    result = run_cli("quantize", str(gru_deploy), "--mode", "dynamic", "--for", "tensorrt")
    assert result.exit_code == 2
    assert "use `--mode static --for tensorrt`" in result.output


# ---- build-engine per generation -------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("generation", GENERATIONS)
def test_build_engine_per_generation(
    generation: str, precision: str, ready: Path, monkeypatch
) -> None:
    gpu = install(monkeypatch, generation)
    result = run_cli(
        "build-engine", str(ready), "--precision", precision, "--max-batch", "32",
        "--opt-batch", "8", "--workspace", "64",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = Manifest.load(ready)
    L, F, H = manifest.layers, manifest.n_features, manifest.hidden_size

    flags, precision_flags = EXPECTED[(generation, precision)]
    assert _calls(gpu, "Builder.create_network") == [(flags,)]
    assert [a[0] for a in _calls(gpu, "IBuilderConfig.set_flag")] == precision_flags
    assert _calls(gpu, "IBuilderConfig.clear_flag") == ([("TF32",)] if precision == "fp32" else [])
    assert _calls(gpu, "IBuilderConfig.set_memory_pool_limit") == [("WORKSPACE", 64 << 20)]
    assert _calls(gpu, "IOptimizationProfile.set_shape") == [
        ("x", (1, F), (8, F), (32, F)),
        ("h", (L, 1, H), (L, 8, H), (L, 32, H)),
        ("c", (L, 1, H), (L, 8, H), (L, 32, H)),
    ]
    assert len(_calls(gpu, "IBuilderConfig.add_optimization_profile")) == 1
    assert _calls(gpu, "IBuilderConfig.create_timing_cache") == [(0,)]  # a new cache
    strongly = generation in ("10.x", "11.x") or (generation == "10.3" and precision == "int8")
    ((built_strongly, _flags),) = _calls(gpu, "Builder.build_serialized_network")
    assert built_strongly == strongly

    art = manifest.artifacts[f"step.trt-{precision}"]
    info = art.info
    assert info["strongly_typed"] == strongly and info["network_flags"] == flags
    assert info["source"] == ("step.int8-tensorrt" if precision == "int8" else "step")
    assert info["hardware_compatibility_level"] == "NONE"
    assert info["gpu"] == gpu.name and info["multiprocessors"] == gpu.multiprocessors
    assert info["profile_batches"] == {"min": 1, "opt": 8, "max": 32}
    parity = info["parity_vs_onnx"]
    assert parity["classes"] == len(manifest.classes) and parity["windows"] >= 2 * parity["classes"]
    assert parity["source"].startswith(PARITY_SAMPLE_FILE)
    assert parity["max_abs_diff"] <= parity["limits"]["max_abs_diff"]
    assert parity["reference"] == (
        "step.int8-tensorrt.onnx" if precision == "int8" else "step.onnx"
    )
    assert not list(ready.glob(".build-*"))
    # the strongly typed FP16 engine was built from an fp16 copy of the graph: it runs in fp16
    if precision == "fp16":
        assert (parity["max_abs_diff"] > 0) == strongly


def test_int8_from_onnx_runtimes_qdq_form_is_refused_with_the_fix(
    gru_deploy: Path, copy_deploy, monkeypatch, caplog
) -> None:
    deploy = copy_deploy(gru_deploy)
    convert(target_for("quantize", "static"), deploy, calibration_windows=8)
    before = _files(deploy)
    for generation in ("8.6", "10.3", "11.x"):
        install(monkeypatch, generation)
        with caplog.at_level(logging.WARNING):
            result = run_cli("build-engine", str(deploy), "--precision", "int8")
        assert result.exit_code == 2
        lines = result.output.strip().splitlines()
        assert lines[-1].startswith("error: TensorRT cannot parse step.int8-static.onnx")
        assert "DequantizeLinear" in lines[-1] and "--for tensorrt" in lines[-1]
        assert "may refuse" in caplog.text  # the fallback source was announced
        assert _files(deploy) == before


def test_an_engine_beyond_its_parity_limit_is_refused(ready: Path, monkeypatch) -> None:
    install(monkeypatch, "10.3", perturb=0.5)
    before = _files(ready)
    result = run_cli("build-engine", str(ready), "--precision", "fp16", "--max-batch", "16")
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()[-1:]
    assert line.startswith("error: the fp16 engine does not match step.onnx on ONNX Runtime")
    assert "(limit 0.05)" in line and f"of {len(Manifest.load(ready).classes)} classes" in line
    assert _files(ready) == before and "step.trt-fp16" not in Manifest.load(ready).artifacts


def test_a_timing_cache_of_another_version_is_discarded(ready: Path, monkeypatch, caplog) -> None:
    from converters.tensorrt_build import TIMING_CACHE

    install(monkeypatch, "10.3")
    assert run_cli("build-engine", str(ready), "--max-batch", "8").exit_code == 0
    assert b'"version": "10.3.0"' in (ready / TIMING_CACHE).read_bytes()
    monkeypatch.undo()
    gpu = install(monkeypatch, "10.x")
    with caplog.at_level(logging.WARNING):
        result = run_cli("build-engine", str(ready), "--max-batch", "8")
    assert result.exit_code == 0, result.output
    assert "written by another TensorRT version or GPU" in caplog.text
    # tried with ignore_mismatch=False (it raised), then a fresh cache
    assert _calls(gpu, "IBuilderConfig.set_timing_cache") == [("10.3.0", False), ("10.16.0", True)]
    assert b'"version": "10.16.0"' in (ready / TIMING_CACHE).read_bytes()
    # bytes that are no cache at all: create_timing_cache returns None
    (ready / TIMING_CACHE).write_bytes(b"not a cache")
    monkeypatch.undo()
    install(monkeypatch, "8.6")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert run_cli("build-engine", str(ready), "--max-batch", "8").exit_code == 0
    assert "TensorRT refused it" in caplog.text


def test_build_engine_needs_real_windows_and_says_where_to_get_them(
    gru_deploy: Path, copy_deploy, monkeypatch, tmp_path: Path
) -> None:
    deploy = copy_deploy(gru_deploy)
    manifest = Manifest.load(deploy)
    manifest.provenance["config"]["data"]["path"] = str(tmp_path / "gone.parquet")
    manifest.save(deploy)
    gpu = install(monkeypatch, "10.3")
    before = _files(deploy)
    result = run_cli("build-engine", str(deploy), "--max-batch", "8")
    assert result.exit_code == 2
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: no real windows to check the engine on")
    assert "--for tensorrt" in line and "--data" in line
    assert not _calls(gpu, "Builder.build_serialized_network")  # refused before building
    assert _files(deploy) == before


def test_a_tampered_parity_sample_is_refused(ready: Path, monkeypatch) -> None:
    install(monkeypatch, "10.x")
    with open(ready / PARITY_SAMPLE_FILE, "ab") as fh:
        fh.write(b"\0")
    result = run_cli("build-engine", str(ready), "--max-batch", "8")
    assert result.exit_code == 2
    assert "does not match its manifest sha256" in result.output


def test_gpu_check_exits_2_with_one_line_without_tensorrt(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: the script would run its checks")
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: TensorRT is not installed")
    assert done.stdout == ""


def test_gpu_check_runs_through_on_the_fakes(ready: Path, tmp_path: Path) -> None:
    """The script's own logic (not the GPU) on the 10.3 fakes, loaded by a sitecustomize."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from tests.fakes import FakeGpu, make_pycuda, make_tensorrt\n"
        "gpu = FakeGpu()\n"
        'sys.modules["tensorrt"] = make_tensorrt("10.3", gpu)\n'
        "sys.modules.update(make_pycuda(gpu))\n"
    )
    before = _files(ready)
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), str(ready)],
        env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    table = done.stdout.split("\ncheck ", 1)[1]
    for check in (
        "build fp16", "build int8", "fp16 b1 vs step.onnx", "fp16 b64", "fp16 b256",
        "int8 b256 vs step.int8-tensorrt.onnx", "fp16 batch 257 over the profile",
        "tampered engine (sha256)", "tampered engine (TensorRT deserializer)",
        "other compute capability", "other GPU model", "10 reloads",
    ):  # fmt: skip
        assert f"\n{check}" in table, check
    assert "FAIL" not in table and "lost 0.0 MiB" in table
    assert _files(ready) == before  # it works on a copy
