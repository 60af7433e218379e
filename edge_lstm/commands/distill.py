"""`edgelstm distill`: train a small streamable student on the teacher's soft targets."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("distill")
@click.option(
    "--teacher",
    "teacher_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Teacher checkpoint folder, e.g. runs/demo/teacher.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    required=True,
    help="Config with the data, student and distill sections, e.g. configs/demo.yaml.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Student checkpoint folder to write, e.g. runs/demo/student.",
)
@click.option(
    "--baseline/--no-baseline",
    default=None,
    help="Also train the same student on hard labels only (default: distill.baseline).",
)
@click.option(
    "--seeds",
    type=click.IntRange(1, 100),
    default=None,
    help="Train the KD and hard-label students for N seeds (distill.train.seed + 0..N-1) and "
    "report the spread and KD minus hard with its 95% interval; default distill.seeds (1).",
)
@click.option(
    "--search",
    is_flag=True,
    help="Also try a grid of student sizes and report the accuracy-latency Pareto front.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue interrupted student training from the train_state.pt files in OUT; "
    "without them, start from epoch 1.",
)
def distill(
    teacher_dir: Path,
    config_path: Path,
    out_dir: Path,
    baseline: bool | None,
    seeds: int | None,
    search: bool,
    resume: bool,
) -> None:
    """Distill the teacher into the student of the config (Hinton et al. KD loss).

    Writes the student checkpoint into OUT (model.pt, model.json, metrics.json,
    training_curve.png), the hard-label student into OUT/baseline/, and the comparison table of
    teacher, students and the window-statistics reference (gbm-window-stats) on the test split
    to OUT/comparison.json and OUT/comparison.md. Both students get the same budget and
    distill.train.label_smoothing, so the hard-label student is a fair control.

    With --seeds N the students of the seeds after the first go to OUT/seeds/seed-<seed>/ (and
    its baseline/), and the table says whether KD beats hard labels beyond the seed-to-seed
    spread: only a 95% interval of KD minus hard above 0 earns that claim.

    Several GPUs (NCCL) or CPU processes (gloo): launch it with torchrun, e.g.

    \b
      torchrun --standalone --nproc_per_node 4 .venv/bin/edgelstm distill ...

    It then trains every student (--search included) with DistributedDataParallel.
    distill.train.batch_size is per process. Only rank 0 writes OUT (the teacher-logits
    cache included) and times the models; it sends the teacher's logits to the other ranks,
    so nodes need no shared disk. Details: README.md, "Train on GPUs".
    """
    from converters.distill import run_distill

    done = run_distill(
        config_path,
        teacher_dir,
        out_dir,
        baseline=baseline,
        search=search,
        resume=resume,
        seeds=seeds,
    )
    for line in done.details:
        click.echo(line)
    click.echo(done.summary())
