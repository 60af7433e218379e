"""`edgelstm build-engine`: a TensorRT engine of the step graph, built on the device that runs it.

The engine file is exactly what the builder serialized (so `trtexec --loadEngine` still reads
it); its sha256 and build facts (TensorRT version, GPU, compute capability, profile) go into the
manifest. Everything is written into a stage folder and moved in at the end (`staging`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from converters.errors import ConverterError
from converters.outcome import Outcome
from converters.parity import BackendSteps, StepGraph, ort_session, step_graph_logits
from converters.staging import Stage, staged
from converters.targets import Target
from converters.tensorrt_compat import (
    builder_logger,
    network_flags,
    set_precision,
    set_workspace,
    strongly_typed,
)
from runtime.backends.cuda_helpers import DeviceFacts, device_facts, import_tensorrt
from runtime.errors import BackendError
from runtime.manifest import MANIFEST_FILE, STEP_INPUT, Artifact, Manifest

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
    reference = step_graph_logits(StepGraph(ort_session(onnx_path), manifest), x)
    backend = TensorRTStepBackend(engine, manifest)
    try:
        logits = step_graph_logits(BackendSteps(backend, manifest), x)
    finally:
        backend.close()
    return {
        "windows": batch,
        "inputs": "random normal windows",
        "reference": onnx_path.name,
        "max_abs_diff": float(np.abs(logits - reference).max()),
        "argmax_agreement": float((logits.argmax(1) == reference.argmax(1)).mean()),
    }


def _device() -> tuple[Any, DeviceFacts]:
    """TensorRT and the facts of this machine's GPU, or why an engine cannot be built here."""
    try:
        return import_tensorrt(), device_facts()
    except BackendError as exc:
        raise ConverterError(f"cannot build a TensorRT engine here: {exc}") from None


def _profile(max_batch: int, opt_batch: int | None, workspace_mb: int) -> tuple[int, int, int]:
    """The (min, opt, max) batches of the optimization profile, after checking the options."""
    opt = opt_batch or min(64, max_batch)
    if not 1 <= opt <= max_batch or workspace_mb < 1:
        raise ConverterError(
            f"need 1 <= --opt-batch <= --max-batch and --workspace >= 1 MB, got "
            f"{opt}/{max_batch}/{workspace_mb}"
        )
    return (1, opt, max_batch)


def _source(target: Target, deploy_dir: Path) -> tuple[Manifest, Path]:
    """The folder's manifest and the verified step graph the engine is built from."""
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
    return manifest, manifest.verified_path(deploy_dir, source)


def _engine_info(
    facts: DeviceFacts, manifest: Manifest, source: str, batches: tuple[int, ...], **more: Any
) -> dict[str, Any]:
    """The build facts recorded with the engine (the runtime checks the device ones)."""
    return {
        **facts.as_info(),
        "source": source,
        "source_sha256": manifest.artifacts[source].sha256,
        "profile_batches": dict(zip(("min", "opt", "max"), batches, strict=True)),
        **more,
    }


def _compile(
    trt: Any,
    target: Target,
    onnx_path: Path,
    manifest: Manifest,
    batches: tuple[int, int, int],
    workspace_mb: int,
    stage: Stage,
) -> bytes:
    """The serialized engine, built in `stage`; the updated timing cache is kept with it."""
    model_path = onnx_path
    if target.precision == "fp16" and strongly_typed(trt):
        model_path = _fp16_onnx(onnx_path, stage.path / "step.fp16.onnx")
    cache_path = stage.dest / TIMING_CACHE
    cache = cache_path.read_bytes() if cache_path.is_file() else b""
    engine, cache = _build(
        trt, model_path, manifest, target.precision, batches, workspace_mb, cache
    )
    stage.keep(TIMING_CACHE).write_bytes(cache)
    return engine


def build_tensorrt_engine(
    target: Target,
    deploy_dir: Path,
    *,
    max_batch: int = 256,
    opt_batch: int | None = None,
    workspace_mb: int = 1024,
) -> Outcome:
    """The `tensorrt-*` targets: the step graph's engine for this GPU, recorded in the manifest.

    The profile covers batches 1..max_batch, tuned for `opt_batch` (default min(64, max)).
    int8 builds from the static QDQ graph (`edgelstm quantize --mode static`), never with a
    calibrator. The engine's path is the outcome's result.
    """
    batches = _profile(max_batch, opt_batch, workspace_mb)
    manifest, onnx_path = _source(target, deploy_dir)
    trt, facts = _device()
    name, engine_file = target.artifact_name("step"), target.file_name("step", facts)
    started = time.perf_counter()
    with staged(deploy_dir, "build") as stage:
        engine = _compile(trt, target, onnx_path, manifest, batches, workspace_mb, stage)
        info = _engine_info(
            facts,
            manifest,
            target.sources[0],
            batches,
            workspace_mb=workspace_mb,
            strongly_typed=strongly_typed(trt),
            build_seconds=round(time.perf_counter() - started, 2),
        )
        stage.keep(engine_file).write_bytes(engine)
        previous = manifest.artifacts.get(name)
        if previous is not None and previous.file != engine_file:
            stage.remove(deploy_dir / previous.file)
        artifact = Artifact(engine_file, "step", target.precision, format="tensorrt", info=info)
        manifest.add_artifact(stage.path, name, artifact)
        info["parity_vs_onnx"] = _parity(
            stage.path / engine_file, manifest, onnx_path, min(PARITY_WINDOWS, max_batch)
        )
        manifest.save(stage.path)
        stage.keep(MANIFEST_FILE)
    log.info("built %s in %.1f s: %s", engine_file, info["build_seconds"], info["parity_vs_onnx"])
    return Outcome(
        folder=deploy_dir,
        files=[engine_file],
        next=target.next_step(deploy_dir),
        result=deploy_dir / engine_file,
    )
