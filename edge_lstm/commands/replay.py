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
@click.option("--runs", help="Comma-separated run ids to replay (default: all).")
@click.option("--split", type=click.Choice(["train", "val", "test"]), help="Replay one split...")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="...of this training config (needs the train extra).",
)
@click.option(
    "--model-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Order values by this deployment folder's feature list.",
)
@click.option("--limit", type=int, help="At most this many readings per device.")
@click.option("--max-seconds", type=float, help="Stop after this many seconds.")
@click.option("--qos", type=click.IntRange(0, 2), default=0, show_default=True)
@click.option("--live-ts", is_flag=True, help="Shift timestamps so each run starts now.")
@click.option("--topic", default="sensors/{device_id}/data", show_default=True)
def replay(
    data: Path,
    broker: str,
    devices: int | None,
    rate: float | None,
    speedup: float | None,
    binary: bool,
    chunk: int,
    runs: str | None,
    split: str | None,
    config_path: Path | None,
    model_dir: Path | None,
    limit: int | None,
    max_seconds: float | None,
    qos: int,
    live_ts: bool,
    topic: str,
) -> None:
    """Publish DATA (CSV or Parquet, long format) to MQTT, one device per run, in time order.

    Example: edgelstm replay runs/demo/data/sensors.parquet --split test --config
    configs/demo.yaml --speedup 20
    """
    import numpy as np

    from runtime.config import parse_host_port
    from runtime.errors import EdgeRuntimeError
    from runtime.manifest import Manifest
    from runtime.replay import Replayer, device_ids, load_runs

    if rate is not None and speedup is not None:
        raise click.UsageError("give --rate or --speedup, not both")
    if (split is None) != (config_path is None):
        raise click.UsageError("--split and --config go together")
    if "{device_id}" not in topic:
        raise click.UsageError("--topic needs {device_id}")
    run_ids = runs.split(",") if runs else None
    if split is not None:
        from edge_lstm.config import load_config
        from edge_lstm.data.prepare import prepare_data

        run_ids = prepare_data(load_config(config_path), data).split_runs[split]
    features = Manifest.load(model_dir).features if model_dir else None
    _, loaded = load_runs(data, features, run_ids)
    if speedup is not None:
        period = float(np.median(np.concatenate([np.diff(r.ts) for r in loaded])))
        if not period > 0:
            raise EdgeRuntimeError(f"{data}: cannot infer the sample period from timestamps")
        rate = speedup / period
    host, port = parse_host_port(broker)
    publisher = Replayer(host, port, topic, qos, binary, chunk, live_ts)
    try:
        summary = publisher.replay(
            device_ids(loaded, devices or len(loaded)), rate, limit, max_seconds
        )
    finally:
        publisher.close()
    click.echo(
        f"replayed {summary['readings']} readings of {summary['devices']} devices in "
        f"{summary['messages']} messages to {host}:{port} in {summary['seconds']:.1f} s "
        f"({summary['readings_per_s']} readings/s)"
    )
