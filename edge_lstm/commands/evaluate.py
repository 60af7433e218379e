"""`edgelstm evaluate`: metrics and a confusion-matrix PNG for a checkpoint, ONNX file or engine."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("evaluate")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option(
    "--data",
    "data_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Sensor logs (CSV/Parquet) to score on; default: data.path of the config.",
)
@click.option(
    "--split",
    type=click.Choice(["train", "val", "test"]),
    default="test",
    show_default=True,
    help="Which split of the rebuilt data to score.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Config that builds the split; default: the one stored with the artifact.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Output folder; default: eval-<split> beside the artifact.",
)
@click.option(
    "--gateway-config",
    type=click.Path(path_type=Path),
    default=None,
    help="Gateway config whose debounce section (k, threshold) detection is replayed with; "
    "default: the gateway's defaults.",
)
@click.option(
    "--baseline/--no-baseline",
    default=True,
    show_default=True,
    help="Also fit (or load, beside a teacher) the window baseline and score it on the same "
    "windows.",
)
def evaluate(
    artifact: Path,
    data_path: Path | None,
    split: str,
    config_path: Path | None,
    out_dir: Path | None,
    gateway_config: Path | None,
    baseline: bool,
) -> None:
    """Score ARTIFACT (checkpoint dir, model.onnx/step.onnx, or .engine) on a data split.

    Prints accuracy, macro/weighted F1, Cohen's kappa, ROC-AUC and per-class figures; 95%
    intervals from resampling whole runs; onset (windows across a label change) against steady
    windows; per fault class the detection delay and the share of runs detected, and false
    alarms per hour, replaying the windows through the gateway's debounce rule; ECE and Brier
    before and after the artifact's temperature; and the same for the window baseline. Writes
    metrics.json and confusion.png.
    """
    from edge_lstm.reporting.evaluate import evaluate_artifact, report_lines

    result = evaluate_artifact(
        artifact,
        data_path=data_path,
        split=split,
        config_path=config_path,
        out_dir=out_dir,
        baseline=baseline,
        gateway_config=gateway_config,
    )
    click.echo(f"{result.predictor} ({result.kind}) on the {split} split:")
    for line in report_lines(result.report):
        click.echo(f"  {line}")
    click.echo(f"wrote {result.metrics_path} and {result.confusion_path}")
