"""`edgelstm simulate`: write a built-in scenario's sensor logs as CSV or Parquet."""

from __future__ import annotations

import time
from pathlib import Path

import click

SCENARIO_NAMES = ("pump", "process")  # edge_lstm.scenarios.SCENARIOS, named here for --help


@click.command("simulate")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output file; .csv or .parquet picks the format.",
)
@click.option(
    "--scenario",
    type=click.Choice(SCENARIO_NAMES),
    default="pump",
    show_default=True,
    help="pump: 10 Hz pump fleet, loud faults (quick demo). process: reactor fleet sampled "
    "once a minute, faults hidden by control loops, a device_id column to split by.",
)
@click.option("--seed", default=0, show_default=True, help="Random seed (same seed, same data).")
@click.option(
    "--runs-per-class",
    default=None,
    type=click.IntRange(min=1),
    help="Runs per class, normal included [default: pump 20, process 12 (few, as in a plant)].",
)
@click.option(
    "--run-length",
    default=None,
    type=click.IntRange(min=20),
    help="Readings per run [default: pump 600 (1 min at 10 Hz), process 720 (12 h at 1/min; "
    "at least 60)].",
)
def simulate(
    out: Path, scenario: str, seed: int, runs_per_class: int | None, run_length: int | None
) -> None:
    """Write simulated sensor logs of a built-in scenario.

    Fault runs start healthy and turn faulty within the run; rows after the onset carry the
    fault label. Use the file as data.path in a config: configs/demo.yaml for pump,
    configs/process.yaml for process.
    """
    from edge_lstm.scenarios import get_scenario, write_scenario

    chosen = get_scenario(scenario)
    runs_per_class = runs_per_class or chosen.runs_per_class
    run_length = run_length or chosen.run_length
    start = time.perf_counter()
    path = write_scenario(scenario, out, seed, runs_per_class, run_length)
    runs = runs_per_class * len(chosen.classes)
    click.echo(
        f"wrote {path}: {runs * run_length} readings, {runs} runs, {len(chosen.classes)} classes, "
        f"{len(chosen.features)} sensors, {path.stat().st_size / 1e6:.1f} MB in "
        f"{time.perf_counter() - start:.1f} s"
    )
    click.echo(
        f"next: edgelstm train-teacher --config CONFIG --out DIR (with data.path: {path} in CONFIG)"
    )
