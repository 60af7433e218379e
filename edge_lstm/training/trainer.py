"""`fit`: the one training loop for teacher and student (plain, weighted or distillation loss).

AdamW, plateau or cosine schedule, gradient clipping, early stopping on validation loss with
the best weights restored, seeded data order, mixed precision (`train.precision`), DDP under
torchrun with the learning rate rescaled as `train.lr_scaling` says, an optional wall-clock
safety net (`train.max_minutes`), and a training-state file after every epoch from which an
interrupted run resumes (`edge_lstm.training.state`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
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
from edge_lstm.errors import ConfigError, EdgeLstmError
from edge_lstm.training import state as train_state
from edge_lstm.training.augment import augment
from edge_lstm.training.distributed import (
    DistContext,
    all_reduce_sum,
    any_rank,
    broadcast_from_main,
    setup_distributed,
)
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
    seconds: float  # training time, summed over resumed processes
    stop_reason: str = "epochs"  # "epochs" | "patience" | "time budget"
    resumed_after_epoch: int = 0  # epochs restored from the state file (0: a fresh start)
    world_size: int = 1
    global_batch_size: int = 0  # batch_size × world_size
    lr: float = 0.0  # the initial learning rate used: train.lr after train.lr_scaling
    precision: str = "fp32"


@dataclass
class _Training:
    """What `fit` sets up once and every epoch uses."""

    model: nn.Module
    wrapped: nn.Module  # the model under DistributedDataParallel with torchrun, else itself
    loader: DataLoader
    sampler: Sampler
    criterion: LossFn
    generator: torch.Generator | None  # the data order's generator (None: DistributedSampler)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    autocast: torch.dtype | None  # train.precision's dtype, None for fp32
    weights: Tensor | None  # class weights of the validation loss (and the default loss)
    ctx: DistContext
    lr: float  # initial learning rate after lr_scaling


@dataclass
class _Best:
    loss: float
    epoch: int
    state: dict[str, Tensor]


@dataclass
class _Progress:
    """Where a run stands after its last completed epoch: what the state file stores."""

    best: _Best
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    elapsed_s: float = 0.0  # training seconds of earlier processes (resumed runs)
    stop_reason: str = "epochs"
    finished: bool = False
    resumed_after_epoch: int = 0


def scaled_lr(lr: float, scaling: str, world_size: int) -> float:
    """`train.lr` for a global batch of batch_size × world_size: `none` keeps it, `linear`
    multiplies it by world_size, `sqrt` by √world_size (1 process: always unchanged)."""
    factors = {"none": 1.0, "linear": float(world_size), "sqrt": math.sqrt(world_size)}
    if scaling not in factors:
        raise ConfigError(f"train.lr_scaling: {scaling!r} is not one of none, linear, sqrt")
    return lr * factors[scaling]


def default_device_type() -> str:
    """The device `fit` trains on: CUDA where available (each rank's own GPU), else CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def autocast_dtype(precision: str, device_type: str | None = None) -> torch.dtype | None:
    """train.precision → the autocast dtype on `device_type` (None for fp32).

    Raises ConfigError for fp16 off CUDA (CPU autocast has no float16 recipe: use bf16) and
    for bf16 on a GPU without bfloat16 support.
    """
    device_type = device_type or default_device_type()
    if precision == "fp32":
        return None
    if precision == "fp16":
        if device_type != "cuda":
            raise ConfigError(
                f"train.precision: fp16 needs a CUDA GPU and this run trains on {device_type}; "
                "use bf16 (bfloat16 autocast works on CPU) or fp32"
            )
        return torch.float16
    if precision == "bf16":
        if device_type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError(
                "train.precision: bf16 is not supported by this GPU; use fp16 or fp32"
            )
        return torch.bfloat16
    raise ConfigError(f"train.precision: {precision!r} is not one of fp32, bf16, fp16")


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
    state_path: Path | None = None,
    resume: bool = False,
    state_key: dict[str, Any] | None = None,
) -> TrainResult:
    """Trains `model` in place and leaves it holding its best-validation-loss weights.

    `loss_fn(logits, y, soft_batch)` replaces the default (class-weighted) cross-entropy;
    `soft_targets[N, ...]` rows travel with the train windows into `soft_batch`. Validation
    loss, which drives the schedule and early stopping, is always the cross-entropy (weighted
    by `class_weights` when given), so runs with different training losses stop comparably.

    `cfg.epochs` and `cfg.patience` decide when a run stops; `cfg.max_minutes` (off unless
    set) only cuts a run short, and the result says so (`stop_reason == "time budget"`).
    `cfg.batch_size` is per process; under torchrun the initial learning rate is
    `scaled_lr(cfg.lr, cfg.lr_scaling, world_size)` (default `none`: unchanged).
    `cfg.precision` picks the autocast dtype (`autocast_dtype`); weights stay fp32.

    With `state_path`, rank 0 rewrites the training state there after every epoch
    (`edge_lstm.training.state`); the file is kept when `fit` returns, marked finished, and
    the caller removes it (`remove_train_state`) once its own outputs are written. With
    `resume=True` a state found there is checked against this run (train config, model
    architecture, data, world size and the caller's JSON-able `state_key`) and the run goes on
    after its last epoch, bit for bit as if uninterrupted on the same machine; without a file
    it starts from epoch 1 and logs one line saying so.
    """
    _check_fit_inputs(train, soft_targets)
    if resume and state_path is None:
        raise ValueError("fit(resume=True) needs the state_path to resume from")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    run = _set_up(model, train, cfg, loss_fn, class_weights, balanced_sampler, soft_targets)
    progress = _Progress(best=_Best(float("inf"), 0, _snapshot(model)))
    key = None
    if state_path is not None:
        state_path = Path(state_path)
        arrays = {"train_x": train.x, "train_y": train.y, "val_x": val.x, "val_y": val.y,
                  "soft_targets": soft_targets, "class_weights": class_weights}  # fmt: skip
        key = train_state.fingerprint(
            model, cfg.model_dump(mode="json"), arrays, run.ctx.world_size, state_key
        )
        if run.ctx.is_main:
            train_state.remove_stale_temp_files(state_path)
            if not resume and state_path.is_file():
                log.info("%s: starting over; replacing the training state at %s", desc, state_path)
        if resume:
            progress = _resume(run, state_path, key, desc) or progress

    start = time.perf_counter()
    for epoch in range(progress.epoch + 1, 0 if progress.finished else cfg.epochs + 1):
        record, monitored = _run_epoch(run, epoch, val, cfg, desc)
        progress.history.append(record)
        progress.epoch = epoch
        if monitored < progress.best.loss:
            progress.best = _Best(monitored, epoch, _snapshot(model))
        elapsed_min = (progress.elapsed_s + time.perf_counter() - start) / 60
        progress.stop_reason = _stop_reason(epoch, progress.best.epoch, elapsed_min, cfg)
        stop = _agree_to_stop(progress.stop_reason != "epochs", run.ctx)
        progress.finished = stop or epoch >= cfg.epochs
        if state_path is not None and run.ctx.is_main:
            elapsed_s = progress.elapsed_s + time.perf_counter() - start
            train_state.save_state(state_path, _state_dict(run, progress, key, elapsed_s))
        if stop:
            if run.ctx.is_main:
                log.info(
                    "%s: stopping after epoch %d (%s; best epoch %d, %.1f min)",
                    desc, epoch, progress.stop_reason, progress.best.epoch, elapsed_min,
                )  # fmt: skip
            break

    model.load_state_dict(progress.best.state)
    model.eval()
    return TrainResult(
        best_epoch=progress.best.epoch,
        best_val_loss=progress.best.loss,
        history=progress.history,
        seconds=progress.elapsed_s + time.perf_counter() - start,
        stop_reason=progress.stop_reason,
        resumed_after_epoch=progress.resumed_after_epoch,
        world_size=run.ctx.world_size,
        global_batch_size=cfg.batch_size * run.ctx.world_size,
        lr=run.lr,
        precision=cfg.precision,
    )


def _state_dict(run: _Training, progress: _Progress, key: Any, elapsed_s: float) -> dict:
    """The training state after `progress.epoch` (see edge_lstm.training.state)."""
    return {
        "fingerprint": key,
        "epoch": progress.epoch,
        "finished": progress.finished,
        "stop_reason": progress.stop_reason,
        "elapsed_s": elapsed_s,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "best": {
            "loss": progress.best.loss,
            "epoch": progress.best.epoch,
            "state": progress.best.state,
        },
        "history": progress.history,
        "sampler": {
            "epoch": progress.epoch,
            "generator": None if run.generator is None else run.generator.get_state(),
        },
        "rng": train_state.capture_rng(run.ctx.device),
    }


def _read_state(path: Path, ctx: DistContext) -> dict | None:
    """The state at `path` as rank 0 reads it, on every rank (None without a file)."""
    found: dict | None = None
    if ctx.is_main:
        try:
            found = {"state": train_state.load_state(path)} if path.is_file() else {}
        except train_state.TrainStateError as exc:
            found = {"error": str(exc)}
    found = broadcast_from_main(found, ctx)
    assert isinstance(found, dict)
    if "error" in found:
        raise train_state.TrainStateError(found["error"])
    return found.get("state")


def _resume(run: _Training, path: Path, key: Any, desc: str) -> _Progress | None:
    """The progress restored from `path` into `run`, or None (one log line) without a file.

    Under torchrun rank 0 reads the file and hands it to the others; every rank checks the
    fingerprint against its own model and data, and all stop if one refuses."""
    saved = _read_state(path, run.ctx)
    if saved is None:
        if run.ctx.is_main:
            log.warning("%s: no training state at %s; starting from epoch 1", desc, path)
        return None
    refused = None
    try:
        train_state.check_fingerprint(path, saved["fingerprint"], key)
    except train_state.TrainStateError as exc:
        refused = exc
    if any_rank(refused is not None, run.ctx):
        raise refused or train_state.TrainStateError(
            f"{path}: another rank's model or data differ from the state's; not resuming"
        )
    run.model.load_state_dict(saved["model"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    if saved["scaler"]:
        run.scaler.load_state_dict(saved["scaler"])
    train_state.restore_rng(saved["rng"], run.ctx.device)
    if run.generator is not None and saved["sampler"]["generator"] is not None:
        run.generator.set_state(saved["sampler"]["generator"])
    best = saved["best"]
    progress = _Progress(
        best=_Best(float(best["loss"]), int(best["epoch"]), best["state"]),
        epoch=int(saved["epoch"]),
        history=list(saved["history"]),
        elapsed_s=float(saved["elapsed_s"]),
        stop_reason=str(saved["stop_reason"]),
        finished=bool(saved["finished"]),
        resumed_after_epoch=int(saved["epoch"]),
    )
    if run.ctx.is_main:
        done = "continuing"
        if progress.finished:
            done = f"the run had finished ({progress.stop_reason}): nothing left to train"
        log.info(
            "%s: resumed from %s after epoch %d (best epoch %d); %s",
            desc, path, progress.epoch, progress.best.epoch, done,
        )  # fmt: skip
    return progress


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
    autocast = autocast_dtype(cfg.precision, ctx.device.type)
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
    loader, sampler, generator = _train_loader(train, cfg, soft_targets, balanced_sampler, ctx)
    lr = scaled_lr(cfg.lr, cfg.lr_scaling, ctx.world_size)
    if ctx.distributed and ctx.is_main:
        log.info(
            "global batch %d (%d processes × batch_size %d); lr %.3g (train.lr %.3g, "
            "lr_scaling %s)",
            cfg.batch_size * ctx.world_size, ctx.world_size, cfg.batch_size, lr, cfg.lr,
            cfg.lr_scaling,
        )  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    return _Training(
        model=model,
        wrapped=wrapped,
        loader=loader,
        sampler=sampler,
        generator=generator,
        criterion=loss_fn or _cross_entropy(weights, cfg.label_smoothing),
        optimizer=optimizer,
        scheduler=_scheduler(optimizer, cfg),
        scaler=torch.amp.GradScaler("cuda", enabled=autocast == torch.float16),
        autocast=autocast,
        weights=weights,
        ctx=ctx,
        lr=lr,
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
) -> tuple[DataLoader, Sampler, torch.Generator | None]:
    """Whole batches are sliced from the tensors at once (no per-window collation).

    Returns the loader, its sampler and the generator that orders the windows (None under
    DistributedSampler, whose order follows its seed and epoch)."""
    tensors = [torch.as_tensor(train.x), torch.as_tensor(train.y, dtype=torch.long)]
    if soft_targets is not None:
        tensors.append(torch.as_tensor(soft_targets, dtype=torch.float32))
    dataset = TensorDataset(*tensors)
    generator = torch.Generator().manual_seed(cfg.seed)
    sampler: Sampler
    if ctx.distributed:
        sampler = DistributedSampler(dataset, shuffle=True, seed=cfg.seed)
        generator = None
    elif balanced:
        counts = np.bincount(train.y)
        per_window = 1.0 / counts[train.y]
        sampler = WeightedRandomSampler(
            torch.as_tensor(per_window, dtype=torch.double), len(train.y), generator=generator
        )
    else:
        sampler = RandomSampler(dataset, generator=generator)
    batches = BatchSampler(sampler, batch_size=cfg.batch_size, drop_last=False)
    return DataLoader(dataset, sampler=batches, batch_size=None), sampler, generator


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
        x, y = augment(batch[0].to(ctx.device), cfg.augment), batch[1].to(ctx.device)
        soft = batch[2].to(ctx.device) if len(batch) > 2 else None
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(
            ctx.device.type, dtype=run.autocast or torch.float32, enabled=run.autocast is not None
        ):
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
    return any_rank(stop, ctx)
