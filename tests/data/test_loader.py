"""Loader validation: every broken-file case gives a DataError naming the file and the fix."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edge_lstm.config import load_config
from edge_lstm.data.loader import load_readings
from edge_lstm.errors import DataError
from edge_lstm.simulate import CLASS_NAMES, FEATURE_NAMES
from tests.conftest import write_config


def _config(tmp_path: Path, data_path: Path, **data: object):
    return load_config(write_config(tmp_path / "cfg.yaml", data_path, data=data))


def _write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def _load(tmp_path: Path, frame: pd.DataFrame, name: str = "d.csv", **data: object):
    path = _write(frame, tmp_path / name)
    return load_readings(_config(tmp_path, path, **data))


def test_csv_and_parquet_load_the_same_readings(tmp_path, small_frame):
    a = _load(tmp_path, small_frame, "d.csv")
    b = _load(tmp_path, small_frame, "d.parquet")
    assert a.features == b.features == FEATURE_NAMES
    assert a.classes == b.classes == ["normal", *sorted(CLASS_NAMES[1:])]
    pd.testing.assert_frame_equal(a.frame, b.frame, check_exact=False, rtol=1e-6)
    assert len(a.frame) == len(small_frame)


def test_interleaved_runs_are_grouped_in_file_order(tmp_path, small_frame):
    two = small_frame[small_frame.run_id.isin(["run-0000", "run-0001"])]
    interleaved = pd.concat([two.iloc[i::40] for i in range(40)]).reset_index(drop=True)
    readings = _load(tmp_path, interleaved, window=10)
    assert list(readings.run_bounds()) == ["run-0000", "run-0001"]
    first = readings.frame[readings.frame.run_id == "run-0000"]
    assert np.all(np.diff(first.ts.to_numpy()) > 0)


def test_missing_column_names_it_and_the_config_key(tmp_path, small_frame):
    with pytest.raises(DataError, match=r"missing column 'label' \(data.label_column in .*cfg"):
        _load(tmp_path, small_frame.drop(columns="label"))


def test_unknown_feature_names_the_config_file(tmp_path, small_frame):
    with pytest.raises(DataError) as err:
        _load(tmp_path, small_frame, features=["vib_de_x", "nope"])
    assert str(err.value).startswith(f"data.features in {tmp_path / 'cfg.yaml'}: unknown column")
    assert "'nope'" in str(err.value)


def test_explicit_features_keep_their_order(tmp_path, small_frame):
    readings = _load(tmp_path, small_frame, features=["flow", "vib_de_x"])
    assert readings.features == ["flow", "vib_de_x"]
    assert list(readings.frame.columns) == ["run_id", "ts", "flow", "vib_de_x", "label"]


def test_non_numeric_sensor_value_is_an_error(tmp_path, small_frame):
    frame = small_frame.astype({"flow": object})
    frame.loc[7, "flow"] = "12,5"
    with pytest.raises(
        DataError, match=r"column 'flow' has 1 non-numeric value\(s\), first at row 7: '12,5'"
    ):
        _load(tmp_path, frame)


def test_text_column_is_skipped_when_features_are_automatic(tmp_path, small_frame):
    readings = _load(tmp_path, small_frame.assign(site="plant-3"))
    assert "site" not in readings.features
    assert len(readings.features) == 24


def test_nan_is_an_error_by_default(tmp_path, small_frame):
    frame = small_frame.copy()
    frame.loc[5, "vib_de_y"] = np.nan
    frame.loc[9, "temp_oil"] = np.inf
    with pytest.raises(DataError, match=r"2 row\(s\) have NaN/Inf .* first at row 5.*nan_policy"):
        _load(tmp_path, frame, "d.parquet")


def test_nan_rows_are_dropped_and_counted_with_the_drop_policy(tmp_path, small_frame, caplog):
    frame = small_frame.copy()
    frame.loc[5, "vib_de_y"] = np.nan
    frame.loc[9, "ts"] = np.nan
    with caplog.at_level(logging.WARNING, logger="edge_lstm.data.loader"):
        readings = _load(tmp_path, frame, "d.parquet", nan_policy="drop", window=10)
    assert len(readings.frame) == len(frame) - 2
    assert "dropped 2 of 360 rows" in caplog.text
    assert np.isfinite(readings.frame[readings.features].to_numpy()).all()


def test_backwards_timestamps_name_the_run(tmp_path, small_frame):
    frame = small_frame.copy()
    frame.loc[[45, 46], "ts"] = frame.loc[[46, 45], "ts"].to_numpy()
    with pytest.raises(DataError, match=r"timestamps go backwards or repeat inside run 'run-0001'"):
        _load(tmp_path, frame)


def test_runs_shorter_than_the_window_are_named(tmp_path, small_frame):
    frame = small_frame.drop(index=range(45, 70))
    with pytest.raises(DataError, match=r"1 run\(s\) are shorter .* run-0001 \(15 readings\)"):
        _load(tmp_path, frame)


def test_normal_class_must_be_a_label(tmp_path, small_frame):
    with pytest.raises(
        DataError, match=r"data.normal_class in .*'healthy' is not among the labels"
    ):
        _load(tmp_path, small_frame, normal_class="healthy")


def test_integer_labels_make_zero_the_normal_class(tmp_path, small_frame):
    codes = {name: i for i, name in enumerate(CLASS_NAMES)}
    frame = small_frame.assign(label=small_frame.label.map(codes).astype(int))
    readings = _load(tmp_path, frame)
    assert readings.classes == [str(i) for i in range(len(CLASS_NAMES))]
    assert set(readings.frame.label) == set(readings.classes)


def test_datetime_timestamps_become_unix_seconds(tmp_path, small_frame):
    frame = small_frame.assign(ts=pd.to_datetime(small_frame.ts, unit="s", utc=True))
    readings = _load(tmp_path, frame, "d.parquet")
    np.testing.assert_allclose(readings.frame.ts.to_numpy(), small_frame.ts.to_numpy(), atol=1e-3)


def test_unreadable_wrong_suffix_and_missing_files(tmp_path, small_frame):
    bad = tmp_path / "d.parquet"
    bad.write_bytes(b"this is not parquet")
    cfg = _config(tmp_path, bad)
    with pytest.raises(DataError, match=r"d.parquet: cannot read the file"):
        load_readings(cfg)
    with pytest.raises(DataError, match=r"unsupported file type '.json'"):
        load_readings(cfg, tmp_path / "d.json")
    with pytest.raises(DataError, match=r"data file not found.*edgelstm simulate --out"):
        load_readings(cfg, tmp_path / "absent.csv")
