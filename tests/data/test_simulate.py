"""The simulator: deterministic, well-formed, and three faults hidden from mean/std features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from edge_lstm.config import load_config
from edge_lstm.data import prepare_data
from edge_lstm.simulate import CLASS_NAMES, FEATURE_NAMES, TEMPORAL_CLASSES, generate
from tests.conftest import run_cli, write_config


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate(seed=4, runs_per_class=3, run_length=120)


def test_same_seed_same_frame_other_seed_other_frame(frame):
    pd.testing.assert_frame_equal(frame, generate(seed=4, runs_per_class=3, run_length=120))
    other = generate(seed=5, runs_per_class=3, run_length=120)
    assert not np.allclose(frame[FEATURE_NAMES].to_numpy(), other[FEATURE_NAMES].to_numpy())


def test_layout_classes_and_onsets(frame):
    assert list(frame.columns) == ["run_id", "ts", *FEATURE_NAMES, "label"]
    assert len(FEATURE_NAMES) == 24 and CLASS_NAMES[0] == "normal" and len(CLASS_NAMES) >= 9
    assert all(frame[c].dtype == np.float32 for c in FEATURE_NAMES)
    assert np.isfinite(frame[FEATURE_NAMES].to_numpy()).all()
    runs = frame.groupby("run_id", sort=False)
    assert runs.ngroups == 3 * len(CLASS_NAMES) and (runs.size() == 120).all()
    run_classes = []
    for _, run in runs:
        assert np.allclose(np.diff(run.ts.to_numpy()), 0.1, atol=1e-3)
        faults = run.label[run.label != "normal"]
        if faults.empty:
            run_classes.append("normal")
            continue
        onset = int(np.flatnonzero(run.label.to_numpy() != "normal")[0])
        assert 0.05 * 120 <= onset <= 0.15 * 120
        assert (run.label.iloc[onset:] == faults.iloc[0]).all()  # one fault, from onset on
        run_classes.append(faults.iloc[0])
    assert sorted(run_classes) == sorted(CLASS_NAMES * 3)


def _meanstd(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x.mean(axis=1), x.std(axis=1)], axis=1)


def test_temporal_faults_are_invisible_to_per_channel_mean_and_std(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    path = tmp_path / "d.parquet"
    generate(seed=7, runs_per_class=10, run_length=160).to_parquet(path, index=False)
    cfg = load_config(write_config(tmp_path / "c.yaml", path, data={"window": 60, "stride": 10}))
    data = prepare_data(cfg)
    probe = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=3000, class_weight="balanced")
    )
    probe.fit(_meanstd(data.train.x), data.train.y)
    y = np.concatenate([data.val.y, data.test.y])
    pred = probe.predict(_meanstd(np.concatenate([data.val.x, data.test.x])))
    temporal = np.isin(y, [data.classes.index(c) for c in TEMPORAL_CLASSES])
    others = (y != 0) & ~temporal
    temporal_acc = (pred[temporal] == y[temporal]).mean()
    other_acc = (pred[others] == y[others]).mean()
    assert temporal_acc < 0.6 and other_acc - temporal_acc > 0.2
    # the temporal faults move the same channels by the same amount: per-window vibration
    # std has the same distribution for the three, far from normal
    train = data.split("train")
    vib_std = train.x[:, :, :6].std(axis=1).mean(axis=1)
    medians = [np.median(vib_std[train.y == data.classes.index(c)]) for c in TEMPORAL_CLASSES]
    assert max(medians) / min(medians) < 1.3
    assert min(medians) > 3 * np.median(vib_std[train.y == 0])


def test_cli_simulate_writes_a_readable_file(tmp_path):
    out = tmp_path / "demo" / "sensors.csv"
    args = ["simulate", "--out", str(out), "--seed", "3", "--runs-per-class", "2"]
    result = run_cli(*args, "--run-length", "50")
    assert result.exit_code == 0, result.output
    assert f"wrote {out}: 900 readings, 18 runs" in result.output
    written = pd.read_csv(out)
    expected = generate(seed=3, runs_per_class=2, run_length=50)
    np.testing.assert_allclose(written[FEATURE_NAMES], expected[FEATURE_NAMES], rtol=1e-6)
    assert (written.label == expected.label).all()


def test_cli_simulate_refuses_an_unknown_suffix(tmp_path):
    result = run_cli("simulate", "--out", str(tmp_path / "d.xlsx"))
    assert result.exit_code == 2
    assert "unsupported suffix '.xlsx'" in result.output
