"""Augmentation: a device's calibration is constant over a window, noise is not; off is off."""

from __future__ import annotations

import pytest
import torch

from edge_lstm.config import AugmentConfig, TrainConfig
from edge_lstm.training.augment import augment


def _x() -> torch.Tensor:
    return torch.randn(8, 30, 5, generator=torch.Generator().manual_seed(0))


def test_off_returns_the_windows_untouched() -> None:
    x = _x()
    assert augment(x, AugmentConfig()) is x
    assert not TrainConfig().augment.active


def test_offset_and_gain_are_one_draw_per_window_and_channel() -> None:
    x = _x()
    torch.manual_seed(1)
    shifted = augment(x, AugmentConfig(offset=0.5))
    delta = shifted - x
    assert torch.allclose(delta, delta[:, :1].expand_as(delta), atol=1e-6)
    assert delta[:, 0].std() > 0.2  # windows and channels draw differently
    torch.manual_seed(1)
    scaled = augment(x, AugmentConfig(gain=0.2))
    ratio = scaled / x
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-4)


def test_noise_differs_per_reading_and_draws_are_seeded() -> None:
    x = _x()
    torch.manual_seed(2)
    a = augment(x, AugmentConfig(noise=0.1, gain=0.1, offset=0.1))
    torch.manual_seed(2)
    b = augment(x, AugmentConfig(noise=0.1, gain=0.1, offset=0.1))
    assert torch.equal(a, b)
    noise = augment(x, AugmentConfig(noise=0.1)) - x
    assert noise.std(dim=1).min() > 0.05
    assert noise.abs().max() < 1.0


def test_strengths_are_validated() -> None:
    with pytest.raises(ValueError, match="gain"):
        AugmentConfig(gain=-0.1)
