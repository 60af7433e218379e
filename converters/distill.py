"""`distill`: teacher checkpoint → small causal student trained on soft targets, plus the table.

The teacher's logits on the training windows are computed once (eval mode, no gradient,
batched) and cached; the student then trains with the shared `fit` loop and the KD loss. A
hard-label student of the same architecture, seed and budget is the control that shows what
distillation adds, and the comparison table puts teacher, KD student and hard-label student
side by side on the test split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from converters.comparison import ComparisonRow, reset_comparison, update_comparison
from converters.errors import ConverterError
from converters.kd_loss import make_kd_loss_fn
from edge_lstm.checkpoint import (
    WEIGHTS_FILE,
    LoadedCheckpoint,
    load_checkpoint,
    meta_for,
    save_checkpoint,
)
from edge_lstm.config import Config, StudentConfig, TrainConfig
from edge_lstm.data import PreparedData, prepare_data
from edge_lstm.data.alignment import align_windows
from edge_lstm.data.normalization import Normalization
from edge_lstm.latency import torch_window_latency
from edge_lstm.metrics import compute_metrics, headline, softmax
from edge_lstm.models import build_from_model_config, count_parameters
from edge_lstm.training import TrainResult, fit, plot_history, predict_logits, seed_everything

log = logging.getLogger(__name__)

BASELINE_DIR = "baseline"
COMPARISON_FILE = "comparison.json"
LOGITS_FILE = "teacher_logits.npy"
LOGITS_KEY_FILE = "teacher_logits.json"
METRICS_FILE = "metrics.json"
CURVE_FILE = "training_curve.png"
LATENCY_BATCHES = (1, 256)
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


def load_teacher(teacher_dir: Path, prepared: PreparedData) -> LoadedCheckpoint:
    """Loads the teacher and checks it was trained for the same classes and sensors."""
    teacher = load_checkpoint(Path(teacher_dir))
    meta = teacher.meta
    if meta.kind != "teacher":
        raise ConverterError(
            f"{teacher_dir}: is a {meta.kind} checkpoint, --teacher needs a teacher"
        )
    if sorted(meta.classes) != sorted(prepared.classes):
        raise ConverterError(
            f"{teacher_dir}: teacher classes {meta.classes} differ from the data's "
            f"{prepared.classes}; distill on the data the teacher was trained on"
        )
    if meta.window != prepared.train.x.shape[1]:
        raise ConverterError(
            f"{teacher_dir}: teacher windows are {meta.window} steps, the config makes "
            f"{prepared.train.x.shape[1]}; use the teacher's data.window"
        )
    trained_on = Normalization.from_dict(meta.normalization)
    if meta.features != prepared.features or not np.allclose(
        trained_on.mean, prepared.normalization.mean, rtol=1e-4, atol=1e-4
    ):
        log.warning(
            "%s was trained on other data or another split (its normalization differs from "
            "this config's training split); retrain the teacher on this data for a fair table",
            teacher_dir,
        )
    return teacher


def _teacher_logits_now(
    teacher: LoadedCheckpoint, prepared: PreparedData, x: np.ndarray
) -> np.ndarray:
    """Teacher logits in the data's class order for windows of the data's normalization."""
    meta = teacher.meta
    aligned = align_windows(
        x,
        prepared.features,
        prepared.normalization,
        meta.features,
        Normalization.from_dict(meta.normalization),
    )
    logits = predict_logits(teacher.model, aligned)
    order = [meta.classes.index(c) for c in prepared.classes]
    return logits[:, order]


def teacher_soft_targets(
    teacher: LoadedCheckpoint, prepared: PreparedData, out_dir: Path, cache: bool
) -> np.ndarray:
    """Teacher logits on the train windows, reused from out_dir when weights and data match."""
    x = prepared.train.x
    digest = hashlib.sha256()
    digest.update((teacher.path / WEIGHTS_FILE).read_bytes())
    digest.update(json.dumps(teacher.meta.classes).encode())
    digest.update(np.ascontiguousarray(x).tobytes())
    digest.update(json.dumps(prepared.classes).encode())
    key = digest.hexdigest()
    logits_path, key_path = out_dir / LOGITS_FILE, out_dir / LOGITS_KEY_FILE
    if cache and logits_path.is_file() and key_path.is_file():
        stored = json.loads(key_path.read_text())
        if stored.get("key") == key:
            log.info("reusing cached teacher logits %s", logits_path)
            return np.load(logits_path)
    started = time.perf_counter()
    logits = _teacher_logits_now(teacher, prepared, x)
    log.info("teacher logits for %d train windows in %.1f s", len(x), time.perf_counter() - started)
    if cache:
        out_dir.mkdir(parents=True, exist_ok=True)
        np.save(logits_path, logits)
        key_path.write_text(json.dumps({"key": key, "shape": list(logits.shape)}) + "\n")
    return logits


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
    """Trains one student: KD loss when `soft_targets` are given, hard-label CE otherwise.

    The initial weights depend only on `train_cfg.seed`, so a KD and a hard-label student of
    the same architecture start from the same point.
    """
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


def _save_student(
    run: StudentRun,
    cfg: Config,
    prepared: PreparedData,
    out_dir: Path,
    name: str,
    training_info: dict[str, Any],
) -> Path:
    metrics = {
        "test": headline(run.test),
        "val": headline(run.val),
        "train": headline(run.train),
        "initial": run.initial,
    }
    meta = meta_for("student", run.model, run.student_cfg, cfg, prepared, metrics, name)
    save_checkpoint(out_dir, run.model, meta)
    plot_history(run.result.history, out_dir / CURVE_FILE, title=name)
    report = {
        "test": run.test,
        "val": run.val,
        "initial": run.initial,
        "training": {
            **training_info,
            "best_epoch": run.result.best_epoch,
            "best_val_loss": run.result.best_val_loss,
            "epochs_run": len(run.result.history),
            "stop_reason": run.result.stop_reason,
            "train_seconds": run.result.seconds,
            "history": run.result.history,
        },
    }
    (out_dir / METRICS_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return out_dir


def torch_row(
    name: str,
    model: nn.Module,
    checkpoint_dir: Path,
    test_metrics: dict[str, Any],
    shape: tuple[int, int],
    notes: str,
) -> ComparisonRow:
    """A comparison row for a torch model: test scores, size of model.pt, 1-thread latency.

    `shape` is (window, features) of one input window.
    """
    window, n_features = shape
    latency = {
        b: torch_window_latency(model, n_features, window, b)["median_ms"] for b in LATENCY_BATCHES
    }
    return ComparisonRow(
        model=name,
        runtime="torch",
        precision="fp32",
        macro_f1=test_metrics["macro_f1"],
        accuracy=test_metrics["accuracy"],
        parameters=count_parameters(model),
        size_bytes=(checkpoint_dir / WEIGHTS_FILE).stat().st_size,
        latency_ms_b1=latency[1],
        latency_ms_b256=latency[256],
        notes=notes,
    )


def distill(
    cfg: Config,
    teacher_dir: Path,
    out_dir: Path,
    *,
    baseline: bool = True,
    search: bool = False,
) -> Path:
    """Writes the KD student (out_dir), the hard-label baseline (out_dir/baseline) and the table.

    Returns out_dir; the table is out_dir/comparison.json and comparison.md.
    """
    out_dir = Path(out_dir)
    prepared = prepare_data(cfg)
    teacher = load_teacher(Path(teacher_dir), prepared)
    soft = teacher_soft_targets(teacher, prepared, out_dir, cfg.distill.cache_teacher_logits)
    dcfg = cfg.distill
    name = student_name(cfg.student)
    log.info(
        "distilling %s (%d params) into %s: T=%g alpha=%g, %d train windows",
        teacher.meta.name, teacher.meta.n_parameters, name, dcfg.temperature, dcfg.alpha,
        len(prepared.train.y),
    )  # fmt: skip
    kd = train_student(
        prepared,
        cfg.student,
        dcfg.train,
        cfg.data.class_balance,
        soft_targets=soft,
        temperature=dcfg.temperature,
        alpha=dcfg.alpha,
        desc="distill",
    )
    kd_info = {
        "loss": "kd",
        "temperature": dcfg.temperature,
        "alpha": dcfg.alpha,
        "teacher": str(teacher.path.resolve()),
        "teacher_version": teacher.meta.version,
    }
    _save_student(kd, cfg, prepared, out_dir, name, kd_info)

    teacher_test = compute_metrics(
        softmax(_teacher_logits_now(teacher, prepared, prepared.test.x)),
        prepared.test.y,
        prepared.classes,
    )
    window = cfg.data.window
    shape = (window, len(prepared.features))
    rows = [
        torch_row(
            teacher.meta.name,
            teacher.model,
            teacher.path,
            teacher_test,
            (window, len(teacher.meta.features)),
            "BiLSTM+attention",
        ),
        torch_row(
            name,
            kd.model,
            out_dir,
            kd.test,
            shape,
            f"distilled (T={dcfg.temperature:g}, α={dcfg.alpha:g})",
        ),
    ]
    roles = {"teacher": teacher.meta.name, "student": name}
    if baseline:
        hard = train_student(
            prepared, cfg.student, dcfg.train, cfg.data.class_balance, desc="hard labels"
        )
        hard_name = f"{name}-hard"
        _save_student(hard, cfg, prepared, out_dir / BASELINE_DIR, hard_name, {"loss": "ce"})
        rows.append(
            torch_row(
                hard_name, hard.model, out_dir / BASELINE_DIR, hard.test, shape, "hard labels only"
            )
        )
        roles["baseline"] = hard_name
    reset_comparison(out_dir / COMPARISON_FILE)
    update_comparison(out_dir / COMPARISON_FILE, rows, roles)

    if search:
        from converters.search import search_students

        search_students(
            cfg,
            prepared,
            soft,
            out_dir / "search",
            teacher_val_f1=_teacher_val_f1(teacher, prepared),
        )
    return out_dir


def _teacher_val_f1(teacher: LoadedCheckpoint, prepared: PreparedData) -> float | None:
    if len(prepared.val.y) == 0:
        return None
    probs = softmax(_teacher_logits_now(teacher, prepared, prepared.val.x))
    return compute_metrics(probs, prepared.val.y, prepared.classes)["macro_f1"]
