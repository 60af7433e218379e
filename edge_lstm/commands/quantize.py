"""`edgelstm quantize`: int8 variants of a deployment folder, accuracy-checked on the test split."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from edge_lstm.commands.export import human_size


def _ms(latency: dict[str, Any], batch: str) -> str:
    return f"{latency[batch]['median_ms']:.3f}"


def result_lines(results: dict[str, dict[str, Any]]) -> list[str]:
    """The table `edgelstm quantize` prints: one row per int8 artifact, fp32 -> int8."""
    header = (
        f"{'artifact':<22} {'size fp32 -> int8':>36} {'macro-F1 fp32 -> int8':>23} "
        f"{'agree':>6} {'ms b1 fp32/int8':>16} {'ms b256 fp32/int8':>18}"
    )
    lines = [header]
    for name, r in results.items():
        size = (
            f"{human_size(r['size_bytes_fp32'])} -> "
            f"{human_size(r['size_bytes'])} "
            f"({r['size_ratio']:.0%}; weights {r['weight_ratio']:.0%})"
        )
        f1 = f"{r['macro_f1_fp32']:.4f} -> {r['macro_f1']:.4f}"
        b1 = f"{_ms(r['latency_ms_fp32'], 'b1')}/{_ms(r['latency_ms'], 'b1')}"
        b256 = f"{_ms(r['latency_ms_fp32'], 'b256')}/{_ms(r['latency_ms'], 'b256')}"
        lines.append(
            f"{name:<22} {size:>36} {f1:>23} {r['argmax_agreement']:>6.1%} {b1:>16} {b256:>18}"
        )
    for name, r in results.items():
        ops = ", ".join(f"{op} x{n}" for op, n in r["quantized_ops"].items()) or "none"
        fp32 = (
            f"; {'/'.join(r['fp32_recurrent_ops'])} stays fp32" if r["fp32_recurrent_ops"] else ""
        )
        lines.append(f"{name}: quantized ops {ops}{fp32}")
    lines.append("latency: ms per call, 1 thread; window graphs per window, step graphs per step")
    return lines


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
    from converters.quantize import quantize as run_quantize

    started = time.perf_counter()
    results = run_quantize(
        deploy_dir,
        mode=mode,
        calibration_windows=calibration_windows,
        tolerance_points=tolerance_points,
        data_path=data_path,
    )
    seconds = time.perf_counter() - started
    for line in result_lines(results):
        click.echo(line)
    written = ", ".join(f"{name} {human_size(r['size_bytes'])}" for name, r in results.items())
    next_step = (
        f"edgelstm build-engine {deploy_dir} --precision int8"
        if mode == "static"
        else f"edgelstm quantize {deploy_dir} --mode static"
    )
    click.echo(f"wrote {written} into {deploy_dir} in {seconds:.1f} s; next: {next_step}")
