"""Training one student: the step `distill` and `distill --search` share.

The initial weights depend only on the training seed, so a KD and a hard-label student of the
same architecture start from the same point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from converters.kd_loss import make_kd_loss_fn
from edge_lstm.config import StudentConfig, TrainConfig
from edge_lstm.data import PreparedData
from edge_lstm.metrics import compute_metrics, headline, softmax
from edge_lstm.models import build_from_model_config
from edge_lstm.training import TrainResult, fit, predict_logits, seed_everything

SPLITS = ("train", "val", "test")


@dataclass
class StudentRun:
    """A trained student and what was measured on it."""

    model: nn.Module
    student_cfg: StudentConfig
    initial: dict[str, Any]  # headline train/val/test metrics before training
    train: dict[str, Any]
    val: dict[str, Any]
    test: dict[str, Any]
    result: TrainResult


def student_name(student_cfg: StudentConfig) -> str:
    """e.g. "student-gru32", "student-lstm16x2"."""
    layers = f"x{student_cfg.layers}" if student_cfg.layers > 1 else ""
    return f"student-{student_cfg.cell}{student_cfg.hidden_size}{layers}"


def _split_metrics(model: nn.Module, prepared: PreparedData, split: str) -> dict[str, Any]:
    windows = prepared.split(split)
    if len(windows.y) == 0:
        return {}
    return compute_metrics(softmax(predict_logits(model, windows.x)), windows.y, prepared.classes)


def train_student(
    prepared: PreparedData,
    student_cfg: StudentConfig,
    train_cfg: TrainConfig,
    class_balance: str,
    *,
    soft_targets: np.ndarray | None = None,
    temperature: float = 1.0,
    alpha: float = 0.0,
    desc: str = "student",
) -> StudentRun:
    """Trains one student: KD loss when `soft_targets` are given, hard-label CE otherwise."""
    n_features, n_classes = len(prepared.features), len(prepared.classes)
    seed_everything(train_cfg.seed)
    model = build_from_model_config("student", n_features, n_classes, student_cfg)
    initial = {s: headline(_split_metrics(model, prepared, s)) for s in SPLITS}
    weights = prepared.class_weights() if class_balance == "weighted_loss" else None
    loss_fn = None if soft_targets is None else make_kd_loss_fn(temperature, alpha, weights)
    result = fit(
        model,
        prepared.train,
        prepared.val,
        train_cfg,
        loss_fn,
        class_weights=weights,
        balanced_sampler=class_balance == "balanced_sampler",
        soft_targets=soft_targets,
        desc=desc,
    )
    model.cpu().eval()
    return StudentRun(
        model=model,
        student_cfg=student_cfg,
        initial=initial,
        train=_split_metrics(model, prepared, "train"),
        val=_split_metrics(model, prepared, "val"),
        test=_split_metrics(model, prepared, "test"),
        result=result,
    )
