"""`distill --search`: a small grid of student sizes and the accuracy–latency Pareto front.

Each candidate is distilled with a short budget (a third of the configured epochs and time),
scored on the validation split (selection) and the test split (report), and timed with torch
on one thread at batch 1. A user picks the smallest student that meets their accuracy target.

Under `torchrun` every rank trains every candidate in step; rank 0 alone times them and writes
search.json, search.md and pareto.png (the other ranks' candidates carry NaN latencies).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from converters.students import main_rank_only, student_name, train_student
from edge_lstm.config import Config, StudentConfig, TrainConfig
from edge_lstm.data import PreparedData
from edge_lstm.latency import torch_window_latency
from edge_lstm.models import count_parameters
from edge_lstm.plotting import pyplot, save_figure
from edge_lstm.training.distributed import is_main_process

log = logging.getLogger(__name__)

GRID: dict[str, tuple] = {"cell": ("gru", "lstm"), "layers": (1, 2), "hidden_size": (8, 16, 32, 64)}
TARGET_SHARE = 0.98  # of the teacher's validation macro-F1
SEARCH_REPORT = "search.md"


@dataclass
class Candidate:
    """One searched student and its figures."""

    name: str
    cell: str
    layers: int
    hidden_size: int
    parameters: int
    val_macro_f1: float
    test_macro_f1: float
    test_accuracy: float
    latency_ms_b1: float
    latency_ms_b256: float
    train_seconds: float
    pareto: bool = False


def short_budget(train: TrainConfig) -> TrainConfig:
    """A third of the epochs and of the time budget (at most 2 minutes) per candidate."""
    minutes = min(2.0, train.max_minutes / 3) if train.max_minutes else 2.0
    return train.model_copy(
        update={"epochs": max(2, math.ceil(train.epochs / 3)), "max_minutes": minutes}
    )


def pareto_front(candidates: list[Candidate]) -> list[Candidate]:
    """Candidates that no other is both faster (b1) and more accurate (val macro-F1) than."""
    front = []
    for c in candidates:
        dominated = any(
            o.latency_ms_b1 <= c.latency_ms_b1
            and o.val_macro_f1 >= c.val_macro_f1
            and (o.latency_ms_b1 < c.latency_ms_b1 or o.val_macro_f1 > c.val_macro_f1)
            for o in candidates
        )
        if not dominated:
            front.append(c)
    return sorted(front, key=lambda c: c.latency_ms_b1)


def recommend(candidates: list[Candidate], target_f1: float | None) -> Candidate | None:
    """The fastest candidate whose validation macro-F1 reaches the target."""
    if target_f1 is None:
        return None
    meeting = [c for c in candidates if c.val_macro_f1 >= target_f1]
    return min(meeting, key=lambda c: c.latency_ms_b1) if meeting else None


def _plot(candidates: list[Candidate], target_f1: float | None, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for cell, marker in (("gru", "o"), ("lstm", "s")):
        group = [c for c in candidates if c.cell == cell]
        ax.scatter(
            [c.latency_ms_b1 for c in group],
            [c.val_macro_f1 for c in group],
            marker=marker,
            label=cell.upper(),
            alpha=0.8,
        )
        for c in group:
            ax.annotate(
                f"{c.hidden_size}x{c.layers}", (c.latency_ms_b1, c.val_macro_f1), fontsize=7
            )
    front = pareto_front(candidates)
    ax.plot(
        [c.latency_ms_b1 for c in front],
        [c.val_macro_f1 for c in front],
        "k--",
        lw=1,
        label="Pareto front",
    )
    if target_f1 is not None:
        ax.axhline(target_f1, color="tab:red", lw=1, label=f"target {target_f1:.3f}")
    ax.set(
        xlabel="torch latency per window, batch 1, 1 thread (ms)",
        ylabel="validation macro-F1",
        title="student search: accuracy vs latency",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=110)


def _markdown(candidates: list[Candidate], target_f1: float | None, pick: Candidate | None) -> str:
    lines = [
        "# Student search (distilled, short budget each)",
        "",
        "| student | params | val macro-F1 | test macro-F1 | b1 ms | b256 ms | Pareto |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in sorted(candidates, key=lambda c: c.latency_ms_b1):
        lines.append(
            f"| {c.name} | {c.parameters:,} | {c.val_macro_f1:.4f} | {c.test_macro_f1:.4f} | "
            f"{c.latency_ms_b1:.3f} | {c.latency_ms_b256:.2f} | {'yes' if c.pareto else ''} |"
        )
    lines.append("")
    if target_f1 is None:
        lines.append("No validation split, so no accuracy target was set.")
    elif pick is None:
        lines.append(f"No candidate reaches the target validation macro-F1 {target_f1:.4f}.")
    else:
        lines.append(
            f"Fastest student reaching {TARGET_SHARE:.0%} of the teacher's validation macro-F1 "
            f"({target_f1:.4f}): **{pick.name}** ({pick.parameters:,} parameters, "
            f"{pick.latency_ms_b1:.3f} ms at batch 1). Set `student:` to cell "
            f"{pick.cell}, layers {pick.layers}, hidden_size {pick.hidden_size} to use it."
        )
    return "\n".join(lines) + "\n"


def _candidate(
    cfg: Config,
    prepared: PreparedData,
    soft_targets: np.ndarray,
    student_cfg: StudentConfig,
    budget: TrainConfig,
    desc: str,
) -> Candidate:
    """Distills one student of the grid on the short budget and measures it."""
    run = train_student(
        prepared,
        student_cfg,
        budget,
        cfg.data.class_balance,
        soft_targets=soft_targets,
        temperature=cfg.distill.temperature,
        alpha=cfg.distill.alpha,
        desc=desc,
    )
    window, n_features = cfg.data.window, len(prepared.features)

    def timed() -> dict[int, float]:
        return {
            b: torch_window_latency(run.model, n_features, window, b)["median_ms"] for b in (1, 256)
        }

    latency = main_rank_only(timed) or {1: math.nan, 256: math.nan}
    return Candidate(
        name=student_name(student_cfg),
        cell=student_cfg.cell,
        layers=student_cfg.layers,
        hidden_size=student_cfg.hidden_size,
        parameters=count_parameters(run.model),
        val_macro_f1=run.val.get("macro_f1", float("nan")),
        test_macro_f1=run.test["macro_f1"],
        test_accuracy=run.test["accuracy"],
        latency_ms_b1=latency[1],
        latency_ms_b256=latency[256],
        train_seconds=run.result.seconds,
    )


def _write_report(
    out_dir: Path,
    candidates: list[Candidate],
    budget: TrainConfig,
    teacher_val_f1: float | None,
) -> None:
    """Marks the Pareto front; writes search.json, search.md and pareto.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    front = {c.name for c in pareto_front(candidates)}
    for c in candidates:
        c.pareto = c.name in front
    target = None if teacher_val_f1 is None else TARGET_SHARE * teacher_val_f1
    pick = recommend(candidates, target)
    report = {
        "budget": budget.model_dump(mode="json"),
        "teacher_val_macro_f1": teacher_val_f1,
        "target_val_macro_f1": target,
        "recommended": None if pick is None else pick.name,
        "candidates": [asdict(c) for c in candidates],
    }
    (out_dir / "search.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / SEARCH_REPORT).write_text(_markdown(candidates, target, pick))
    _plot(candidates, target, out_dir / "pareto.png")


def search_students(
    cfg: Config,
    prepared: PreparedData,
    soft_targets: np.ndarray,
    out_dir: Path,
    *,
    teacher_val_f1: float | None = None,
    grid: dict[str, tuple] | None = None,
) -> list[Candidate]:
    """Distills every grid point; writes search.json, search.md and pareto.png into out_dir.

    Under torchrun every rank returns the candidates, rank 0's with latencies; only rank 0
    writes, and every rank returns once it has.
    """
    grid = grid or GRID
    out_dir = Path(out_dir)
    budget = short_budget(cfg.distill.train)
    points = list(itertools.product(grid["cell"], grid["layers"], grid["hidden_size"]))
    candidates: list[Candidate] = []
    for i, (cell, layers, hidden) in enumerate(points, 1):
        student_cfg = StudentConfig.model_validate(
            {**cfg.student.model_dump(), "cell": cell, "layers": layers, "hidden_size": hidden}
        )
        desc = f"search {i}/{len(points)} {student_name(student_cfg)}"
        c = _candidate(cfg, prepared, soft_targets, student_cfg, budget, desc)
        candidates.append(c)
        if is_main_process():
            log.info(
                "search %s: val macro-F1 %.4f, %.3f ms at b1",
                c.name, c.val_macro_f1, c.latency_ms_b1,
            )  # fmt: skip
    main_rank_only(lambda: _write_report(out_dir, candidates, budget, teacher_val_f1))
    return candidates
