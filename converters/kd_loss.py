"""Knowledge-distillation loss (Hinton et al. 2015): α·T²·KL(teacher ‖ student) + (1−α)·CE.

The CE term takes the same label smoothing as the hard-label control's loss, so the control
differs from the KD student by the soft targets alone (a smoothed CE against a plain one was
the unfair control of issue 10).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from converters.errors import ConverterError

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
    class_weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Batch-mean KD loss; the T² factor keeps the soft-target gradients on the CE scale.

    `class_weights` and `label_smoothing` apply to the hard-label cross-entropy only (the soft
    targets already carry the teacher's view of every class).
    """
    if temperature <= 0 or not 0.0 <= alpha <= 1.0:
        raise ConverterError(f"need temperature > 0 and 0 <= alpha <= 1, got {temperature}/{alpha}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ConverterError(f"need 0 <= label_smoothing < 1, got {label_smoothing}")
    ce = F.cross_entropy(
        student_logits, labels, weight=class_weights, label_smoothing=label_smoothing
    )
    if alpha == 0.0:
        return ce
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return alpha * temperature**2 * kl + (1.0 - alpha) * ce


def make_kd_loss_fn(
    temperature: float,
    alpha: float,
    class_weights: np.ndarray | None = None,
    label_smoothing: float = 0.0,
) -> LossFn:
    """A `loss_fn(logits, y, teacher_logits_batch)` for `edge_lstm.training.trainer.fit`."""
    weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)

    def loss_fn(
        logits: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor | None
    ) -> torch.Tensor:
        if soft is None:
            raise ConverterError("the KD loss needs the teacher's logits as soft targets")
        w = None if weights is None else weights.to(logits.device)
        return kd_loss(
            logits, soft.to(logits.dtype), labels, temperature, alpha, w, label_smoothing
        )

    return loss_fn
