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
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Train this many teachers (train.seed, train.seed+1, ...): the first in OUT, the others "
    "in OUT/seeds/seed-<seed>/; OUT/seeds.json has their test figures and mean ± sd.",
)
def train_teacher(config_path: Path, out_dir: Path, resume: bool, seeds: int) -> None:
    """Train the teacher on data.path of the config; write the checkpoint and its reports.

    Writes model.pt (weights), model.json (config, features, classes, normalization),
    training_curve.png, metrics.json (test metrics of the teacher and of the window baseline:
    gradient-boosted trees on window statistics, fitted on the same training runs), the fitted
    baseline in window-baseline/, and seeds.json (test figures per seed).

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

    from edge_lstm.baselines import BASELINE_DIR, BASELINE_KEY
    from edge_lstm.checkpoint import META_FILE, WEIGHTS_FILE
    from edge_lstm.train_teacher import CURVE_FILE, METRICS_FILE, SEEDS_DIR, SEEDS_FILE
    from edge_lstm.train_teacher import train_teacher as run
    from edge_lstm.training.distributed import is_main_process

    ckpt = run(cfg, out_dir, resume=resume, seeds=seeds)
    if not is_main_process():
        return
    report = json.loads((ckpt / METRICS_FILE).read_text())
    teacher, training = report["teacher"], report["training"]
    click.echo(
        f"teacher: test macro-F1 {teacher['macro_f1']:.4f}, accuracy {teacher['accuracy']:.4f}; "
        f"{training['parameters']:,} parameters, {training['total_minutes']:.1f} min"
    )
    click.echo(_baseline_line(report[BASELINE_KEY], teacher))
    click.echo(_training_line(training, cfg.train.epochs, cfg.train.max_minutes))
    if seeds > 1:
        click.echo(_seeds_line(json.loads((ckpt / SEEDS_FILE).read_text())["seeds"]))
    names = [WEIGHTS_FILE, META_FILE, CURVE_FILE, METRICS_FILE, BASELINE_DIR, SEEDS_FILE]
    if seeds > 1:
        names.append(SEEDS_DIR)
    for name in names:
        click.echo(f"  {ckpt / name}")
    click.echo(
        f"next: edgelstm evaluate {ckpt} --split test, or "
        f"edgelstm distill --teacher {ckpt} --config {config_path} --out <student folder>"
    )


def _baseline_line(baseline: dict, teacher: dict) -> str:
    """The window baseline's figures and which model is ahead on test macro-F1, as printed."""
    from edge_lstm.units import human_size

    ours, theirs = f"{teacher['macro_f1']:.4f}", f"{baseline['macro_f1']:.4f}"
    gap = abs(float(ours) - float(theirs))
    if ours == theirs:
        verdict = "the two are level"
    elif float(ours) > float(theirs):
        verdict = f"the teacher is ahead by {gap:.4f}"
    else:
        verdict = f"the baseline is ahead by {gap:.4f}"
    return (
        f"window baseline ({baseline['name']}, same training runs): test macro-F1 {theirs}, "
        f"accuracy {baseline['accuracy']:.4f}; {human_size(baseline['size_bytes'])}, "
        f"{baseline['latency_ms']['b1']:.2f} ms at batch 1; {verdict}"
    )


def _seeds_line(rows: list[dict]) -> str:
    """Test figures over the seeds (rows of seeds.json) as mean ± sd."""
    from edge_lstm.uncertainty import summarize_seeds

    seeds = ", ".join(str(row["seed"]) for row in rows)
    macro_f1, accuracy = (
        summarize_seeds([row[k] for row in rows]) for k in ("macro_f1", "accuracy")
    )
    return f"seeds {seeds}: test macro-F1 {macro_f1.text()}, accuracy {accuracy.text()}"


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
