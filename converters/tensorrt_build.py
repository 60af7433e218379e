"""`edgelstm build-engine`: a TensorRT engine of the step graph, built on the device that runs it.

The engine file is exactly what the builder serialized (so `trtexec --loadEngine` still reads
it); its sha256 and build facts (TensorRT version, GPU, compute capability, multiprocessors,
profile, typing, flags) go into the manifest. Everything is written into a stage folder and
moved in at the end (`staging`), so a refused engine leaves the folder as it was.

Before it is recorded, the engine is stepped over whole real test windows (every class, several
runs each: the folder's parity sample from `edgelstm quantize --for tensorrt`, or the test split
rebuilt from the data) next to ONNX Runtime on the graph it was built from, and refused beyond
the limits of its precision (`PARITY_LIMITS`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converters.errors import ConverterError
from converters.outcome import Outcome
from converters.parity import (
    BackendSteps,
    ParitySample,
    StepGraph,
    load_parity_sample,
    ort_session,
    sample_windows,
    step_graph_logits,
)
from converters.staging import Stage, staged
from converters.targets import Target
from converters.tensorrt_compat import (
    builder_logger,
    network_flags,
    set_precision,
    set_workspace,
    strongly_typed,
    use_timing_cache,
)
from edge_lstm.errors import EdgeLstmError
from runtime.backends.cuda_helpers import DeviceFacts, device_facts, import_tensorrt
from runtime.errors import BackendError
from runtime.manifest import MANIFEST_FILE, STEP_INPUT, Artifact, Manifest

log = logging.getLogger(__name__)

TIMING_CACHE = "tensorrt.timing.cache"
PARSER_ERRORS_SHOWN = 3


@dataclass(frozen=True)
class ParityLimit:
    """How far an engine may be from ONNX Runtime on the same graph, over the parity windows."""

    max_abs_diff: float  # largest |logit difference|
    min_argmax_agreement: float  # share of windows with the same top class


# fp32 (TF32 off) differs by kernel order only; fp16 by its 11-bit mantissa over W steps; int8
# runs the same Q/DQ graph, so it differs by rounding and fusion, not by quantization itself
PARITY_LIMITS = {
    "fp32": ParityLimit(1e-3, 0.99),
    "fp16": ParityLimit(5e-2, 0.98),
    "int8": ParityLimit(0.25, 0.95),
}


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
    strongly = strongly_typed(trt, precision)
    logger = builder_logger(trt, log)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, strongly))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model_path.read_bytes()):
        n = parser.num_errors
        errors = "; ".join(str(parser.get_error(i)) for i in range(min(n, PARSER_ERRORS_SHOWN)))
        if n > PARSER_ERRORS_SHOWN:
            errors += f"; and {n - PARSER_ERRORS_SHOWN} more"
        hint = ""
        if precision == "int8" and "tensorrt" not in model_path.name:
            hint = (
                f" (this is ONNX Runtime's Q/DQ form; run `edgelstm quantize {model_path.parent} "
                "--mode static --for tensorrt` for the form TensorRT parses)"
            )
        raise ConverterError(f"TensorRT cannot parse {model_path.name}: {errors}{hint}")
    config = builder.create_builder_config()
    set_workspace(config, trt, workspace_mb << 20)
    set_precision(config, trt, precision, strongly)
    profile = builder.create_optimization_profile()
    profile.set_shape(STEP_INPUT, *((b, manifest.n_features) for b in batches))
    shapes = [manifest.state_shapes(b) for b in batches]
    for k, name in enumerate(manifest.state_names):
        profile.set_shape(name, *(by_batch[k] for by_batch in shapes))
    config.add_optimization_profile(profile)
    use_timing_cache(config, cache, log, TIMING_CACHE)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ConverterError(
            f"TensorRT could not build an engine from {model_path.name} (see the TensorRT log "
            "above); try --precision fp32 or a larger --workspace"
        )
    return bytes(serialized), bytes(config.get_timing_cache().serialize())


def parity_sample(deploy_dir: Path, manifest: Manifest, data_path: Path | None) -> ParitySample:
    """Real test windows: the folder's parity sample, else the test split rebuilt from the
    data (`data_path`, or data.path of the exported config), stratified the same way."""
    if data_path is None:
        sample = load_parity_sample(deploy_dir, manifest)
        if sample is not None:
            return sample
    raw = manifest.provenance.get("config")
    try:
        from converters.export_onnx import prepare_matching_data
        from edge_lstm.config import config_from_dict

        if not isinstance(raw, dict):
            raise ConverterError("the manifest has no provenance config")
        cfg = config_from_dict(raw, f"{deploy_dir}/manifest.json provenance")
        data = prepare_matching_data(cfg, data_path, manifest)
    except (ImportError, OSError, EdgeLstmError, ValueError) as exc:
        raise ConverterError(
            f"no real windows to check the engine on ({type(exc).__name__}: {exc}); run "
            f"`edgelstm quantize {deploy_dir} --mode static --for tensorrt` on the training "
            "machine (it stores test windows in the folder) or pass --data with the sensor logs"
        ) from None
    source = f"test and validation splits of {data_path or cfg.data.path}"
    return sample_windows([data.test, data.val], source)


def _parity(
    engine: Path,
    manifest: Manifest,
    onnx_path: Path,
    precision: str,
    sample: ParitySample,
    batch: int,
) -> dict[str, Any]:
    """Engine vs ONNX Runtime on the graph it was built from, both driven W steps over the
    parity windows `batch` at a time; ConverterError beyond the precision's limits."""
    from runtime.backends.tensorrt_backend import TensorRTStepBackend

    reference = step_graph_logits(StepGraph(ort_session(onnx_path), manifest), sample.x, batch)
    backend = TensorRTStepBackend(engine, manifest)
    try:
        logits = step_graph_logits(BackendSteps(backend, manifest), sample.x, batch)
    finally:
        backend.close()
    limit = PARITY_LIMITS[precision]
    result = {
        **sample.describe(manifest.classes),
        "batch": batch,
        "reference": onnx_path.name,
        "max_abs_diff": float(np.abs(logits - reference).max()),
        "argmax_agreement": float((logits.argmax(1) == reference.argmax(1)).mean()),
        "limits": {
            "max_abs_diff": limit.max_abs_diff,
            "argmax_agreement": limit.min_argmax_agreement,
        },
    }
    diff, agree = result["max_abs_diff"], result["argmax_agreement"]
    if not (diff <= limit.max_abs_diff and agree >= limit.min_argmax_agreement):
        raise ConverterError(
            f"the {precision} engine does not match {onnx_path.name} on ONNX Runtime: max "
            f"|logits diff| {diff:.3g} (limit {limit.max_abs_diff:g}), argmax agreement "
            f"{agree:.1%} (limit {limit.min_argmax_agreement:.0%}) over {result['windows']} test "
            f"windows of {result['classes']} classes; nothing was written (try another "
            "--precision, or more --calibration-windows for int8)"
        )
    return result


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


def _source(target: Target, deploy_dir: Path) -> tuple[Manifest, str, Path]:
    """The folder's manifest, and the name and verified path of the graph the engine is built
    from: the first of the target's sources the folder has."""
    manifest = Manifest.load(deploy_dir)
    if manifest.model_kind != "student":
        raise ConverterError(
            f"{deploy_dir} holds a {manifest.model_kind}, which has no step graph; engines run "
            "the streaming student"
        )
    found = [s for s in target.sources if s in manifest.artifacts]
    if not found:
        if target.precision == "int8":
            raise ConverterError(
                f"{deploy_dir} has no 'step.int8-static' graph, neither in TensorRT's Q/DQ form "
                f"('step.int8-tensorrt') nor in ONNX Runtime's; run `edgelstm quantize "
                f"{deploy_dir} --mode static --for tensorrt` first (INT8 engines are built from "
                "its Q/DQ scales)"
            )
        raise ConverterError(f"{deploy_dir} has no {target.sources[0]!r} graph; run export first")
    source = found[0]
    if source != target.sources[0]:
        log.warning(
            "%s has no %s; building from %s, whose Q/DQ form (INT32 bias, int8 weights without "
            "their own QuantizeLinear) TensorRT may refuse: run `edgelstm quantize %s --mode "
            "static --for tensorrt`",
            deploy_dir,
            target.sources[0],
            source,
            deploy_dir,
        )
    return manifest, source, manifest.verified_path(deploy_dir, source)


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
    if target.precision == "fp16" and strongly_typed(trt, "fp16"):
        model_path = _fp16_onnx(onnx_path, stage.path / "step.fp16.onnx")
    cache_path = stage.dest / TIMING_CACHE
    cache = cache_path.read_bytes() if cache_path.is_file() else b""
    engine, cache = _build(
        trt, model_path, manifest, target.precision, batches, workspace_mb, cache
    )
    stage.keep(TIMING_CACHE).write_bytes(cache)
    return engine


def _typing_info(trt: Any, precision: str) -> dict[str, Any]:
    strongly = strongly_typed(trt, precision)
    info: dict[str, Any] = {"strongly_typed": strongly}
    if hasattr(trt, "NetworkDefinitionCreationFlag"):
        info["network_flags"] = network_flags(trt, strongly)
    return info


def build_tensorrt_engine(
    target: Target,
    deploy_dir: Path,
    *,
    max_batch: int = 256,
    opt_batch: int | None = None,
    workspace_mb: int = 1024,
    data_path: Path | None = None,
) -> Outcome:
    """The `tensorrt-*` targets: the step graph's engine for this GPU, recorded in the manifest.

    The profile covers batches 1..max_batch, tuned for `opt_batch` (default min(64, max)).
    int8 builds from the static QDQ graph (`edgelstm quantize --mode static --for tensorrt`,
    else `--mode static`), never with a calibrator. The engine is refused when it does not
    match ONNX Runtime within PARITY_LIMITS on real test windows (the folder's parity sample, or
    the test split of `data_path` / the exported config's data). The engine's path is the
    outcome's result.
    """
    batches = _profile(max_batch, opt_batch, workspace_mb)
    manifest, source, onnx_path = _source(target, deploy_dir)
    trt, facts = _device()
    sample = parity_sample(deploy_dir, manifest, data_path)  # before a build of minutes
    name, engine_file = target.artifact_name("step"), target.file_name("step", facts)
    started = time.perf_counter()
    with staged(deploy_dir, "build") as stage:
        engine = _compile(trt, target, onnx_path, manifest, batches, workspace_mb, stage)
        info = _engine_info(
            facts,
            manifest,
            source,
            batches,
            workspace_mb=workspace_mb,
            **_typing_info(trt, target.precision),
            hardware_compatibility_level="NONE",
            build_seconds=round(time.perf_counter() - started, 2),
        )
        stage.keep(engine_file).write_bytes(engine)
        previous = manifest.artifacts.get(name)
        if previous is not None and previous.file != engine_file:
            stage.remove(deploy_dir / previous.file)
        artifact = Artifact(engine_file, "step", target.precision, format="tensorrt", info=info)
        manifest.add_artifact(stage.path, name, artifact)
        info["parity_vs_onnx"] = _parity(
            stage.path / engine_file,
            manifest,
            onnx_path,
            target.precision,
            sample,
            max_batch,
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
