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
def evaluate(
    artifact: Path,
    data_path: Path | None,
    split: str,
    config_path: Path | None,
    out_dir: Path | None,
) -> None:
    """Score ARTIFACT (checkpoint dir, model.onnx/step.onnx, or .engine) on a data split.

    Prints accuracy, macro/weighted F1, Cohen's kappa, ROC-AUC and per-class figures, and writes
    metrics.json and confusion.png.
    """
    from edge_lstm.metrics import summary_lines
    from edge_lstm.reporting.evaluate import evaluate_artifact

    result = evaluate_artifact(
        artifact, data_path=data_path, split=split, config_path=config_path, out_dir=out_dir
    )
    click.echo(f"{result.predictor} ({result.kind}) on the {split} split:")
    for line in summary_lines(result.metrics):
        click.echo(f"  {line}")
    click.echo(f"wrote {result.metrics_path} and {result.confusion_path}")
