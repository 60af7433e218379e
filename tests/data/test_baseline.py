"""The mean/std baseline's features and probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from edge_lstm.baseline import fit_meanstd_baseline, meanstd_features
from edge_lstm.errors import DataError


def test_meanstd_features_are_channel_means_then_stds():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    feats = meanstd_features(x)
    assert feats.shape == (2, 8)
    np.testing.assert_allclose(feats[:, :4], x.mean(axis=1))
    np.testing.assert_allclose(feats[:, 4:], x.std(axis=1))
    with pytest.raises(DataError, match=r"\[N, W, F\]"):
        meanstd_features(x[0])


def test_baseline_gives_a_probability_per_class(prepared):
    probs = fit_meanstd_baseline(prepared, "val")
    assert probs.shape == (len(prepared.val), len(prepared.classes))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    # easy faults (mean shifts) are learned: far better than chance overall
    assert (probs.argmax(axis=1) == prepared.val.y).mean() > 2.0 / len(prepared.classes)
