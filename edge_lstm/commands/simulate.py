"""`edgelstm simulate`: write the built-in demo sensor logs as CSV or Parquet."""

from __future__ import annotations

import time
from pathlib import Path

import click


@click.command("simulate")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output file; .csv or .parquet picks the format.",
)
@click.option("--seed", default=0, show_default=True, help="Random seed (same seed, same data).")
@click.option(
    "--runs-per-class",
    default=20,
    show_default=True,
    type=click.IntRange(min=1),
    help="Runs (machines) per class, normal included.",
)
@click.option(
    "--run-length",
    default=600,
    show_default=True,
    type=click.IntRange(min=20),
    help="Readings per run (10 Hz).",
)
def simulate(out: Path, seed: int, runs_per_class: int, run_length: int) -> None:
    """Write simulated pump sensor logs: 24 channels, normal + 8 fault classes.

    Fault runs start healthy and turn faulty early in the run; rows after the onset carry
    the fault label. Use the file as data.path in a config, e.g. configs/demo.yaml.
    """
    from edge_lstm.simulate import CLASS_NAMES, FEATURE_NAMES, write_dataset

    start = time.perf_counter()
    path = write_dataset(out, seed=seed, runs_per_class=runs_per_class, run_length=run_length)
    runs = runs_per_class * len(CLASS_NAMES)
    click.echo(
        f"wrote {path}: {runs * run_length} readings, {runs} runs, {len(CLASS_NAMES)} classes, "
        f"{len(FEATURE_NAMES)} sensors, {path.stat().st_size / 1e6:.1f} MB in "
        f"{time.perf_counter() - start:.1f} s"
    )
    click.echo(
        f"next: edgelstm train-teacher --config CONFIG --out DIR (with data.path: {path} in CONFIG)"
    )
