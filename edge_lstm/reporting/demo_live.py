"""The demo's live stage: a broker, `edgelstm serve` on the int8 student, the held-out test runs
replayed into it (runtime.replay, in this process), and a recorder writing what the gateway
published to <runs>/live/.

`python -m edge_lstm.reporting.demo_live --runs runs/demo --config configs/demo.yaml` (the pump
data; scripts/demo.sh calls it with the scenario's runs folder, config, speedup and
`--drift-feature`). `edgelstm report` reads the recordings: live/alerts.jsonl,
live/stats.jsonl, live/status.jsonl and live/summary.json. The broker, the serve subprocess and
the recorder are the one gateway harness (edge_lstm/reporting/gateway_harness.py).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from edge_lstm.data.windows import window_starts
from edge_lstm.errors import EdgeLstmError
from edge_lstm.local_broker import LocalBroker
from edge_lstm.options import runs_dir_option
from edge_lstm.reporting.gateway_harness import Gateway, Recorder, example_config
from edge_lstm.reporting.recordings import gateway_latency, read_jsonl
from runtime.errors import EdgeRuntimeError
from runtime.manifest import Manifest
from runtime.replay import Columns, Replayer, Run, device_ids, load_runs, rate_for_speedup

log = logging.getLogger(__name__)

GATEWAY_ID = "demo"
ONLINE_TIMEOUT_S = 90.0
QUIET_S = 10.0
STOP_TIMEOUT_S = 15.0
REPLAY_QOS = 1
# one extra device: a normal test run whose drift feature (--drift-feature, default
# DRIFT_FEATURE, a pump channel) creeps DRIFT_SIGMAS training standard deviations off over its
# first DRIFT_RAMP share of readings, then stays there (a sensor losing its calibration); the
# drift monitor must flag it, and its windows are not scored
DRIFT_FEATURE = "temp_bearing_nde"
NO_DRIFT = "none"  # --drift-feature none: no drifting device
DRIFT_SIGMAS = 6.0
DRIFT_RAMP = 0.3
# the drift monitor at demo scale, in wall-clock seconds: the demo replays 50 readings/s per
# device (pump 10 Hz at 5x, process 1/min at 3000x), so a run lasts 12-15 s of wall time
DEMO_DRIFT = {
    "interval_s": 1.0,
    "half_life_s": 5.0,
    "min_readings": 150,
    "for_s": 2.0,
}


@dataclass
class HeldOutRuns:
    """The held-out test runs of the config's split, how many windows the offline split has on
    them, and the data's column names."""

    run_ids: list[str]
    expected_windows: int
    columns: Columns
    window: int
    stride: int


def _test_runs(config_path: Path, data_path: Path) -> HeldOutRuns:
    from edge_lstm.config import load_config
    from edge_lstm.data.prepare import prepare_data

    cfg = load_config(config_path)
    prepared = prepare_data(cfg, data_path)
    columns = Columns(cfg.data.run_column, cfg.data.timestamp_column, cfg.data.label_column)
    return HeldOutRuns(
        list(prepared.split_runs["test"]),
        len(prepared.test.y),
        columns,
        cfg.data.window,
        cfg.data.stride,
    )


@dataclass
class DriftingDevice:
    """The extra replayed device whose sensor drifts: which run it copies and how."""

    device_id: str
    run_id: str
    feature: str
    sigmas: float
    windows: int


def drifting_copy(run: Run, feature: int, offset: float, ramp_share: float) -> Run:
    """`run` with `offset` added to one feature, ramped in linearly over the first
    `ramp_share` of its readings and held after."""
    ramp = np.clip(np.arange(len(run.ts)) / max(1.0, ramp_share * len(run.ts)), 0.0, 1.0)
    values = run.values.copy()
    values[:, feature] += (offset * ramp).astype(values.dtype)
    return Run(f"drift-{run.run_id}", run.ts, values, run.labels)


def check_drift_feature(feature: str | None, manifest: Manifest) -> None:
    """Raises unless `feature` (None: no drifting device) is one of the model's features."""
    if feature is not None and feature not in manifest.features:
        raise EdgeLstmError(
            f"--drift-feature {feature!r} is not a feature of the model (it has "
            f"{', '.join(manifest.features)}); name one of them, or `{NO_DRIFT}` for no "
            "drifting device (scripts/demo.sh: EDGELSTM_DEMO_DRIFT_FEATURE)"
        )


def _drifting_device(
    runs: list[Run], held_out: HeldOutRuns, manifest: Manifest, feature: str | None
) -> tuple[Run, DriftingDevice] | None:
    """A copy of the first normal test run whose `feature` drifts (None without a normal test
    run, or for feature None)."""
    check_drift_feature(feature, manifest)
    normal = manifest.classes[0]
    base = next((r for r in runs if all(label == normal for label in r.labels)), None)
    if base is None or feature is None:
        return None
    k = manifest.features.index(feature)
    run = drifting_copy(base, k, DRIFT_SIGMAS * manifest.norm_std[k], DRIFT_RAMP)
    windows = len(window_starts(len(run.ts), held_out.window, held_out.stride))
    return run, DriftingDevice(run.run_id, base.run_id, feature, DRIFT_SIGMAS, windows)


def _check_inputs(deploy_dir: Path, data_path: Path, artifact: str) -> None:
    for needed in (deploy_dir / "manifest.json", data_path):
        if not needed.exists():
            raise EdgeLstmError(f"{needed} is missing: run the earlier demo stages first")
    artifacts = json.loads((deploy_dir / "manifest.json").read_text())["artifacts"]
    if artifact not in artifacts:
        raise EdgeLstmError(
            f"{deploy_dir} has no artifact {artifact!r} (it has {sorted(artifacts)}); "
            "run `edgelstm quantize` first or pass --artifact step"
        )


def replay_runs(
    data_path: Path,
    deploy_dir: Path,
    held_out: HeldOutRuns,
    broker: LocalBroker,
    speedup: float,
    timeout_s: float,
    drift_feature: str | None = DRIFT_FEATURE,
) -> tuple[dict[str, Any], DriftingDevice | None]:
    """Publishes the test runs and the device whose `drift_feature` drifts (None: none; values
    in the manifest's feature order, QoS 1) at `speedup` times their recorded rate;
    `Replayer.replay`'s counts and the drifting device. Raises if it took over timeout_s."""
    manifest = Manifest.load(deploy_dir)
    _, runs = load_runs(data_path, manifest.features, held_out.run_ids, held_out.columns)
    rate = rate_for_speedup(runs, speedup, data_path)
    devices = device_ids(runs, len(runs))
    drifting = _drifting_device(runs, held_out, manifest, drift_feature)
    if drifting is not None:
        devices.append((drifting[1].device_id, drifting[0]))
    publisher = Replayer(broker.host, broker.port, qos=REPLAY_QOS)
    try:
        result = publisher.replay(devices, rate, None, timeout_s)
    finally:
        publisher.close()
    if result["readings"] < sum(len(run.ts) for _, run in devices):
        raise EdgeLstmError(
            f"the replay did not finish within {timeout_s:g} s ({result['readings']} readings "
            "sent); raise --timeout or --speedup"
        )
    return result, drifting[1] if drifting is not None else None


def _wait_for_windows(gateway: Gateway, expected: int) -> None:
    """Until every expected window result arrived, or nothing arrived for QUIET_S seconds."""
    recorder: Recorder = gateway.recorder
    while recorder.counts.get("window", 0) < expected and gateway.serve.running:
        if time.monotonic() - recorder.last_message > QUIET_S:
            log.warning(
                "no message for %.0f s; %d of %d window results arrived",
                QUIET_S,
                recorder.counts.get("window", 0),
                expected,
            )
            return
        time.sleep(0.1)


def _start_gateway(live: Path, deploy_dir: Path, broker: LocalBroker, artifact: str) -> Gateway:
    """configs/gateway.yaml pointed at the demo's model and broker, state in live/state,
    emitting every window so the report can compare the live results with the offline ones;
    the recorder writes live/{alerts,stats,status}.jsonl."""
    return Gateway(
        live,
        deploy_dir,
        broker.host,
        broker.port,
        gateway_id=GATEWAY_ID,
        base=example_config(),
        jsonl_dir=live,
        online_timeout_s=ONLINE_TIMEOUT_S,
        stop_timeout_s=STOP_TIMEOUT_S,
        artifact=artifact,
        stats_interval_s=2,
        debounce={"emit": "all"},
        drift=DEMO_DRIFT,
    )


def run_live(
    runs_dir: Path,
    config_path: Path,
    artifact: str,
    speedup: float,
    replay_timeout_s: float,
    drift_feature: str | None = DRIFT_FEATURE,
) -> dict[str, Any]:
    """Runs the live stage and returns (and writes to live/summary.json) what happened; the
    extra device's `drift_feature` drifts (None: no such device)."""
    deploy_dir, data_path = runs_dir / "deploy", runs_dir / "data" / "sensors.parquet"
    _check_inputs(deploy_dir, data_path, artifact)
    check_drift_feature(drift_feature, Manifest.load(deploy_dir))  # before a broker starts
    live = runs_dir / "live"
    shutil.rmtree(live, ignore_errors=True)
    live.mkdir(parents=True)
    held_out = _test_runs(config_path, data_path)
    run_ids, expected = held_out.run_ids, held_out.expected_windows
    started = time.monotonic()
    with LocalBroker(log_path=live / "broker.log") as broker:
        click.echo(f"broker: {broker.kind} on {broker.host}:{broker.port}")
        gateway = _start_gateway(live, deploy_dir, broker, artifact)
        try:
            click.echo(
                f"serving {artifact} of {deploy_dir}; replaying {len(run_ids)} test runs "
                f"at {speedup:g}x ({expected} windows expected)"
            )
            replay_started_at = time.time()
            replay, drifting = replay_runs(
                data_path, deploy_dir, held_out, broker, speedup, replay_timeout_s, drift_feature
            )
            _wait_for_windows(gateway, expected + (drifting.windows if drifting else 0))
        finally:
            # stop() waits for the final stats and `offline` the service publishes on SIGTERM
            code = gateway.stop()
    summary = {
        "broker": broker.kind,
        "artifact": artifact,
        "deploy_dir": str(deploy_dir),
        "speedup": speedup,
        "runs": run_ids,
        "expected_windows": expected,
        "drifting_device": asdict(drifting) if drifting else None,
        "replay_started_at": replay_started_at,
        "received": dict(
            Counter(
                body.get("event")
                for body in gateway.recorder.bodies()
                if drifting is None or body.get("device_id") != drifting.device_id
            )
        ),
        "replay": {k: float(v) for k, v in replay.items() if v is not None},
        "serve_exit_code": code,
        "serve_stop_seconds": round(gateway.serve.stop_seconds, 3),
        "offline_status_published": "offline" in gateway.recorder.payloads("/status"),
        "seconds": round(time.monotonic() - started, 1),
    }
    (live / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _print_summary(summary: dict[str, Any], live: Path) -> None:
    counts = summary["received"]
    click.echo(
        f"windows {counts.get('window', 0)}/{summary['expected_windows']}, alerts raised "
        f"{counts.get('raised', 0)}, cleared {counts.get('cleared', 0)}; serve exited "
        f"{summary['serve_exit_code']} in {summary['serve_stop_seconds']:.2f} s after SIGTERM"
    )
    for body in read_jsonl(live / "alerts.jsonl"):
        if body.get("event") == "raised":
            click.echo(
                f"  alert {body['device_id']}: {body['class']} "
                f"(confidence {body['confidence']:.2f}, window end {body['window_end_ts']:.1f})"
            )
    stats = read_jsonl(live / "stats.jsonl")
    if stats:
        for stage, figures in gateway_latency(stats[-1]["latency_ms"]).items():
            click.echo(
                f"  {stage:>17}: p50 {figures['p50']:.3f} ms  p99 {figures['p99']:.3f} ms  "
                f"max {figures['max']:.3f} ms  (n={figures['n']})"
            )


@click.command()
@runs_dir_option
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("configs/demo.yaml"),
    show_default=True,
)
@click.option(
    "--artifact", default="step.int8-static", show_default=True, help="Manifest artifact to serve."
)
@click.option(
    "--speedup",
    type=float,
    default=5.0,
    show_default=True,
    help="Replay at X times the data's own rate.",
)
@click.option(
    "--drift-feature",
    default=DRIFT_FEATURE,
    show_default=True,
    help="Feature that drifts on the one extra replayed device (a copy of a normal test run), "
    f"for the drift monitor to catch; `{NO_DRIFT}` for no such device. The default is a pump "
    "channel: name one of your data's sensors for other data.",
)
@click.option("--timeout", "timeout_s", type=float, default=600.0, show_default=True)
def main(
    runs_dir: Path,
    config_path: Path,
    artifact: str,
    speedup: float,
    drift_feature: str,
    timeout_s: float,
) -> None:
    """Serve the demo's student over a local broker and replay the held-out test runs into it."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    feature = None if drift_feature.lower() == NO_DRIFT else drift_feature
    try:
        summary = run_live(runs_dir, config_path, artifact, speedup, timeout_s, feature)
    except (EdgeLstmError, EdgeRuntimeError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    _print_summary(summary, runs_dir / "live")
    if summary["serve_exit_code"] != 0:
        click.echo("error: `edgelstm serve` did not exit cleanly", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
