"""`edgelstm quantize`: int8 variants of a deployment folder, accuracy-checked on the test split."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("quantize")
@click.argument("deploy_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--mode",
    metavar="dynamic|static",
    default="dynamic",
    show_default=True,
    help="dynamic (int8 weights, ONNX Runtime CPU) or static (QDQ, calibrated; for TensorRT).",
)
@click.option(
    "--calibration-windows",
    type=click.IntRange(min=1),
    default=None,
    help="Training windows to calibrate static ranges on; default quantize.calibration_windows.",
)
@click.option(
    "--tolerance",
    "tolerance_points",
    type=click.FloatRange(min=0),
    default=None,
    help="Largest macro-F1 drop accepted, in points; default quantize.tolerance_points (1.0).",
)
@click.option(
    "--data",
    "data_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Sensor logs for calibration and test figures; default: data.path of the export.",
)
def quantize(
    deploy_dir: Path,
    mode: str,
    calibration_windows: int | None,
    tolerance_points: float | None,
    data_path: Path | None,
) -> None:
    """Quantize the graphs in DEPLOY_DIR to int8 and check them on the test split.

    Writes model.int8-<mode>.onnx and step.int8-<mode>.onnx, records size, macro-F1, argmax
    agreement with fp32 and latency in manifest.json, and prints them. Exits with code 2, keeping
    the file in DEPLOY_DIR/rejected/, when macro-F1 drops by more than the tolerance.
    """
    from converters.targets import convert, target_for

    done = convert(
        target_for("quantize", mode),
        deploy_dir,
        calibration_windows=calibration_windows,
        tolerance_points=tolerance_points,
        data_path=data_path,
    )
    for line in done.details:
        click.echo(line)
    click.echo(done.summary())
