"""The `onnx` target (`edgelstm export`): a checkpoint becomes a parity-checked deployment folder.

Writes model.onnx (window graph), step.onnx (the student's loop-free cell) and manifest.json.
The graphs come from `converters.torch_to_onnx`; each is compared with PyTorch on a stratified
sample of real held-out windows (test and validation splits: every class, several runs each,
`converters.parity.sample_windows`) before anything is moved into the folder.

The manifest's `temperature` is fitted here on the validation windows' logits of the exported
window graph (`edge_lstm.calibration`), so the gateway's probabilities, and with them its
debounce threshold, are calibrated; ECE and Brier before and after go into manifest.metrics.
The manifest's `drift_reference` (converters/drift_reference.py) is computed after it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from converters.drift_reference import reference_for_export
from converters.errors import ConverterError
from converters.onnx_files import finish_onnx, onnx_metadata, op_counts
from converters.outcome import Outcome
from converters.parity import (
    ParitySample,
    StepGraph,
    compare_logits,
    graph_latency,
    ort_session,
    sample_windows,
    step_graph_logits,
    torch_logits,
    window_logits,
)
from converters.staging import Stage, staged
from converters.targets import Target, convert, get_target
from converters.torch_to_onnx import export_step_graph, export_window_graph
from edge_lstm.calibration import calibration_report, fit_temperature
from edge_lstm.config import Config, config_from_dict
from edge_lstm.metrics import softmax
from edge_lstm.models.window_stats import state_width
from runtime.errors import ManifestError
from runtime.manifest import MANIFEST_FILE, Artifact, Manifest

log = logging.getLogger(__name__)

REJECTED_DIR = "rejected"  # int8 variants refused by quantize's accuracy guard


def _comparison_path(checkpoint_dir: Path) -> Path | None:
    """The comparison table next to the checkpoint (student/) or one up (student/baseline/)."""
    for folder in (checkpoint_dir, checkpoint_dir.parent):
        if (folder / "comparison.json").is_file():
            return (folder / "comparison.json").resolve()
    return None


def _remove_previous_export(stage: Stage) -> None:
    """The artifacts an earlier manifest listed go when the new ones move in: another model."""
    try:
        previous = Manifest.load(stage.dest)
    except ManifestError:
        return
    for art in previous.artifacts.values():
        stage.remove(stage.dest / art.file)
    stage.remove(stage.dest / REJECTED_DIR)


def _versions(opset: int) -> dict[str, Any]:
    import onnx
    import onnxruntime
    import torch

    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opset": opset,
    }


def prepare_matching_data(cfg: Config, data_path: Path | None, manifest: Manifest) -> Any:
    """The prepared data, after checking it is what the model was trained on: same features
    and classes, and the same train-split normalization (else the figures would be wrong)."""
    from edge_lstm.data.prepare import prepare_data

    data = prepare_data(cfg, data_path)
    source = data_path or cfg.data.path
    if list(data.features) != manifest.features or list(data.classes) != manifest.classes:
        raise ConverterError(
            f"{source} has other features or classes than the model; pass the sensor logs it "
            "was trained on with --data"
        )
    drift = max(
        float(np.abs(data.normalization.mean - np.asarray(manifest.norm_mean)).max()),
        float(np.abs(data.normalization.std - np.asarray(manifest.norm_std)).max()),
    )
    if drift > 1e-3 * (1 + float(np.abs(manifest.norm_std).max())):
        raise ConverterError(
            f"{source} is not the data the model was trained on: its train-split "
            f"normalization differs by up to {drift:.3g}; pass the training logs with --data"
        )
    if len(data.test.x) == 0:
        raise ConverterError(f"{source}: the test split has no windows to check the model on")
    return data


def _new_manifest(meta: Any, ckpt_dir: Path, opset: int) -> Manifest:
    student = meta.kind == "student"
    model_cfg = meta.model_config
    comparison = _comparison_path(ckpt_dir)
    return Manifest(
        model_name=meta.name,
        model_version=meta.version,
        model_kind=meta.kind,
        features=list(meta.features),
        norm_mean=[float(v) for v in meta.normalization["mean"]],
        norm_std=[float(v) for v in meta.normalization["std"]],
        classes=list(meta.classes),
        window=int(meta.window),
        hop=int(meta.hop),
        cell=model_cfg["cell"] if student else None,
        layers=int(model_cfg["layers"]) if student else 0,
        hidden_size=int(model_cfg["hidden_size"]) if student else 0,
        stats_width=state_width(len(meta.features))
        if student and model_cfg.get("window_stats")
        else 0,
        sample_period_s=float(meta.sample_period_s),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        provenance={
            "config": meta.config,
            "checkpoint": str(ckpt_dir.resolve()),
            "comparison": str(comparison) if comparison else None,
            "exported_with": _versions(opset),
        },
    )


def _add_comparison_rows(manifest: Manifest, n_parameters: int) -> None:
    from converters.comparison import ComparisonRow, update_comparison

    table = manifest.provenance.get("comparison")
    if not table:
        return
    test = manifest.metrics["onnx_test"]
    window = manifest.artifacts["window"]
    notes = "window graph"
    if "step" in manifest.artifacts:
        step_ms = manifest.artifacts["step"].info["latency_ms"]
        notes = (
            f"step graph {step_ms['b1']['median_ms']:.3f} ms/step at b1, "
            f"{step_ms['b256']['median_ms']:.3f} ms at b256"
        )
    latency = window.info["latency_ms"]
    row = ComparisonRow(
        model=manifest.model_name,
        runtime="onnxruntime",
        precision="fp32",
        macro_f1=test["macro_f1"],
        accuracy=test["accuracy"],
        parameters=n_parameters,
        size_bytes=window.size_bytes,
        latency_ms_b1=latency["b1"]["median_ms"],
        latency_ms_b256=latency["b256"]["median_ms"],
        notes=notes,
    )
    update_comparison(Path(table), [row])


def parity_sample(data: Any, windows: int) -> ParitySample:
    """About `windows` held-out windows (test and validation), split evenly over the classes
    present, at least one each, spread over several runs of each class."""
    splits = [data.test, data.val]
    present = np.unique(np.concatenate([s.y for s in splits])).size
    return sample_windows(
        splits, "test and validation splits", per_class=max(1, windows // max(present, 1))
    )


def _export_checked(
    target: Target, model: Any, stage: Path, manifest: Manifest, x: np.ndarray, cfg: Config
) -> tuple[dict[str, str], dict[str, Any]]:
    """Writes the graphs into `stage` and checks each against PyTorch on the parity sample
    `x`; returns {graph: file} and the parity figures."""
    reference = torch_logits(model, x)
    tolerance = cfg.export.parity_tolerance
    files = {"window": target.file_name("window")}
    export_window_graph(model, stage / files["window"], x[:2], cfg.export.opset)
    by_window = window_logits(ort_session(stage / files["window"]), x)
    parity = {"window": compare_logits("window", reference, by_window, tolerance)}
    if manifest.model_kind == "student":
        files["step"] = target.file_name("step")
        export_step_graph(model, stage / files["step"], manifest.n_features, cfg.export.opset)
        graph = StepGraph(ort_session(stage / files["step"]), manifest)
        by_steps = step_graph_logits(graph, x)
        parity["step"] = compare_logits(
            f"step (driven {manifest.window} times)", reference, by_steps, tolerance
        )
    for graph_name, file in files.items():
        finish_onnx(stage / file, onnx_metadata(manifest, graph_name, target.precision))
    return files, parity


def calibrate(window_file: Path, manifest: Manifest, data: Any) -> dict[str, Any]:
    """Sets manifest.temperature from the validation windows (1.0, with a warning and a note,
    when there are none) and returns the calibration figures for manifest.metrics."""
    if len(data.val.x) == 0:
        log.warning(
            "the validation split has no windows: temperature left at 1.0 (uncalibrated "
            "probabilities); give data.split.val a share with whole runs to calibrate"
        )
        manifest.temperature = 1.0
        return {"temperature": 1.0, "note": "no validation windows: temperature not fitted"}
    logits = window_logits(ort_session(window_file), data.val.x)
    manifest.temperature = fit_temperature(logits, data.val.y)
    return {"split": "val", **calibration_report(logits, data.val.y, manifest.temperature)}


def _test_metrics(window_file: Path, manifest: Manifest, data: Any) -> dict[str, Any]:
    """Headline metrics of the ONNX window graph on the test split."""
    from edge_lstm.metrics import compute_metrics

    probs = softmax(window_logits(ort_session(window_file), data.test.x))
    metrics = compute_metrics(probs, data.test.y, manifest.classes)
    return {k: metrics[k] for k in ("n", "accuracy", "macro_f1", "weighted_f1")}


def _report_lines(manifest: Manifest) -> list[str]:
    lines = [
        f"parity {graph}: max |diff| {result['max_abs_diff']:.2e} over "
        f"{result['windows']} windows, argmax identical"
        for graph, result in manifest.metrics["parity"].items()
    ]
    coverage = manifest.metrics["parity_coverage"]
    lines.append(
        f"parity sample ({coverage['source']}): {coverage['classes']} classes, "
        f"{coverage['runs']} runs"
    )
    test = manifest.metrics["onnx_test"]
    lines.append(f"ONNX window graph on the test split: macro-F1 {test['macro_f1']:.4f}")
    calibration = manifest.metrics["calibration"]
    if "before" not in calibration:
        return [*lines, f"temperature 1.0 ({calibration['note']})"]
    before, after = calibration["before"], calibration["after"]
    return [
        *lines,
        f"temperature {manifest.temperature:.3g} fitted on {calibration['windows']} validation "
        f"windows: ECE {before['ece']:.4f} -> {after['ece']:.4f}, "
        f"Brier {before['brier']:.4f} -> {after['brier']:.4f}",
    ]


def export_onnx(
    target: Target,
    checkpoint: Path,
    *,
    out_dir: Path,
    cfg: Config | None = None,
    data_path: Path | None = None,
) -> Outcome:
    """The `onnx` target: exports a checkpoint into `out_dir` after checking parity.

    `cfg` defaults to the config stored in the checkpoint (its export section sets opset,
    parity tolerance and window count); `data_path` overrides where the test windows come from.
    Nothing is left in `out_dir` when a check fails.
    """
    from edge_lstm.checkpoint import load_checkpoint

    ckpt = load_checkpoint(Path(checkpoint))
    meta, model = ckpt.meta, ckpt.model
    cfg = cfg or config_from_dict(meta.config, f"{ckpt.path}/model.json")
    manifest = _new_manifest(meta, ckpt.path, cfg.export.opset)
    data = prepare_matching_data(cfg, data_path, manifest)
    out_dir = Path(out_dir)
    sample = parity_sample(data, cfg.export.parity_windows)
    with staged(out_dir, "export") as stage:
        files, parity = _export_checked(target, model, stage.path, manifest, sample.x, cfg)
        window_file = stage.path / files["window"]
        manifest.metrics = {
            "parity": parity,
            "parity_tolerance": cfg.export.parity_tolerance,
            "parity_coverage": sample.describe(manifest.classes),
            "onnx_test": _test_metrics(window_file, manifest, data),
            "calibration": calibrate(window_file, manifest, data),
            "checkpoint": meta.metrics,
        }
        # after calibrate: the reference's confidence figures are at the fitted temperature
        manifest.drift_reference = reference_for_export(
            window_file, manifest, data, cfg.data.run_column
        )
        for graph, file in files.items():
            info = {
                "op_counts": op_counts(stage.path / file),
                "latency_ms": graph_latency(stage.path / file, manifest, graph, data.test.x),
            }
            artifact = Artifact(file=file, kind=graph, precision=target.precision, info=info)
            manifest.add_artifact(stage.path, target.artifact_name(graph), artifact)
        _remove_previous_export(stage)
        for file in files.values():
            stage.keep(file)
        manifest.save(stage.path)
        stage.keep(MANIFEST_FILE)
    _add_comparison_rows(manifest, meta.n_parameters)
    log.info("exported %s to %s (parity %s)", meta.name, out_dir, parity)
    return Outcome(
        folder=out_dir,
        files=list(files.values()),
        next=target.next_step(out_dir),
        details=_report_lines(manifest),
        result=manifest,
    )


def export(
    checkpoint: Path, out_dir: Path, cfg: Config | None = None, *, data_path: Path | None = None
) -> Manifest:
    """`export_onnx` through the target table, for Python callers: returns the manifest."""
    return convert(
        get_target("onnx"), checkpoint, out_dir=out_dir, cfg=cfg, data_path=data_path
    ).result
