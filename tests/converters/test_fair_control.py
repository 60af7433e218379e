"""The hard-label control is fair: the KD loss's CE term smooths labels like the hard-label
student's loss, and both students train on the same budget, seed and data order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from converters.errors import ConverterError
from converters.kd_loss import kd_loss, make_kd_loss_fn
from converters.students import train_student

STUDENT = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
TEACHER = torch.tensor([[3.0, 1.0, -2.0], [-1.0, 0.0, 2.5]])
LABELS = torch.tensor([0, 2])


def test_the_ce_term_takes_the_label_smoothing() -> None:
    smoothed = F.cross_entropy(STUDENT, LABELS, label_smoothing=0.1)
    assert smoothed.item() != pytest.approx(F.cross_entropy(STUDENT, LABELS).item())
    got = kd_loss(STUDENT, TEACHER, LABELS, 2.0, 0.0, label_smoothing=0.1)
    assert got.item() == pytest.approx(smoothed.item(), rel=1e-6)
    kl_only = kd_loss(STUDENT, TEACHER, LABELS, 2.0, 1.0, label_smoothing=0.1)
    both = make_kd_loss_fn(2.0, 0.5, label_smoothing=0.1)(STUDENT, LABELS, TEACHER)
    assert both.item() == pytest.approx(0.5 * kl_only.item() + 0.5 * smoothed.item(), rel=1e-5)


def test_label_smoothing_out_of_range_is_refused() -> None:
    with pytest.raises(ConverterError, match="label_smoothing"):
        kd_loss(STUDENT, TEACHER, LABELS, 2.0, 0.5, label_smoothing=1.0)


def test_at_alpha_zero_the_kd_student_is_the_hard_label_student(tiny_config, prepared) -> None:
    """With α = 0 the KD loss is its CE term alone, so a KD student must end with exactly the
    hard-label student's weights: same initial weights, data order, budget and smoothing. A
    CE term without the smoothing (the unfair control of issue 10) ends elsewhere."""
    train_cfg = tiny_config.distill.train.model_copy(update={"epochs": 2, "label_smoothing": 0.1})
    soft = np.zeros((len(prepared.train.y), len(prepared.classes)), np.float32)

    def weights(cfg, **kd) -> dict[str, torch.Tensor]:
        run = train_student(prepared, tiny_config.student, cfg, "weighted_loss", **kd)
        return run.model.state_dict()

    kd = weights(train_cfg, soft_targets=soft, temperature=2.0, alpha=0.0)
    hard = weights(train_cfg)
    assert kd.keys() == hard.keys()
    for name in kd:
        assert torch.equal(kd[name], hard[name]), name
    unsmoothed = weights(train_cfg.model_copy(update={"label_smoothing": 0.0}))
    assert any(not torch.equal(kd[name], unsmoothed[name]) for name in kd)
