"""The per-window mean/std logistic-regression baseline the sequence models must beat.

It sees only each channel's mean and standard deviation over a window, so faults that differ
only in temporal structure (frequency, bursts) are invisible to it.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from edge_lstm.data import PreparedData
from edge_lstm.errors import DataError


def meanstd_features(x: np.ndarray) -> np.ndarray:
    """Windows [N, W, F] -> [N, 2F]: per-channel mean, then per-channel std."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3:
        raise DataError(f"expected windows shaped [N, W, F], got shape {x.shape}")
    return np.concatenate([x.mean(axis=1), x.std(axis=1)], axis=1)


def fit_meanstd_baseline(data: PreparedData, split: str = "test") -> np.ndarray:
    """Trains on the train windows' mean/std features; returns probabilities [N, C] on `split`.

    Columns follow data.classes; a class absent from training gets probability 0.
    """
    model = make_pipeline(
        StandardScaler(),
        LogisticRegression(max_iter=3000, class_weight="balanced"),
    )
    model.fit(meanstd_features(data.train.x), data.train.y)
    target = data.split(split)
    probs = np.zeros((len(target), len(data.classes)), dtype=np.float64)
    if len(target):
        probs[:, model.classes_] = model.predict_proba(meanstd_features(target.x))
    return probs
