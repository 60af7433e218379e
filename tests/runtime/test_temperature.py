"""The manifest's temperature: old folders load with 1.0, bad values are refused, and the stream
engine serves softmax(logits / T) of the window graph."""

from __future__ import annotations

import collections
import json
import math
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from runtime.backends.base import open_backend
from runtime.errors import ManifestError
from runtime.manifest import MANIFEST_FILE, Manifest
from runtime.parse import Readings
from runtime.streams import StreamEngine
from tests.runtime.helpers import select_runs


def _copy(deploy: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(deploy, tmp_path / "deploy"))


def _edit_manifest(folder: Path, **changes) -> None:
    path = folder / MANIFEST_FILE
    raw = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            raw.pop(key)
        else:
            raw[key] = value
    path.write_text(json.dumps(raw))


def test_export_fits_a_temperature_and_older_manifests_load_with_one(deploy_dir, tmp_path):
    deploy = deploy_dir("gru", None)
    fitted = Manifest.load(deploy).temperature
    assert math.isfinite(fitted) and fitted > 0
    folder = _copy(deploy, tmp_path)
    _edit_manifest(folder, temperature=None)  # a folder exported before the field existed
    assert Manifest.load(folder).temperature == 1.0


@pytest.mark.parametrize("bad", [0, -1.5, "2.0", True, float("inf"), float("nan")])
def test_a_temperature_that_cannot_scale_logits_is_refused(deploy_dir, tmp_path, bad):
    folder = _copy(deploy_dir("gru", None), tmp_path)
    _edit_manifest(folder, temperature=bad)
    with pytest.raises(ManifestError, match=r"temperature must be a finite number > 0, got"):
        Manifest.load(folder)


def test_probabilities_are_the_softmax_of_scaled_logits() -> None:
    manifest = Manifest("m", "1", "teacher", ["a"], [0.0], [1.0], ["n", "f"], 2, 1)
    logits = np.array([[0.0, math.log(3.0)], [5.0, 5.0]])
    np.testing.assert_allclose(manifest.probabilities(logits), [[0.25, 0.75], [0.5, 0.5]])
    manifest.temperature = 0.5  # sharper: odds 3 -> 9
    np.testing.assert_allclose(manifest.probabilities(logits), [[0.1, 0.9], [0.5, 0.5]])


def test_the_stream_engine_serves_the_manifests_temperature(deploy_dir, tiny_data, tmp_path):
    folder = _copy(deploy_dir("gru", None), tmp_path)
    manifest = Manifest.load(folder)
    manifest.temperature = 0.1  # far from 1, so even an untrained model's softmax moves
    manifest.save(folder)
    runs = select_runs(tiny_data, manifest, count=2, length=60)
    counts: collections.Counter = collections.Counter()
    engine = StreamEngine(
        manifest,
        sample_period_s=0.1,
        device_queue=10_000,
        max_batch=64,
        count=lambda name, n: counts.update({name: n}),
    )
    for run in runs:
        engine.add(run.run_id, Readings(run.ts, run.values), 0.0)
    backend = open_backend(folder, manifest)
    results = []
    while engine.pending_readings:
        results += engine.step_round(backend)[0]
    assert results

    session = ort.InferenceSession(str(folder / "model.onnx"))
    mean, std = np.asarray(manifest.norm_mean), np.asarray(manifest.norm_std)
    by_run = {run.run_id: run for run in runs}
    moved = 0.0
    for result in results:
        run = by_run[result.device_id]
        start = int(np.flatnonzero(run.ts == result.start_ts)[0])
        x = ((run.values[start : start + manifest.window] - mean) / std)[None].astype(np.float32)
        logits = session.run(None, {"x": x})[0].astype(np.float64)
        scaled = np.exp(logits / 0.1 - (logits / 0.1).max())
        np.testing.assert_allclose(result.probs, (scaled / scaled.sum())[0], atol=1e-4)
        plain = np.exp(logits - logits.max())
        moved = max(moved, np.abs(result.probs - (plain / plain.sum())[0]).max())
    assert moved > 1e-2 and not counts
