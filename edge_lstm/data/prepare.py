"""From a config to model-ready data: load, split by run, normalize on train, window."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from edge_lstm.config import Config
from edge_lstm.data.loader import Readings, load_readings
from edge_lstm.data.normalization import Normalization
from edge_lstm.data.split import SPLITS, run_class, split_groups, split_runs
from edge_lstm.data.user_split import check_groups, splits_from_column, splits_from_file
from edge_lstm.data.windows import WindowSet, concat_windows, make_windows
from edge_lstm.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """Everything training, distillation and evaluation need from the sensor logs."""

    features: list[str]
    classes: list[str]
    normalization: Normalization
    train: WindowSet
    val: WindowSet
    test: WindowSet
    split_runs: dict[str, list[str]]
    sample_period_s: float
    readings: pd.DataFrame

    def split(self, name: str) -> WindowSet:
        """The windows of split `name` ("train", "val" or "test")."""
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def class_weights(self) -> np.ndarray:
        """Inverse class frequency of the training windows, scaled so Σ n_c·w_c = N.

        A class without training windows gets weight 0 (it contributes no loss anyway).
        """
        counts = np.bincount(self.train.y, minlength=len(self.classes)).astype(np.float64)
        weights = np.zeros_like(counts)
        present = counts > 0
        weights[present] = counts.sum() / (present.sum() * counts[present])
        return weights.astype(np.float32)


def _sample_period(readings: Readings) -> float:
    ts = readings.frame[readings.timestamp_column].to_numpy()
    runs = readings.frame[readings.run_column].to_numpy()
    steps = np.diff(ts)[runs[1:] == runs[:-1]]
    return round(float(np.median(steps)), 6) if steps.size else 0.0


def _split(readings: Readings, cfg: Config) -> dict[str, list[str]]:
    """The runs of each split, the way data.split says (see SplitConfig)."""
    data = cfg.data
    where = f"in {cfg.source}"
    groups = readings.run_values(data.group_column) if data.group_column else None
    if data.split.mode == "fractions":
        labels = readings.frame[readings.label_column].to_numpy()
        classes = {
            run: run_class(labels[s:e], readings.classes[0])
            for run, (s, e) in readings.run_bounds().items()
        }
        if groups is None:
            return split_runs(classes, data.split, data.seed)
        return split_groups(classes, groups, data.split, data.seed)
    if data.split.column is not None:
        source = f"{readings.path}: column {data.split.column!r} (data.split.column {where})"
        splits = splits_from_column(readings.run_values(data.split.column), source)
    else:
        source = f"data.split.file {where}"
        splits = splits_from_file(Path(data.split.file), list(readings.run_bounds()), readings.path)
    if groups is not None:
        check_groups(
            splits, groups, f"{source}, grouped by data.group_column {data.group_column!r}"
        )
    return splits


def prepare_data(cfg: Config, data_path: Path | None = None) -> PreparedData:
    """Loads cfg.data.path (or `data_path`), splits runs, fits normalization on train, windows.

    Deterministic for cfg.data.seed; raises DataError with an actionable message.
    """
    readings = load_readings(cfg, data_path)
    frame = readings.frame
    bounds = readings.run_bounds()
    labels = frame[readings.label_column].to_numpy()
    splits = _split(readings, cfg)
    values = frame[readings.features].to_numpy(dtype=np.float32)
    train_rows = np.concatenate([np.arange(*bounds[run]) for run in splits["train"]])
    normalization = Normalization.fit(values[train_rows])
    normalized = normalization.apply(values)
    codes = pd.Categorical(labels, categories=readings.classes).codes.astype(np.int64)
    ts = frame[readings.timestamp_column].to_numpy(dtype=np.float64)

    window, n_features = cfg.data.window, len(readings.features)
    sets = {
        name: concat_windows(
            [
                make_windows(
                    normalized[s:e], codes[s:e], ts[s:e], run, window, cfg.data.stride_of(name)
                )
                for run in runs
                for s, e in [bounds[run]]
            ],
            window,
            n_features,
        )
        for name, runs in splits.items()
    }
    missing = [c for i, c in enumerate(readings.classes) if not np.any(sets["train"].y == i)]
    if missing:
        log.warning("no training windows for class(es) %s", ", ".join(missing))
    log.info(
        "%s: %d runs, %d classes, %d features -> windows train %d / val %d / test %d",
        readings.path,
        len(bounds),
        len(readings.classes),
        n_features,
        len(sets["train"]),
        len(sets["val"]),
        len(sets["test"]),
    )
    return PreparedData(
        features=readings.features,
        classes=readings.classes,
        normalization=normalization,
        train=sets["train"],
        val=sets["val"],
        test=sets["test"],
        split_runs=splits,
        sample_period_s=_sample_period(readings),
        readings=frame,
    )
