"""`train_teacher`: data → BiLSTM teacher → checkpoint, training curve and test metrics.

The test metrics sit beside those of the per-window mean/std logistic baseline, so the value
of a sequence model on this data is measured, not claimed.

While it trains, `<out>/train_state.pt` holds the state after the last completed epoch
(`edge_lstm.training.state`); `resume=True` (`edgelstm train-teacher --resume`) continues
from it. It is removed once model.pt and metrics.json are written.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from edge_lstm.checkpoint import meta_for, save_checkpoint
from edge_lstm.config import Config, config_to_dict
from edge_lstm.metrics import compute_metrics, headline
from edge_lstm.models import build_model, count_parameters
from edge_lstm.training import TrainResult, fit, plot_history, predict_proba, seed_everything
from edge_lstm.training.distributed import is_main_process
from edge_lstm.training.state import STATE_FILE, remove_train_state
from edge_lstm.training.trainer import autocast_dtype

if TYPE_CHECKING:
    from torch import nn

    from edge_lstm.data import PreparedData

log = logging.getLogger(__name__)

CURVE_FILE = "training_curve.png"
METRICS_FILE = "metrics.json"


def train_teacher(cfg: Config, out_dir: Path, *, resume: bool = False) -> Path:
    """Trains the teacher on cfg.data and writes the checkpoint and reports into `out_dir`.

    `resume`: continue from `out_dir/train_state.pt` when an earlier run was interrupted
    (without that file: start from epoch 1, with one log line). A state written by another
    config, model shape or data is refused (TrainStateError).
    """
    from edge_lstm.data.prepare import prepare_data

    autocast_dtype(cfg.train.precision)  # fp16 without CUDA fails before the data are read
    started = time.perf_counter()
    out_dir = Path(out_dir)
    data = prepare_data(cfg)
    model, result = _fit_teacher(cfg, data, out_dir / STATE_FILE, resume)
    if not is_main_process():
        return out_dir

    model.cpu()
    scores = _score(model, data)
    minutes = (time.perf_counter() - started) / 60
    test_metrics, val_metrics = scores["teacher"], scores["val"]
    meta = meta_for(
        "teacher",
        model,
        cfg.teacher,
        cfg,
        data,
        {"test": headline(test_metrics), "val": headline(val_metrics)},
        name="teacher",
    )
    save_checkpoint(out_dir, model, meta)
    plot_history(result.history, out_dir / CURVE_FILE, title="teacher")
    n_params = count_parameters(model)
    report = {**scores, "training": _training_summary(result, n_params, minutes)}
    (out_dir / METRICS_FILE).write_text(json.dumps(report, indent=2) + "\n")
    log.info(
        "teacher test macro-F1 %.4f vs mean/std baseline %.4f | %d parameters | %.1f min",
        test_metrics["macro_f1"], scores["baseline_meanstd_logreg"]["macro_f1"], n_params,
        minutes,
    )  # fmt: skip
    remove_train_state(out_dir / STATE_FILE)
    return out_dir


def _state_key(cfg: Config) -> dict:
    """What else a resumed teacher must share with the run that wrote the state: the model and
    data sections (the data path may move: the state holds a digest of the windows)."""
    raw = config_to_dict(cfg)
    data = {k: v for k, v in raw["data"].items() if k != "path"}
    return {"teacher": raw["teacher"], "data": data}


def _fit_teacher(
    cfg: Config, data: PreparedData, state_path: Path, resume: bool
) -> tuple[nn.Module, TrainResult]:
    """A seeded teacher fitted on the train split, balanced as cfg.data.class_balance says."""
    n_features, n_classes = len(data.features), len(data.classes)
    seed_everything(cfg.train.seed)
    model = build_model("teacher", n_features, n_classes, cfg)
    log.info(
        "teacher: %d parameters; %d/%d/%d train/val/test windows, %d features, %d classes",
        count_parameters(model), len(data.train.y), len(data.val.y), len(data.test.y),
        n_features, n_classes,
    )  # fmt: skip
    balance = cfg.data.class_balance
    result = fit(
        model,
        data.train,
        data.val,
        cfg.train,
        class_weights=data.class_weights() if balance == "weighted_loss" else None,
        balanced_sampler=balance == "balanced_sampler",
        desc="teacher",
        state_path=state_path,
        resume=resume,
        state_key=_state_key(cfg),
    )
    return model, result


def _score(model: nn.Module, data: PreparedData) -> dict[str, dict]:
    """Test metrics of the teacher and of the mean/std baseline, and the teacher's validation
    metrics ({} without validation windows), in the order metrics.json lists them."""
    from edge_lstm.baseline import fit_meanstd_baseline

    test_metrics = compute_metrics(predict_proba(model, data.test.x), data.test.y, data.classes)
    val_metrics = (
        compute_metrics(predict_proba(model, data.val.x), data.val.y, data.classes)
        if len(data.val.y)
        else {}
    )
    baseline_metrics = compute_metrics(
        fit_meanstd_baseline(data, split="test"), data.test.y, data.classes
    )
    return {
        "teacher": test_metrics,
        "baseline_meanstd_logreg": baseline_metrics,
        "val": val_metrics,
    }


def _training_summary(result: TrainResult, n_params: int, minutes: float) -> dict:
    return {
        "parameters": n_params,
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "epochs_run": len(result.history),
        "stop_reason": result.stop_reason,
        "resumed_after_epoch": result.resumed_after_epoch,
        "world_size": result.world_size,
        "global_batch_size": result.global_batch_size,
        "lr": result.lr,
        "precision": result.precision,
        "train_seconds": result.seconds,
        "total_minutes": minutes,
        "history": result.history,
    }
