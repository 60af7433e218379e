"""`edgelstm export`: checkpoint -> deployment folder (model.onnx, step.onnx, manifest.json)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("export")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Deployment folder to write (created; an earlier export there is replaced).",
)
@click.option(
    "--data",
    "data_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Sensor logs for the parity and test figures; default: data.path of the checkpoint.",
)
def export(checkpoint: Path, out_dir: Path, data_path: Path | None) -> None:
    """Export CHECKPOINT (a teacher or student folder) to ONNX with a parity check.

    Writes model.onnx (window graph), step.onnx (student only: one reading per call, state
    in and out) and manifest.json, with the temperature fitted on the validation split (the
    gateway serves softmax(logits / T)). Fails, leaving nothing behind, when ONNX Runtime and
    PyTorch disagree by more than export.parity_tolerance on a sample of test and validation
    windows stratified over every class and several runs of each.
    """
    from converters.targets import convert, get_target

    done = convert(get_target("onnx"), checkpoint, out_dir=out_dir, data_path=data_path)
    for line in done.details:
        click.echo(line)
    click.echo(done.summary())
