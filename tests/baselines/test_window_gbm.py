"""WindowBaseline: learns real simulated faults, keeps class columns, saves and loads exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sklearn

from edge_lstm.baselines import BASELINE_NAME, WindowBaseline, fit_window_baseline
from edge_lstm.baselines.window_gbm import META_FILE, MODEL_FILE
from edge_lstm.config import load_config
from edge_lstm.data import prepare_data
from edge_lstm.errors import DataError, EdgeLstmError
from edge_lstm.metrics import compute_metrics
from edge_lstm.simulate import FEATURE_NAMES, TEMPORAL_CLASSES, generate
from tests.conftest import write_config

CLASSES = ["normal", "shift", "tone", "anti"]


def _windows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class 1 shifts channel 0; class 2 puts one tone on channels 1 and 2 in phase, class 3
    in anti-phase: the same per-channel std, told apart only by the pair statistics."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(CLASSES), n)
    t = np.arange(16)
    x = rng.normal(scale=0.3, size=(n, 16, 3))
    x[:, :, 0] += (y == 1)[:, None] * 1.5
    tone = np.sin(2 * np.pi * (t[None] / 6 + rng.random((n, 1))))
    x[:, :, 1] += np.where(y[:, None] >= 2, tone, 0)
    x[:, :, 2] += np.where(y[:, None] == 2, tone, np.where(y[:, None] == 3, -tone, 0))
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def fitted() -> WindowBaseline:
    x, y = _windows(300, seed=0)
    return WindowBaseline.fit(x, y, CLASSES, seed=3, channel_names=["a", "b", "c"])


def test_it_learns_faults_that_need_the_pair_statistics(fitted):
    x, y = _windows(200, seed=1)
    probs = fitted.predict_proba(x)
    assert probs.shape == (200, len(CLASSES)) and probs.dtype == np.float64
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert compute_metrics(probs, y, CLASSES)["macro_f1"] > 0.9
    for k in (2, 3):  # in phase against anti-phase
        assert (probs[y == k].argmax(axis=1) == k).mean() > 0.85


def test_a_class_absent_from_training_gets_probability_zero():
    x, y = _windows(300, seed=2)
    keep = y != 1
    baseline = WindowBaseline.fit(x[keep], y[keep], CLASSES, seed=0)
    probs = baseline.predict_proba(x[:20])
    assert probs.shape == (20, 4)
    assert (probs[:, 1] == 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert baseline.channels == ["ch0", "ch1", "ch2"]


def test_save_load_round_trip_is_exact(fitted, tmp_path):
    folder = fitted.save(tmp_path / "window-baseline")
    assert (folder / MODEL_FILE).stat().st_size == fitted.size_bytes > 0
    meta = json.loads((folder / META_FILE).read_text())
    assert meta["name"] == BASELINE_NAME and meta["classes"] == CLASSES and meta["seed"] == 3
    assert meta["feature_names"] == fitted.feature_names and "std(b-c)" in meta["feature_names"]
    assert meta["sklearn_version"] == sklearn.__version__
    again = WindowBaseline.load(folder)
    assert again.size_bytes == fitted.size_bytes  # the file's bytes, not a fresh pickle
    x, _ = _windows(50, seed=4)
    np.testing.assert_array_equal(again.predict_proba(x), fitted.predict_proba(x))
    assert again.parameters == fitted.parameters > 0


def test_load_refuses_another_sklearn_release_and_a_missing_folder(fitted, tmp_path):
    folder = fitted.save(tmp_path / "b")
    meta = json.loads((folder / META_FILE).read_text())
    major, minor = sklearn.__version__.split(".")[:2]
    meta["sklearn_version"] = f"{major}.{int(minor) + 1}.0"
    (folder / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(EdgeLstmError, match=rf"saved with scikit-learn {major}\.{int(minor) + 1}"):
        WindowBaseline.load(folder)
    with pytest.raises(EdgeLstmError, match=r"no window baseline here \(baseline.json missing\)"):
        WindowBaseline.load(tmp_path / "absent")


def test_latency_and_input_checks(fitted):
    x, _ = _windows(3, seed=5)
    latency = fitted.latency_ms(x)  # fewer than 256 windows: repeated to fill the batch
    assert set(latency) == {"b1", "b256"} and all(0 < ms < 10_000 for ms in latency.values())
    with pytest.raises(DataError, match=r"takes windows \[N, 16, 3\], got shape \(3, 16, 2\)"):
        fitted.predict_proba(x[:, :, :2])
    with pytest.raises(DataError, match="at least 2 classes"):
        WindowBaseline.fit(x, np.zeros(3, dtype=np.int64), CLASSES)


def test_it_tells_apart_the_faults_mean_and_std_cannot(tmp_path):
    """The simulator's temporal faults, which per-channel mean/std miss (tests/data/
    test_simulate.py), are where a sequence model was supposed to be needed; the vibration
    channels (the only ones they move) keep the fit fast."""
    path = tmp_path / "d.parquet"
    generate(seed=7, runs_per_class=6, run_length=120).to_parquet(path, index=False)
    data_keys = {"window": 60, "stride": 10, "features": FEATURE_NAMES[:6]}
    cfg = load_config(write_config(tmp_path / "c.yaml", path, data=data_keys))
    data = prepare_data(cfg)
    baseline = fit_window_baseline(data, seed=0)
    assert baseline.channels == data.features
    y = np.concatenate([data.val.y, data.test.y])
    pred = baseline.predict_proba(np.concatenate([data.val.x, data.test.x])).argmax(axis=1)
    temporal = np.isin(y, [data.classes.index(c) for c in TEMPORAL_CLASSES])
    assert temporal.sum() >= 30 and (pred[temporal] == y[temporal]).mean() > 0.8
