"""prepare_data: run-level splits, train-only normalization, last-reading labels, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from edge_lstm.config import load_config
from edge_lstm.data import Normalization, prepare_data
from edge_lstm.data.split import SPLITS, run_class, split_runs
from edge_lstm.errors import ConfigError, DataError
from tests.conftest import write_config


def test_no_run_is_in_two_splits_and_every_run_is_used(prepared):
    runs = {name: set(prepared.split_runs[name]) for name in SPLITS}
    assert all(runs.values())
    assert not runs["train"] & runs["val"]
    assert not runs["train"] & runs["test"]
    assert not runs["val"] & runs["test"]
    assert set.union(*runs.values()) == set(prepared.readings.run_id)
    for name in SPLITS:
        assert set(prepared.split(name).run_ids) == runs[name]


def test_every_class_is_in_train_and_the_split_is_stratified(prepared):
    assert prepared.classes[0] == "normal"
    assert set(prepared.train.y) == set(range(len(prepared.classes)))
    labels = prepared.readings.groupby("run_id").label.agg(list)
    for name in ("val", "test"):
        classes = {run_class(labels[run], "normal") for run in prepared.split_runs[name]}
        assert classes == set(prepared.classes)  # tiny data: 4 runs per class, 1 in val/test


def test_normalization_uses_only_the_train_readings(prepared):
    frame = prepared.readings
    values = frame[prepared.features].to_numpy(np.float64)
    train = frame.run_id.isin(prepared.split_runs["train"]).to_numpy()
    np.testing.assert_allclose(prepared.normalization.mean, values[train].mean(0), rtol=1e-5)
    np.testing.assert_allclose(prepared.normalization.std, values[train].std(0), rtol=1e-5)
    assert not np.allclose(prepared.normalization.mean, values.mean(0), rtol=1e-5)
    assert prepared.normalization.mean.dtype == np.float32


def test_windows_are_normalized_readings_labelled_by_their_last_reading(prepared, tiny_config):
    w, stride = tiny_config.data.window, tiny_config.data.stride
    frame = prepared.readings
    test = prepared.test
    run = test.run_ids[0]
    rows = frame[frame.run_id == run].reset_index(drop=True)
    ours = np.flatnonzero(test.run_ids == run)
    assert len(ours) == (len(rows) - w) // stride + 1
    raw = rows[prepared.features].to_numpy(np.float32)
    for k, i in enumerate(ours):
        start = k * stride
        expected = prepared.normalization.apply(raw[start : start + w])
        np.testing.assert_allclose(test.x[i], expected, atol=1e-6)
        assert prepared.classes[test.y[i]] == rows.label[start + w - 1]
        assert test.end_ts[i] == rows.ts[start + w - 1]
    # windows straddling a fault onset take the label of their last reading
    onset_windows = [
        i for k, i in enumerate(ours) if rows.label[k * stride] != rows.label[k * stride + w - 1]
    ]
    assert all(test.y[i] != 0 for i in onset_windows)
    assert test.x.dtype == np.float32 and test.y.dtype == np.int64
    assert test.x.shape[1:] == (w, len(prepared.features))


def test_same_seed_same_data_other_seed_other_split(tiny_config, prepared, tmp_path):
    again = prepare_data(tiny_config)
    assert again.split_runs == prepared.split_runs
    np.testing.assert_array_equal(again.train.x, prepared.train.x)
    other = load_config(write_config(tmp_path / "c.yaml", tiny_config.data.path, data={"seed": 5}))
    assert prepare_data(other).split_runs != prepared.split_runs


def test_train_stride_refines_only_the_training_windows(tiny_config, prepared, tmp_path):
    stride = tiny_config.data.stride
    finer = load_config(
        write_config(tmp_path / "c.yaml", tiny_config.data.path, data={"train_stride": 1})
    )
    data = prepare_data(finer)
    assert data.split_runs == prepared.split_runs
    np.testing.assert_array_equal(data.val.x, prepared.val.x)
    np.testing.assert_array_equal(data.test.x, prepared.test.x)
    assert len(data.train) > (stride - 1) * len(prepared.train)
    # the coarse windows are among the fine ones, in the same order: every stride-th of a run
    run = prepared.train.run_ids[0]
    fine = data.train.x[data.train.run_ids == run]
    np.testing.assert_array_equal(fine[::stride], prepared.train.x[prepared.train.run_ids == run])
    np.testing.assert_array_equal(data.normalization.mean, prepared.normalization.mean)
    too_coarse = write_config(tmp_path / "d.yaml", tiny_config.data.path, data={"train_stride": 99})
    with pytest.raises(ConfigError, match="train_stride"):
        load_config(too_coarse)


def test_class_weights_are_inverse_frequency(prepared):
    weights = prepared.class_weights()
    counts = np.bincount(prepared.train.y, minlength=len(prepared.classes))
    np.testing.assert_allclose(weights * counts, counts.sum() / len(counts), rtol=1e-5)
    assert weights.shape == (len(prepared.classes),)


def test_sample_period_and_split_lookup(prepared):
    assert prepared.sample_period_s == pytest.approx(0.1)
    assert prepared.split("val") is prepared.val
    with pytest.raises(DataError, match="unknown split 'dev'"):
        prepared.split("dev")


def test_too_few_runs_is_a_clear_error(tiny_config):
    runs = {"a": "normal", "b": "normal", "c": "fault"}
    with pytest.raises(DataError, match=r"too few runs to fill the val split"):
        split_runs(runs, tiny_config.data.split, seed=0)
    three = {f"r{i}": "normal" for i in range(3)}
    splits = split_runs(three, tiny_config.data.split, seed=0)
    assert [len(splits[name]) for name in SPLITS] == [1, 1, 1]


def test_normalization_round_trips_and_floors_a_constant_channel():
    readings = np.array([[1.0, 5.0], [3.0, 5.0]])
    norm = Normalization.fit(readings)
    assert norm.std.tolist() == [1.0, 1.0]
    np.testing.assert_allclose(norm.apply(readings), [[-1.0, 0.0], [1.0, 0.0]])
    again = Normalization.from_dict(norm.to_dict())
    np.testing.assert_array_equal(again.mean, norm.mean)
    with pytest.raises(DataError, match="'mean' and 'std'"):
        Normalization.from_dict({"mean": [0.0]})
