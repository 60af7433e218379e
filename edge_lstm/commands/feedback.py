"""`edgelstm feedback export`: confirmed alerts' readings as training data (click wiring only)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("feedback")
def feedback() -> None:
    """Operator feedback a gateway stored (feedback.enabled in its config)."""


@feedback.command("export")
@click.argument("state_dir", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Labelled long-format file to write: .csv or .parquet.",
)
@click.option(
    "--rejected-as-normal",
    is_flag=True,
    help="Also export rejected alerts, labelled with the normal class (false alarms).",
)
def export(state_dir: Path, out: Path, rejected_as_normal: bool) -> None:
    """Write the readings around the alerts operators confirmed in STATE_DIR (the gateway's
    state_dir, or its feedback.sqlite3) as run_id (= alert id), ts, label, features.

    Example: edgelstm feedback export /var/lib/edgelstm/state --out feedback.parquet
    """
    from edge_lstm.reporting.feedback_export import export_feedback

    summary = export_feedback(state_dir, out, rejected_as_normal=rejected_as_normal)
    click.echo(summary.line())
