"""`edgelstm export`: checkpoint -> deployment folder (model.onnx, step.onnx, manifest.json)."""

from __future__ import annotations

import time
from pathlib import Path

import click


def human_size(n_bytes: int) -> str:
    """1234 -> '1.2 kB', for the one-line summaries of the converter commands."""
    size = float(n_bytes)
    for unit in ("B", "kB", "MB"):
        if size < 1000 or unit == "MB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} MB"


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
    in and out) and manifest.json. Fails, leaving nothing behind, when ONNX Runtime and PyTorch
    disagree on real test windows by more than export.parity_tolerance.
    """
    from converters.export_onnx import export as run_export

    started = time.perf_counter()
    manifest = run_export(checkpoint, out_dir, data_path=data_path)
    seconds = time.perf_counter() - started
    parity = manifest.metrics["parity"]
    for graph, result in parity.items():
        click.echo(
            f"parity {graph}: max |diff| {result['max_abs_diff']:.2e} over "
            f"{result['windows']} windows, argmax identical"
        )
    test = manifest.metrics["onnx_test"]
    click.echo(f"ONNX window graph on the test split: macro-F1 {test['macro_f1']:.4f}")
    written = ", ".join(
        f"{art.file} {human_size(art.size_bytes)}" for art in manifest.artifacts.values()
    )
    click.echo(f"wrote {out_dir} ({written}) in {seconds:.1f} s; next: edgelstm quantize {out_dir}")
