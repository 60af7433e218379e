"""The demo's live stage: a broker, `edgelstm serve` on the int8 student, `edgelstm replay` of
the held-out test runs, and a recorder writing what the gateway published to runs/demo/live/.

`python -m converters.demo_live --runs runs/demo --config configs/demo.yaml` (scripts/demo.sh
calls it). `edgelstm report` reads the recordings.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import click
import paho.mqtt.client as mqtt
import yaml

from converters.report import gateway_latency
from edge_lstm.commands.options import runs_dir_option
from edge_lstm.errors import EdgeLstmError
from edge_lstm.local_broker import LocalBroker

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
GATEWAY_EXAMPLE = REPO / "configs" / "gateway.yaml"
GATEWAY_ID = "demo"
ONLINE_TIMEOUT_S = 90.0
QUIET_S = 10.0
STOP_TIMEOUT_S = 15.0
REPLAY_LINE = re.compile(
    r"replayed (?P<readings>\d+) readings of (?P<devices>\d+) devices in (?P<messages>\d+) "
    r"messages .* in (?P<seconds>[\d.]+) s \((?P<readings_per_s>[\d.]+) readings/s\)"
)


def edgelstm_command() -> list[str]:
    """The `edgelstm` entry point of the running interpreter's environment."""
    script = Path(sys.executable).parent / "edgelstm"
    if script.exists():
        return [str(script)]
    found = shutil.which("edgelstm")
    if found is None:
        raise EdgeLstmError("the `edgelstm` command is not installed: run `make install`")
    return [found]


@dataclass
class Recorder:
    """Subscribes to everything the demo gateway publishes and appends it as JSON lines:
    alerts.jsonl (window results and alerts), stats.jsonl, status.jsonl."""

    host: str
    port: int
    out_dir: Path
    counts: dict[str, int] = field(default_factory=dict)
    last_message: float = 0.0
    status: queue.Queue = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        self._files: dict[str, TextIO] = {
            kind: open(self.out_dir / f"{kind}.jsonl", "w")  # noqa: SIM115 - closed in stop()
            for kind in ("alerts", "stats", "status")
        }
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.on_connect = lambda c, *args: c.subscribe(f"edgelstm/{GATEWAY_ID}/#", qos=1)
        self.client.connect(self.host, self.port)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise EdgeLstmError(f"the recorder could not subscribe at {self.host}:{self.port}")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        kind = msg.topic.split("/")[2]
        if kind not in self._files:
            return
        now = time.time()
        if kind == "status":
            body: Any = msg.payload.decode()
            self.status.put(body)
        else:
            body = json.loads(msg.payload)
        record = {"topic": msg.topic, "received_at": now, "payload": body}
        with self._lock:
            self._files[kind].write(json.dumps(record) + "\n")
            if kind == "alerts":
                event = body.get("event", "")
                self.counts[event] = self.counts.get(event, 0) + 1
            self.last_message = time.monotonic()

    def wait_status(self, wanted: str, timeout: float, server: subprocess.Popen | None) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server is not None and server.poll() is not None:
                return False
            try:
                if self.status.get(timeout=0.2) == wanted:
                    return True
            except queue.Empty:
                continue
        return False

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        with self._lock:
            for fh in self._files.values():
                fh.close()


def write_gateway_config(
    path: Path, deploy_dir: Path, state_dir: Path, broker: LocalBroker, artifact: str
) -> Path:
    """configs/gateway.yaml pointed at the demo's model, broker and state, emitting every
    window so the report can compare the live results with the offline ones."""
    raw = yaml.safe_load(GATEWAY_EXAMPLE.read_text())
    raw.update(
        model_dir=str(deploy_dir.resolve()),
        state_dir=str(state_dir.resolve()),
        gateway_id=GATEWAY_ID,
        artifact=artifact,
        stats_interval_s=2,
    )
    raw["broker"] = {**raw.get("broker", {}), "host": broker.host, "port": broker.port}
    raw["debounce"] = {**raw.get("debounce", {}), "emit": "all"}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _test_runs(config_path: Path, data_path: Path) -> tuple[list[str], int]:
    """The held-out test runs and how many windows the offline split has on them."""
    from edge_lstm.config import load_config
    from edge_lstm.data.prepare import prepare_data

    prepared = prepare_data(load_config(config_path), data_path)
    return list(prepared.split_runs["test"]), len(prepared.test.y)


def _tail(path: Path, lines: int = 15) -> str:
    return (
        "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
    )


def _stop_server(server: subprocess.Popen) -> tuple[int, float]:
    """SIGTERM, then the exit code and how long the service took to exit."""
    started = time.monotonic()
    server.send_signal(signal.SIGTERM)
    try:
        code = server.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        server.kill()
        code = server.wait(5)
    return code, time.monotonic() - started


def _wait_for_windows(recorder: Recorder, expected: int, server: subprocess.Popen) -> None:
    """Until every expected window result arrived, or nothing arrived for QUIET_S seconds."""
    while recorder.counts.get("window", 0) < expected and server.poll() is None:
        if time.monotonic() - recorder.last_message > QUIET_S:
            log.warning(
                "no message for %.0f s; %d of %d window results arrived",
                QUIET_S,
                recorder.counts.get("window", 0),
                expected,
            )
            return
        time.sleep(0.1)


def run_live(
    runs_dir: Path, config_path: Path, artifact: str, speedup: float, replay_timeout_s: float
) -> dict[str, Any]:
    """Runs the live stage and returns (and writes to live/summary.json) what happened."""
    deploy_dir, data_path = runs_dir / "deploy", runs_dir / "data" / "sensors.parquet"
    for needed in (deploy_dir / "manifest.json", data_path):
        if not needed.exists():
            raise EdgeLstmError(f"{needed} is missing: run the earlier demo stages first")
    artifacts = json.loads((deploy_dir / "manifest.json").read_text())["artifacts"]
    if artifact not in artifacts:
        raise EdgeLstmError(
            f"{deploy_dir} has no artifact {artifact!r} (it has {sorted(artifacts)}); "
            "run `edgelstm quantize` first or pass --artifact step"
        )
    live = runs_dir / "live"
    shutil.rmtree(live, ignore_errors=True)
    live.mkdir(parents=True)
    run_ids, expected = _test_runs(config_path, data_path)
    cli = edgelstm_command()
    started = time.monotonic()
    with LocalBroker(log_path=live / "broker.log") as broker:
        click.echo(f"broker: {broker.kind} on {broker.host}:{broker.port}")
        gateway = write_gateway_config(
            live / "gateway.yaml", deploy_dir, live / "state", broker, artifact
        )
        recorder = Recorder(broker.host, broker.port, live)
        serve_log = open(live / "serve.log", "wb")  # noqa: SIM115 - closed below
        server = subprocess.Popen(
            [*cli, "serve", "--config", str(gateway)], stdout=serve_log, stderr=serve_log
        )
        try:
            if not recorder.wait_status("online", ONLINE_TIMEOUT_S, server):
                raise EdgeLstmError(
                    f"`edgelstm serve` did not come online; {live / 'serve.log'}:\n"
                    + _tail(live / "serve.log")
                )
            click.echo(
                f"serving {artifact} of {deploy_dir}; replaying {len(run_ids)} test runs "
                f"at {speedup:g}x ({expected} windows expected)"
            )
            replay = subprocess.run(
                [
                    *cli,
                    "replay",
                    str(data_path),
                    "--broker",
                    f"{broker.host}:{broker.port}",
                    "--runs",
                    ",".join(run_ids),
                    "--model-dir",
                    str(deploy_dir),
                    "--speedup",
                    str(speedup),
                    "--qos",
                    "1",
                ],
                capture_output=True,
                text=True,
                timeout=replay_timeout_s,
            )
            (live / "replay.log").write_text(replay.stdout + replay.stderr)
            if replay.returncode != 0:
                raise EdgeLstmError(f"`edgelstm replay` failed:\n{_tail(live / 'replay.log')}")
            _wait_for_windows(recorder, expected, server)
        finally:
            code, stop_s = (
                _stop_server(server) if server.poll() is None else (server.returncode, 0.0)
            )
            serve_log.close()
            # the service publishes its final stats, then `offline`: wait for both to arrive
            offline = recorder.wait_status("offline", 5, None)
            recorder.stop()
    match = REPLAY_LINE.search(replay.stdout)
    summary = {
        "broker": broker.kind,
        "artifact": artifact,
        "deploy_dir": str(deploy_dir),
        "speedup": speedup,
        "runs": run_ids,
        "expected_windows": expected,
        "received": dict(recorder.counts),
        "replay": {k: float(v) for k, v in match.groupdict().items()} if match else None,
        "replay_output": replay.stdout.strip(),
        "serve_exit_code": code,
        "serve_stop_seconds": round(stop_s, 3),
        "offline_status_published": offline,
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
    for line in (live / "alerts.jsonl").read_text().splitlines():
        body = json.loads(line)["payload"]
        if body.get("event") == "raised":
            click.echo(
                f"  alert {body['device_id']}: {body['class']} "
                f"(confidence {body['confidence']:.2f}, window end {body['window_end_ts']:.1f})"
            )
    stats = (live / "stats.jsonl").read_text().splitlines()
    if stats:
        latency = gateway_latency(json.loads(stats[-1])["payload"]["latency_ms"])
        for stage, figures in latency.items():
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
    "--artifact", default="step.int8-dynamic", show_default=True, help="Manifest artifact to serve."
)
@click.option(
    "--speedup",
    type=float,
    default=5.0,
    show_default=True,
    help="Replay at X times the data's own rate.",
)
@click.option("--timeout", "timeout_s", type=float, default=600.0, show_default=True)
def main(
    runs_dir: Path, config_path: Path, artifact: str, speedup: float, timeout_s: float
) -> None:
    """Serve the demo's student over a local broker and replay the held-out test runs into it."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = run_live(runs_dir, config_path, artifact, speedup, timeout_s)
    except EdgeLstmError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    _print_summary(summary, runs_dir / "live")
    if summary["serve_exit_code"] != 0:
        click.echo("error: `edgelstm serve` did not exit cleanly", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
