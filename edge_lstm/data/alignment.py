"""Bringing a data split to a model: its feature order and normalization, its class indices.

A model trained on other data (another feature order, other statistics, classes named
differently) can only be scored once windows and labels speak its language.
"""

from __future__ import annotations

import numpy as np

from edge_lstm.data.normalization import Normalization
from edge_lstm.errors import EdgeLstmError


def align_windows(
    x: np.ndarray,
    data_features: list[str],
    data_norm: Normalization,
    model_features: list[str],
    model_norm: Normalization,
) -> np.ndarray:
    """Windows normalized for the data → the model's feature order and normalization."""
    missing = [f for f in model_features if f not in data_features]
    if missing:
        raise EdgeLstmError(
            f"the data lacks {len(missing)} feature(s) the model needs: {', '.join(missing[:8])}"
            f"{' …' if len(missing) > 8 else ''}; evaluate on data with the model's sensors"
        )
    if (
        model_features == data_features
        and np.allclose(data_norm.mean, model_norm.mean, rtol=1e-6, atol=1e-6)
        and np.allclose(data_norm.std, model_norm.std, rtol=1e-6, atol=1e-6)
    ):
        return x
    idx = np.array([data_features.index(f) for f in model_features])
    raw = x[:, :, idx] * data_norm.std[idx] + data_norm.mean[idx]
    return model_norm.apply(raw)


def align_labels(y: np.ndarray, data_classes: list[str], model_classes: list[str]) -> np.ndarray:
    """Data label indices → the model's class indices (by name)."""
    present = [data_classes[i] for i in np.unique(y)]
    unknown = [c for c in present if c not in model_classes]
    if unknown:
        raise EdgeLstmError(
            f"the data has classes the model does not know: {', '.join(unknown)} "
            f"(model classes: {', '.join(model_classes)})"
        )
    mapping = np.array([model_classes.index(c) if c in model_classes else -1 for c in data_classes])
    return mapping[y]
