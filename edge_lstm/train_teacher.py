"""`train_teacher`: data → BiLSTM teacher → checkpoint, training curve and test metrics.

The test metrics sit beside those of a gradient-boosted-tree baseline on window statistics
(`edge_lstm.baselines`, fitted on the same training runs and saved to `<out>/window-baseline/`),
so what the sequence model adds over the obvious non-deep model is measured, not claimed.

`seeds=N` trains N teachers, with train.seed, train.seed + 1, ...: the first is the one
written to `<out>` (with the baseline), the others go to `<out>/seeds/seed-<seed>/`, and
`<out>/seeds.json` holds each seed's test accuracy and macro-F1 and their mean ± sd.

While it trains, `<folder>/train_state.pt` holds the state after the last completed epoch
(`edge_lstm.training.state`); `resume=True` (`edgelstm train-teacher --resume`) continues
from it. It is removed once model.pt and metrics.json are written. With several seeds each
seed's folder resumes from its own state; seeds that had finished are trained again.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from edge_lstm.baselines.window_gbm import BASELINE_DIR, BASELINE_KEY
from edge_lstm.checkpoint import meta_for, save_checkpoint
from edge_lstm.config import Config, config_to_dict
from edge_lstm.errors import ConfigError
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
SEEDS_DIR = "seeds"
SEEDS_FILE = "seeds.json"
SEED_FIGURES = ("accuracy", "macro_f1")


def seed_folder(out_dir: Path, seed: int) -> Path:
    """Where the teacher of an extra seed is written."""
    return Path(out_dir) / SEEDS_DIR / f"seed-{seed}"


def train_teacher(cfg: Config, out_dir: Path, *, resume: bool = False, seeds: int = 1) -> Path:
    """Trains the teacher on cfg.data and writes the checkpoint and reports into `out_dir`.

    `resume`: continue from `out_dir/train_state.pt` when an earlier run was interrupted
    (without that file: start from epoch 1, with one log line). A state written by another
    config, model shape or data is refused (TrainStateError). `seeds`: how many teachers to
    train (see the module docstring); the data are prepared once for all of them.
    """
    from edge_lstm.data.prepare import prepare_data

    if seeds < 1:
        raise ConfigError(f"the number of seeds must be at least 1, got {seeds}")
    autocast_dtype(cfg.train.precision)  # fp16 without CUDA fails before the data are read
    started = time.perf_counter()
    out_dir = Path(out_dir)
    data = prepare_data(cfg)
    figures: dict[int, dict] = {}
    for k in range(seeds):
        seed = cfg.train.seed + k
        seeded = cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": seed})})
        folder = out_dir if k == 0 else seed_folder(out_dir, seed)
        figures[seed] = _train_one(seeded, data, folder, resume, started, primary=k == 0)
        started = time.perf_counter()
    if is_main_process():
        _write_seeds(out_dir, figures)
    return out_dir


def _train_one(
    cfg: Config, data: PreparedData, out_dir: Path, resume: bool, started: float, primary: bool
) -> dict:
    """One seed's teacher, written to `out_dir` (the primary one with the window baseline);
    its test headline figures ({} on ranks other than 0, which write nothing)."""
    model, result = _fit_teacher(cfg, data, out_dir / STATE_FILE, resume)
    if not is_main_process():
        return {}

    model.cpu()
    test_metrics, val_metrics = _score(model, data)
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
    baseline = _baseline(data, cfg.train.seed, out_dir) if primary else {}
    minutes = (time.perf_counter() - started) / 60
    n_params = count_parameters(model)
    report = {
        "teacher": test_metrics,
        **baseline,
        "val": val_metrics,
        "training": _training_summary(result, n_params, minutes),
    }
    (out_dir / METRICS_FILE).write_text(json.dumps(report, indent=2) + "\n")
    log.info(
        "teacher (seed %d) test macro-F1 %.4f | %d parameters | %.1f min",
        cfg.train.seed, test_metrics["macro_f1"], n_params, minutes,
    )  # fmt: skip
    remove_train_state(out_dir / STATE_FILE)
    return headline(test_metrics)


def _baseline(data: PreparedData, seed: int, out_dir: Path) -> dict[str, dict]:
    """The window baseline fitted on the training split, saved to `out_dir/window-baseline`,
    and its test metrics with its latency, size and fit time, under BASELINE_KEY."""
    from edge_lstm.baselines import BASELINE_NAME, fit_window_baseline

    baseline = fit_window_baseline(data, seed=seed)
    baseline.save(out_dir / BASELINE_DIR)
    metrics = compute_metrics(baseline.predict_proba(data.test.x), data.test.y, data.classes)
    log.info(
        "window baseline (%s) test macro-F1 %.4f, fitted in %.1f s",
        BASELINE_NAME, metrics["macro_f1"], baseline.fit_seconds,
    )  # fmt: skip
    return {
        BASELINE_KEY: {
            **metrics,
            "name": BASELINE_NAME,
            "latency_ms": baseline.latency_ms(data.test.x),
            "size_bytes": baseline.size_bytes,
            "tree_nodes": baseline.parameters,
            "fit_seconds": baseline.fit_seconds,
        }
    }


def _write_seeds(out_dir: Path, figures: dict[int, dict]) -> None:
    """seeds.json: each seed's folder and test figures, and their summary over the seeds."""
    from edge_lstm.uncertainty import summarize_seeds

    first = min(figures)
    rows = [
        {
            "seed": seed,
            "folder": "." if seed == first else str(seed_folder(Path(), seed)),
            **{name: values[name] for name in SEED_FIGURES},
        }
        for seed, values in figures.items()
    ]
    summary = {
        name: summarize_seeds([row[name] for row in rows]).to_dict() for name in SEED_FIGURES
    }
    (out_dir / SEEDS_FILE).write_text(
        json.dumps({"seeds": rows, "summary": summary}, indent=2) + "\n"
    )


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


def _score(model: nn.Module, data: PreparedData) -> tuple[dict, dict]:
    """Test metrics of the teacher and its validation metrics ({} without validation
    windows)."""
    test_metrics = compute_metrics(predict_proba(model, data.test.x), data.test.y, data.classes)
    val_metrics = (
        compute_metrics(predict_proba(model, data.val.x), data.val.y, data.classes)
        if len(data.val.y)
        else {}
    )
    return test_metrics, val_metrics


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
