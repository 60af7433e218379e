"""`edgelstm replay`: publish a dataset's runs as live devices (click wiring only)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("replay")
@click.argument("data", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--broker", default="127.0.0.1:1883", show_default=True, metavar="HOST:PORT")
@click.option("--devices", type=int, help="Number of devices (runs are reused past their count).")
@click.option("--rate", type=float, help="Readings per second per device.")
@click.option("--speedup", type=float, help="Replay at X times the data's own sample rate.")
@click.option("--binary", is_flag=True, help="Compact float32 binary payloads instead of JSON.")
@click.option("--chunk", type=int, default=1, show_default=True, help="Readings per message.")
@click.option("--runs", "run_ids", help="Comma-separated run ids to replay (default: all).")
@click.option("--split", type=click.Choice(["train", "val", "test"]), help="Replay one split...")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="...of this training config (needs the train extra); its column names are used.",
)
@click.option(
    "--model-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Order values by this deployment folder's feature list.",
)
@click.option("--run-column", default="run_id", show_default=True, help="Run id column.")
@click.option("--ts-column", default="ts", show_default=True, help="Timestamp column (unix s).")
@click.option("--label-column", default="label", show_default=True, help="Label column.")
@click.option("--limit", type=int, help="At most this many readings per device.")
@click.option("--max-seconds", type=float, help="Stop after this many seconds.")
@click.option("--qos", type=click.IntRange(0, 2), default=0, show_default=True)
@click.option("--live-ts", is_flag=True, help="Shift timestamps so each run starts now.")
@click.option("--topic", default="sensors/{device_id}/data", show_default=True)
def replay(**options: object) -> None:
    """Publish DATA (CSV or Parquet, long format) to MQTT, one device per run, in time order.

    Example: edgelstm replay runs/demo/data/sensors.parquet --split test --config
    configs/demo.yaml --speedup 20
    """
    from runtime.replay import ReplayRequest, replay_dataset

    request = ReplayRequest(**options)  # type: ignore[arg-type]
    problem = request.problem()
    if problem:
        raise click.UsageError(problem)
    if request.config_path is not None:
        request = _from_training_config(request)
    summary = replay_dataset(request)
    click.echo(
        f"replayed {summary['readings']} readings of {summary['devices']} devices in "
        f"{summary['messages']} messages to {request.broker} in {summary['seconds']:.1f} s "
        f"({summary['readings_per_s']} readings/s)"
    )


def _from_training_config(request):
    """--split/--config: the split's run ids and the config's column names (torch side)."""
    import dataclasses

    from edge_lstm.config import load_config
    from edge_lstm.data.prepare import prepare_data

    config = load_config(request.config_path)
    data = config.data
    return dataclasses.replace(
        request,
        run_ids=",".join(prepare_data(config, request.data).split_runs[request.split]),
        run_column=data.run_column,
        ts_column=data.timestamp_column,
        label_column=data.label_column,
    )
