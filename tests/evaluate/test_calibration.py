"""ECE and Brier on cases worked out by hand, and temperature scaling: it recovers a known
temperature, never moves the argmax, stays in its bounds, and refuses bad input."""

from __future__ import annotations

import numpy as np
import pytest

from edge_lstm.calibration import (
    ECE_BINS,
    T_BOUNDS,
    brier_score,
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
)
from edge_lstm.errors import EdgeLstmError
from edge_lstm.metrics import softmax


def test_ece_worked_out_by_hand() -> None:
    # bin of 0.9: one right, one wrong -> |0.5 - 0.9| = 0.4 on half the windows;
    # bin of 0.6: both right -> |1.0 - 0.6| = 0.4 on the other half
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.6, 0.4]])
    labels = np.array([0, 1, 1, 0])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4)
    # one bin instead of 15 pools the confidences: |0.75 - 0.75| = 0
    assert expected_calibration_error(probs, labels, bins=1) == pytest.approx(0.0)


def test_ece_bins_are_equal_width_on_the_top_probability() -> None:
    """Two windows 0.02 apart share a bin of width 1/15 unless an edge lies between them."""
    same_bin = np.array([[0.81, 0.19], [0.83, 0.17]])  # both in (12/15, 13/15]
    split = np.array([[0.79, 0.21], [0.81, 0.19]])  # 0.8 = 12/15 between them
    right_then_wrong = np.array([0, 1])
    # pooled: |0.5 - 0.82| = 0.32; apart: (|1 - 0.79| + |0 - 0.81|) / 2 = 0.51
    assert expected_calibration_error(same_bin, right_then_wrong) == pytest.approx(0.32)
    assert expected_calibration_error(split, right_then_wrong) == pytest.approx(0.51)
    assert ECE_BINS == 15


def test_brier_worked_out_by_hand() -> None:
    assert brier_score(np.eye(3), np.arange(3)) == 0.0
    assert brier_score(np.array([[0.5, 0.5]]), np.array([0])) == pytest.approx(0.5)
    assert brier_score(np.array([[0.0, 1.0]]), np.array([0])) == pytest.approx(2.0)


def _sampled(temperature: float, n: int = 20_000, seed: int = 0):
    """Logits and labels drawn from softmax(logits / temperature): calibrated at that T."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, size=(n, 4))
    p = softmax(logits, temperature).astype(np.float64)
    labels = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    return logits, np.minimum(labels, 3)


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_fit_temperature_recovers_the_temperature_the_labels_were_drawn_at(true_t) -> None:
    logits, labels = _sampled(true_t)
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_t, rel=0.05)
    nll = negative_log_likelihood
    assert nll(logits, labels, fitted) <= min(nll(logits, labels, t) for t in (1.0, true_t * 1.2))

    report = calibration_report(logits, labels, fitted)
    assert report["after"]["ece"] < report["before"]["ece"]
    assert report["after"]["brier"] < report["before"]["brier"]
    assert report["windows"] == len(labels) and report["ece_bins"] == ECE_BINS
    # scaling by T > 0 never changes which class is on top
    np.testing.assert_array_equal(
        softmax(logits, fitted).argmax(axis=1), softmax(logits).argmax(axis=1)
    )


def test_fit_temperature_stays_in_its_bounds() -> None:
    """Always right (or always wrong) with small margins: the NLL falls all the way to T -> 0
    (T -> infinity), so the fit stops at the bound."""
    logits = np.array([[0.1, -0.1], [-0.1, 0.1]] * 10)
    labels = np.array([0, 1] * 10)
    assert fit_temperature(logits, labels) == pytest.approx(T_BOUNDS[0], rel=1e-2)
    always_wrong = fit_temperature(logits, 1 - labels)
    assert always_wrong == pytest.approx(T_BOUNDS[1], rel=1e-2)


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        (np.zeros((0, 3)), np.zeros(0, int), "no windows"),
        (np.array([[np.nan, 0.0]]), np.array([0]), "NaN"),
        (np.array([[0.5, 0.5]]), np.array([2]), r"labels must lie in \[0, 1\]"),
        (np.array([0.5, 0.5]), np.array([0]), r"must be \[N, C\]"),
    ],
)
def test_bad_input_is_refused(scores, labels, message) -> None:
    for fn in (expected_calibration_error, brier_score, fit_temperature):
        with pytest.raises(EdgeLstmError, match=message):
            fn(scores, labels)
