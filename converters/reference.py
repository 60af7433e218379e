"""The comparison table's reference row: window statistics + gradient boosting
(`edge_lstm.baselines`), the strong non-sequence model a student has to beat to earn its cost.

It uses the baseline train-teacher stored beside the teacher (`window-baseline/`) when that one
knows the data's classes and was fitted on the teacher's view of the windows (its sensors and
window length); otherwise it fits one here on the same training split the students train on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from converters.comparison import ComparisonRow
from edge_lstm.baselines import BASELINE_DIR, BASELINE_NAME, WindowBaseline, fit_window_baseline
from edge_lstm.checkpoint import LoadedCheckpoint
from edge_lstm.data import PreparedData
from edge_lstm.errors import EdgeLstmError
from edge_lstm.metrics import compute_metrics

log = logging.getLogger(__name__)

NOTES = "window statistics + gradient boosting; parameters = tree nodes"

# data windows x[N, W, F] -> the same windows as the teacher sees them (its features, its
# normalization)
View = Callable[[np.ndarray], np.ndarray]


def _stored(teacher: LoadedCheckpoint, prepared: PreparedData) -> WindowBaseline | None:
    """The teacher's stored baseline when it fits this data (else None, saying why)."""
    folder = teacher.path / BASELINE_DIR
    if not folder.is_dir():
        return None
    try:
        stored = WindowBaseline.load(folder)
    except EdgeLstmError as exc:
        log.warning("not using %s (%s); fitting the window baseline here", folder, exc)
        return None
    fits = (
        sorted(stored.classes) == sorted(prepared.classes)
        and stored.channels == list(teacher.meta.features)
        and stored.window == prepared.train.x.shape[1]
    )
    if not fits:
        log.warning(
            "%s was fitted for other classes, sensors or windows than this data; fitting the "
            "window baseline here",
            folder,
        )
        return None
    return stored


def reference_row(
    teacher: LoadedCheckpoint, prepared: PreparedData, view: View, seed: int
) -> ComparisonRow:
    """The reference's row: test macro-F1 and accuracy in the data's class order, the saved
    model's size, tree nodes for parameters, and the `latency_ms` figures (one thread)."""
    baseline = _stored(teacher, prepared)
    x_test = prepared.test.x
    if baseline is None:
        baseline = fit_window_baseline(prepared, seed=seed)
        log.info("fitted %s (seed %d) in %.1f s", BASELINE_NAME, seed, baseline.fit_seconds)
    else:
        log.info("using the window baseline stored in %s", teacher.path / BASELINE_DIR)
        x_test = view(x_test)
    order = [baseline.classes.index(c) for c in prepared.classes]
    probs = baseline.predict_proba(x_test)[:, order]
    test = compute_metrics(probs, prepared.test.y, prepared.classes)
    latency = baseline.latency_ms(x_test)
    return ComparisonRow(
        model=BASELINE_NAME,
        runtime="sklearn",
        precision="fp64",
        macro_f1=test["macro_f1"],
        accuracy=test["accuracy"],
        parameters=baseline.parameters,
        size_bytes=baseline.size_bytes,
        latency_ms_b1=latency["b1"],
        latency_ms_b256=latency["b256"],
        notes=NOTES,
    )
