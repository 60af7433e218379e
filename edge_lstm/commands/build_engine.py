"""`edgelstm build-engine`: a TensorRT engine of the step graph (run it on the target device)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("build-engine")
@click.argument("deploy_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--precision",
    metavar="fp32|fp16|int8",
    default="fp16",
    show_default=True,
    help="fp32, fp16, or int8 (from the static QDQ graph of `edgelstm quantize --mode static "
    "--for tensorrt`).",
)
@click.option(
    "--max-batch",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Largest batch (device windows per step call) the engine accepts.",
)
@click.option(
    "--opt-batch",
    type=click.IntRange(min=1),
    default=None,
    help="Batch the kernels are tuned for; default min(64, max batch).",
)
@click.option(
    "--data",
    "data_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Sensor logs to rebuild the test split from for the parity check; default: the "
    "folder's parity-windows.npz (quantize --for tensorrt), else data.path of the export.",
)
@click.option(
    "--workspace",
    "workspace_mb",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Builder workspace limit in MB.",
)
def build_engine(
    deploy_dir: Path,
    precision: str,
    max_batch: int,
    opt_batch: int | None,
    data_path: Path | None,
    workspace_mb: int,
) -> None:
    """Build a TensorRT engine of DEPLOY_DIR's step graph for the GPU of this machine.

    Needs TensorRT and a CUDA device (a Jetson with JetPack, or a desktop GPU with
    `pip install tensorrt pycuda`). Engines only run on the GPU model and TensorRT version that
    built them; the manifest records both and the runtime checks them. The engine is checked
    against ONNX Runtime on real test windows of every class and refused (exit code 2) beyond
    the parity limits of its precision.
    """
    from converters.targets import convert, target_for

    done = convert(
        target_for("build-engine", precision),
        deploy_dir,
        max_batch=max_batch,
        opt_batch=opt_batch,
        workspace_mb=workspace_mb,
        data_path=data_path,
    )
    click.echo(done.summary())
