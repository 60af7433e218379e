"""window_features: the statistics on hand-made windows, their names, and no NaN."""

from __future__ import annotations

import numpy as np
import pytest

from edge_lstm.baselines import feature_names, window_features
from edge_lstm.baselines.features import CHANNEL_STATS, PAIR_SPAN, channel_pairs
from edge_lstm.errors import DataError


def _column(x: np.ndarray, names: list[str], name: str) -> np.ndarray:
    return window_features(x)[:, feature_names(names).index(name)]


def test_per_channel_statistics_of_a_ramp_and_a_constant():
    w = 10
    ramp = 3.0 + 0.5 * np.arange(w)
    x = np.stack([ramp, np.full(w, 2.0)], axis=1)[None].astype(np.float32)  # [1, W, 2]
    names = ["ramp", "flat"]
    row = dict(zip(feature_names(names), window_features(x)[0], strict=True))
    assert row["mean(ramp)"] == pytest.approx(ramp.mean())
    assert row["std(ramp)"] == pytest.approx(ramp.std())
    assert (row["min(ramp)"], row["max(ramp)"]) == (3.0, 7.5)
    assert row["delta(ramp)"] == pytest.approx(4.5)
    assert row["slope(ramp)"] == pytest.approx(0.5)
    # a straight line: each reading is almost the next one
    assert row["autocorr1(ramp)"] == pytest.approx(0.7, abs=1e-9)
    assert row["std(flat)"] == 0 and row["slope(flat)"] == 0 and row["delta(flat)"] == 0
    assert row["autocorr1(flat)"] == 0  # constant: 0, not NaN
    assert row["std(ramp+flat)"] == pytest.approx(ramp.std())
    assert row["std(ramp-flat)"] == pytest.approx(ramp.std())
    assert np.isfinite(window_features(np.zeros((3, w, 2)))).all()


def test_autocorrelation_tells_a_fast_from_a_slow_oscillation():
    t = np.arange(60)
    x = np.stack([np.sin(2 * np.pi * t / 2.5), np.sin(2 * np.pi * t / 30)], axis=1)[None]
    fast, slow = (_column(x, ["a", "b"], f"autocorr1({c})")[0] for c in "ab")
    assert fast < -0.5 and slow > 0.9


def test_pair_statistics_show_in_phase_against_anti_phase():
    t = np.arange(40)
    tone = np.sin(2 * np.pi * t / 12)
    x = np.stack([np.stack([tone, tone, -tone], axis=1)])  # b copies a, c mirrors it
    row = dict(zip(feature_names(list("abc")), window_features(x)[0], strict=True))
    assert row["std(a-b)"] == pytest.approx(0.0, abs=1e-7)
    assert row["std(a+b)"] == pytest.approx(2 * tone.std())
    assert row["std(a+c)"] == pytest.approx(0.0, abs=1e-7)
    assert row["std(a-c)"] == pytest.approx(2 * tone.std())


def test_shape_names_and_the_pair_limit():
    x = np.random.default_rng(0).standard_normal((5, 12, 4)).astype(np.float32)
    names = [f"c{i}" for i in range(4)]
    feats = window_features(x)
    assert feats.dtype == np.float64
    assert feats.shape == (5, len(CHANNEL_STATS) * 4 + 4 * 3) == (5, len(feature_names(names)))
    assert len(set(feature_names(names))) == feats.shape[1]
    # all pairs up to 16 channels, then each channel with its next PAIR_SPAN ones
    assert len(channel_pairs(16)) == 16 * 15 // 2
    wide = channel_pairs(24)
    assert max(j - i for i, j in wide) == PAIR_SPAN and len(wide) == len(set(wide))
    assert len(wide) == sum(min(PAIR_SPAN, 23 - i) for i in range(24))
    assert window_features(np.zeros((0, 12, 24))).shape == (0, 7 * 24 + 2 * len(wide))
    assert window_features(x[:, :, :1]).shape == (5, 7)  # one channel: no pairs
    with pytest.raises(DataError, match=r"\[N, W, F\]"):
        window_features(x[0])
