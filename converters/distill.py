"""`distill`: teacher checkpoint → small causal student trained on soft targets, plus the table.

The teacher's logits on the training windows are computed once (eval mode, no gradient,
batched) and cached; the student then trains with the shared `fit` loop and the KD loss. A
hard-label student of the same architecture, budget, seed and label smoothing is the control
that shows what distillation adds (`converters.students`). One seed's pair cannot tell that
gain from seed-to-seed noise, so `distill.seeds` (`--seeds`) trains both students for the seeds
distill.train.seed + 0 … N−1: the primary seed's pair goes where it always did (OUT and
OUT/baseline), the others to OUT/seeds/seed-<seed>/ and OUT/seeds/seed-<seed>/baseline/, and
the table's seed study (`converters.seed_study`) reports each one's spread and the paired
difference KD − hard. The comparison table puts teacher, the primary KD and hard-label
students and the reference (window statistics + gradient boosting, `converters.reference`)
side by side on the test split.

Under `torchrun` (see the README, "Train on GPUs") every rank trains every student in step
with the others; rank 0 alone computes the teacher's logits (or reads their cache), fits the
reference, times the models and writes every file, and hands the logits to the other ranks
(`share_from_main`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from converters.comparison import (
    ComparisonRow,
    load_table,
    reset_comparison,
    update_comparison,
)
from converters.errors import ConverterError
from converters.outcome import Outcome
from converters.reference import reference_row
from converters.search import SEARCH_REPORT, search_students
from converters.seed_study import SeedStudy, seeds_text
from converters.students import (
    StudentRun,
    main_rank_only,
    share_from_main,
    student_name,
    train_student,
)
from edge_lstm.checkpoint import (
    WEIGHTS_FILE,
    LoadedCheckpoint,
    load_checkpoint,
    meta_for,
    save_checkpoint,
)
from edge_lstm.config import Config, TrainConfig, load_config
from edge_lstm.data import PreparedData, prepare_data
from edge_lstm.data.alignment import align_windows
from edge_lstm.data.normalization import Normalization
from edge_lstm.latency import torch_window_latency
from edge_lstm.metrics import compute_metrics, headline, softmax
from edge_lstm.models import count_parameters
from edge_lstm.training import STATE_FILE, plot_history, predict_logits, remove_train_state
from edge_lstm.training.distributed import is_main_process, setup_distributed

log = logging.getLogger(__name__)

BASELINE_DIR = "baseline"
COMPARISON_FILE = "comparison.json"
LOGITS_FILE = "teacher_logits.npy"
LOGITS_KEY_FILE = "teacher_logits.json"
METRICS_FILE = "metrics.json"
CURVE_FILE = "training_curve.png"
SEARCH_DIR = "search"
SEEDS_DIR = "seeds"
LATENCY_BATCHES = (1, 256)


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
    if is_main_process() and (
        meta.features != prepared.features
        or not np.allclose(trained_on.mean, prepared.normalization.mean, rtol=1e-4, atol=1e-4)
    ):
        log.warning(
            "%s was trained on other data or another split (its normalization differs from "
            "this config's training split); retrain the teacher on this data for a fair table",
            teacher_dir,
        )
    return teacher


def _teacher_view(teacher: LoadedCheckpoint, prepared: PreparedData, x: np.ndarray) -> np.ndarray:
    """Windows of the data's normalization in the teacher's features and normalization."""
    meta = teacher.meta
    return align_windows(
        x,
        prepared.features,
        prepared.normalization,
        meta.features,
        Normalization.from_dict(meta.normalization),
    )


def _teacher_logits_now(
    teacher: LoadedCheckpoint, prepared: PreparedData, x: np.ndarray
) -> np.ndarray:
    """Teacher logits in the data's class order for windows of the data's normalization."""
    logits = predict_logits(teacher.model, _teacher_view(teacher, prepared, x))
    order = [teacher.meta.classes.index(c) for c in prepared.classes]
    return logits[:, order]


def teacher_soft_targets(
    teacher: LoadedCheckpoint, prepared: PreparedData, out_dir: Path, cache: bool
) -> np.ndarray:
    """Teacher logits on the train windows, reused from out_dir when weights and data match.

    Under torchrun rank 0 computes them (or reads its cache) and writes the cache; every
    other rank waits for rank 0's array and receives it, without touching out_dir.
    """
    logits = _soft_targets_here(teacher, prepared, out_dir, cache) if is_main_process() else None
    return share_from_main(logits, (len(prepared.train.x), len(prepared.classes)))


def _soft_targets_here(
    teacher: LoadedCheckpoint, prepared: PreparedData, out_dir: Path, cache: bool
) -> np.ndarray:
    """`teacher_soft_targets` in this process: the cache in out_dir, or computed and cached."""
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
            "resumed_after_epoch": run.result.resumed_after_epoch,
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


def student_seeds(cfg: Config, seeds: int | None = None) -> tuple[int, ...]:
    """The seeds both students train for: distill.train.seed + 0 … N−1, N = `seeds` (default
    distill.seeds); the first is the primary seed."""
    first = cfg.distill.train.seed
    return tuple(first + k for k in range(seeds or cfg.distill.seeds))


def seed_folder(out_dir: Path, k: int, seed: int) -> Path:
    """Where the KD student of the k-th seed goes (its hard-label student in baseline/ below):
    out_dir itself for the primary seed (k = 0), else out_dir/seeds/seed-<seed>."""
    return out_dir if k == 0 else out_dir / SEEDS_DIR / f"seed-{seed}"


def _remove_other_seeds(out_dir: Path, seeds: tuple[int, ...]) -> None:
    """Drops seed folders an earlier run with more seeds left: the table no longer counts them."""
    keep = {seed_folder(out_dir, k, seed) for k, seed in enumerate(seeds)}
    for folder in sorted((out_dir / SEEDS_DIR).glob("seed-*")):
        if folder not in keep:
            shutil.rmtree(folder)
    if (out_dir / SEEDS_DIR).is_dir() and not any((out_dir / SEEDS_DIR).iterdir()):
        (out_dir / SEEDS_DIR).rmdir()


def _train_kd_student(
    cfg: Config,
    prepared: PreparedData,
    teacher: LoadedCheckpoint,
    soft: np.ndarray,
    out_dir: Path,
    train_cfg: TrainConfig,
    resume: bool = False,
) -> StudentRun:
    """Trains the KD student of the config on `train_cfg`; rank 0 saves it into out_dir."""
    dcfg, name = cfg.distill, student_name(cfg.student)
    if is_main_process():
        log.info(
            "distilling %s (%d params) into %s: T=%g alpha=%g, seed %d, %d train windows",
            teacher.meta.name, teacher.meta.n_parameters, name, dcfg.temperature, dcfg.alpha,
            train_cfg.seed, len(prepared.train.y),
        )  # fmt: skip
    kd = train_student(
        prepared,
        cfg.student,
        train_cfg,
        cfg.data.class_balance,
        soft_targets=soft,
        temperature=dcfg.temperature,
        alpha=dcfg.alpha,
        desc="distill" if train_cfg.seed == dcfg.train.seed else f"distill seed {train_cfg.seed}",
        state_path=out_dir / STATE_FILE,
        resume=resume,
    )
    kd_info = {
        "loss": "kd",
        "temperature": dcfg.temperature,
        "alpha": dcfg.alpha,
        "label_smoothing": train_cfg.label_smoothing,
        "seed": train_cfg.seed,
        "teacher": str(teacher.path.resolve()),
        "teacher_version": teacher.meta.version,
    }
    main_rank_only(lambda: _save_student(kd, cfg, prepared, out_dir, name, kd_info))
    return kd


def _train_hard_student(
    cfg: Config,
    prepared: PreparedData,
    out_dir: Path,
    train_cfg: TrainConfig,
    resume: bool = False,
) -> StudentRun:
    """The same student on hard labels only, on the same `train_cfg` (label smoothing
    included); rank 0 saves it into out_dir/baseline."""
    folder = out_dir / BASELINE_DIR
    primary = train_cfg.seed == cfg.distill.train.seed
    hard = train_student(
        prepared,
        cfg.student,
        train_cfg,
        cfg.data.class_balance,
        desc="hard labels" if primary else f"hard labels seed {train_cfg.seed}",
        state_path=folder / STATE_FILE,
        resume=resume,
    )
    info = {"loss": "ce", "label_smoothing": train_cfg.label_smoothing, "seed": train_cfg.seed}
    main_rank_only(lambda: _save_student(hard, cfg, prepared, folder, _hard_name(cfg), info))
    return hard


def _hard_name(cfg: Config) -> str:
    return f"{student_name(cfg.student)}-hard"


def _student_rows(
    cfg: Config, prepared: PreparedData, out_dir: Path, kd: StudentRun, hard: StudentRun | None
) -> list[ComparisonRow]:
    """The primary seed's rows: the KD student (out_dir) and the hard-label one (baseline/)."""
    dcfg, shape = cfg.distill, _shape(cfg, prepared)
    smoothing = f"label smoothing {dcfg.train.label_smoothing:g}"
    notes = f"distilled (T={dcfg.temperature:g}, α={dcfg.alpha:g}, {smoothing})"
    rows = [torch_row(student_name(cfg.student), kd.model, out_dir, kd.test, shape, notes)]
    if hard is not None:
        folder = out_dir / BASELINE_DIR
        notes = f"hard labels only ({smoothing})"
        rows.append(torch_row(_hard_name(cfg), hard.model, folder, hard.test, shape, notes))
    return rows


def _seed_study(
    cfg: Config, seeds: tuple[int, ...], pairs: list[tuple[StudentRun, StudentRun | None]]
) -> SeedStudy:
    """The students' test figures per seed, and the budget both got."""

    def per_seed(runs: list[StudentRun]) -> dict[str, tuple[float, ...]]:
        return {m: tuple(float(r.test[m]) for r in runs) for m in ("macro_f1", "accuracy")}

    hards = [hard for _, hard in pairs if hard is not None]
    return SeedStudy(
        seeds=seeds,
        training=cfg.distill.train.model_dump(mode="json"),
        kd_model=student_name(cfg.student),
        kd=per_seed([kd for kd, _ in pairs]),
        hard_model=_hard_name(cfg) if hards else None,
        hard=per_seed(hards) if hards else None,
    )


def _teacher_row(teacher: LoadedCheckpoint, prepared: PreparedData, window: int) -> ComparisonRow:
    """The teacher's row: its test metrics on the data's windows, aligned to its features."""
    test = compute_metrics(
        softmax(_teacher_logits_now(teacher, prepared, prepared.test.x)),
        prepared.test.y,
        prepared.classes,
    )
    shape = (window, len(teacher.meta.features))
    return torch_row(
        teacher.meta.name, teacher.model, teacher.path, test, shape, "BiLSTM+attention"
    )


def _shape(cfg: Config, prepared: PreparedData) -> tuple[int, int]:
    return (cfg.data.window, len(prepared.features))


def distill(
    cfg: Config,
    teacher_dir: Path,
    out_dir: Path,
    *,
    baseline: bool = True,
    search: bool = False,
    resume: bool = False,
    seeds: int | None = None,
) -> Path:
    """Writes the KD student (out_dir), the hard-label baseline (out_dir/baseline) and the table.

    Returns out_dir; the table is out_dir/comparison.json and comparison.md, the student search
    (`search=True`) goes to out_dir/search/. `seeds` (default distill.seeds) trains both
    students for seeds distill.train.seed + 0 … N−1; the seeds after the first go to
    out_dir/seeds/seed-<seed>/ (`seed_folder`) and into the table's seed study.

    Under torchrun every rank calls this and trains every student; only rank 0 writes, and
    every rank returns once rank 0 has written everything. The KD and hard-label students save
    their training state every epoch; `resume` continues an interrupted run from it (the
    search's short candidates start over).
    """
    out_dir = Path(out_dir)
    setup_distributed()  # joins torchrun's process group (if any) before the first broadcast
    prepared = prepare_data(cfg)
    teacher = load_teacher(Path(teacher_dir), prepared)
    soft = teacher_soft_targets(teacher, prepared, out_dir, cfg.distill.cache_teacher_logits)
    teacher_row = main_rank_only(lambda: _teacher_row(teacher, prepared, cfg.data.window))
    train = cfg.distill.train
    seed_list = student_seeds(cfg, seeds)
    pairs: list[tuple[StudentRun, StudentRun | None]] = []
    for k, seed in enumerate(seed_list):
        folder = seed_folder(out_dir, k, seed)
        train_cfg = train.model_copy(update={"seed": seed})
        kd = _train_kd_student(cfg, prepared, teacher, soft, folder, train_cfg, resume)
        hard = _train_hard_student(cfg, prepared, folder, train_cfg, resume) if baseline else None
        pairs.append((kd, hard))
        if is_main_process():
            log.info(
                "seed %d (%d of %d): test macro-F1 KD %.4f%s", seed, k + 1, len(seed_list),
                kd.test["macro_f1"], "" if hard is None else f", hard {hard.test['macro_f1']:.4f}",
            )  # fmt: skip

    def write_table() -> None:
        assert teacher_row is not None  # rank 0 made it
        students = _student_rows(cfg, prepared, out_dir, *pairs[0])
        view = partial(_teacher_view, teacher, prepared)
        reference = reference_row(teacher, prepared, view, train.seed)
        study = _seed_study(cfg, seed_list, pairs)
        _write_comparison(out_dir / COMPARISON_FILE, [teacher_row, *students, reference], study)
        _remove_other_seeds(out_dir, seed_list)

    main_rank_only(write_table)
    states = [
        state
        for k, seed in enumerate(seed_list)
        for state in (
            seed_folder(out_dir, k, seed) / STATE_FILE,
            seed_folder(out_dir, k, seed) / BASELINE_DIR / STATE_FILE,
        )
    ]
    main_rank_only(lambda: [remove_train_state(state) for state in states])
    if search:
        teacher_f1 = main_rank_only(lambda: _teacher_val_f1(teacher, prepared))
        search_students(cfg, prepared, soft, out_dir / SEARCH_DIR, teacher_val_f1=teacher_f1)
    return out_dir


def _write_comparison(json_path: Path, rows: list[ComparisonRow], study: SeedStudy) -> None:
    """A fresh table of the teacher, the KD student, the hard-label one (when trained) and the
    reference, in that order, with the students' seed study."""
    teacher, kd, *hard, reference = rows
    roles = {"teacher": teacher.model, "student": kd.model, "reference": reference.model}
    if hard:
        roles["baseline"] = hard[0].model
    reset_comparison(json_path)
    update_comparison(json_path, rows, roles, study)


def _teacher_val_f1(teacher: LoadedCheckpoint, prepared: PreparedData) -> float | None:
    if len(prepared.val.y) == 0:
        return None
    probs = softmax(_teacher_logits_now(teacher, prepared, prepared.val.x))
    return compute_metrics(probs, prepared.val.y, prepared.classes)["macro_f1"]


def run_distill(
    config_path: Path,
    teacher_dir: Path,
    out_dir: Path,
    *,
    baseline: bool | None,
    search: bool,
    resume: bool = False,
    seeds: int | None = None,
) -> Outcome:
    """`edgelstm distill`: `distill` with the config at `config_path` (`baseline` None means
    distill.baseline, `seeds` None distill.seeds), timed, with the comparison table and its
    headline to print.

    Under torchrun a rank other than 0 returns an outcome that lists no files (it wrote none)
    and whose summary says so in one line.
    """
    started = time.perf_counter()
    cfg = load_config(config_path)
    with_baseline = cfg.distill.baseline if baseline is None else baseline
    out = distill(
        cfg,
        teacher_dir,
        out_dir,
        baseline=with_baseline,
        search=search,
        resume=resume,
        seeds=seeds,
    )
    if not is_main_process():
        return _OtherRank(
            folder=out, files=[], next="", result=out, seconds=time.perf_counter() - started
        )
    files = [WEIGHTS_FILE, COMPARISON_FILE, Path(COMPARISON_FILE).with_suffix(".md").name]
    if with_baseline:
        files.append(f"{BASELINE_DIR}/{WEIGHTS_FILE}")
    if search:
        files.append(f"{SEARCH_DIR}/{SEARCH_REPORT}")
    details = [load_table(out / COMPARISON_FILE).text()]
    extra = student_seeds(cfg, seeds)[1:]
    if extra:
        details.append(
            f"{seeds_text(extra)}: students in {out / SEEDS_DIR}/seed-<seed>/"
            + (f" (hard labels in .../{BASELINE_DIR}/)" if with_baseline else "")
        )
    return Outcome(
        folder=out,
        files=files,
        next=f"edgelstm export {out} --out <deployment folder>",
        details=details,
        result=out,
        seconds=time.perf_counter() - started,
    )


class _OtherRank(Outcome):
    """The outcome on a torchrun rank other than 0: it trained, rank 0 wrote the files."""

    def summary(self) -> str:
        ctx = setup_distributed()
        return (
            f"rank {ctx.rank} of {ctx.world_size}: trained in step with rank 0, "
            f"which wrote {self.folder}"
        )
