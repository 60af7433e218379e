"""`edgelstm evaluate`: rebuild a data split, score any artifact on it, write JSON + confusion PNG.

The split is rebuilt with `prepare_data` from the artifact's own training config (checkpoint
meta, or the manifest's provenance for ONNX files and engines), so the test windows are the
ones the model never saw. Windows are re-expressed in the artifact's feature order and
normalization before prediction, so scoring on new data uses the model's own statistics.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_lstm.config import Config, config_from_dict, load_config
from edge_lstm.data.alignment import align_labels, align_windows
from edge_lstm.errors import EdgeLstmError
from edge_lstm.metrics import compute_metrics, plot_confusion
from edge_lstm.reporting.predictors import Predictor, open_predictor

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class EvaluationResult:
    """What `evaluate_artifact` measured and where it wrote it."""

    predictor: str
    kind: str
    split: str
    metrics: dict[str, Any]
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


def default_out_dir(path: Path, split: str) -> Path:
    """`<checkpoint dir>/eval-<split>` or `<folder>/eval-<split>-<file stem>` for a file."""
    path = Path(path)
    if path.is_dir():
        return path / f"eval-{split}"
    if path.suffix == ".pt":
        return path.parent / f"eval-{split}"
    return path.parent / f"eval-{split}-{path.stem}"


def split_for(
    predictor: Predictor, cfg: Config, data_path: Path | None, split: str
) -> tuple[np.ndarray, np.ndarray]:
    """The split's windows in the predictor's feature order and normalization, and its labels
    as the predictor's class indices."""
    from edge_lstm.data.prepare import prepare_data

    prepared = prepare_data(cfg, data_path)
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


def evaluate_artifact(
    path: Path,
    *,
    data_path: Path | None = None,
    split: str = "test",
    config_path: Path | None = None,
    out_dir: Path | None = None,
) -> EvaluationResult:
    """Scores a checkpoint, ONNX graph or engine on a split; writes metrics.json, confusion.png."""
    if split not in SPLITS:
        raise EdgeLstmError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    if data_path is not None and not Path(data_path).exists():
        raise EdgeLstmError(f"{data_path}: data file not found")
    path = Path(path)
    predictor = open_predictor(path)
    cfg = resolve_config(predictor, config_path)
    x, labels = split_for(predictor, cfg, Path(data_path) if data_path is not None else None, split)

    started = time.perf_counter()
    probs = predictor.predict_proba(x)
    seconds = time.perf_counter() - started
    metrics = compute_metrics(probs, labels, predictor.classes)

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
        seconds=seconds,
        metrics_path=metrics_path,
        confusion_path=confusion_path,
    )
