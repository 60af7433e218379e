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
def train_teacher(config_path: Path, out_dir: Path) -> None:
    """Train the teacher on data.path of the config; write the checkpoint and its reports.

    Writes model.pt (weights), model.json (config, features, classes, normalization),
    training_curve.png and metrics.json (test metrics of the teacher and of the per-window
    mean/std logistic baseline). Launched as `torchrun --nproc_per_node N
    .venv/bin/edgelstm train-teacher ...` it trains with DistributedDataParallel.
    """
    import json

    from edge_lstm.config import load_config

    cfg = load_config(config_path)  # before importing torch: a typo fails in a blink

    from edge_lstm.checkpoint import META_FILE, WEIGHTS_FILE
    from edge_lstm.train_teacher import CURVE_FILE, METRICS_FILE
    from edge_lstm.train_teacher import train_teacher as run
    from edge_lstm.training.distributed import is_main_process

    ckpt = run(cfg, out_dir)
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
    for name in (WEIGHTS_FILE, META_FILE, CURVE_FILE, METRICS_FILE):
        click.echo(f"  {ckpt / name}")
    click.echo(
        f"next: edgelstm evaluate {ckpt} --split test, or "
        f"edgelstm distill --teacher {ckpt} --config {config_path} --out <student folder>"
    )
