"""The served artifact evaluated offline on the replayed runs' windows (the report's reference
for the live results)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_lstm.errors import EdgeLstmError


@dataclass
class Offline:
    """The served artifact evaluated offline on the replayed runs' windows."""

    keys: list[tuple[str, float]]
    probs: np.ndarray
    labels: np.ndarray
    classes: list[str]
    readings: Any
    run_column: str
    ts_column: str
    label_column: str
    normal: str


def evaluate_offline(artifact: Path, data_path: Path, runs: list[str]) -> Offline:
    """Runs the served artifact (same file, same step graph) over the test windows offline."""
    from edge_lstm.config import config_from_dict
    from edge_lstm.data.alignment import align_labels, align_windows
    from edge_lstm.data.prepare import prepare_data
    from edge_lstm.reporting.predictors import open_predictor

    predictor = open_predictor(artifact)
    if predictor.config is None:
        raise EdgeLstmError(f"{artifact}: its manifest has no provenance config to rebuild data")
    cfg = config_from_dict(predictor.config, f"{artifact} provenance")
    prepared = prepare_data(cfg, data_path)
    ws = prepared.test
    keep = np.isin(ws.run_ids.astype(str), runs)
    x = align_windows(
        ws.x[keep],
        prepared.features,
        prepared.normalization,
        predictor.features,
        predictor.normalization,
    )
    keys = [
        (str(r), round(float(t), 3)) for r, t in zip(ws.run_ids[keep], ws.end_ts[keep], strict=True)
    ]
    return Offline(
        keys,
        predictor.predict_proba(x).astype(np.float64),
        align_labels(ws.y[keep], prepared.classes, predictor.classes),
        list(predictor.classes),
        prepared.readings,
        cfg.data.run_column,
        cfg.data.timestamp_column,
        cfg.data.label_column,
        cfg.data.normal_class,
    )
