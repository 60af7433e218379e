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


def run_engine(deploy, runs, max_batch: int = 64, max_gap_s: float = 1.0):
    manifest = Manifest.load(deploy)
    backend = open_backend(deploy, manifest)
    counts: collections.Counter = collections.Counter()
    engine = StreamEngine(
        manifest,
        max_gap_s=max_gap_s,
        device_queue=10_000,
        max_batch=max_batch,
        count=lambda name, n: counts.update({name: n}),
    )
    for run in runs:
        engine.add(run.run_id, Readings(run.ts, run.values), 0.0)
    results, max_rows = [], 0
    while engine.pending_readings:
        closed, rows = engine.step_round(backend)
        results += closed
        max_rows = max(max_rows, rows)
    return engine, results, counts, max_rows


@pytest.mark.parametrize(
    ("cell", "hop"), [("gru", None), ("gru", 20), ("lstm", None), ("lstm", 20)]
)
def test_streaming_equals_window_graph(deploy_dir, tiny_data, cell: str, hop: int | None) -> None:
    deploy = deploy_dir(cell, hop)
    manifest = Manifest.load(deploy)
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
    assert counts == {"reset_gap": 1}
    first = [r for r in results if r.device_id == clean.run_id]
    # windows of 20 with hop 5: readings 0-29 give 3 windows, 30-59 give 3 more
    assert len(first) == 6 and len([r for r in results if r.device_id == other.run_id]) == 9

    ts = clean.ts.copy()
    ts[40] = ts[10]  # one reading from the past
    stale = type(clean)(clean.run_id, ts, clean.values, [])
    _, results, counts, _ = run_engine(deploy, [stale])
    # the stale reading restarts the timeline, so the next (current) one is a 3 s jump: a gap
    assert counts == {"reset_out_of_order": 1, "reset_gap": 1}
    assert len(results) == 5  # 5 windows in readings 0-39; 41-59 are 19 readings, too few


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
