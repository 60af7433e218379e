"""`edgelstm quantize`: int8 variants of a deployment folder's graphs, each accuracy-checked.

dynamic: int8 weights, activations quantized per call (ONNX Runtime's MatMulInteger and
DynamicQuantizeLSTM; its GRU op has no int8 kernel and stays fp32). static: QDQ with ranges
calibrated on real training windows — the form TensorRT consumes for explicit INT8. Only
MatMul/Gemm inputs are quantized, each consumer through its own Q/DQ pair, so the recurrent
state itself (h, c and their element-wise updates) stays fp32: quantizing the state path put c
off by up to 0.75 (docs/ARCHITECTURE.md, "Facts measured").

static for TensorRT (`--mode static --for tensorrt`, artifact `step.int8-tensorrt`): the step
graph in the Q/DQ form TensorRT's explicit quantization parses, which ONNX Runtime's defaults
are not (an INT32 bias feeding DequantizeLinear, int8 weights with only a DequantizeLinear):
float weights with their own QuantizeLinear/DequantizeLinear pair (AddQDQPairToWeight),
per-channel weight scales, float biases (QuantizeBias off), symmetric int8 activations, no
quantized outputs (OpTypesToExcludeOutputQuantization), and the recurrent state excluded: the
MatMuls that read the incoming state (h_{t-1} @ W_hh) stay fp32, so no Q/DQ touches h, c, their
updates or h_out/c_out. `check_tensorrt_qdq` verifies all of it on the written file. The run
also stores the parity sample (stratified test windows) that `build-engine` checks engines on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converters.errors import ConverterError
from converters.export_onnx import REJECTED_DIR, prepare_matching_data
from converters.int8_graphs import (
    QUANTIZED_OPS,
    calibration_feeds,
    check_tensorrt_qdq,
    dynamic_file,
    pick_calibration_windows,
    static_file,
)
from converters.onnx_files import LOOP_OPS, finish_onnx, onnx_metadata, op_counts, weight_bytes
from converters.outcome import Outcome
from converters.parity import (
    PARITY_SAMPLE_FILE,
    PARITY_SAMPLE_KEY,
    StepGraph,
    graph_latency,
    ort_session,
    sample_windows,
    save_parity_sample,
    step_graph_logits,
    window_logits,
)
from converters.staging import Stage, staged
from converters.targets import Target
from edge_lstm.config import Config, config_from_dict
from edge_lstm.units import human_size
from runtime.manifest import (
    MANIFEST_FILE,
    Artifact,
    Manifest,
)

log = logging.getLogger(__name__)


def _config(manifest: Manifest, deploy_dir: Path) -> Config:
    raw = manifest.provenance.get("config")
    if not isinstance(raw, dict):
        raise ConverterError(
            f"{deploy_dir}/manifest.json has no provenance config, so the training and test "
            "windows cannot be rebuilt; re-export with `edgelstm export`"
        )
    return config_from_dict(raw, f"{deploy_dir}/manifest.json provenance")


def _logits(path: Path, kind: str, manifest: Manifest, x: np.ndarray) -> np.ndarray:
    """Test-split logits: window graphs directly, step graphs driven W steps."""
    if kind == "window":
        return window_logits(ort_session(path), x)
    return step_graph_logits(StepGraph(ort_session(path), manifest), x)


def _evaluate(
    manifest: Manifest, kind: str, fp32: Path, int8: Path, test_x: np.ndarray, test_y: np.ndarray
) -> dict[str, Any]:
    """Size, macro-F1, argmax agreement and latency of the int8 graph next to its fp32 source."""
    from edge_lstm.metrics import compute_metrics, softmax

    before, after = op_counts(fp32), op_counts(int8)
    ref = _logits(fp32, kind, manifest, test_x)
    out = _logits(int8, kind, manifest, test_x)
    f1 = {
        name: compute_metrics(softmax(logits), test_y, manifest.classes)["macro_f1"]
        for name, logits in (("fp32", ref), ("int8", out))
    }
    accuracy = compute_metrics(softmax(out), test_y, manifest.classes)["accuracy"]
    size_fp32, size_int8 = fp32.stat().st_size, int8.stat().st_size
    return {
        "graph": kind,
        "source": fp32.name,
        "size_bytes_fp32": size_fp32,
        "size_bytes": size_int8,
        "size_ratio": size_int8 / size_fp32,
        "weight_bytes_fp32": weight_bytes(fp32),
        "weight_bytes": weight_bytes(int8),
        "weight_ratio": weight_bytes(int8) / weight_bytes(fp32),
        "macro_f1_fp32": f1["fp32"],
        "macro_f1": f1["int8"],
        "macro_f1_drop_points": (f1["fp32"] - f1["int8"]) * 100,
        "accuracy": accuracy,
        "argmax_agreement": float((ref.argmax(axis=1) == out.argmax(axis=1)).mean()),
        "test_windows": len(test_y),
        "quantized_ops": {op: n for op, n in after.items() if op in QUANTIZED_OPS},
        "fp32_recurrent_ops": sorted(set(after) & LOOP_OPS),
        "op_counts_fp32": before,
        "op_counts": after,
        "latency_ms_fp32": graph_latency(fp32, manifest, kind, test_x),
        "latency_ms": graph_latency(int8, manifest, kind, test_x),
    }


def _add_comparison_rows(manifest: Manifest, target: Target, results: dict[str, dict]) -> None:
    from converters.comparison import ComparisonRow, update_comparison

    table = manifest.provenance.get("comparison")
    if not table or "window" not in results:
        return
    window = results["window"]
    notes = f"{target.name}; window graph ops {window['quantized_ops'] or 'none quantized'}"
    if window["fp32_recurrent_ops"]:
        notes += f", {'/'.join(window['fp32_recurrent_ops'])} stays fp32"
    if "step" in results:
        step = results["step"]
        notes += (
            f"; step graph {step['size_ratio']:.0%} of fp32 size, macro-F1 "
            f"{step['macro_f1']:.4f}, {step['latency_ms']['b1']['median_ms']:.3f} ms/step at b1"
        )
    row = ComparisonRow(
        model=manifest.model_name,
        runtime="onnxruntime",
        precision=target.precision,
        macro_f1=window["macro_f1"],
        accuracy=window["accuracy"],
        parameters=None,
        size_bytes=manifest.artifacts[target.artifact_name("window")].size_bytes,
        latency_ms_b1=window["latency_ms"]["b1"]["median_ms"],
        latency_ms_b256=window["latency_ms"]["b256"]["median_ms"],
        notes=notes,
    )
    update_comparison(Path(table), [row])


def _ms(latency: dict[str, Any], batch: str) -> str:
    return f"{latency[batch]['median_ms']:.3f}"


def result_lines(results: dict[str, dict[str, Any]]) -> list[str]:
    """The table `edgelstm quantize` prints: one row per int8 artifact, fp32 -> int8."""
    header = (
        f"{'artifact':<22} {'size fp32 -> int8':>36} {'macro-F1 fp32 -> int8':>23} "
        f"{'agree':>6} {'ms b1 fp32/int8':>16} {'ms b256 fp32/int8':>18}"
    )
    lines = [header]
    for name, r in results.items():
        size = (
            f"{human_size(r['size_bytes_fp32'])} -> {human_size(r['size_bytes'])} "
            f"({r['size_ratio']:.0%}; weights {r['weight_ratio']:.0%})"
        )
        f1 = f"{r['macro_f1_fp32']:.4f} -> {r['macro_f1']:.4f}"
        b1 = f"{_ms(r['latency_ms_fp32'], 'b1')}/{_ms(r['latency_ms'], 'b1')}"
        b256 = f"{_ms(r['latency_ms_fp32'], 'b256')}/{_ms(r['latency_ms'], 'b256')}"
        lines.append(
            f"{name:<22} {size:>36} {f1:>23} {r['argmax_agreement']:>6.1%} {b1:>16} {b256:>18}"
        )
    for name, r in results.items():
        ops = ", ".join(f"{op} x{n}" for op, n in r["quantized_ops"].items()) or "none"
        fp32 = (
            f"; {'/'.join(r['fp32_recurrent_ops'])} stays fp32" if r["fp32_recurrent_ops"] else ""
        )
        lines.append(f"{name}: quantized ops {ops}{fp32}")
    lines.append("latency: ms per call, 1 thread; window graphs per window, step graphs per step")
    return lines


# writes the int8 variant of the fp32 graph `src` (of kind "window"/"step") to `dst`
Writer = Callable[[str, Path, Path], None]


@dataclass
class _Inputs:
    """A deployment folder, the config and data it was exported from, and the tolerance."""

    target: Target
    deploy_dir: Path
    manifest: Manifest
    cfg: Config
    data: Any
    tolerance: float

    @classmethod
    def load(
        cls,
        target: Target,
        deploy_dir: Path,
        tolerance_points: float | None,
        data_path: Path | None,
    ) -> _Inputs:
        manifest = Manifest.load(deploy_dir)
        cfg = _config(manifest, deploy_dir)
        tolerance = cfg.quantize.tolerance_points if tolerance_points is None else tolerance_points
        if tolerance < 0:
            raise ConverterError(f"--tolerance must be >= 0 macro-F1 points, got {tolerance:g}")
        data = prepare_matching_data(cfg, data_path, manifest)
        return cls(target, deploy_dir, manifest, cfg, data, tolerance)


def _quantize_graph(job: _Inputs, stage: Stage, kind: str, write: Writer) -> tuple[str, dict]:
    """Writes the int8 variant of one graph into the stage; returns its file and figures."""
    target, manifest = job.target, job.manifest
    src = manifest.verified_path(job.deploy_dir, kind)
    file = target.file_name(kind)
    write(kind, src, stage.path / file)
    finish_onnx(stage.path / file, onnx_metadata(manifest, kind, target.precision))
    info = _evaluate(manifest, kind, src, stage.path / file, job.data.test.x, job.data.test.y)
    return file, {**info, "mode": target.variant}


def _quantize(
    job: _Inputs,
    write: Writer,
    extra_info: dict[str, Any],
    also: Callable[[Stage], None] | None = None,
) -> Outcome:
    """Writes the int8 variants of the window and step graphs and records them in the manifest;
    `also(stage)` writes more into the stage before the manifest is saved.

    A variant whose test macro-F1 drops more than the tolerance is moved to `rejected/`, left
    out of the manifest, and reported with ConverterError once the accepted ones are in place.
    """
    target, manifest, deploy_dir = job.target, job.manifest, job.deploy_dir
    accepted: dict[str, dict[str, Any]] = {}
    rejected: list[str] = []
    with staged(deploy_dir, "quantize") as stage:
        for kind in (s for s in target.sources if s in manifest.artifacts):
            name = target.artifact_name(kind)
            file, info = _quantize_graph(job, stage, kind, write)
            info.update(extra_info)
            manifest.artifacts.pop(name, None)
            if info["macro_f1_drop_points"] > job.tolerance:
                stage.keep(file, into=REJECTED_DIR)
                stage.remove(deploy_dir / file)
                rejected.append(
                    f"{name} (macro-F1 {info['macro_f1_fp32']:.4f} -> {info['macro_f1']:.4f}, "
                    f"-{info['macro_f1_drop_points']:.2f} points)"
                )
                continue
            artifact = Artifact(file=file, kind=kind, precision=target.precision, info=info)
            manifest.add_artifact(stage.path, name, artifact)
            stage.keep(file)
            stage.remove(deploy_dir / REJECTED_DIR / file)
            accepted[name] = info
        if also is not None:
            also(stage)
        manifest.save(stage.path)
        stage.keep(MANIFEST_FILE)
    _add_comparison_rows(manifest, target, {a["graph"]: a for a in accepted.values()})
    if rejected:
        raise ConverterError(
            f"int8 ({target.variant}) lost more than {job.tolerance:g} macro-F1 points on the "
            f"test split: {'; '.join(rejected)}; kept aside in {deploy_dir / REJECTED_DIR} and "
            "not listed in the manifest (try --mode static, more --calibration-windows, or "
            "deploy fp32)"
        )
    return Outcome(
        folder=deploy_dir,
        files=[manifest.artifacts[name].file for name in accepted],
        next=target.next_step(deploy_dir),
        details=result_lines(accepted),
        result=accepted,
    )


def quantize_int8_dynamic(
    target: Target,
    deploy_dir: Path,
    *,
    tolerance_points: float | None = None,
    data_path: Path | None = None,
) -> Outcome:
    """The `onnx-int8-dynamic` target: int8 weights, activations quantized per call.

    `tolerance_points` defaults to quantize.tolerance_points of the exported config.
    """
    job = _Inputs.load(target, deploy_dir, tolerance_points, data_path)
    return _quantize(job, lambda _kind, src, dst: dynamic_file(src, dst), {})


def _calibration_set(job: _Inputs, calibration_windows: int | None) -> np.ndarray:
    """Training windows to calibrate on; their number defaults to the exported config's
    quantize.calibration_windows."""
    n = calibration_windows or job.cfg.quantize.calibration_windows
    return pick_calibration_windows(job.cfg, job.data.train.x, n)


def quantize_int8_static(
    target: Target,
    deploy_dir: Path,
    *,
    calibration_windows: int | None = None,
    tolerance_points: float | None = None,
    data_path: Path | None = None,
) -> Outcome:
    """The `onnx-int8-static` target: QDQ with ranges calibrated on training windows.

    `calibration_windows` defaults to quantize.calibration_windows of the exported config.
    """
    job = _Inputs.load(target, deploy_dir, tolerance_points, data_path)
    windows = _calibration_set(job, calibration_windows)

    def write(kind: str, src: Path, dst: Path) -> None:
        static_file(src, dst, calibration_feeds(src, kind, job.manifest, windows))

    return _quantize(job, write, {"calibration_windows": len(windows)})


def quantize_int8_tensorrt(
    target: Target,
    deploy_dir: Path,
    *,
    calibration_windows: int | None = None,
    tolerance_points: float | None = None,
    data_path: Path | None = None,
) -> Outcome:
    """The `onnx-int8-tensorrt` target: the step graph's static QDQ in TensorRT's form (module
    docstring), accuracy-checked like the others, and the parity sample for `build-engine`.

    `calibration_windows` defaults to quantize.calibration_windows of the exported config.
    """
    job = _Inputs.load(target, deploy_dir, tolerance_points, data_path)
    windows = _calibration_set(job, calibration_windows)
    state_names = job.manifest.state_names
    extra: dict[str, Any] = {"calibration_windows": len(windows), "for": "tensorrt"}

    def write(kind: str, src: Path, dst: Path) -> None:
        feeds = calibration_feeds(src, kind, job.manifest, windows)
        extra["fp32_nodes"] = static_file(src, dst, feeds, True, state_names)
        extra["qdq"] = check_tensorrt_qdq(dst, state_names)

    def keep_parity_sample(stage: Stage) -> None:
        sample = sample_windows([job.data.test, job.data.val], "test and validation splits")
        entry = save_parity_sample(stage.path, sample, job.manifest)
        stage.keep(PARITY_SAMPLE_FILE)
        job.manifest.metrics[PARITY_SAMPLE_KEY] = entry

    return _quantize(job, write, extra, also=keep_parity_sample)
