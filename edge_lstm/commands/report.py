"""`edgelstm report`: the demo report from a runs folder (click wiring only)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument(
    "runs_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default="runs/demo"
)
def report(runs_dir: Path) -> None:
    """Write RUNS_DIR/report.md (+ PNGs) from the outputs of `make demo`.

    Reads the comparison table, the deployment manifest and the live stage's recordings
    (RUNS_DIR/live/), evaluates the served model offline on the replayed runs, and compares.

    Example: edgelstm report runs/demo
    """
    from edge_lstm.reporting.report import write_report

    path = write_report(runs_dir)
    click.echo(f"wrote {path} (+ PNGs beside it)")
