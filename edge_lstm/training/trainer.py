"""`fit`: the one training loop for teacher and student (plain, weighted or distillation loss).

AdamW, plateau or cosine schedule, gradient clipping, early stopping on validation loss with
the best weights restored, a wall-clock budget, seeded data order, AMP on CUDA and DDP under
torchrun.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    DistributedSampler,
    RandomSampler,
    Sampler,
    TensorDataset,
    WeightedRandomSampler,
)
from tqdm import tqdm

from edge_lstm.config import TrainConfig
from edge_lstm.errors import EdgeLstmError
from edge_lstm.training.distributed import DistContext, all_reduce_sum, setup_distributed
from edge_lstm.training.predict import predict_logits
from edge_lstm.training.seeding import seed_everything

if TYPE_CHECKING:
    from edge_lstm.data import WindowSet

log = logging.getLogger(__name__)

LossFn = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]


@dataclass
class TrainResult:
    best_epoch: int
    best_val_loss: float
    history: list[dict]  # per epoch: epoch, train_loss, train_acc, val_loss, val_acc, lr, seconds
    seconds: float
    stop_reason: str = "epochs"  # "epochs" | "patience" | "time budget"


@dataclass
class _Training:
    """What `fit` sets up once and every epoch uses."""

    model: nn.Module
    wrapped: nn.Module  # the model under DistributedDataParallel with torchrun, else itself
    loader: DataLoader
    sampler: Sampler
    criterion: LossFn
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    weights: Tensor | None  # class weights of the validation loss (and the default loss)
    ctx: DistContext


@dataclass
class _Best:
    loss: float
    epoch: int
    state: dict[str, Tensor]


def fit(
    model: nn.Module,
    train: WindowSet,
    val: WindowSet,
    cfg: TrainConfig,
    loss_fn: LossFn | None = None,
    *,
    class_weights: np.ndarray | None = None,
    balanced_sampler: bool = False,
    soft_targets: np.ndarray | None = None,
    desc: str = "train",
) -> TrainResult:
    """Trains `model` in place and leaves it holding its best-validation-loss weights.

    `loss_fn(logits, y, soft_batch)` replaces the default (class-weighted) cross-entropy;
    `soft_targets[N, ...]` rows travel with the train windows into `soft_batch`. Validation
    loss, which drives the schedule and early stopping, is always the cross-entropy (weighted
    by `class_weights` when given), so runs with different training losses stop comparably.
    """
    _check_fit_inputs(train, soft_targets)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    run = _set_up(model, train, cfg, loss_fn, class_weights, balanced_sampler, soft_targets)
    start = time.perf_counter()
    history: list[dict] = []
    best = _Best(float("inf"), 0, _snapshot(model))
    stop_reason = "epochs"  # what ended the run: "epochs" | "patience" | "time budget"
    for epoch in range(1, cfg.epochs + 1):
        record, monitored = _run_epoch(run, epoch, val, cfg, desc)
        history.append(record)
        if monitored < best.loss:
            best = _Best(monitored, epoch, _snapshot(model))
        elapsed_min = (time.perf_counter() - start) / 60
        stop_reason = _stop_reason(epoch, best.epoch, elapsed_min, cfg)
        if _agree_to_stop(stop_reason != "epochs", run.ctx):
            if run.ctx.is_main:
                log.info(
                    "%s: stopping after epoch %d (%s; best epoch %d, %.1f min)",
                    desc, epoch, stop_reason, best.epoch, elapsed_min,
                )  # fmt: skip
            break

    model.load_state_dict(best.state)
    model.eval()
    return TrainResult(
        best_epoch=best.epoch,
        best_val_loss=best.loss,
        history=history,
        seconds=time.perf_counter() - start,
        stop_reason=stop_reason,
    )


def _check_fit_inputs(train: WindowSet, soft_targets: np.ndarray | None) -> None:
    if len(train.x) == 0:
        raise EdgeLstmError("no training windows: check data.window against the run lengths")
    if soft_targets is not None and len(soft_targets) != len(train.x):
        raise ValueError(f"soft_targets has {len(soft_targets)} rows for {len(train.x)} windows")


def _set_up(
    model: nn.Module,
    train: WindowSet,
    cfg: TrainConfig,
    loss_fn: LossFn | None,
    class_weights: np.ndarray | None,
    balanced_sampler: bool,
    soft_targets: np.ndarray | None,
) -> _Training:
    """Process group, device, loss, data order, optimiser, schedule and AMP scaler."""
    ctx = setup_distributed()
    if balanced_sampler and ctx.distributed:
        raise EdgeLstmError(
            "balanced_sampler is not supported under torchrun; use data.class_balance: "
            "weighted_loss"
        )
    model.to(ctx.device)
    weights = None
    if class_weights is not None:
        weights = torch.as_tensor(class_weights, dtype=torch.float32, device=ctx.device)
    wrapped = _wrap(model, ctx)
    loader, sampler = _train_loader(train, cfg, soft_targets, balanced_sampler, ctx)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return _Training(
        model=model,
        wrapped=wrapped,
        loader=loader,
        sampler=sampler,
        criterion=loss_fn or _cross_entropy(weights, cfg.label_smoothing),
        optimizer=optimizer,
        scheduler=_scheduler(optimizer, cfg),
        scaler=torch.amp.GradScaler("cuda", enabled=ctx.device.type == "cuda"),
        weights=weights,
        ctx=ctx,
    )


def _run_epoch(
    run: _Training, epoch: int, val: WindowSet, cfg: TrainConfig, desc: str
) -> tuple[dict, float]:
    """Trains one epoch, validates, steps the schedule; returns the history record and the
    monitored loss (validation loss, or training loss without validation windows)."""
    epoch_start = time.perf_counter()
    if isinstance(run.sampler, DistributedSampler):
        run.sampler.set_epoch(epoch)
    train_loss, train_acc = _train_epoch(run, cfg, f"{desc} {epoch}/{cfg.epochs}")
    val_loss, val_acc = _evaluate(run.model, val, run.weights, cfg, run.ctx)
    monitored = val_loss if len(val.x) else train_loss
    lr = run.optimizer.param_groups[0]["lr"]
    _step_scheduler(run.scheduler, monitored)
    record = {
        "epoch": epoch,
        "train_loss": train_loss,
        "train_acc": train_acc,
        "val_loss": val_loss,
        "val_acc": val_acc,
        "lr": lr,
        "seconds": time.perf_counter() - epoch_start,
    }
    if run.ctx.is_main:
        log.info(
            "%s epoch %d/%d: loss %.4f acc %.3f | val loss %.4f acc %.3f | lr %.2e | %.1f s",
            desc,
            epoch,
            cfg.epochs,
            train_loss,
            train_acc,
            val_loss,
            val_acc,
            lr,
            record["seconds"],
        )
    return record, monitored


def _cross_entropy(weights: Tensor | None, label_smoothing: float) -> LossFn:
    def loss(logits: Tensor, y: Tensor, _soft: Tensor | None) -> Tensor:
        return F.cross_entropy(logits, y, weight=weights, label_smoothing=label_smoothing)

    return loss


def _wrap(model: nn.Module, ctx: DistContext) -> nn.Module:
    if not ctx.distributed:
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def _train_loader(
    train: WindowSet,
    cfg: TrainConfig,
    soft_targets: np.ndarray | None,
    balanced: bool,
    ctx: DistContext,
) -> tuple[DataLoader, Sampler]:
    """Whole batches are sliced from the tensors at once (no per-window collation)."""
    tensors = [torch.as_tensor(train.x), torch.as_tensor(train.y, dtype=torch.long)]
    if soft_targets is not None:
        tensors.append(torch.as_tensor(soft_targets, dtype=torch.float32))
    dataset = TensorDataset(*tensors)
    generator = torch.Generator().manual_seed(cfg.seed)
    sampler: Sampler
    if ctx.distributed:
        sampler = DistributedSampler(dataset, shuffle=True, seed=cfg.seed)
    elif balanced:
        counts = np.bincount(train.y)
        per_window = 1.0 / counts[train.y]
        sampler = WeightedRandomSampler(
            torch.as_tensor(per_window, dtype=torch.double), len(train.y), generator=generator
        )
    else:
        sampler = RandomSampler(dataset, generator=generator)
    batches = BatchSampler(sampler, batch_size=cfg.batch_size, drop_last=False)
    return DataLoader(dataset, sampler=batches, batch_size=None), sampler


def _scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=0.5, patience=max(1, cfg.patience // 2)
    )


def _step_scheduler(scheduler, monitored: float) -> None:
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(monitored)
    else:
        scheduler.step()


def _train_epoch(run: _Training, cfg: TrainConfig, desc: str) -> tuple[float, float]:
    """One pass over the training windows; returns (mean loss, accuracy) over all ranks."""
    model, optimizer, scaler, ctx = run.wrapped, run.optimizer, run.scaler, run.ctx
    model.train()
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
    bar = tqdm(run.loader, desc=desc, leave=False, unit="batch", disable=not ctx.is_main)
    for batch in bar:
        x, y = batch[0].to(ctx.device), batch[1].to(ctx.device)
        soft = batch[2].to(ctx.device) if len(batch) > 2 else None
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(ctx.device.type, dtype=torch.float16, enabled=scaler.is_enabled()):
            logits = model(x)
            loss = run.criterion(logits.float(), y, soft)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        scaler.step(optimizer)
        scaler.update()
        n = len(y)
        totals += torch.tensor(
            [loss.item() * n, (logits.argmax(1) == y).sum().item(), n], dtype=torch.float64
        )
        bar.set_postfix(
            loss=f"{totals[0] / totals[2]:.4f}", acc=f"{totals[1] / totals[2]:.3f}", refresh=False
        )
    totals = all_reduce_sum(totals, ctx)
    return float(totals[0] / totals[2]), float(totals[1] / totals[2])


def _evaluate(
    model: nn.Module, val: WindowSet, weights: Tensor | None, cfg: TrainConfig, ctx: DistContext
) -> tuple[float, float]:
    """Validation cross-entropy and accuracy, in batches without gradients (NaN if empty)."""
    if len(val.x) == 0:
        return float("nan"), float("nan")
    logits = torch.as_tensor(
        predict_logits(model, val.x, batch_size=max(cfg.batch_size, 512), device=ctx.device)
    )
    y = torch.as_tensor(val.y, dtype=torch.long)
    w = None if weights is None else weights.cpu()
    loss = F.cross_entropy(logits, y, weight=w).item()
    acc = (logits.argmax(1) == y).double().mean().item()
    return loss, acc


def _snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _stop_reason(epoch: int, best_epoch: int, elapsed_min: float, cfg: TrainConfig) -> str:
    """Why to stop after this epoch ("epochs" = keep going, or the last epoch anyway)."""
    if epoch >= cfg.epochs:
        return "epochs"
    if epoch - best_epoch >= cfg.patience:
        return "patience"
    if cfg.max_minutes is not None and elapsed_min >= cfg.max_minutes:
        return "time budget"
    return "epochs"


def _agree_to_stop(stop: bool, ctx: DistContext) -> bool:
    """Every rank stops at the same epoch, even if only one crossed the time budget."""
    if not ctx.distributed:
        return stop
    return bool(all_reduce_sum(torch.tensor([float(stop)]), ctx).item() > 0)
