"""The TensorRT step backend and the gateway around it, through each TensorRT API generation
(8.6, 10.3, current 10.x, 11.x) on the fakes of tests/fakes/.

These tests check OUR use of the TensorRT and pycuda APIs, not TensorRT: the call sequence
(set_input_shape -> set_tensor_address -> execute_async_v3, never the 8.x binding API), buffers
sized by the optimization profile, every CUDA call on the backend's one CUDA thread, memory
freed on close and across reloads, the refusals, and how the gateway clamps its batches to the
engine, warms up within it, closes backends on swap and shutdown and survives a failed round.
Real kernels, precision and speed are checked on a GPU only (scripts/gpu_check.sh).
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from converters.parity import StepGraph, ort_session
from converters.targets import convert, target_for
from runtime.backends.base import open_backend
from runtime.errors import BackendError
from runtime.manifest import Manifest
from runtime.parse import Readings
from tests.fakes import GENERATIONS, FakeGpu, install
from tests.runtime.helpers import gateway_config, offline_windows, select_runs

CUDA_APIS = ("pycuda.mem_alloc", "pycuda.pagelocked_empty", "pycuda.memcpy", "pycuda.Stream",
             "pycuda.DeviceAllocation", "pycuda.HostAllocation", "IExecutionContext.",
             "Runtime.", "ICudaEngine.")  # fmt: skip


def build(deploy: Path, max_batch: int = 32, precision: str = "fp16") -> Path:
    """The engine `edgelstm build-engine` writes with the installed fakes."""
    target = target_for("build-engine", precision)
    return convert(target, deploy, max_batch=max_batch, opt_batch=min(8, max_batch)).result


@pytest.fixture
def lstm(deploy_dir, tmp_path: Path) -> Path:
    """A writable copy of a 1-layer LSTM deployment folder (window 20, hop 5)."""
    return Path(shutil.copytree(deploy_dir("lstm", None), tmp_path / "deploy"))


def _cuda_calls(gpu: FakeGpu) -> list:
    return [c for c in gpu.calls if c.api.startswith(CUDA_APIS)]


@pytest.mark.parametrize("generation", GENERATIONS)
def test_backend_call_sequence_buffers_and_thread(generation: str, lstm: Path, monkeypatch) -> None:
    gpu = install(monkeypatch, generation)
    engine = build(lstm, max_batch=32)
    manifest = Manifest.load(lstm)
    L, F, H, C = manifest.layers, manifest.n_features, manifest.hidden_size, manifest.n_classes
    gpu.calls.clear()

    backend = open_backend(lstm, manifest, "tensorrt", "step.trt-fp16")
    assert backend.max_batch == 32
    load = [c.api for c in gpu.calls]
    assert load.index("pycuda.Context.push") < load.index("Runtime.deserialize_cuda_engine")
    assert [c.args[0] for c in gpu.calls if c.api == "ICudaEngine.get_tensor_profile_shape"] == [
        "x", "h", "c"]  # fmt: skip
    # buffers for the profile's largest shapes, addresses set once per tensor
    sizes = {c.args[0] for c in gpu.calls if c.api == "pycuda.mem_alloc"}
    assert sizes == {32 * F * 4, L * 32 * H * 4, 32 * C * 4}
    assert len([c for c in gpu.calls if c.api == "pycuda.mem_alloc"]) == 6
    addressed = [c.args[0] for c in gpu.calls if c.api == "IExecutionContext.set_tensor_address"]
    assert sorted(addressed) == sorted(["x", "h", "c", "logits", "h_out", "c_out"])
    assert [c.args for c in gpu.calls if c.api == "IExecutionContext.set_input_shape"][:3] == [
        ("x", (32, F)), ("h", (L, 32, H)), ("c", (L, 32, H))]  # fmt: skip

    gpu.calls.clear()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, F)).astype(np.float32)
    state = tuple(rng.standard_normal((L, 5, H)).astype(np.float32) for _ in range(2))
    logits, new_state = backend.step(x, state)
    step = [c.api for c in gpu.calls]
    assert step == [
        "IExecutionContext.set_input_shape", "pycuda.memcpy_htod_async",
        "IExecutionContext.set_input_shape", "pycuda.memcpy_htod_async",
        "IExecutionContext.set_input_shape", "pycuda.memcpy_htod_async",
        "IExecutionContext.execute_async_v3",
        "pycuda.memcpy_dtoh_async", "pycuda.memcpy_dtoh_async", "pycuda.memcpy_dtoh_async",
        "pycuda.Stream.synchronize",
    ]  # fmt: skip
    assert [c.args for c in gpu.calls if c.api == "IExecutionContext.set_input_shape"] == [
        ("x", (5, F)), ("h", (L, 5, H)), ("c", (L, 5, H))]  # fmt: skip
    # the engine ran the fp16 graph (strongly typed builds) or the fp32 one: close to ONNX Runtime
    reference, ref_state = StepGraph(ort_session(lstm / "step.onnx"), manifest).step(
        x, dict(zip(("h", "c"), state, strict=True))
    )
    assert logits.shape == (5, C) and np.abs(logits - reference).max() < 5e-2
    assert np.abs(new_state[1] - ref_state["c"]).max() < 5e-2

    backend.close()
    # every CUDA and TensorRT call of the backend ran on its one CUDA thread
    threads = {c.thread for c in _cuda_calls(gpu)} | {
        c.thread for c in gpu.calls if c.api.startswith("pycuda.Context")}  # fmt: skip
    assert threads == {f"edgelstm-cuda-{engine.stem}"}
    assert threading.current_thread().name not in threads
    assert gpu.used_bytes == 0 and not gpu.host_pinned
    assert [c.api for c in gpu.calls][-2:] == ["pycuda.Context.pop", "pycuda.Context.detach"]
    assert not any(c.api.endswith(("execute_async_v2", "set_binding_shape")) for c in gpu.calls)


def test_batches_over_the_profile_are_refused_and_closed_backends_refuse(
    lstm: Path, monkeypatch
) -> None:
    install(monkeypatch, "10.3")
    build(lstm, max_batch=8)
    manifest = Manifest.load(lstm)
    backend = open_backend(lstm, manifest, "tensorrt", "step.trt-fp16")
    with pytest.raises(BackendError, match=r"batch 9 exceeds the engine's profile \(max 8\)"):
        backend.step(np.zeros((9, manifest.n_features), np.float32), manifest.zero_state(9))
    backend.close()
    backend.close()  # idempotent
    with pytest.raises(BackendError, match="closed"):
        backend.step(np.zeros((1, manifest.n_features), np.float32), manifest.zero_state(1))


def test_ten_reloads_leak_no_device_memory(lstm: Path, monkeypatch) -> None:
    gpu = install(monkeypatch, "10.x")
    build(lstm)
    manifest = Manifest.load(lstm)
    for _ in range(10):
        backend = open_backend(lstm, manifest, "tensorrt", "step.trt-fp16")
        assert gpu.used_bytes > 0
        backend.step(np.zeros((4, manifest.n_features), np.float32), manifest.zero_state(4))
        backend.close()
        assert gpu.used_bytes == 0 and not gpu.host_pinned
    pushes = len(gpu.called("pycuda.Context.push"))
    assert (
        pushes == len(gpu.called("pycuda.Context.pop")) == len(gpu.called("pycuda.Context.detach"))
    )
    assert not [t for t in threading.enumerate() if t.name.startswith("edgelstm-cuda")]


def test_engines_for_another_gpu_or_version_are_refused(lstm: Path, monkeypatch) -> None:
    gpu = install(monkeypatch, "10.3")
    engine = build(lstm)
    from runtime.backends.tensorrt_backend import TensorRTStepBackend

    def manifest_with(**info) -> Manifest:
        manifest = Manifest.load(lstm)
        manifest.artifacts["step.trt-fp16"].info.update(info)
        return manifest

    with pytest.raises(BackendError, match="built for the GPU 'NVIDIA Fake Orin NX'"):
        TensorRTStepBackend(engine, manifest_with(gpu="NVIDIA Fake Orin NX"))
    with pytest.raises(BackendError, match="with 8 multiprocessors, this one has 16"):
        TensorRTStepBackend(engine, manifest_with(multiprocessors=8))
    with pytest.raises(BackendError, match=r"built for compute capability 8\.6"):
        TensorRTStepBackend(engine, manifest_with(compute_capability="8.6"))
    # an engine built to be portable across GPU models loads on another one
    portable = TensorRTStepBackend(
        engine, manifest_with(gpu="Other", hardware_compatibility_level="AMPERE_PLUS")
    )
    portable.close()
    assert gpu.used_bytes == 0

    # the same engine under another TensorRT: the manifest says so before TensorRT is asked
    monkeypatch.undo()
    install(monkeypatch, "10.x", gpu)
    with pytest.raises(
        BackendError, match=r"built for tensorrt version 10\.3\.0, this device has 10\.16\.0"
    ):
        TensorRTStepBackend(engine, Manifest.load(lstm))
    # and if the manifest lied, TensorRT's deserializer refuses it (no thread or memory left)
    with pytest.raises(BackendError, match="cannot deserialize"):
        TensorRTStepBackend(engine, manifest_with(tensorrt_version="10.16.0"))
    assert gpu.used_bytes == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("edgelstm-cuda")]


def test_a_tampered_engine_is_refused(lstm: Path, monkeypatch) -> None:
    install(monkeypatch, "8.6")
    engine = build(lstm)
    blob = bytearray(engine.read_bytes())
    blob[-1] ^= 0xFF
    engine.write_bytes(bytes(blob))
    with pytest.raises(Exception, match="does not match its manifest sha256"):
        open_backend(lstm, Manifest.load(lstm), "tensorrt", "step.trt-fp16")


def test_an_engine_below_the_open_windows_is_refused_and_warmup_stays_within(
    lstm: Path, monkeypatch
) -> None:
    from runtime.model import load_model

    gpu = install(monkeypatch, "10.3")
    manifest = Manifest.load(lstm)
    assert manifest.max_open_windows == 4  # window 20, hop 5
    build(lstm, max_batch=4)
    gpu.calls.clear()
    model = load_model(lstm, "tensorrt", "step.trt-fp16", 1)
    shapes = [c.args[1][0] for c in gpu.calls
              if c.api == "IExecutionContext.set_input_shape" and c.args[0] == "x"]  # fmt: skip
    assert shapes == [4, 1, 4]  # buffers for the profile's max, then warm-up at 1 and 4
    model.close()
    build(lstm, max_batch=2)
    with pytest.raises(BackendError, match="keeps up to 4 windows open"):
        load_model(lstm, "tensorrt", "step.trt-fp16", 1)
    assert gpu.used_bytes == 0


# ---- the gateway ---------------------------------------------------------------------------


def _service(lstm: Path, tmp_path: Path, **sections):
    from runtime.config import load_gateway_config
    from runtime.daemon import Service

    config = gateway_config(
        tmp_path / "gw.yaml", lstm, "127.0.0.1", 9, backend="tensorrt",
        artifact="step.trt-fp16", **sections,
    )  # fmt: skip
    return Service(load_gateway_config(config))


def test_the_gateway_clamps_rounds_to_the_engine_and_closes_backends(
    lstm: Path, tmp_path: Path, tiny_data: Path, monkeypatch
) -> None:
    gpu = install(monkeypatch, "11.x")
    build(lstm, max_batch=16)
    service = _service(lstm, tmp_path, batching={"max_batch": 2048})
    assert service.engine.max_batch == 16
    runs = select_runs(tiny_data, service.model.manifest, count=12, length=30)
    for run in runs:
        service.engine.add(run.run_id, Readings(run.ts, run.values), 0.0)
    rounds = 0
    while service.engine.pending_readings:
        service._round()
        rounds += 1
    assert service.stats.snapshot()["counters"].get("backend_errors", 0) == 0
    assert service.stats.snapshot()["counters"]["windows"] > 0
    first = service.model
    # a reload swaps in a new backend and closes the old one (its CUDA thread ends)
    service._swap(_service(lstm, tmp_path / "b").model)
    assert first.backend._closed and service.model is not first
    service._shutdown()
    assert gpu.used_bytes == 0 and not gpu.host_pinned
    assert not [t for t in threading.enumerate() if t.name.startswith("edgelstm-cuda")]


class _Failing:
    """A backend whose step fails, as a GPU error would."""

    max_batch = None

    def __init__(self, real) -> None:
        self.real = real
        self.fail = True

    def step(self, x, state):
        if self.fail:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return self.real.step(x, state)

    def close(self) -> None:
        self.real.close()


def test_a_failed_round_is_counted_and_serving_goes_on(
    deploy_dir, tmp_path: Path, tiny_data: Path
) -> None:
    from runtime.config import load_gateway_config
    from runtime.daemon import Service
    from runtime.replay import Run

    deploy = deploy_dir("gru", None)
    config = gateway_config(tmp_path / "gw.yaml", deploy, "127.0.0.1", 9)
    service = Service(load_gateway_config(config))
    runs = select_runs(tiny_data, service.model.manifest, count=3, length=60)
    failing = _Failing(service.model.backend)
    service.model.backend = failing
    for run in runs:
        service.engine.add(run.run_id, Readings(run.ts, run.values), 0.0)
    service._round()  # the first reading of each device: the backend fails, nothing raises
    counters = service.stats.snapshot()["counters"]
    assert counters["backend_errors"] == 1 and counters["dropped_backend_error"] == len(runs)
    failing.fail = False
    results = []
    while service.engine.pending_readings:
        found, _rows = service.engine.step_round(service.model.backend)
        results += found
    # the devices restarted at the reading after the dropped one: every window is the window
    # graph on W consecutive readings, none includes the dropped reading
    rest = [Run(r.run_id, r.ts[1:], r.values[1:], r.labels[1:]) for r in runs]
    reference = offline_windows(deploy, rest)
    got = {(r.device_id, r.start_ts): r.probs for r in results}
    assert set(got) == set(reference)
    assert max(np.abs(got[k] - p).max() for k, p in reference.items()) <= 1e-4
    service._shutdown()


def test_a_backend_exception_of_another_type_becomes_a_backend_error(deploy_dir) -> None:
    from runtime.streams import StreamEngine

    deploy = deploy_dir("gru", None)
    manifest = Manifest.load(deploy)
    counts: dict[str, int] = {}
    engine = StreamEngine(
        manifest, sample_period_s=0.1, device_queue=100, max_batch=64,
        count=lambda name, n: counts.__setitem__(name, counts.get(name, 0) + n),
    )  # fmt: skip
    engine.add("a", Readings(np.array([1.0, 1.1]), np.zeros((2, manifest.n_features))), 0.0)
    failing = _Failing(open_backend(deploy, manifest))
    with pytest.raises(BackendError, match="illegal memory access"):
        engine.step_round(failing)
    assert counts == {"dropped_backend_error": 1} and engine.open_windows == 0
    assert engine.pending_readings == 1
