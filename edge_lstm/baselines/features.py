"""Summary statistics of a window, per channel and per channel pair: what a tree model can see.

A window x[W, F] becomes one row: for each channel its mean, std, min, max, last − first,
least-squares slope and lag-1 autocorrelation (the shape of its course over the window), then
for channel pairs the std over time of their sum and of their difference. Together these carry
the pair's correlation (var(a+b) − var(a−b) = 4·cov(a, b)), which tells in-phase from
anti-phase motion of two sensors; per-channel statistics alone cannot.

Pairs: all of them for up to PAIR_ALL_UP_TO channels (F·(F−1) columns); beyond that, each
channel with the next PAIR_SPAN channels in feature order, since sensor files list related
channels (the axes of one accelerometer, the phases of one motor) side by side, so the columns
grow linearly with F instead of quadratically.
"""

from __future__ import annotations

import numpy as np

from edge_lstm.errors import DataError

CHANNEL_STATS = ("mean", "std", "min", "max", "delta", "slope", "autocorr1")
PAIR_ALL_UP_TO = 16
PAIR_SPAN = 8
_CHUNK = 4096  # windows per covariance block [chunk, F, F], which bounds memory


def channel_pairs(n_channels: int) -> list[tuple[int, int]]:
    """The channel pairs (i < j) whose sum and difference become features (see the module)."""
    span = n_channels if n_channels <= PAIR_ALL_UP_TO else PAIR_SPAN
    return [(i, j) for i in range(n_channels) for j in range(i + 1, min(n_channels, i + span + 1))]


def feature_names(channel_names: list[str]) -> list[str]:
    """One name per column of `window_features`, e.g. `slope(flow)`, `std(vib_x-vib_y)`."""
    per_channel = [f"{stat}({name})" for stat in CHANNEL_STATS for name in channel_names]
    pairs = channel_pairs(len(channel_names))
    a_b = [(channel_names[i], channel_names[j]) for i, j in pairs]
    return [*per_channel, *(f"std({a}+{b})" for a, b in a_b), *(f"std({a}-{b})" for a, b in a_b)]


def window_features(x: np.ndarray) -> np.ndarray:
    """Windows x[N, W, F] → features [N, 7·F + 2·pairs] (float64), columns as `feature_names`.

    Slope is per reading (time index 0..W−1). A constant channel has std 0 and lag-1
    autocorrelation 0, never NaN.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[1] < 2:
        raise DataError(f"expected windows shaped [N, W, F] with W >= 2, got shape {x.shape}")
    mean = x.mean(axis=1)
    centred = x - mean[:, None, :]
    return np.concatenate([_channel_stats(x, mean, centred), _pair_stats(centred)], axis=1)


def _channel_stats(x: np.ndarray, mean: np.ndarray, centred: np.ndarray) -> np.ndarray:
    sq = (centred**2).sum(axis=1)
    t = np.arange(x.shape[1], dtype=np.float64)
    t -= t.mean()
    slope = np.einsum("w,nwf->nf", t, centred) / (t**2).sum()
    lagged = (centred[:, 1:] * centred[:, :-1]).sum(axis=1)
    autocorr = np.divide(lagged, sq, out=np.zeros_like(sq), where=sq > 0)
    stats = [
        mean,
        np.sqrt(sq / x.shape[1]),
        x.min(axis=1),
        x.max(axis=1),
        x[:, -1] - x[:, 0],
        slope,
        autocorr,
    ]
    return np.concatenate(stats, axis=1)


def _pair_stats(centred: np.ndarray) -> np.ndarray:
    """std(a ± b) from each window's covariance matrix: var(a ± b) = var a + var b ± 2 cov."""
    n, w, f = centred.shape
    first, second = np.array(channel_pairs(f), dtype=np.int64).reshape(-1, 2).T
    out = np.zeros((n, 2 * len(first)))
    for start in range(0, n, _CHUNK):
        block = centred[start : start + _CHUNK]
        cov = np.matmul(block.transpose(0, 2, 1), block) / w  # [chunk, F, F]
        both = cov[:, first, first] + cov[:, second, second]
        cross = 2 * cov[:, first, second]
        rows = slice(start, start + len(block))
        out[rows] = np.sqrt(np.maximum(np.concatenate([both + cross, both - cross], axis=1), 0))
    return out
