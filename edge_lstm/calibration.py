"""Whether a model's confidence means what it says: expected calibration error, Brier score, and
temperature scaling fitted on held-out logits.

The gateway raises a fault when a window's top probability reaches `debounce.threshold`, so a
model that says 0.9 must be right about 90% of the time for that threshold to mean anything.
Temperature scaling (softmax(logits / T), one scalar fitted by minimising the negative
log-likelihood of held-out windows) fixes most over- or under-confidence without moving the
argmax: accuracy and F1 are unchanged, ECE and Brier are not.

Definitions used everywhere in edgelstm:

- ECE: windows are put in `ECE_BINS` (15) equal-width bins of their top probability, (0, 1/15],
  (1/15, 2/15], ..., (14/15, 1]; ECE = Σ_b (n_b / N) · |accuracy_b − mean confidence_b|.
- Brier: mean over windows of Σ_c (p_c − 1[c = label])², the multi-class form (0 is perfect,
  2 the worst).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edge_lstm.errors import EdgeLstmError
from edge_lstm.metrics import softmax

ECE_BINS = 15
T_BOUNDS = (0.05, 20.0)


def _checked(scores: np.ndarray, labels: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, np.int64)
    if scores.ndim != 2 or labels.shape != (scores.shape[0],):
        raise EdgeLstmError(
            f"{what} must be [N, C] with one label per row, got {scores.shape} and {labels.shape}"
        )
    if scores.shape[0] == 0:
        raise EdgeLstmError(f"no windows to compute calibration on (empty {what})")
    if labels.min() < 0 or labels.max() >= scores.shape[1]:
        raise EdgeLstmError(f"labels must lie in [0, {scores.shape[1] - 1}]")
    if not np.isfinite(scores).all():
        raise EdgeLstmError(f"{what} contain NaN or infinite values")
    return scores, labels


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE over `bins` equal-width bins of the top probability (module docstring)."""
    probs, labels = _checked(probs, labels, "probabilities")
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    gap = np.bincount(which, weights=correct, minlength=bins) - np.bincount(
        which, weights=confidence, minlength=bins
    )
    return float(np.abs(gap).sum() / len(labels))


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score: mean of Σ_c (p_c − one-hot_c)² over windows."""
    probs, labels = _checked(probs, labels, "probabilities")
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(labels)), labels] = 1.0
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean −log softmax(logits / T)[label]: what `fit_temperature` minimises."""
    from scipy.special import log_softmax

    logits, labels = _checked(logits, labels, "logits")
    log_p = log_softmax(logits / temperature, axis=1)
    return float(-log_p[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in `T_BOUNDS` that minimises the NLL of softmax(logits / T) on these (held-out)
    windows, searched on log T (bounded Brent), where the NLL is smooth and unimodal enough."""
    from scipy.optimize import minimize_scalar

    logits, labels = _checked(logits, labels, "logits")
    low, high = (math.log(b) for b in T_BOUNDS)
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, labels, math.exp(log_t)),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(math.exp(result.x))


def calibration_figures(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """{"ece", "brier"} of probabilities against labels."""
    return {
        "ece": expected_calibration_error(probs, labels),
        "brier": brier_score(probs, labels),
    }


def calibration_report(
    logits: np.ndarray, labels: np.ndarray, temperature: float
) -> dict[str, Any]:
    """ECE and Brier at T = 1 ("before") and at `temperature` ("after"), with the definition."""
    return {
        "temperature": float(temperature),
        "windows": len(labels),
        "ece_bins": ECE_BINS,
        "before": calibration_figures(softmax(logits), labels),
        "after": calibration_figures(softmax(logits, temperature), labels),
    }
