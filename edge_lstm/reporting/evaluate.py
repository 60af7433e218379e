"""`edgelstm evaluate`: rebuild a data split, score any artifact on it, write JSON + confusion PNG.

The split is rebuilt with `prepare_data` from the artifact's own training config (checkpoint
meta, or the manifest's provenance for ONNX files and engines), so the test windows are the
ones the model never saw. Windows are re-expressed in the artifact's feature order and
normalization before prediction, so scoring on new data uses the model's own statistics.

Beside the headline metrics, every report says how far they can be trusted and where the
errors are: run-level bootstrap intervals, onset against steady-state windows, detection delay
and false alarms under the gateway's debounce rule (`scoring`), calibration before and after
the artifact's temperature, and the same figures for the window baseline fitted on the same
training split, so no metrics file shows a model without its strongest simple rival, and the
model − baseline differences with paired intervals over the same run resamples.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_lstm.calibration import calibration_figures, calibration_report
from edge_lstm.config import Config, config_from_dict, load_config
from edge_lstm.data.alignment import align_labels, align_windows
from edge_lstm.errors import EdgeLstmError
from edge_lstm.metrics import plot_confusion, summary_lines
from edge_lstm.reporting.predictors import Predictor, open_predictor
from edge_lstm.reporting.recordings import run_truths
from edge_lstm.reporting.scoring import SplitWindows, score, score_lines
from edge_lstm.uncertainty import Interval, paired_bootstrap
from runtime.config import DebounceConfig, load_gateway_config

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class EvaluationResult:
    """What `evaluate_artifact` measured and where it wrote it (`report` is metrics.json)."""

    predictor: str
    kind: str
    split: str
    metrics: dict[str, Any]
    report: dict[str, Any]
    seconds: float
    metrics_path: Path
    confusion_path: Path


def resolve_config(predictor: Predictor, config_path: Path | None) -> Config:
    """--config if given, else the training config stored with the artifact."""
    if config_path is not None:
        return load_config(config_path)
    if not predictor.config:
        raise EdgeLstmError(
            f"{predictor.path}: carries no training config; pass --config to say how to build "
            "the data split"
        )
    return config_from_dict(predictor.config, f"{predictor.path} (stored config)")


def debounce_rule(gateway_config: Path | None) -> DebounceConfig:
    """The gateway's debounce settings: from a gateway config file, else its defaults."""
    if gateway_config is None:
        return DebounceConfig()
    return load_gateway_config(gateway_config).debounce


def default_out_dir(path: Path, split: str) -> Path:
    """`<checkpoint dir>/eval-<split>` or `<folder>/eval-<split>-<file stem>` for a file."""
    path = Path(path)
    if path.is_dir():
        return path / f"eval-{split}"
    if path.suffix == ".pt":
        return path.parent / f"eval-{split}"
    return path.parent / f"eval-{split}-{path.stem}"


def model_view(predictor: Predictor, prepared: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The split's windows in the predictor's feature order and normalization, and its labels
    as the predictor's class indices."""
    windows = prepared.split(split)
    if windows.x.shape[1] != predictor.window:
        raise EdgeLstmError(
            f"the config makes {windows.x.shape[1]}-step windows but {predictor.name} expects "
            f"{predictor.window}; use the config the model was trained with"
        )
    x = align_windows(
        windows.x,
        prepared.features,
        prepared.normalization,
        predictor.features,
        predictor.normalization,
    )
    return x, align_labels(windows.y, prepared.classes, predictor.classes)


def split_windows(prepared: Any, split: str, cfg: Config, rule: DebounceConfig) -> SplitWindows:
    """Runs, ends, onset flags and ground truth of the split's windows, and the hop they were
    cut at (data.train_stride for the train split, when set)."""
    windows = prepared.split(split)
    runs = sorted(set(np.asarray(windows.run_ids).astype(str).tolist()))
    data = cfg.data
    return SplitWindows(
        run_ids=windows.run_ids,
        end_ts=windows.end_ts,
        onset=windows.onset,
        truths=run_truths(
            prepared.readings, data.run_column, data.timestamp_column, data.label_column, runs
        ),
        rule=rule,
        hop_readings=data.stride_of(split),
        sample_period_s=prepared.sample_period_s,
    )


def baseline_figures(
    predictor: Predictor, prepared: Any, split: str, x_model: np.ndarray, windows: SplitWindows
) -> tuple[dict[str, Any], np.ndarray]:
    """The window baseline on the same windows: the one train-teacher stored beside a teacher
    checkpoint (fed the teacher's view of the windows, which it was fitted on), else one fitted
    here on the artifact's training split (fed the split as prepared). Also its predicted class
    of each window, by name, to pair with the model's whatever the two class orders."""
    from edge_lstm.baselines import BASELINE_DIR, BASELINE_NAME, WindowBaseline, fit_window_baseline

    stored = Path(predictor.path) / BASELINE_DIR
    target = prepared.split(split)
    started = time.perf_counter()
    if predictor.kind == "torch" and stored.is_dir():
        baseline = WindowBaseline.load(stored)
        source = f"loaded from {stored}"
        x = x_model
    else:
        baseline = fit_window_baseline(prepared, seed=0)
        source = "fitted on the train split of the artifact's config"
        x = target.x
    labels = align_labels(target.y, prepared.classes, baseline.classes)
    probs = baseline.predict_proba(x)
    figures = {
        "name": BASELINE_NAME,
        "source": source,
        "size_bytes": baseline.size_bytes,
        "seconds": time.perf_counter() - started,
        **score(probs, labels, baseline.classes, windows),
        "calibration": calibration_figures(probs, labels),
    }
    return figures, np.asarray(baseline.classes)[probs.argmax(axis=1)]


def vs_baseline(
    labels: np.ndarray,
    pred: np.ndarray,
    classes: list[str],
    baseline_pred: np.ndarray,
    windows: SplitWindows,
) -> dict[str, Any]:
    """Model − baseline on the same windows, with paired intervals over the same run resamples
    (same n_boot, level and seed as `score`'s): macro-F1 and accuracy on all windows, accuracy
    on the onset windows (None without any). `baseline_pred` holds class names, indexed here in
    the model's classes plus any only the baseline predicts."""
    space = [*classes, *sorted(set(baseline_pred.tolist()) - set(classes))]
    index = {name: i for i, name in enumerate(space)}
    reference = np.asarray([index[name] for name in baseline_pred.tolist()], np.int64)
    run_ids = np.asarray(windows.run_ids).astype(str)
    whole = paired_bootstrap(labels, pred, reference, run_ids, len(space))
    out: dict[str, Any] = {name: whole[name].to_dict() for name in ("macro_f1", "accuracy")}
    onset = np.asarray(windows.onset, bool)
    out["onset_accuracy"] = None
    if onset.any():
        part = (labels[onset], pred[onset], reference[onset], run_ids[onset])
        out["onset_accuracy"] = paired_bootstrap(*part, len(space))["accuracy"].to_dict()
    return out


def evaluate_artifact(
    path: Path,
    *,
    data_path: Path | None = None,
    split: str = "test",
    config_path: Path | None = None,
    out_dir: Path | None = None,
    baseline: bool = True,
    gateway_config: Path | None = None,
) -> EvaluationResult:
    """Scores a checkpoint, ONNX graph or engine on a split; writes metrics.json, confusion.png."""
    from edge_lstm.data.prepare import prepare_data

    if split not in SPLITS:
        raise EdgeLstmError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    if data_path is not None and not Path(data_path).exists():
        raise EdgeLstmError(f"{data_path}: data file not found")
    path = Path(path)
    rule = debounce_rule(gateway_config)
    predictor = open_predictor(path)
    cfg = resolve_config(predictor, config_path)
    prepared = prepare_data(cfg, Path(data_path) if data_path is not None else None)
    x, labels = model_view(predictor, prepared, split)
    windows = split_windows(prepared, split, cfg, rule)

    started = time.perf_counter()
    logits = predictor.predict_logits(x)
    seconds = time.perf_counter() - started
    probs = predictor.probabilities(logits)
    metrics = score(probs, labels, predictor.classes, windows)
    base, paired = None, None
    if baseline:
        base, baseline_pred = baseline_figures(predictor, prepared, split, x, windows)
        pred = probs.argmax(axis=1)
        paired = vs_baseline(labels, pred, predictor.classes, baseline_pred, windows)

    out = Path(out_dir) if out_dir is not None else default_out_dir(path, split)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "artifact": {
            "path": str(path.resolve()),
            "name": predictor.name,
            "kind": predictor.kind,
            "size_bytes": predictor.size_bytes,
        },
        "data": str(Path(data_path or cfg.data.path).resolve()),
        "split": split,
        "predict_seconds": seconds,
        **metrics,
        "calibration": {
            **calibration_report(logits, labels, predictor.temperature),
            "temperature_source": predictor.temperature_source,
        },
        "baseline": base,
        "vs_baseline": paired,
    }
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(report, indent=2) + "\n")
    confusion_path = plot_confusion(
        metrics,
        predictor.classes,
        out / "confusion.png",
        title=f"{predictor.name} — {split} (macro-F1 {metrics['macro_f1']:.3f})",
    )
    log.debug("evaluated %s on %d %s windows in %.2fs", predictor.name, len(x), split, seconds)
    return EvaluationResult(
        predictor=predictor.name,
        kind=predictor.kind,
        split=split,
        metrics=metrics,
        report=report,
        seconds=seconds,
        metrics_path=metrics_path,
        confusion_path=confusion_path,
    )


def calibration_line(calibration: dict[str, Any]) -> str:
    before, after = calibration["before"], calibration["after"]
    return (
        f"calibration ({calibration['ece_bins']}-bin ECE, Brier): T = "
        f"{calibration['temperature']:.3g} ({calibration['temperature_source']}): "
        f"ECE {before['ece']:.4f} -> {after['ece']:.4f}, "
        f"Brier {before['brier']:.4f} -> {after['brier']:.4f}"
    )


def _points(raw: dict[str, Any] | None) -> str:
    """`+4.1 points (95% CI +1.0 to +7.3)` for an Interval dict of a difference."""
    if raw is None:
        return "n/a"
    i = Interval(**raw)
    return (
        f"{i.estimate * 100:+.1f} points ({i.level:.0%} CI {i.low * 100:+.1f} to "
        f"{i.high * 100:+.1f})"
    )


def vs_baseline_line(paired: dict[str, Any]) -> str:
    """The paired differences in points, the figure the report's verdicts quote beside the
    marginal intervals."""
    runs = paired["accuracy"]["units"]
    return (
        f"model − baseline, paired over the same {runs} runs: macro-F1 "
        f"{_points(paired['macro_f1'])}; accuracy {_points(paired['accuracy'])}; onset accuracy "
        f"{_points(paired['onset_accuracy'])}"
    )


def report_lines(report: dict[str, Any]) -> list[str]:
    """The printed summary of a metrics.json: headline and per-class figures, intervals,
    onset/steady, detection, calibration, then the baseline's figures on the same windows and
    the paired model − baseline differences."""
    lines = [*summary_lines(report), *score_lines(report), calibration_line(report["calibration"])]
    base = report["baseline"]
    if base is None:
        return [*lines, "baseline: skipped (--no-baseline)"]
    calibration = base["calibration"]
    lines.append(
        f"baseline {base['name']} ({base['source']}; ECE {calibration['ece']:.4f}, "
        f"Brier {calibration['brier']:.4f}):"
    )
    paired = report.get("vs_baseline")  # absent from metrics.json files of older versions
    return [
        *lines,
        *(f"  {line}" for line in score_lines(base)),
        *([vs_baseline_line(paired)] if paired else []),
    ]
