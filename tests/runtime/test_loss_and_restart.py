"""Loss made visible and alerts exactly once: readings lost in gaps are counted per device and
warned about while every window stays exact; alerts carry a deterministic id and a restart
neither raises an active fault again nor forgets to clear it."""

from __future__ import annotations

import itertools
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from runtime.alerts import alert_id
from runtime.manifest import Manifest
from runtime.parse import Reason
from runtime.replay import Run, load_runs
from tests.runtime.hardening import (
    GATEWAY,
    STATS,
    clean_config,
    qos1_publisher,
    send_run,
    windows,
)
from tests.runtime.helpers import (
    Collector,
    InProcessService,
    offline_windows,
    select_runs,
    wait_until,
)

pytestmark = pytest.mark.broker


# ---- missing readings ------------------------------------------------------------------


def _expected_starts(kept: list[int], window: int, hop: int) -> set[int]:
    """Window start indices a device produces from readings `kept` (indices into its run):
    windows restart at the first reading after each gap."""
    segments: list[list[int]] = [[kept[0]]]
    for prev, index in itertools.pairwise(kept):
        if index == prev + 1:
            segments[-1].append(index)
        else:
            segments.append([index])
    starts = set()
    for seg in segments:
        starts |= {seg[k] for k in range(0, len(seg) - window + 1, hop)}
    return starts


def test_missing_readings_are_counted_named_and_never_inside_a_window(
    broker, deploy_dir, tiny_data, tmp_path
) -> None:
    deploy = deploy_dir("gru", None)
    manifest = Manifest.load(deploy)
    clean, lossy = select_runs(tiny_data, manifest, count=2, length=200)
    assert len(clean.ts) >= 2 * manifest.window
    # every 7th reading of the first half goes missing: segments of 6 readings make no window,
    # the intact second half then restarts the device's windows off the hop grid
    n = len(lossy.ts)
    removed = [i for i in range(n) if i % 7 == 6 and i < n // 2]
    kept = [i for i in range(n) if i not in set(removed)]
    sent = Run(lossy.run_id, lossy.ts[kept], lossy.values[kept], [])
    reference = offline_windows(deploy, [clean, lossy], stride=1)
    config = clean_config(
        tmp_path / "gw.yaml", deploy, broker.host, broker.port, debounce={"emit": "all"}
    )
    expected_clean = _expected_starts(list(range(len(clean.ts))), manifest.window, manifest.hop)
    expected_lossy = _expected_starts(kept, manifest.window, manifest.hop)
    assert expected_lossy  # the second half makes windows
    total = len(expected_clean) + len(expected_lossy)
    collector = Collector(broker.host, broker.port)
    service = InProcessService(config)
    try:
        publisher = qos1_publisher(broker)
        publisher.replay([(clean.run_id, clean), (lossy.run_id, sent)])
        publisher.close()
        assert wait_until(lambda: len(collector.bodies("window")) >= total, 10)

        def named() -> bool:
            stats = collector.payloads(STATS)
            return any(
                s.get("missing_by_device", {}).get(lossy.run_id) == len(removed) for s in stats
            )

        assert wait_until(named, 5), collector.payloads(STATS)[-1:]
        counters = service.counters()
    finally:
        assert service.stop() == 0
        collector.close()
    assert counters["readings"] == len(clean.ts) + len(kept)
    assert counters["missing_readings"] == len(removed), counters
    assert counters[Reason.GAP.counter] == len(removed), counters
    assert counters.get("device_outages", 0) == 0
    stats = [s for s in collector.payloads(STATS) if isinstance(s, dict)]
    assert all(clean.run_id not in s.get("missing_by_device", {}) for s in stats)
    warnings = [w for s in stats for w in s.get("warnings", [])]
    assert warnings and all("max_queued_messages" in w for w in warnings), warnings
    removed_ts = lossy.ts[removed]
    for run, expected in ((clean, expected_clean), (lossy, expected_lossy)):
        got = windows(collector, run.run_id)
        assert set(got) == {float(run.ts[i]) for i in expected}
        for start, body in got.items():
            probs = reference[(run.run_id, start)]
            assert np.abs(np.asarray(body["probs"]) - probs).max() <= 1e-4
            if run is lossy:
                spans = (removed_ts >= start) & (removed_ts <= body["window_end_ts"])
                assert not spans.any(), (start, body["window_end_ts"])


# ---- alert ids and restarts --------------------------------------------------------------


def _steady_fault_run(deploy: Path, tiny_data: Path, manifest: Manifest) -> tuple[Run, int]:
    """A run whose every window, whatever reading it starts at, has the same top class, a
    fault: then a restart that re-raised it could not blame a change of class."""
    _, runs = load_runs(tiny_data, manifest.features)
    for run in runs:
        tops = {int(p.argmax()) for p in offline_windows(deploy, [run], stride=1).values()}
        if len(tops) == 1 and 0 not in tops:
            return run, tops.pop()
    raise AssertionError("no run of the tiny data set is one steady fault for the tiny model")


def test_alert_ids_and_a_restart_keep_the_raised_fault(
    broker, deploy_dir, tiny_data, tmp_path
) -> None:
    deploy = deploy_dir("gru", None)
    manifest = Manifest.load(deploy)
    run, fault = _steady_fault_run(deploy, tiny_data, manifest)
    device, name = run.run_id, manifest.classes[fault]
    window = manifest.window
    cuts = [(0, 60), (60, 140), (140, 200)]
    assert len(run.ts) >= cuts[-1][1]
    phases = [
        offline_windows(deploy, [Run(device, run.ts[lo:hi], run.values[lo:hi], [])])
        for lo, hi in cuts
    ]
    assert max(float(p.max()) for p in phases[2].values()) < 1.0
    raise_cfg = clean_config(
        tmp_path / "raise.yaml",
        deploy,
        broker.host,
        broker.port,
        debounce={"k": 1, "threshold": 0.0, "emit": "all"},
    )
    # the same gateway (state dir) with a threshold no window reaches: every window votes normal
    clear_cfg = clean_config(
        tmp_path / "clear.yaml",
        deploy,
        broker.host,
        broker.port,
        debounce={"k": 1, "threshold": 1.0, "emit": "all"},
    )
    collector = Collector(broker.host, broker.port)

    def replay_phase(service: InProcessService, index: int) -> None:
        """Sends phase `index`'s readings (timestamps continue) and waits for their windows."""
        lo, hi = cuts[index]
        publisher = qos1_publisher(broker)
        send_run(publisher, device, run, lo, hi)
        publisher.close()
        done = sum(len(p) for p in phases[: index + 1])
        assert wait_until(lambda: len(windows(collector, device)) >= done, 10), service.counters()

    def alerts(kind: str) -> dict[str, dict]:
        return {b["alert_id"]: b for b in collector.bodies(kind) if b["device_id"] == device}

    try:
        first = InProcessService(raise_cfg)
        try:
            replay_phase(first, 0)
            assert wait_until(lambda: len(alerts("raised")) >= 1, 5)
            assert first.service.debouncer.active(device) == fault
            assert wait_until(lambda: first.service.outbox.rows == 0, 3)
        finally:
            assert first.stop() == 0
        raised = alerts("raised")
        assert len(raised) == 1, raised
        ((first_id, body),) = raised.items()
        assert uuid.UUID(first_id).version == 5
        end_ts = float(run.ts[window - 1])
        assert body["class"] == name and body["window_end_ts"] == end_ts
        assert first_id == alert_id(GATEWAY, device, "raised", name, end_ts)

        second = InProcessService(raise_cfg)  # a new process's service, same state dir
        try:
            assert second.service.debouncer.active(device) == fault  # before any reading
            replay_phase(second, 1)
            time.sleep(0.3)  # an alert would follow its window at once
            assert second.service.debouncer.active(device) == fault
            assert second.counters().get("alerts", 0) == 0
        finally:
            assert second.stop() == 0
        # redeliveries keep their id; a new id would be the same fault raised again
        assert set(alerts("raised")) == {first_id}
        assert alerts("cleared") == {}

        third = InProcessService(clear_cfg)
        try:
            assert third.service.debouncer.active(device) == fault
            replay_phase(third, 2)
            assert wait_until(lambda: len(alerts("cleared")) >= 1, 5)
            assert third.service.debouncer.active(device) == 0
            assert third.service.outbox.alert_state() == {}
        finally:
            assert third.stop() == 0
    finally:
        collector.close()
    # every window of the three services is the window graph on its readings
    reference = offline_windows(deploy, [run], stride=1)
    served = windows(collector, device)
    assert len(served) == sum(len(p) for p in phases)
    for start, body in served.items():
        assert np.abs(np.asarray(body["probs"]) - reference[(device, start)]).max() <= 1e-4
    cleared = alerts("cleared")
    assert len(cleared) == 1, cleared
    ((clear_id, body),) = cleared.items()
    clear_end = float(run.ts[cuts[2][0] + window - 1])
    assert body["class"] == name and body["window_end_ts"] == clear_end
    assert clear_id == alert_id(GATEWAY, device, "cleared", name, clear_end)
    assert set(alerts("raised")) == {first_id}
