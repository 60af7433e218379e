"""`edgelstm retrain-check`: whether to retrain, one line per reason (click wiring only).

Exit code 0: no rule says retrain; 1: retraining recommended; 2: an input is missing or bad.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

EXIT_RETRAIN = 1


@click.command("retrain-check")
@click.option(
    "--state-dir",
    type=click.Path(exists=True, path_type=Path),
    help="A gateway's state_dir (or its feedback.sqlite3): precision from the stored verdicts.",
)
@click.option(
    "--stats",
    "stats_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Saved stats message(s) of a gateway (JSON or JSON lines): precision from them.",
)
@click.option(
    "--drift",
    "drift_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Saved drift summaries (JSON or JSON lines) of edgelstm/<gateway>/drift.",
)
@click.option("--broker", metavar="HOST:PORT", help="Listen to the gateway's stats and drift.")
@click.option("--gateway-id", default="gateway", show_default=True, help="With --broker.")
@click.option(
    "--listen-s", type=float, default=30.0, show_default=True, help="With --broker: at most."
)
@click.option(
    "--model-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="The served deployment folder: its manifest's `created` time.",
)
@click.option("--min-precision", type=click.FloatRange(0, 1), default=0.8, show_default=True)
@click.option(
    "--min-verdicts",
    type=click.IntRange(1),
    default=20,
    show_default=True,
    help="Verdicts a class needs over the last week before its precision counts.",
)
@click.option("--max-drifting-share", type=click.FloatRange(0, 1), default=0.2, show_default=True)
@click.option(
    "--drifting-for-s",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="The share must hold in every drift summary this long (0: the latest one).",
)
@click.option("--max-age-days", type=click.FloatRange(0), default=90.0, show_default=True)
def retrain_check(**options: object) -> None:
    """Say whether to retrain: precision per class over the last week, the share of drifting
    devices, the model's age. Prints one line per rule; exit code 1 = retrain recommended,
    0 = not needed (scripts: `edgelstm retrain-check ... || make retrain`).

    Example: edgelstm retrain-check --state-dir /var/lib/edgelstm/state --drift drift.json
    --model-dir /opt/edgelstm/deploy
    """
    from edge_lstm.reporting.retrain_check import RETRAIN, Thresholds, gather, retrain_check
    from runtime.config import parse_host_port

    sources = ("state_dir", "stats_file", "drift_file", "broker", "model_dir")
    if all(options[name] is None for name in sources):
        raise click.UsageError(
            "nothing to check: give --state-dir, --stats, --drift, --broker or --model-dir"
        )
    now = time.time()
    broker = options["broker"]
    inputs = gather(
        state_dir=options["state_dir"],  # type: ignore[arg-type]
        stats_file=options["stats_file"],  # type: ignore[arg-type]
        drift_file=options["drift_file"],  # type: ignore[arg-type]
        broker=parse_host_port(str(broker)) if broker is not None else None,
        gateway_id=str(options["gateway_id"]),
        listen_s=float(options["listen_s"]),  # type: ignore[arg-type]
        model_dir=options["model_dir"],  # type: ignore[arg-type]
        now=now,
    )
    thresholds = Thresholds(
        min_precision=options["min_precision"],  # type: ignore[arg-type]
        min_verdicts=options["min_verdicts"],  # type: ignore[arg-type]
        max_drifting_share=options["max_drifting_share"],  # type: ignore[arg-type]
        drifting_for_s=options["drifting_for_s"],  # type: ignore[arg-type]
        max_age_days=options["max_age_days"],  # type: ignore[arg-type]
    )
    drift_source = str(options["drift_file"] or "the broker's drift summaries")
    findings = retrain_check(inputs, thresholds, drift_source, now)
    for finding in findings:
        click.echo(finding.line())
    if any(f.verdict == RETRAIN for f in findings):
        click.echo("retraining recommended")
        click.get_current_context().exit(EXIT_RETRAIN)
    click.echo("no retraining needed")
