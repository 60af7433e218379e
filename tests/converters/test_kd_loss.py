"""The KD loss equals a hand computation and reduces to cross-entropy at alpha = 0."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from converters.errors import ConverterError
from converters.kd_loss import kd_loss, make_kd_loss_fn

STUDENT = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
TEACHER = np.array([[3.0, 1.0, -2.0], [-1.0, 0.0, 2.5]])
LABELS = np.array([0, 2])


def _np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _by_hand(temperature: float, alpha: float) -> float:
    p_t = _np_softmax(TEACHER / temperature)
    p_s = _np_softmax(STUDENT / temperature)
    kl = np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=1))
    ce = np.mean(-np.log(_np_softmax(STUDENT)[np.arange(2), LABELS]))
    return alpha * temperature**2 * kl + (1 - alpha) * ce


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float32)


@pytest.mark.parametrize(("temperature", "alpha"), [(4.0, 0.7), (1.0, 1.0), (2.0, 0.3)])
def test_kd_loss_matches_hand_computation(temperature: float, alpha: float) -> None:
    got = kd_loss(_t(STUDENT), _t(TEACHER), torch.tensor(LABELS), temperature, alpha)
    assert got.item() == pytest.approx(_by_hand(temperature, alpha), rel=1e-5)


def test_alpha_zero_is_cross_entropy() -> None:
    got = kd_loss(_t(STUDENT), _t(TEACHER), torch.tensor(LABELS), 4.0, 0.0)
    expected = F.cross_entropy(_t(STUDENT), torch.tensor(LABELS))
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_identical_logits_leave_only_the_ce_term() -> None:
    got = kd_loss(_t(STUDENT), _t(STUDENT), torch.tensor(LABELS), 3.0, 0.5)
    expected = 0.5 * F.cross_entropy(_t(STUDENT), torch.tensor(LABELS))
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_class_weights_weight_only_the_ce_term() -> None:
    weights = np.array([1.0, 1.0, 3.0], dtype=np.float32)
    loss_fn = make_kd_loss_fn(2.0, 0.5, weights)
    got = loss_fn(_t(STUDENT), torch.tensor(LABELS), _t(TEACHER)).item()
    kl_part = _by_hand(2.0, 1.0) * 0.5
    ce = F.cross_entropy(_t(STUDENT), torch.tensor(LABELS), weight=torch.tensor(weights))
    assert got == pytest.approx(kl_part + 0.5 * ce.item(), rel=1e-5)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ConverterError, match="temperature"):
        kd_loss(_t(STUDENT), _t(TEACHER), torch.tensor(LABELS), 0.0, 0.5)
    with pytest.raises(ConverterError, match="soft targets"):
        make_kd_loss_fn(2.0, 0.5)(_t(STUDENT), torch.tensor(LABELS), None)
