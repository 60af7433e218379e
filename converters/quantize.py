"""`edgelstm quantize`: int8 variants of a deployment folder's graphs, each accuracy-checked.

dynamic: int8 weights, activations quantized per call (ONNX Runtime's MatMulInteger and
DynamicQuantizeLSTM; its GRU op has no int8 kernel and stays fp32). static: QDQ with ranges
calibrated on real training windows — the form TensorRT consumes for explicit INT8. Only
MatMul/Gemm inputs are quantized, each consumer through its own Q/DQ pair, so the recurrent
state itself (h, c and their element-wise updates) stays fp32: quantizing the state path put c
off by up to 0.75 (docs/ARCHITECTURE.md, "Facts measured").
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from converters.errors import ConverterError
from converters.export_onnx import (
    LOOP_OPS,
    REJECTED_DIR,
    finish_onnx,
    onnx_metadata,
    op_counts,
    prepare_matching_data,
    weight_bytes,
)
from converters.parity import (
    StepGraph,
    graph_latency,
    ort_session,
    step_graph_logits,
    window_logits,
)
from converters.targets import Target, check_args, target_for
from edge_lstm.config import Config, config_from_dict
from runtime.manifest import WINDOW_INPUT, Artifact, Manifest

log = logging.getLogger(__name__)

QUANTIZED_OPS = (
    "MatMulInteger",
    "DynamicQuantizeLSTM",
    "DynamicQuantizeMatMul",
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
)
STATIC_OP_TYPES = ["MatMul", "Gemm"]
CALIBRATION_BATCH = 64


def _config(manifest: Manifest, deploy_dir: Path) -> Config:
    raw = manifest.provenance.get("config")
    if not isinstance(raw, dict):
        raise ConverterError(
            f"{deploy_dir}/manifest.json has no provenance config, so the training and test "
            "windows cannot be rebuilt; re-export with `edgelstm export`"
        )
    return config_from_dict(raw, f"{deploy_dir}/manifest.json provenance")


def _stepper(path: Path, manifest: Manifest) -> StepGraph:
    return StepGraph(ort_session(path), manifest.state_names, manifest.layers, manifest.hidden_size)


def _logits(path: Path, kind: str, manifest: Manifest, x: np.ndarray) -> np.ndarray:
    """Test-split logits: window graphs directly, step graphs driven W steps."""
    if kind == "window":
        return window_logits(ort_session(path), x)
    return step_graph_logits(_stepper(path, manifest), x)


def _calibration_feeds(
    fp32_path: Path, kind: str, manifest: Manifest, x: np.ndarray
) -> list[dict[str, np.ndarray]]:
    """Inputs the calibrator runs: whole windows for a window graph; for a step graph every
    step's reading with the real recurrent state the fp32 graph carried into that step."""
    chunks = [x[i : i + CALIBRATION_BATCH] for i in range(0, len(x), CALIBRATION_BATCH)]
    if kind == "window":
        return [{WINDOW_INPUT: chunk} for chunk in chunks]
    feeds: list[dict[str, np.ndarray]] = []
    graph = _stepper(fp32_path, manifest)
    for chunk in chunks:
        graph.window_logits(chunk, on_step=lambda _t, feed: feeds.append(dict(feed)))
    return feeds


def _calibration_windows(cfg: Config, train_x: np.ndarray, n: int) -> np.ndarray:
    """`n` training windows drawn without replacement (seeded by data.seed)."""
    rng = np.random.default_rng(cfg.data.seed)
    pick = rng.choice(len(train_x), size=min(n, len(train_x)), replace=False)
    return train_x[np.sort(pick)]


class _SkipPreprocessAdvice(logging.Filter):
    """Drops ONNX Runtime's "consider pre-processing" notice, printed on every call: our graphs
    come from the exporter with constants folded, and each result is scored on the test split."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    root = logging.getLogger()
    advice = _SkipPreprocessAdvice()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


def _quantize_file(
    target: Target, src: Path, dst: Path, feeds: list[dict[str, np.ndarray]] | None
) -> None:
    with _quiet_quantizer():
        _run_quantizer(target, src, dst, feeds)


def _run_quantizer(
    target: Target, src: Path, dst: Path, feeds: list[dict[str, np.ndarray]] | None
) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if target.variant == "dynamic":
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        return

    class FeedReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter(feeds or [])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    quantize_static(
        src,
        dst,
        FeedReader(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=STATIC_OP_TYPES,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        # symmetric int8 everywhere: what TensorRT's explicit quantization accepts
        extra_options={
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "DedicatedQDQPair": True,
        },
    )


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


def _quantize_graph(
    target: Target,
    manifest: Manifest,
    deploy_dir: Path,
    kind: str,
    stage: Path,
    data: Any,
    calibration: np.ndarray | None,
) -> tuple[str, dict[str, Any]]:
    """Writes the int8 variant of one graph into `stage`; returns its file name and figures."""
    src = manifest.verified_path(deploy_dir, kind)
    file = src.name.removesuffix(".onnx") + target.suffix
    feeds = None if calibration is None else _calibration_feeds(src, kind, manifest, calibration)
    _quantize_file(target, src, stage / file, feeds)
    finish_onnx(stage / file, onnx_metadata(manifest, kind, target.precision))
    info = _evaluate(manifest, kind, src, stage / file, data.test.x, data.test.y)
    info["mode"] = target.variant
    if calibration is not None:
        info["calibration_windows"] = len(calibration)
    return file, info


def _set_aside(path: Path, deploy_dir: Path) -> None:
    """Moves a refused variant to rejected/ and removes an older accepted copy."""
    (deploy_dir / REJECTED_DIR).mkdir(exist_ok=True)
    path.replace(deploy_dir / REJECTED_DIR / path.name)
    (deploy_dir / path.name).unlink(missing_ok=True)


def quantize(
    deploy_dir: Path,
    mode: str = "dynamic",
    calibration_windows: int | None = None,
    tolerance_points: float | None = None,
    *,
    data_path: Path | None = None,
) -> dict[str, Any]:
    """Writes int8 variants of the window and step graphs and records them in the manifest.

    Returns {artifact name: figures} for the accepted ones. A variant whose test macro-F1 drops
    more than `tolerance_points` (default quantize.tolerance_points of the config) is moved to
    `<deploy_dir>/rejected/`, left out of the manifest, and reported with ConverterError.
    """
    target = target_for("quantize", mode)
    check_args(
        target,
        {"calibration_windows": calibration_windows, "tolerance_points": tolerance_points},
    )
    deploy_dir = Path(deploy_dir)
    manifest = Manifest.load(deploy_dir)
    cfg = _config(manifest, deploy_dir)
    tolerance = cfg.quantize.tolerance_points if tolerance_points is None else tolerance_points
    if tolerance < 0:
        raise ConverterError(f"--tolerance must be >= 0 macro-F1 points, got {tolerance:g}")
    data = prepare_matching_data(cfg, data_path, manifest)
    calibration = None
    if target.variant == "static":
        n = calibration_windows or cfg.quantize.calibration_windows
        calibration = _calibration_windows(cfg, data.train.x, n)

    accepted: dict[str, dict[str, Any]] = {}
    rejected: list[str] = []
    stage = Path(tempfile.mkdtemp(prefix=".quantize-", dir=deploy_dir))
    try:
        for kind in (s for s in target.sources if s in manifest.artifacts):
            name = target.artifact_name(kind)
            file, info = _quantize_graph(
                target, manifest, deploy_dir, kind, stage, data, calibration
            )
            manifest.artifacts.pop(name, None)
            if info["macro_f1_drop_points"] > tolerance:
                _set_aside(stage / file, deploy_dir)
                rejected.append(
                    f"{name} (macro-F1 {info['macro_f1_fp32']:.4f} -> {info['macro_f1']:.4f}, "
                    f"-{info['macro_f1_drop_points']:.2f} points)"
                )
                continue
            (stage / file).replace(deploy_dir / file)
            (deploy_dir / REJECTED_DIR / file).unlink(missing_ok=True)
            manifest.add_artifact(
                deploy_dir,
                name,
                Artifact(file=file, kind=kind, precision=target.precision, info=info),
            )
            accepted[name] = info
        manifest.save(deploy_dir)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    _add_comparison_rows(manifest, target, {a["graph"]: a for a in accepted.values()})
    if rejected:
        raise ConverterError(
            f"int8 ({target.variant}) lost more than {tolerance:g} macro-F1 points on the test "
            f"split: {'; '.join(rejected)}; kept aside in {deploy_dir / REJECTED_DIR} and not "
            "listed in the manifest (try --mode static, more --calibration-windows, or deploy "
            "fp32)"
        )
    return accepted
