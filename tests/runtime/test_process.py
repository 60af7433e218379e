"""`edgelstm serve` as a real process without torch: SIGTERM, SIGHUP reload, broker restart and
kill -9 with alerts pending in the outbox."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.manifest import Manifest
from runtime.outbox import OUTBOX_FILE
from runtime.replay import Replayer, device_ids
from tests.runtime.helpers import (
    REPO,
    TORCH_BLOCKER,
    Collector,
    ServeProcess,
    expected_events,
    gateway_config,
    offline_windows,
    select_runs,
    wait_until,
)

pytestmark = pytest.mark.broker
STATUS = "edgelstm/test/status"


def replay(broker, runs, rate_hz: float | None = None, binary: bool = False) -> None:
    publisher = Replayer(broker.host, broker.port, binary=binary)
    publisher.replay(device_ids(runs, len(runs)), rate_hz)
    publisher.close()


def outbox_rows(state_dir: Path) -> int:
    path = state_dir / OUTBOX_FILE
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]


def alert_keys(collector: Collector) -> set[tuple[str, str, float]]:
    return {
        (b["device_id"], b["event"], b["window_start_ts"])
        for b in collector.bodies()
        if b["event"] in ("raised", "cleared")
    }


def test_the_runtime_never_imports_torch(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(TORCH_BLOCKER)
    code = (
        "import runtime.daemon, runtime.replay, runtime.backends.onnxruntime_backend\n"
        "import edge_lstm.commands.serve, edge_lstm.commands.replay, edge_lstm.local_broker\n"
        "import sys; assert 'torch' not in sys.modules\n"
        "try:\n    import torch\nexcept ImportError:\n    print('blocked')\n"
    )
    env = {"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "blocked"


def test_sigterm_exits_0_within_2s_and_says_offline(broker, deploy_dir, tiny_data, tmp_path):
    deploy = deploy_dir("gru", None)
    runs = select_runs(tiny_data, Manifest.load(deploy), count=2, length=40)
    reference = offline_windows(deploy, runs)
    config = gateway_config(
        tmp_path / "gw.yaml", deploy, broker.host, broker.port, debounce={"emit": "all"}
    )
    collector = Collector(broker.host, broker.port)
    proc = ServeProcess(config, tmp_path)
    try:
        assert wait_until(lambda: "online" in collector.payloads(STATUS), 15), proc.log
        replay(broker, runs)
        assert wait_until(lambda: len(collector.bodies("window")) >= len(reference), 10)
        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        rc = proc.proc.wait(5)
        took = time.monotonic() - started
        assert wait_until(lambda: collector.payloads(STATUS)[-1:] == ["offline"], 2)
    finally:
        proc.stop()
        collector.close()
    assert rc == 0 and took < 2.0, proc.log
    assert "Traceback" not in proc.log
    final = collector.payloads("/stats")[-1]
    assert final["counters"]["windows"] == len(reference)


def test_sighup_reload_swaps_the_model_without_losing_readings(
    broker, deploy_dir, tiny_data, tmp_path
):
    deploy = Path(shutil.copytree(deploy_dir("gru", None), tmp_path / "deploy"))
    runs = select_runs(tiny_data, Manifest.load(deploy), count=3, length=160)
    total = sum(len(r.ts) for r in runs)
    config = gateway_config(
        tmp_path / "gw.yaml", deploy, broker.host, broker.port, debounce={"emit": "all"}
    )
    collector = Collector(broker.host, broker.port)
    proc = ServeProcess(config, tmp_path)

    def processed() -> bool:
        stats = collector.payloads("/stats")
        return bool(stats) and stats[-1]["counters"].get("readings") == total

    try:
        assert wait_until(lambda: "online" in collector.payloads(STATUS), 15), proc.log
        sender = threading.Thread(target=replay, args=(broker, runs, 100.0))
        sender.start()
        time.sleep(0.4)  # mid-stream: ~40 of 160 readings per device sent
        manifest = Manifest.load(deploy)
        manifest.model_version = "test-2"  # a new release with the same state shapes
        manifest.save(deploy)
        proc.signal(signal.SIGHUP)
        sender.join(10)
        assert wait_until(processed, 10), proc.log
        assert proc.stop() == 0
    finally:
        proc.stop()
        collector.close()
    # every window is the window graph on W consecutive readings, and comes from one model:
    # the windows open at the swap restart on the new one instead of mixing both
    reference = offline_windows(deploy, runs, stride=1)
    windows = collector.bodies("window")
    for body in windows:
        probs = reference[(body["device_id"], body["window_start_ts"])]
        assert np.abs(np.asarray(body["probs"]) - probs).max() <= 1e-4
    for run in runs:
        mine = [b for b in windows if b["device_id"] == run.run_id]
        old = [b["window_end_ts"] for b in mine if b["model_version"] == "test-1"]
        new = [b["window_start_ts"] for b in mine if b["model_version"] == "test-2"]
        assert old and new and max(old) < min(new), proc.log
    final = collector.payloads("/stats")[-1]["counters"]
    assert final["reloads"] == 1 and final["readings"] == total
    assert final.get("reload_restarted_windows", 0) > 0
    assert "restarted" in proc.log and "Traceback" not in proc.log


def _alerts_while_broker_down(broker, proc: ServeProcess, runs, state_dir: Path, n: int):
    """Freezes the service while the broker pushes readings into its socket, then freezes the
    broker and thaws the service: it classifies the readings and raises alerts that nobody
    acknowledges; finally the broker dies (SIGKILL: nothing it had buffered survives)."""
    proc.signal(signal.SIGSTOP)
    try:
        replay(broker, runs, binary=True)  # compact, so all of it fits in the socket buffers
        time.sleep(0.3)
        broker.proc.send_signal(signal.SIGSTOP)
    finally:
        proc.signal(signal.SIGCONT)
    assert wait_until(lambda: outbox_rows(state_dir) >= n, 10), proc.log
    broker.kill()


def test_broker_restart_reconnects_and_delivers_alerts_raised_while_down(
    broker, deploy_dir, tiny_data, tmp_path
):
    deploy = deploy_dir("gru", None)
    runs = select_runs(tiny_data, Manifest.load(deploy), count=4, length=100)
    before, after = runs[:2], runs[2:]
    events_before = set(expected_events(offline_windows(deploy, before), k=2, threshold=0.0))
    events_after = set(expected_events(offline_windows(deploy, after), k=2, threshold=0.0))
    config = gateway_config(
        tmp_path / "gw.yaml",
        deploy,
        broker.host,
        broker.port,
        topics={"sensor_qos": 0},
        debounce={"k": 2, "threshold": 0.0},
    )
    collector = Collector(broker.host, broker.port)
    proc = ServeProcess(config, tmp_path)
    try:
        assert wait_until(lambda: "online" in collector.payloads(STATUS), 15), proc.log
        collector.close()
        _alerts_while_broker_down(broker, proc, before, tmp_path / "state", len(events_before))
        broker.start()  # same port; the service retries every 1-2 s, the collector is quicker
        collector = Collector(broker.host, broker.port)
        assert wait_until(lambda: events_before <= alert_keys(collector), 15), proc.log
        assert wait_until(lambda: outbox_rows(tmp_path / "state") == 0, 5)
        replay(broker, after)
        assert wait_until(lambda: events_after <= alert_keys(collector), 10), proc.log
    finally:
        assert proc.stop() == 0
        collector.close()
    assert proc.log.count("connected to the broker") >= 2


def test_kill_9_with_pending_alerts_then_restart_delivers_them(
    broker, deploy_dir, tiny_data, tmp_path
):
    deploy = deploy_dir("lstm", None)
    runs = select_runs(tiny_data, Manifest.load(deploy), count=3, length=100)
    events = set(expected_events(offline_windows(deploy, runs), k=2, threshold=0.0))
    config = gateway_config(
        tmp_path / "gw.yaml",
        deploy,
        broker.host,
        broker.port,
        topics={"sensor_qos": 0},
        debounce={"k": 2, "threshold": 0.0},
    )
    first = ServeProcess(config, tmp_path / "first")
    collector = Collector(broker.host, broker.port)
    try:
        assert wait_until(lambda: "online" in collector.payloads(STATUS), 15), first.log
        collector.close()
        _alerts_while_broker_down(broker, first, runs, tmp_path / "state", len(events))
        first.proc.kill()
        first.proc.wait(5)
    finally:
        first.stop()
    assert outbox_rows(tmp_path / "state") == len(events)
    broker.start()
    collector = Collector(broker.host, broker.port)
    second = ServeProcess(config, tmp_path / "second")
    try:
        assert wait_until(lambda: events <= alert_keys(collector), 15), second.log
        assert wait_until(lambda: outbox_rows(tmp_path / "state") == 0, 5)
    finally:
        assert second.stop() == 0
        collector.close()
    assert "re-sending" in second.log
