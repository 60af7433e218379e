"""`edgelstm quantize`: int8 variants of a deployment folder, accuracy-checked on the validation
split."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("quantize")
@click.argument("deploy_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--mode",
    metavar="dynamic|static",
    default=None,
    help="dynamic (int8 weights, ONNX Runtime CPU; the default) or static (QDQ, calibrated).",
)
@click.option(
    "--for",
    "runtime",
    type=click.Choice(["onnxruntime", "tensorrt"]),
    default="onnxruntime",
    show_default=True,
    help="tensorrt: the step graph's static QDQ in the form TensorRT parses (step.int8-tensorrt; "
    "implies --mode static) plus the test windows build-engine checks engines on.",
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
    "--guard-split",
    type=click.Choice(["val", "test"]),
    default=None,
    help="Split the accuracy guard decides on (default val, so the test figures stay held "
    "out). test is for data without validation windows: the guard then refuses to run unless "
    "asked for it.",
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
    mode: str | None,
    runtime: str,
    calibration_windows: int | None,
    tolerance_points: float | None,
    guard_split: str | None,
    data_path: Path | None,
) -> None:
    """Quantize the graphs in DEPLOY_DIR to int8 (weights per channel) and check them.

    Writes step.int8-<mode>.onnx and model.int8-<mode>.onnx (with --for tensorrt
    step.int8-tensorrt.onnx and parity-windows.npz), records size, test-split macro-F1,
    argmax agreement with fp32, latency and batch invariance in manifest.json, and prints them.
    A window graph whose LSTM/GRU stays fp32 (static mode; a GRU in dynamic mode) is not
    written: it would be no smaller and no faster. Exits with code 2, keeping the file in
    DEPLOY_DIR/rejected/, when macro-F1 on the validation split drops by more than the
    tolerance.

    For serving, prefer step.int8-static: its constant scales make a window's probabilities
    independent of the other devices batched into the same step call; dynamic int8 picks its
    scales per call, so they move with the load (the quantize output shows by how much).
    """
    from converters.errors import ConverterError
    from converters.targets import convert, target_for

    if mode == "tensorrt" or (runtime == "tensorrt" and mode not in (None, "static")):
        raise ConverterError(
            "TensorRT reads static Q/DQ graphs only: use `--mode static --for tensorrt`"
        )
    variant = "tensorrt" if runtime == "tensorrt" else (mode or "dynamic")
    done = convert(
        target_for("quantize", variant),
        deploy_dir,
        calibration_windows=calibration_windows,
        tolerance_points=tolerance_points,
        guard_split=guard_split,
        data_path=data_path,
    )
    for line in done.details:
        click.echo(line)
    click.echo(done.summary())
