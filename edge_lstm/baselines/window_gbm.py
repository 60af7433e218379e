"""Gradient-boosted trees on window statistics: the non-deep baseline a sequence model must beat.

The first thing a data scientist would try on windowed sensor data: summary statistics of each
window (`features.window_features`) into scikit-learn's HistGradientBoostingClassifier, with
balanced class weights. If an LSTM is not clearly ahead of this, its temporal modelling is not
earning its cost.
"""

from __future__ import annotations

import json
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import sklearn
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from edge_lstm.baselines.features import feature_names, window_features
from edge_lstm.errors import DataError, EdgeLstmError
from edge_lstm.latency import measure_latency

if TYPE_CHECKING:
    from edge_lstm.data import PreparedData

BASELINE_NAME = "gbm-window-stats"
MODEL_FILE = "model.pkl"
META_FILE = "baseline.json"
# One OpenMP thread to fit and to time: on a busy 2-core box more threads made timings erratic
# (docs/ARCHITECTURE.md, "Facts measured"), and a gateway core is one core.
THREADS = 1
LATENCY_BATCHES = {"b1": 1, "b256": 256}
BASELINE_DIR = "window-baseline"  # the folder train-teacher saves the baseline in
BASELINE_KEY = "baseline_window_gbm"  # its figures' key in the teacher's metrics.json
_META_KEYS = ("classes", "channels", "window", "seed", "fit_seconds", "sklearn_version")


def _estimator(seed: int) -> HistGradientBoostingClassifier:
    """Settings that fit the demo's ~10k training windows (480 features) in ~20 s of one core:
    63 bins and 15 leaves per tree (255 bins took 3× as long for no gain on validation), at
    most 300 rounds, stopped after 10 without gain on a held-out 10% of the windows."""
    return HistGradientBoostingClassifier(
        learning_rate=0.1,
        max_iter=300,
        max_leaf_nodes=15,
        max_bins=63,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=10,
        class_weight="balanced",
        random_state=seed,
    )


def _version(text: str) -> str:
    """major.minor of a version string: pickles of scikit-learn models are not portable
    across minor releases."""
    return ".".join(text.split(".")[:2])


@dataclass
class WindowBaseline:
    """A fitted baseline: the tree model, its classes and the channels of its windows.

    `classes` are all the classes of the data (the columns of `predict_proba`); the model
    knows the indices it saw in training (`model.classes_`). `model_bytes` is the model as
    saved (a pickle): what `size_bytes` counts and `save` writes.
    """

    model: HistGradientBoostingClassifier
    classes: list[str]
    channels: list[str]
    window: int
    seed: int
    fit_seconds: float
    model_bytes: bytes = field(repr=False)

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        classes: list[str],
        seed: int = 0,
        channel_names: list[str] | None = None,
    ) -> WindowBaseline:
        """Fits on windows x[N, W, F] with labels y[N] (indices into `classes`).

        `channel_names` name the F channels in feature names (default `ch0`, `ch1`, ...).
        """
        x, y = np.asarray(x), np.asarray(y, dtype=np.int64)
        if x.ndim != 3 or len(x) != len(y):
            raise DataError(
                f"expected windows [N, W, F] and labels [N], got shapes {x.shape} and {y.shape}"
            )
        if len(np.unique(y)) < 2:
            raise DataError("the window baseline needs training windows of at least 2 classes")
        if y.min() < 0 or y.max() >= len(classes):
            raise DataError(f"labels must lie in [0, {len(classes) - 1}] (one per class)")
        channels = list(channel_names or [f"ch{i}" for i in range(x.shape[2])])
        if len(channels) != x.shape[2]:
            raise DataError(f"{len(channels)} channel names for {x.shape[2]} channels")
        started = time.perf_counter()
        model = _estimator(seed)
        with threadpool_limits(limits=THREADS):
            model.fit(window_features(x), y)
        return cls(
            model=model,
            classes=list(classes),
            channels=channels,
            window=x.shape[1],
            seed=seed,
            fit_seconds=time.perf_counter() - started,
            model_bytes=pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL),
        )

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probabilities [N, len(classes)] (float64); a class absent from training gets 0."""
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[1:] != (self.window, len(self.channels)):
            raise DataError(
                f"the window baseline takes windows [N, {self.window}, {len(self.channels)}], "
                f"got shape {x.shape}"
            )
        probs = np.zeros((len(x), len(self.classes)), dtype=np.float64)
        if len(x):
            probs[:, self.model.classes_] = self.model.predict_proba(window_features(x))
        return probs

    @property
    def feature_names(self) -> list[str]:
        return feature_names(self.channels)

    @property
    def size_bytes(self) -> int:
        """Bytes of the saved model file (MODEL_FILE)."""
        return len(self.model_bytes)

    @property
    def parameters(self) -> int:
        """Tree nodes over all trees (each holds a split or a leaf value): what stands in for a
        network's parameter count. Read from scikit-learn's fitted predictors."""
        return sum(len(tree.nodes) for stage in self.model._predictors for tree in stage)

    def latency_ms(self, x: np.ndarray) -> dict[str, float]:
        """Median ms of `predict_proba`, features included, on one thread: {"b1": one window,
        "b256": 256 windows (x's windows repeated if it has fewer)}."""
        x = np.asarray(x)
        if not len(x):
            raise DataError("no windows to time the window baseline on")
        out = {}
        with threadpool_limits(limits=THREADS):
            for key, batch in LATENCY_BATCHES.items():
                windows = np.resize(x, (batch, *x.shape[1:]))
                timing = measure_latency(
                    self.predict_proba, windows, repeats=30 if batch == 1 else 5
                )
                out[key] = float(timing["median_ms"])
        return out

    def save(self, folder: Path) -> Path:
        """Writes MODEL_FILE (a pickle: load only folders you trust) and META_FILE; returns
        the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MODEL_FILE).write_bytes(self.model_bytes)
        meta = {
            "name": BASELINE_NAME,
            "classes": self.classes,
            "channels": self.channels,
            "window": self.window,
            "feature_names": self.feature_names,
            "seed": self.seed,
            "fit_seconds": self.fit_seconds,
            "iterations": int(self.model.n_iter_),
            "size_bytes": self.size_bytes,
            "sklearn_version": sklearn.__version__,
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: Path) -> WindowBaseline:
        """A baseline saved by `save`; refuses one of another scikit-learn major.minor."""
        folder = Path(folder)
        meta = _read_meta(folder)
        saved, here = meta["sklearn_version"], sklearn.__version__
        if _version(saved) != _version(here):
            raise EdgeLstmError(
                f"{folder}: the window baseline was saved with scikit-learn {saved}, this "
                f"environment has {here}; fit it again (edgelstm train-teacher) or install "
                f"scikit-learn=={saved}"
            )
        try:
            blob = (folder / MODEL_FILE).read_bytes()
            model = pickle.loads(blob)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError) as exc:
            raise EdgeLstmError(
                f"{folder / MODEL_FILE}: cannot load the window baseline ({exc})"
            ) from None
        return cls(
            model=model,
            classes=meta["classes"],
            channels=meta["channels"],
            window=meta["window"],
            seed=meta["seed"],
            fit_seconds=meta["fit_seconds"],
            model_bytes=blob,
        )


def _read_meta(folder: Path) -> dict[str, Any]:
    path = folder / META_FILE
    if not path.is_file():
        raise EdgeLstmError(
            f"{folder}: no window baseline here ({META_FILE} missing); train-teacher writes one "
            "to <teacher folder>/window-baseline"
        )
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EdgeLstmError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("name") != BASELINE_NAME:
        raise EdgeLstmError(f"{path}: not a {BASELINE_NAME} baseline")
    missing = [key for key in _META_KEYS if key not in meta]
    if missing:
        raise EdgeLstmError(f"{path}: incomplete, lacks {', '.join(missing)}; fit it again")
    return meta


def fit_window_baseline(data: PreparedData, seed: int = 0) -> WindowBaseline:
    """The baseline fitted on data.train, its channels named by data.features."""
    return WindowBaseline.fit(
        data.train.x, data.train.y, data.classes, seed=seed, channel_names=data.features
    )
