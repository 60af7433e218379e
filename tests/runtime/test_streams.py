"""Streaming windows equal the window graph, batched across devices; resets are counted."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from runtime.backends.base import open_backend
from runtime.errors import BackendError, ManifestError
from runtime.manifest import Manifest
from runtime.parse import Readings
from runtime.streams import StreamEngine
from tests.runtime.helpers import offline_windows, select_runs


def new_engine(manifest, max_batch: int = 64, **limits) -> tuple[StreamEngine, collections.Counter]:
    """An engine for the tiny data (0.1 s period) and the counter its counts land in."""
    counts: collections.Counter = collections.Counter()
    engine = StreamEngine(
        manifest,
        sample_period_s=0.1,
        device_queue=10_000,
        max_batch=max_batch,
        count=lambda name, n: counts.update({name: n}),
        **limits,
    )
    return engine, counts


def run_engine(deploy, runs, max_batch: int = 64, **limits):
    manifest = Manifest.load(deploy)
    backend = open_backend(deploy, manifest)
    engine, counts = new_engine(manifest, max_batch, **limits)
    for run in runs:
        engine.add(run.run_id, Readings(run.ts, run.values), 0.0)
    results, max_rows = [], 0
    while engine.pending_readings:
        closed, rows = engine.step_round(backend)
        results += closed
        max_rows = max(max_rows, rows)
    return engine, results, counts, max_rows


@pytest.mark.parametrize(
    ("cell", "hop", "window_stats"),
    [
        ("gru", None, False),
        ("gru", 20, False),
        ("lstm", None, False),
        ("lstm", 20, False),
        ("gru", None, True),
        ("lstm", 20, True),
    ],
)
def test_streaming_equals_window_graph(
    deploy_dir, tiny_data, cell: str, hop: int | None, window_stats: bool
) -> None:
    deploy = deploy_dir(cell, hop, window_stats)
    manifest = Manifest.load(deploy)
    assert ("stats" in manifest.state_names) is window_stats
    runs = select_runs(tiny_data, manifest, count=5, length=93)
    engine, results, counts, max_rows = run_engine(deploy, runs, max_batch=17)
    reference = offline_windows(deploy, runs)
    got = {(r.device_id, r.start_ts): r for r in results}
    assert set(got) == set(reference)
    diff = max(np.abs(got[k].probs - p).max() for k, p in reference.items())
    assert diff <= 1e-4
    assert all(got[k].probs.argmax() == p.argmax() for k, p in reference.items())
    assert max_rows <= 17 and not counts
    assert engine.open_windows <= len(runs) * manifest.max_open_windows
    w = manifest.window
    assert all(np.isclose(r.end_ts - r.start_ts, (w - 1) * 0.1, atol=1e-3) for r in results)


def test_gap_and_out_of_order_reset_the_device_only(deploy_dir, tiny_data) -> None:
    deploy = deploy_dir("gru", None)
    manifest = Manifest.load(deploy)
    clean, other = select_runs(tiny_data, manifest, count=2, length=60)
    ts = clean.ts.copy()
    ts[30:] += 10.0  # a 10 s gap before reading 30
    gapped = type(clean)(clean.run_id, ts, clean.values, clean.labels)
    _, results, counts, _ = run_engine(deploy, [gapped, other])
    assert counts == {"reset_gap": 1, "device_outages": 1}  # 99 lost readings > a window
    first = [r for r in results if r.device_id == clean.run_id]
    # windows of 20 with hop 5: readings 0-29 give 3 windows, 30-59 give 3 more
    assert len(first) == 6 and len([r for r in results if r.device_id == other.run_id]) == 9

    ts = clean.ts.copy()
    ts[40] = ts[10]  # one reading from the past
    stale = type(clean)(clean.run_id, ts, clean.values, [])
    _, results, counts, _ = run_engine(deploy, [stale])
    # the stale reading restarts the timeline, so the next (current) one is a 3 s jump: a gap
    assert counts == {"reset_out_of_order": 1, "reset_gap": 1, "device_outages": 1}
    assert len(results) == 5  # 5 windows in readings 0-39; 41-59 are 19 readings, too few


def test_missing_readings_are_counted_and_every_window_stays_exact(deploy_dir, tiny_data) -> None:
    deploy = deploy_dir("gru", None)
    manifest = Manifest.load(deploy)
    (clean,) = select_runs(tiny_data, manifest, count=1, length=90)
    keep = [i for i in range(90) if i not in (30, 31)]  # two readings lost on the way
    lossy = type(clean)(clean.run_id, clean.ts[keep], clean.values[keep], [])
    engine, results, counts, _ = run_engine(deploy, [lossy])
    assert counts == {"missing_readings": 2, "reset_gap": 1}
    assert engine.most_missing(5) == {clean.run_id: 2}
    # the windows restart at reading 32: each result is the window graph on 20 readings in a row
    reference = offline_windows(deploy, [clean], stride=1)
    assert results and all((r.device_id, r.start_ts) in reference for r in results)
    assert max(np.abs(r.probs - reference[(r.device_id, r.start_ts)]).max() for r in results) < 1e-4
    starts = {round(r.start_ts - clean.ts[0], 3) for r in results}
    assert round(clean.ts[32] - clean.ts[0], 3) in starts
    assert all(not (r.start_ts <= clean.ts[30] <= r.end_ts) for r in results)


def test_device_cap_evicts_only_idle_devices_and_refuses_the_rest(deploy_dir, tiny_data) -> None:
    deploy = deploy_dir("gru", None)
    manifest = Manifest.load(deploy)
    (run,) = select_runs(tiny_data, manifest, count=1, length=3)
    evicted: list[str] = []
    engine, counts = new_engine(
        manifest, max_devices=3, device_idle_s=10.0, new_device_idle_s=10.0, on_evict=evicted.append
    )
    one = Readings(run.ts[:1], run.values[:1])
    for i, device in enumerate(("a", "b", "c")):
        engine.add(device, one, received=float(i))
    engine.step_round(open_backend(deploy, manifest))
    engine.add("a", Readings(run.ts[1:2], run.values[1:2]), received=5.0)  # a is fresh again
    engine.add("d", one, received=9.0)  # full, and b (seen at 1 s) is idle for only 8 s
    assert counts["dropped_device_limit"] == 1 and "d" not in engine.devices
    engine.add("d", one, received=12.0)  # now b has been silent for 11 s: it goes
    assert evicted == ["b"] and list(engine.devices) == ["c", "a", "d"]
    assert engine.evict_idle(now=14.5) == 1 and evicted == ["b", "c"]
    assert counts["evicted_devices"] == 2 and engine.open_windows == 1


def test_a_streaming_device_outlives_a_flood_of_throwaway_ids(deploy_dir, tiny_data) -> None:
    deploy = deploy_dir("gru", None)
    manifest = Manifest.load(deploy)
    (run,) = select_runs(tiny_data, manifest, count=1, length=manifest.window + 1)
    backend = open_backend(deploy, manifest)
    engine, counts = new_engine(
        manifest, max_devices=50, device_idle_s=600.0, new_device_idle_s=1.0
    )
    for i in range(manifest.window):  # the real device completes a window: it is proven
        engine.add("real", Readings(run.ts[i : i + 1], run.values[i : i + 1]), received=0.0)
        engine.step_round(backend)
    one = Readings(run.ts[:1], run.values[:1])
    for i in range(1_000):  # then goes quiet while throwaway ids arrive, 20 per second
        engine.add(f"junk-{i}", one, received=2.0 + i / 20)
        engine.step_round(backend)
    assert "real" in engine.devices and len(engine.devices) == 50
    assert counts["evicted_devices"] == 1_000 - 49 and counts["dropped_device_limit"] == 0
    for i in range(60):  # a burst: only the 29 ids silent for 1 s (junk-951..979) make room
        engine.add(f"burst-{i}", one, received=2.0 + 999 / 20)
    assert counts["dropped_device_limit"] == 31 and "real" in engine.devices


def test_a_redelivered_reading_is_dropped_without_a_reset(deploy_dir, tiny_data) -> None:
    deploy = deploy_dir("gru", None)
    manifest = Manifest.load(deploy)
    (clean,) = select_runs(tiny_data, manifest, count=1, length=60)
    _, expected, _, _ = run_engine(deploy, [clean])
    order = [*range(31), 30, *range(31, 60)]  # reading 30 arrives twice (QoS 1 redelivery)
    twice = type(clean)(clean.run_id, clean.ts[order], clean.values[order], [])
    _, results, counts, _ = run_engine(deploy, [twice])
    assert counts == {"dropped_duplicate": 1}
    assert [(r.start_ts, r.end_ts) for r in results] == [(r.start_ts, r.end_ts) for r in expected]
    for got, want in zip(results, expected, strict=True):
        assert np.abs(got.probs - want.probs).max() <= 1e-6


def test_backend_refuses_a_tampered_artifact_and_a_missing_provider(deploy_dir, tmp_path) -> None:
    import shutil

    deploy = shutil.copytree(deploy_dir("gru", None), tmp_path / "copy")
    manifest = Manifest.load(deploy)
    with pytest.raises(BackendError, match="CUDAExecutionProvider"):
        open_backend(deploy, manifest, "onnxruntime-cuda")
    with pytest.raises(BackendError, match="unknown backend"):
        open_backend(deploy, manifest, "openvino")
    with pytest.raises(BackendError, match="needs a step graph in onnx format"):
        open_backend(deploy, manifest, "onnxruntime", "window")
    with pytest.raises(BackendError, match="needs a step graph in tensorrt format"):
        open_backend(deploy, manifest, "tensorrt", "step")
    with (deploy / "step.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ManifestError, match="sha256"):
        open_backend(deploy, manifest)
