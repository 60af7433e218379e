"""Running window statistics: streamed one reading at a time they equal the whole-window ones,
and both equal numpy's, on channels far from zero as well (where plain Σx² loses digits)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_lstm.config import StudentConfig
from edge_lstm.models import Student
from edge_lstm.models.window_stats import state_width, step_stats, window_stats, zero_stats_state

F, C, W = 6, 4, 50


def _numpy_stats(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    log_std = 0.5 * np.log(x64.var(1) + 1e-5)
    return np.concatenate(
        [x64.mean(1), log_std, x64[:, -1] - x64[:, 0], x64.max(1), x64.min(1)], axis=1
    )


def _windows(seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    offsets = torch.tensor([0.0, 50.0, -300.0, 1e3, 0.0, 2.0])  # far from the z-scored range
    x = torch.randn(5, W, F, generator=gen) * 0.05 + offsets
    x[:, :, 4] = 1.25  # a stuck channel: std 0
    return x


@pytest.mark.parametrize("seed", [0, 1])
def test_streamed_equals_window_equals_numpy(seed: int) -> None:
    x = _windows(seed)
    whole = window_stats(x)
    state = zero_stats_state(F, len(x), x)
    assert state.shape == (1, len(x), state_width(F)) == (1, 5, 5 * F + 1)
    for t in range(W):
        streamed, state = step_stats(x[:, t], state)
    assert (streamed - whole).abs().max().item() <= 1e-4
    expected = _numpy_stats(x.numpy())
    got = whole.double().numpy()
    assert np.allclose(got, expected, atol=1e-4 * (1 + np.abs(expected).max()))
    log_std = slice(F, 2 * F)  # from deviations to the first reading: exact on offset channels
    assert np.allclose(got[:, log_std], expected[:, log_std], atol=1e-4)
    assert (got[:, F + 4] < got[:, F + 0] - 2).all()  # the stuck channel: ≥ e² below live noise
    assert state[0, :, -1].eq(W).all()  # the count


def test_a_partial_window_has_the_statistics_of_its_readings() -> None:
    """Read at any step, the streamed statistics are those of the readings so far."""
    x = _windows(3)
    state = zero_stats_state(F, len(x), x)
    for t in range(7):
        streamed, state = step_stats(x[:, t], state)
    assert (streamed - window_stats(x[:, :7])).abs().max().item() <= 1e-4


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize(("head_hidden", "relative"), [(0, False), (8, False), (8, True)])
def test_student_with_statistics_steps_to_its_forward(
    cell: str, head_hidden: int, relative: bool
) -> None:
    torch.manual_seed(0)
    cfg = StudentConfig(
        cell=cell,
        hidden_size=12,
        head_hidden=head_hidden,
        window_stats=True,
        relative_input=relative,
    )
    model = Student(F, C, cfg).eval()
    assert model.state_names[-1] == "stats"
    x = _windows(4)
    with torch.no_grad():
        state = model.initial_state(len(x))
        assert state[-1].shape == (1, len(x), state_width(F))
        for t in range(W):
            stepped, state = model.step(x[:, t], state)
        assert (stepped - model(x)).abs().max().item() <= 1e-4


def test_relative_input_needs_the_statistics_state() -> None:
    with pytest.raises(ValueError, match="relative_input needs window_stats"):
        StudentConfig(relative_input=True)
