"""`edgelstm build-engine`: a TensorRT engine of the step graph, built on the device that runs it.

The engine file is exactly what the builder serialized (so `trtexec --loadEngine` still reads
it); its sha256 and build facts (TensorRT version, GPU, compute capability, profile) go into the
manifest. Everything is written under a temporary name and renamed at the end.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from converters.errors import ConverterError
from converters.parity import StepGraph, ort_session
from converters.targets import check_args, target_for
from converters.tensorrt_compat import (
    builder_logger,
    network_flags,
    set_precision,
    set_workspace,
    strongly_typed,
)
from runtime.backends.cuda_helpers import DeviceFacts, device_facts, import_tensorrt
from runtime.errors import BackendError
from runtime.manifest import STEP_INPUT, Artifact, Manifest

log = logging.getLogger(__name__)

TIMING_CACHE = "tensorrt.timing.cache"
PARITY_WINDOWS = 32


def _fp16_onnx(src: Path, dst: Path) -> Path:
    """An fp16 copy of the graph with fp32 inputs/outputs (strongly typed TensorRT's FP16)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True))
    model.topological_sort()
    onnx.checker.check_model(model.model)
    onnx.save(model.model, str(dst))
    return dst


def _build(
    trt: Any,
    model_path: Path,
    manifest: Manifest,
    precision: str,
    batches: tuple[int, int, int],
    workspace_mb: int,
    cache: bytes,
) -> tuple[bytes, bytes]:
    """Serialized engine and updated timing cache for the step graph at `model_path`."""
    logger = builder_logger(trt, log)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ConverterError(f"TensorRT cannot parse {model_path.name}: {errors}")
    config = builder.create_builder_config()
    set_workspace(config, trt, workspace_mb << 20)
    set_precision(config, trt, precision)
    profile = builder.create_optimization_profile()
    profile.set_shape(STEP_INPUT, *((b, manifest.n_features) for b in batches))
    for name in manifest.state_names:
        profile.set_shape(name, *(manifest.state_shape(b) for b in batches))
    config.add_optimization_profile(profile)
    timing = config.create_timing_cache(cache)
    if not config.set_timing_cache(timing, ignore_mismatch=False):
        log.warning("%s was made by another TensorRT or GPU; starting a new one", TIMING_CACHE)
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=True)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ConverterError(
            f"TensorRT could not build an engine from {model_path.name} (see the TensorRT log "
            "above); try --precision fp32 or a larger --workspace"
        )
    return bytes(serialized), bytes(config.get_timing_cache().serialize())


def _parity(engine: Path, manifest: Manifest, onnx_path: Path, batch: int) -> dict[str, Any]:
    """Engine vs ONNX Runtime on the same graph, both driven W steps over random windows."""
    from runtime.backends.tensorrt_backend import TensorRTStepBackend

    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, manifest.window, manifest.n_features), np.float32)
    reference = StepGraph(
        ort_session(onnx_path), manifest.state_names, manifest.layers, manifest.hidden_size
    ).window_logits(x)
    backend = TensorRTStepBackend(engine, manifest)
    try:
        state = tuple(
            np.zeros(manifest.state_shape(batch), np.float32) for _ in manifest.state_names
        )
        logits = np.empty(0, np.float32)
        for t in range(manifest.window):
            logits, state = backend.step(np.ascontiguousarray(x[:, t]), state)
    finally:
        backend.close()
    return {
        "windows": batch,
        "inputs": "random normal windows",
        "reference": onnx_path.name,
        "max_abs_diff": float(np.abs(logits - reference).max()),
        "argmax_agreement": float((logits.argmax(1) == reference.argmax(1)).mean()),
    }


def _facts() -> tuple[Any, DeviceFacts]:
    try:
        return import_tensorrt(), device_facts()
    except BackendError as exc:
        raise ConverterError(f"cannot build a TensorRT engine here: {exc}") from None


def build_engine(
    deploy_dir: Path,
    precision: str = "fp16",
    max_batch: int = 256,
    workspace_mb: int = 1024,
    opt_batch: int | None = None,
) -> Path:
    """Builds the step graph's engine for this GPU and records it in the manifest.

    The profile covers batches 1..max_batch, tuned for `opt_batch` (default min(64, max)).
    int8 builds from the static QDQ graph (`edgelstm quantize --mode static`), never with a
    calibrator. Returns the engine path.
    """
    target = target_for("build-engine", precision)
    check_args(
        target, {"max_batch": max_batch, "opt_batch": opt_batch, "workspace_mb": workspace_mb}
    )
    opt = opt_batch or min(64, max_batch)
    if not 1 <= opt <= max_batch or workspace_mb < 1:
        raise ConverterError(
            f"need 1 <= --opt-batch <= --max-batch and --workspace >= 1 MB, got "
            f"{opt}/{max_batch}/{workspace_mb}"
        )
    deploy_dir = Path(deploy_dir)
    manifest = Manifest.load(deploy_dir)
    if manifest.model_kind != "student":
        raise ConverterError(
            f"{deploy_dir} holds a {manifest.model_kind}, which has no step graph; engines run "
            "the streaming student"
        )
    source = target.sources[0]
    if source not in manifest.artifacts:
        raise ConverterError(
            f"{deploy_dir} has no {source!r} graph; run `edgelstm quantize {deploy_dir} "
            "--mode static` first (INT8 engines are built from its Q/DQ scales)"
        )
    onnx_path = manifest.verified_path(deploy_dir, source)
    trt, facts = _facts()
    name = target.artifact_name(source)
    engine_file = f"step.{precision}.trt{facts.tensorrt_major_minor}.{facts.gpu_slug}.engine"
    cache_path = deploy_dir / TIMING_CACHE
    started = time.perf_counter()
    stage = Path(tempfile.mkdtemp(prefix=".build-", dir=deploy_dir))
    try:
        model_path = onnx_path
        if precision == "fp16" and strongly_typed(trt):
            model_path = _fp16_onnx(onnx_path, stage / "step.fp16.onnx")
        engine, cache = _build(
            trt,
            model_path,
            manifest,
            precision,
            (1, opt, max_batch),
            workspace_mb,
            cache_path.read_bytes() if cache_path.is_file() else b"",
        )
        (stage / TIMING_CACHE).write_bytes(cache)
        (stage / TIMING_CACHE).replace(cache_path)
        build_seconds = time.perf_counter() - started
        previous = manifest.artifacts.get(name)
        (stage / engine_file).write_bytes(engine)
        info: dict[str, Any] = {
            **facts.as_info(),
            "source": source,
            "source_sha256": manifest.artifacts[source].sha256,
            "profile_batches": {"min": 1, "opt": opt, "max": max_batch},
            "workspace_mb": workspace_mb,
            "strongly_typed": strongly_typed(trt),
            "build_seconds": round(build_seconds, 2),
        }
        manifest.add_artifact(
            stage,
            name,
            Artifact(
                file=engine_file, kind="step", precision=precision, format="tensorrt", info=info
            ),
        )
        info["parity_vs_onnx"] = _parity(
            stage / engine_file, manifest, onnx_path, min(PARITY_WINDOWS, max_batch)
        )
        (stage / engine_file).replace(deploy_dir / engine_file)
        if previous is not None and previous.file != engine_file:
            (deploy_dir / previous.file).unlink(missing_ok=True)
        manifest.save(deploy_dir)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    log.info("built %s in %.1f s: %s", engine_file, build_seconds, info["parity_vs_onnx"])
    return deploy_dir / engine_file
