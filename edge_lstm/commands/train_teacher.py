"""`edgelstm train-teacher`: train the BiLSTM+attention teacher from a config."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("train-teacher")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    required=True,
    help="Training config (YAML), e.g. configs/demo.yaml.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Checkpoint folder to write, e.g. runs/demo/teacher.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an interrupted run from OUT/train_state.pt (written after every epoch); "
    "without that file, start from epoch 1.",
)
def train_teacher(config_path: Path, out_dir: Path, resume: bool) -> None:
    """Train the teacher on data.path of the config; write the checkpoint and its reports.

    Writes model.pt (weights), model.json (config, features, classes, normalization),
    training_curve.png and metrics.json (test metrics of the teacher and of the per-window
    mean/std logistic baseline).

    Several GPUs (NCCL) or CPU processes (gloo): launch it with torchrun, e.g.

    \b
      torchrun --standalone --nproc_per_node 4 .venv/bin/edgelstm train-teacher ...

    It then trains with DistributedDataParallel. train.batch_size is per process (global batch =
    batch_size x processes; lr as train.lr_scaling says), metrics are reduced over the ranks
    and only rank 0 writes OUT. Several nodes and details: README.md, "Train on GPUs".

    After every epoch OUT/train_state.pt holds the state to resume from (removed when the run
    finishes); a run killed midway continues with --resume.
    """
    import json

    from edge_lstm.config import load_config

    cfg = load_config(config_path)  # before importing torch: a typo fails in a blink

    from edge_lstm.checkpoint import META_FILE, WEIGHTS_FILE
    from edge_lstm.train_teacher import CURVE_FILE, METRICS_FILE
    from edge_lstm.train_teacher import train_teacher as run
    from edge_lstm.training.distributed import is_main_process

    ckpt = run(cfg, out_dir, resume=resume)
    if not is_main_process():
        return
    report = json.loads((ckpt / METRICS_FILE).read_text())
    teacher, baseline = report["teacher"], report["baseline_meanstd_logreg"]
    training = report["training"]
    click.echo(
        f"teacher: test macro-F1 {teacher['macro_f1']:.4f}, accuracy {teacher['accuracy']:.4f} "
        f"(mean/std baseline macro-F1 {baseline['macro_f1']:.4f}); "
        f"{training['parameters']:,} parameters, {training['total_minutes']:.1f} min"
    )
    click.echo(_training_line(training, cfg.train.epochs, cfg.train.max_minutes))
    for name in (WEIGHTS_FILE, META_FILE, CURVE_FILE, METRICS_FILE):
        click.echo(f"  {ckpt / name}")
    click.echo(
        f"next: edgelstm evaluate {ckpt} --split test, or "
        f"edgelstm distill --teacher {ckpt} --config {config_path} --out <student folder>"
    )


def _training_line(training: dict, epochs: int, max_minutes: float | None) -> str:
    """How many epochs ran and why the run stopped (and that it resumed, when it did)."""
    reason = training["stop_reason"]
    if reason == "time budget":
        why = (
            f"the time budget (train.max_minutes = {max_minutes}) cut it before train.epochs, "
            "so this run depends on machine speed"
        )
    elif reason == "patience":
        why = "early stopping (train.patience)"
    else:
        why = f"train.epochs = {epochs}"
    resumed = training.get("resumed_after_epoch", 0)
    after = f", resumed after epoch {resumed}" if resumed else ""
    return (
        f"training: {training['epochs_run']} epochs (best {training['best_epoch']}), "
        f"stop_reason: {reason} - {why}{after}"
    )
