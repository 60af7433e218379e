"""`edgelstm serve`: the gateway daemon (click wiring only; the runtime is imported on use)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("serve")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Gateway config YAML (configs/gateway.yaml). Flags below override it.",
)
@click.option(
    "--model-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Deployment folder written by `edgelstm export`.",
)
@click.option("--broker", "broker", metavar="HOST:PORT", help="MQTT broker address.")
@click.option("--gateway-id", help="Name used in the alert/stats/status topics.")
@click.option(
    "--backend",
    type=click.Choice(["onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt"]),
    help="Inference backend.",
)
@click.option("--artifact", help="Manifest artifact to serve, e.g. step or step.int8-dynamic.")
@click.option("--threads", type=int, help="Intra-op threads of the backend (default 1).")
@click.option("--emit", type=click.Choice(["alerts", "all"]), help="all = every window's result.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Writable folder for the alert outbox.",
)
@click.option("--stats-interval", type=float, help="Seconds between stats messages.")
@click.option("--prometheus-port", type=int, help="Serve metrics on 127.0.0.1:PORT.")
def serve(
    config_path: Path | None,
    model_dir: Path | None,
    broker: str | None,
    gateway_id: str | None,
    backend: str | None,
    artifact: str | None,
    threads: int | None,
    emit: str | None,
    state_dir: Path | None,
    stats_interval: float | None,
    prometheus_port: int | None,
) -> None:
    """Run the MQTT inference daemon: readings in, debounced fault alerts and stats out.

    Stops cleanly on SIGTERM/SIGINT and reloads the deployment folder on SIGHUP.

    Example: edgelstm serve --config configs/gateway.yaml --model-dir runs/demo/deploy
    """
    from runtime.config import load_gateway_config, parse_host_port
    from runtime.daemon import serve as run_service

    overrides: dict[str, object] = {
        key: value
        for key, value in {
            "model_dir": model_dir,
            "gateway_id": gateway_id,
            "backend": backend,
            "artifact": artifact,
            "threads": threads,
            "debounce.emit": emit,
            "state_dir": state_dir,
            "stats_interval_s": stats_interval,
            "prometheus_port": prometheus_port,
        }.items()
        if value is not None
    }
    if broker is not None:
        overrides["broker.host"], overrides["broker.port"] = parse_host_port(broker)
    cfg = load_gateway_config(config_path, overrides)
    raise SystemExit(run_service(cfg))
