"""Non-deep baselines the sequence models are measured against."""

from edge_lstm.baselines.features import feature_names, window_features
from edge_lstm.baselines.window_gbm import (
    BASELINE_DIR,
    BASELINE_KEY,
    BASELINE_NAME,
    WindowBaseline,
    fit_window_baseline,
)

__all__ = [
    "BASELINE_DIR",
    "BASELINE_KEY",
    "BASELINE_NAME",
    "WindowBaseline",
    "feature_names",
    "fit_window_baseline",
    "window_features",
]
