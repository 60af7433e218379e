"""User splits (a column, a file), groups kept in one split, and every way they can be wrong."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from edge_lstm.config import config_from_dict, config_to_dict, load_config
from edge_lstm.data import prepare_data
from edge_lstm.data.split import SPLITS
from edge_lstm.errors import ConfigError, DataError
from edge_lstm.simulate import generate
from tests.conftest import write_config


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """27 short runs (3 per class), run-0000 .. run-0026."""
    return generate(seed=2, runs_per_class=3, run_length=40)


def _runs(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(frame.run_id))


def _prepare(tmp_path: Path, frame: pd.DataFrame, name: str = "d.parquet", **data: object):
    path = tmp_path / name
    if name.endswith(".parquet"):
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return prepare_data(load_config(write_config(tmp_path / "cfg.yaml", path, data=data)))


def _by_run(frame: pd.DataFrame, values: dict[str, object]) -> pd.Series:
    return frame.run_id.map(values)


def _assignment(frame: pd.DataFrame) -> dict[str, str]:
    """A fixed split: runs 0-16 train, 17-21 val, 22-26 test."""
    runs = _runs(frame)
    return {run: "train" if i < 17 else "val" if i < 22 else "test" for i, run in enumerate(runs)}


def test_a_split_column_assigns_whole_runs(tmp_path, frame):
    chosen = _assignment(frame)
    data = _prepare(tmp_path, frame.assign(part=_by_run(frame, chosen)), split={"column": "part"})
    for name in SPLITS:
        assert data.split_runs[name] == sorted(r for r, s in chosen.items() if s == name)
        assert set(data.split(name).run_ids) == set(data.split_runs[name])
    assert "part" not in data.features


def test_a_split_column_that_changes_inside_a_run_names_the_run(tmp_path, frame):
    part = _by_run(frame, _assignment(frame)).to_numpy().copy()
    part[np.flatnonzero(frame.run_id == "run-0003")[-1]] = "val"
    with pytest.raises(DataError, match=r"'part' \(data.split.column .*first 'run-0003'"):
        _prepare(tmp_path, frame.assign(part=part), split={"column": "part"})


def test_an_unknown_split_value_is_named_with_the_allowed_ones(tmp_path, frame):
    part = _by_run(frame, {**_assignment(frame), "run-0005": "dev"})
    with pytest.raises(DataError) as err:
        _prepare(tmp_path, frame.assign(part=part), split={"column": "part"})
    message = str(err.value)
    assert "'dev'" in message and "'run-0005'" in message
    assert "allowed values are train, val, test" in message


def test_a_split_column_without_test_runs_is_refused(tmp_path, frame):
    part = _by_run(frame, {r: "train" if s == "test" else s for r, s in _assignment(frame).items()})
    with pytest.raises(DataError, match=r"no runs in the test split"):
        _prepare(tmp_path, frame.assign(part=part), split={"column": "part"})


def test_a_missing_split_column_names_the_config_key(tmp_path, frame):
    with pytest.raises(DataError, match=r"missing column 'part' \(data.split.column in"):
        _prepare(tmp_path, frame, split={"column": "part"})


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_a_split_file_lists_the_runs_of_each_split(tmp_path, frame, suffix):
    chosen = _assignment(frame)
    listed = {name: [r for r, s in chosen.items() if s == name] for name in SPLITS}
    split_file = tmp_path / f"splits{suffix}"
    split_file.write_text(json.dumps(listed) if suffix == ".json" else yaml.safe_dump(listed))
    data = _prepare(tmp_path, frame, split={"file": str(split_file)})
    assert data.split_runs == {name: sorted(runs) for name, runs in listed.items()}


def _file_error(tmp_path: Path, frame: pd.DataFrame, content: object, suffix: str = ".yaml"):
    split_file = tmp_path / f"splits{suffix}"
    split_file.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    with pytest.raises(DataError) as err:
        _prepare(tmp_path, frame, split={"file": str(split_file)})
    return str(err.value)


def test_split_file_errors_name_the_runs(tmp_path, frame):
    runs = _runs(frame)
    good = {"train": runs[:17], "val": runs[17:22], "test": runs[22:]}
    message = _file_error(tmp_path, frame, {**good, "test": [*runs[22:], "run-9999"]})
    assert "1 run id(s) are not in" in message and "'run-9999'" in message
    message = _file_error(tmp_path, frame, {**good, "test": runs[22:25]})
    assert "2 run(s) of" in message and "in no split" in message and "'run-0025'" in message
    message = _file_error(tmp_path, frame, {**good, "val": [*runs[17:22], runs[0]]})
    assert "listed twice" in message and "run-0000 (train, val)" in message
    message = _file_error(tmp_path, frame, {**good, "dev": []})
    assert "expected a mapping of train, val, test" in message and "'dev'" in message
    assert "not valid YAML" in _file_error(tmp_path, frame, "train: [a\n")
    assert "must be .yaml, .yml or .json" in _file_error(tmp_path, frame, "{}", ".txt")
    with pytest.raises(DataError, match=r"split file not found .*working directory"):
        _prepare(tmp_path, frame, split={"file": str(tmp_path / "absent.yaml")})


def _devices(frame: pd.DataFrame) -> pd.Series:
    """Nine devices of three runs each, numbered: a numeric column, yet not a sensor."""
    return _by_run(frame, {run: i // 3 for i, run in enumerate(_runs(frame))})


def test_fractions_keep_every_group_in_one_split(tmp_path, frame):
    grouped = frame.assign(device=_devices(frame))
    data = _prepare(tmp_path, grouped, group_column="device")
    assert "device" not in data.features and len(data.features) == 24
    device_of = dict(zip(grouped.run_id, grouped.device, strict=True))
    seen = {name: {device_of[r] for r in data.split_runs[name]} for name in SPLITS}
    assert all(seen.values())
    assert not seen["train"] & seen["test"] and not seen["train"] & seen["val"]
    assert not seen["val"] & seen["test"]
    assert sorted(r for runs in data.split_runs.values() for r in runs) == sorted(_runs(frame))
    assert len(data.split_runs["train"]) > len(data.split_runs["test"])
    again = _prepare(tmp_path, grouped, group_column="device")
    assert again.split_runs == data.split_runs


def test_too_few_groups_for_the_splits_is_a_clear_error(tmp_path, frame):
    two = frame.assign(device=_by_run(frame, {r: i % 2 for i, r in enumerate(_runs(frame))}))
    with pytest.raises(DataError, match=r"2 group\(s\) cannot fill the train/val/test splits"):
        _prepare(tmp_path, two, group_column="device")


def test_a_group_spanning_user_splits_is_refused(tmp_path, frame):
    chosen = _assignment(frame)  # run-0015..0017 share device 5, and 0017 is in val
    grouped = frame.assign(device=_devices(frame), part=_by_run(frame, chosen))
    with pytest.raises(DataError) as err:
        _prepare(tmp_path, grouped, split={"column": "part"}, group_column="device")
    assert "group(s) have runs in several splits, e.g. '5'" in str(err.value)
    assert "'run-0017 (val)'" in str(err.value)
    listed = {name: [r for r, s in chosen.items() if s == name] for name in SPLITS}
    split_file = tmp_path / "splits.json"
    split_file.write_text(json.dumps(listed))
    with pytest.raises(DataError, match=r"data.split.file .*several splits, e.g. '5'"):
        _prepare(tmp_path, grouped, split={"file": str(split_file)}, group_column="device")


def test_a_group_that_changes_inside_a_run_is_refused(tmp_path, frame):
    device = _devices(frame).to_numpy().copy()
    device[np.flatnonzero(frame.run_id == "run-0001")[-1]] = 99
    with pytest.raises(DataError, match=r"data.group_column .* first 'run-0001' \('0', '99'\)"):
        _prepare(tmp_path, frame.assign(device=device), group_column="device")


def test_split_config_takes_one_way_and_dumps_only_that_way():
    base = {"path": "d.csv"}
    for split in ({"column": "part"}, {"file": "s.yaml"}, {"train": 0.6, "val": 0.2, "test": 0.2}):
        cfg = config_from_dict({"data": {**base, "split": split, "group_column": "device"}})
        dumped = config_to_dict(cfg)
        assert dumped["data"]["split"] == split
        assert config_from_dict(dumped) == cfg
    for split, problem in [
        ({"column": "part", "file": "s.yaml"}, "give column or file, not both"),
        ({"column": "part", "test": 0.2}, r"test \(fractions\) and column are two ways"),
        ({"train": 0.5, "val": 0.2, "test": 0.2}, "must be 1.0"),
    ]:
        with pytest.raises(ConfigError, match=problem):
            config_from_dict({"data": {**base, "split": split}})
    with pytest.raises(ConfigError, match=r"data\.label_column and data\.group_column"):
        config_from_dict({"data": {**base, "group_column": "label"}})


@pytest.mark.parametrize("name", ["d.csv.gz", "d.csv.bz2", "d.csv.zip", "d.zip"])
def test_compressed_csv_loads_like_csv(tmp_path, frame, name):
    plain = _prepare(tmp_path, frame, "d.csv")
    packed = _prepare(tmp_path, frame, name)
    np.testing.assert_array_equal(packed.train.x, plain.train.x)
    assert packed.split_runs == plain.split_runs


def test_onset_marks_the_windows_that_straddle_a_label_change(tmp_path, frame):
    data = _prepare(tmp_path, frame, window=10, stride=3)
    labels = frame.groupby("run_id", sort=False).label.agg(list)
    for name in SPLITS:
        windows = data.split(name)
        assert windows.onset.dtype == bool and windows.onset.shape == windows.y.shape
        for run in set(windows.run_ids):
            ours = np.flatnonzero(windows.run_ids == run)
            expected = [len(set(labels[run][k * 3 : k * 3 + 10])) > 1 for k in range(len(ours))]
            assert windows.onset[ours].tolist() == expected
    fault_runs = sum(1 for run in labels.index if set(labels[run]) != {"normal"})
    onsets = sum(int(data.split(name).onset.sum()) for name in SPLITS)
    assert fault_runs <= onsets <= fault_runs * 4  # each fault run: a few windows at its onset
