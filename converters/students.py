"""Training one student: the step `distill` and `distill --search` share.

The initial weights depend only on the training seed, so a KD and a hard-label student of the
same architecture start from the same point; both take `train_cfg` whole (epochs, patience, lr,
seed, data order) and the same `train_cfg.label_smoothing` on their hard-label cross-entropy,
so the hard-label control differs from the KD student by the soft targets alone.

Under `torchrun` every rank trains every student (`fit` runs DistributedDataParallel, so the
ranks end with the same weights), and rank 0 alone writes files and times models:
`main_rank_only` runs that work on rank 0 and holds the other ranks at a barrier until it is
done; `share_from_main` hands them an array rank 0 made (the teacher's logits), so no rank
reads a file rank 0 writes and several nodes need no shared file system.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from converters.errors import ConverterError
from converters.kd_loss import make_kd_loss_fn
from edge_lstm.config import StudentConfig, TrainConfig
from edge_lstm.data import PreparedData
from edge_lstm.metrics import compute_metrics, headline, softmax
from edge_lstm.models import build_from_model_config
from edge_lstm.training import TrainResult, fit, predict_logits, seed_everything
from edge_lstm.training.distributed import DistContext, setup_distributed

SPLITS = ("train", "val", "test")

T = TypeVar("T")


def _barrier(ctx: DistContext) -> None:
    if ctx.device.type == "cuda":
        dist.barrier(device_ids=[ctx.device.index])
    else:
        dist.barrier()


def main_rank_only(work: Callable[[], T]) -> T | None:
    """`work()` on rank 0 (None on the other ranks, which wait at a barrier until it is done).

    For what only rank 0 does: write files, measure latency (the waiting ranks leave it the
    CPU). A single process just runs `work`.
    """
    ctx = setup_distributed()
    result = work() if ctx.is_main else None
    if ctx.distributed:
        _barrier(ctx)
    return result


def share_from_main(array: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """Rank 0's float32 `array` on every rank (a broadcast; the other ranks pass None).

    Every rank names the `shape` it expects from its own data; a rank whose data give another
    shape than rank 0's (different files at the same path on another node) stops with an error
    instead of training on misaligned targets. A single process returns `array` itself.
    """
    ctx = setup_distributed()
    if not ctx.distributed:
        assert array is not None
        return array
    if ctx.is_main and (array is None or array.shape != tuple(shape)):
        raise ValueError(f"rank 0 shares {None if array is None else array.shape}, not {shape}")
    header = torch.tensor(shape, dtype=torch.int64, device=ctx.device)
    dist.broadcast(header, src=0)
    main_shape = tuple(int(n) for n in header.cpu())
    if main_shape != tuple(shape):
        raise ConverterError(
            f"rank {ctx.rank} expects an array of shape {tuple(shape)}, rank 0 has {main_shape}: "
            "every rank must read the same data (same file at the same path on every node)"
        )
    if ctx.is_main:
        tensor = torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32)).to(ctx.device)
    else:
        tensor = torch.empty(shape, dtype=torch.float32, device=ctx.device)
    dist.broadcast(tensor, src=0)
    return tensor.cpu().numpy()


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
    state_path: Path | None = None,
    resume: bool = False,
) -> StudentRun:
    """Trains one student: KD loss when `soft_targets` are given, hard-label CE otherwise;
    either way the cross-entropy smooths labels by `train_cfg.label_smoothing`.

    With `state_path` the training state is saved there every epoch, and `resume` continues
    from it (the caller removes it once the student is saved)."""
    n_features, n_classes = len(prepared.features), len(prepared.classes)
    seed_everything(train_cfg.seed)
    model = build_from_model_config("student", n_features, n_classes, student_cfg)
    initial = {s: headline(_split_metrics(model, prepared, s)) for s in SPLITS}
    weights = prepared.class_weights() if class_balance == "weighted_loss" else None
    loss_fn = None  # `fit`'s cross-entropy, with train_cfg.label_smoothing
    if soft_targets is not None:
        loss_fn = make_kd_loss_fn(temperature, alpha, weights, train_cfg.label_smoothing)
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
        state_path=state_path,
        resume=resume,
        state_key={
            "student": student_cfg.model_dump(mode="json"),
            "loss": "kd" if soft_targets is not None else "ce",
            "temperature": temperature,
            "alpha": alpha,
            "class_balance": class_balance,
        },
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
