"""Exact running statistics of the window so far, for a model's head: what the baseline has.

The window-statistics baseline sees each channel's mean, spread, range and change over the
window; a recurrent state has to learn to carry them and, with few runs, does not. A model
with `window_stats` gets them exactly, beside its hidden state. The spread goes in as log std:
a frozen transmitter's std sits a factor 10 below its noise floor, which a tree splits on at
any scale but a linear layer hardly sees as std (0.005 against 0.08 in training stds beside
means of ±2); as log std it is −5 against −2.5. They stream: a [1, B, 5F + 1]
state holds per channel the window's first value, the sums of (x − first) and (x − first)²,
the running max and min, and the count. Summing deviations from the first value (not raw
values) keeps float32 variance exact enough on offset channels; the window graph computes the
same sums in one pass, so step and window agree within float rounding (1e-4 is the contract).
"""

from __future__ import annotations

import torch
from torch import Tensor

N_STATS = 5  # mean, log std, last − first, max, min per channel
_VAR_FLOOR = 1e-5  # log std of a constant channel: log(√1e-5) ≈ −5.8, below any live noise


def state_width(n_features: int) -> int:
    """Width of the running-statistics state: first, Σd, Σd², max, min per channel, count."""
    return N_STATS * n_features + 1


def n_stats_features(n_features: int) -> int:
    """How many statistics the head receives."""
    return N_STATS * n_features


def _features(
    first: Tensor, s1: Tensor, s2: Tensor, high: Tensor, low: Tensor, n: Tensor, last: Tensor
) -> Tensor:
    """[mean, log std, last − first, max, min] per channel from the sums of d = x − first."""
    mean_d = s1 / n
    var = (s2 / n - mean_d * mean_d).clamp_min(0.0)
    log_std = 0.5 * torch.log(var + _VAR_FLOOR)
    return torch.cat([first + mean_d, log_std, last - first, high, low], dim=1)


def window_stats(x: Tensor) -> Tensor:
    """x[B, W, F] -> statistics [B, 5F] of each whole window."""
    first = x[:, 0]
    d = x - first.unsqueeze(1)
    n = torch.full_like(first[:, :1], float(x.shape[1]))
    return _features(first, d.sum(1), (d * d).sum(1), x.amax(1), x.amin(1), n, x[:, -1])


def zero_stats_state(n_features: int, batch: int, like: Tensor) -> Tensor:
    """The state a window opens with: zeros [1, batch, 5F + 1] (count 0 marks 'no reading')."""
    return like.new_zeros((1, batch, state_width(n_features)))


def first_reading(state: Tensor) -> Tensor:
    """The window's first reading [B, F] held in a statistics state [1, B, 5F + 1]."""
    n_features = (state.shape[-1] - 1) // N_STATS
    return state[0, :, :n_features]


def step_stats(x_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """Adds reading x_t[B, F] to state[1, B, 5F + 1]; returns (statistics [B, 5F], new state).

    The first reading (count 0) sets first, max and min to itself, which is what makes a zero
    state a valid start without a separate initialisation input.
    """
    f = x_t.shape[1]
    s = state[0]
    first, s1, s2 = s[:, :f], s[:, f : 2 * f], s[:, 2 * f : 3 * f]
    high, low, n = s[:, 3 * f : 4 * f], s[:, 4 * f : 5 * f], s[:, 5 * f :]
    is_first = (n == 0).to(x_t.dtype)
    later = 1.0 - is_first
    first = first + is_first * x_t
    d = x_t - first
    s1 = s1 + d
    s2 = s2 + d * d
    high = is_first * x_t + later * torch.maximum(high, x_t)
    low = is_first * x_t + later * torch.minimum(low, x_t)
    n = n + 1.0
    stats = _features(first, s1, s2, high, low, n, x_t)
    return stats, torch.cat([first, s1, s2, high, low, n], dim=1).unsqueeze(0)
