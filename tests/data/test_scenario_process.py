"""The process scenario: well-formed, deterministic, every fault inside the run, devices that
differ, and the CLI writing it; the pump scenario byte-identical to before scenarios existed."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from edge_lstm.commands.simulate import SCENARIO_NAMES
from edge_lstm.errors import DataError
from edge_lstm.scenarios import SCENARIOS, get_scenario, write_scenario
from edge_lstm.scenarios.process import CLASS_NAMES, FEATURE_NAMES, MAGNITUDES, generate
from tests.conftest import run_cli

RUNS, LENGTH = 2, 120
# sha256 of `edgelstm simulate --out pump.csv --seed 3 --runs-per-class 2 --run-length 60`,
# taken before the scenarios existed
PUMP_CSV_SHA256 = "4a6027d407d3b0363949f7fe6c57f3413ef3d413ecf3240c919d43b023acdb72"


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate(seed=4, runs_per_class=RUNS, run_length=LENGTH)


def test_layout_columns_and_finite_float32(frame):
    assert list(frame.columns) == ["run_id", "device_id", "ts", *FEATURE_NAMES, "label"]
    assert 20 <= len(FEATURE_NAMES) <= 40 and CLASS_NAMES[0] == "normal"
    assert set(MAGNITUDES) == set(CLASS_NAMES[1:])  # every fault has its magnitudes
    assert all(frame[c].dtype == np.float32 for c in FEATURE_NAMES)
    assert np.isfinite(frame[FEATURE_NAMES].to_numpy()).all()
    assert len(frame) == RUNS * len(CLASS_NAMES) * LENGTH


def test_every_class_once_per_run_with_the_onset_inside_the_run(frame):
    run_classes = []
    for _, run in frame.groupby("run_id", sort=False):
        assert len(run) == LENGTH and run.device_id.nunique() == 1
        assert np.allclose(np.diff(run.ts.to_numpy()), 60.0)  # one reading a minute
        labels = run.label.to_numpy()
        faulty = np.flatnonzero(labels != "normal")
        if faulty.size == 0:
            run_classes.append("normal")
            continue
        onset = faulty[0]
        assert 0.1 * LENGTH <= onset <= 0.4 * LENGTH  # healthy first, then faulty to the end
        assert (labels[onset:] == labels[onset]).all()
        run_classes.append(labels[onset])
    assert sorted(run_classes) == sorted(CLASS_NAMES * RUNS)


def test_same_seed_same_frame_other_seed_other_frame(frame):
    pd.testing.assert_frame_equal(frame, generate(seed=4, runs_per_class=RUNS, run_length=LENGTH))
    other = generate(seed=5, runs_per_class=RUNS, run_length=LENGTH)
    assert not np.allclose(frame[FEATURE_NAMES].to_numpy(), other[FEATURE_NAMES].to_numpy())


def test_devices_hold_several_runs_and_read_differently():
    frame = generate(seed=2, runs_per_class=4, run_length=LENGTH, runs_per_device=2)
    per_device = frame.groupby("device_id").run_id.nunique()
    assert (per_device == 2).all() and len(per_device) == 2 * len(CLASS_NAMES)
    # The same true temperature (the loop holds thermocouple A on setpoint in normal runs)
    # reads differently on each device's redundant thermocouple: per-device calibration.
    normal = frame[frame.label == "normal"]
    gap = (normal.reactor_temp_b - normal.reactor_temp).groupby(normal.device_id).median()
    assert gap.std() > 0.07 and gap.max() - gap.min() > 0.2  # noise alone: ~0.02


def test_the_loops_hold_their_setpoints_in_normal_runs(frame):
    normal = frame[frame.label == "normal"]
    assert (normal.reactor_temp - normal.reactor_temp_sp).abs().median() < 0.5
    assert (normal.feed_flow - normal.feed_flow_sp).abs().median() < 0.3


def test_a_stuck_sensor_stays_inside_the_range_it_had():
    frame = generate(seed=0, runs_per_class=6, run_length=LENGTH)
    for _, run in frame[frame.run_id.isin(frame.run_id[frame.label == "stuck_sensor"])].groupby(
        "run_id"
    ):
        after = (run.label == "stuck_sensor").to_numpy()
        before_std = run[FEATURE_NAMES][~after].std()
        after_std = run[FEATURE_NAMES][after].std()
        stuck = (after_std / before_std).idxmin()
        value = run[stuck][after].mean()
        assert run[stuck][~after].min() - 1 <= value <= run[stuck][~after].max() + 1


def test_bad_sizes_are_data_errors():
    with pytest.raises(DataError, match="run_length"):
        generate(run_length=30)
    with pytest.raises(DataError, match="runs_per_device"):
        generate(runs_per_device=0)
    with pytest.raises(DataError, match="unknown scenario 'plant'; choose one of pump, process"):
        get_scenario("plant")


def test_the_cli_writes_the_process_scenario(tmp_path):
    path = tmp_path / "process.parquet"
    result = run_cli(
        "simulate", "--scenario", "process", "--out", str(path), "--seed", "4",
        "--runs-per-class", str(RUNS), "--run-length", str(LENGTH),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"{RUNS * len(CLASS_NAMES)} runs, {len(CLASS_NAMES)} classes" in result.output
    written = pd.read_parquet(path)
    pd.testing.assert_frame_equal(written, generate(seed=4, runs_per_class=RUNS, run_length=LENGTH))


def test_the_cli_too_short_a_run_is_one_error_line(tmp_path):
    result = run_cli("simulate", "--scenario", "process", "--out", str(tmp_path / "p.csv"),
                     "--run-length", "30")  # fmt: skip
    assert result.exit_code == 2 and "error: run_length must be at least 60" in result.output


def test_the_pump_scenario_is_unchanged(tmp_path):
    path = tmp_path / "pump.csv"
    args = ["--out", str(path), "--seed", "3", "--runs-per-class", "2", "--run-length", "60"]
    assert run_cli("simulate", *args).exit_code == 0
    assert hashlib.sha256(path.read_bytes()).hexdigest() == PUMP_CSV_SHA256
    assert run_cli("simulate", "--scenario", "pump", *args).exit_code == 0
    assert hashlib.sha256(path.read_bytes()).hexdigest() == PUMP_CSV_SHA256
    write_scenario("pump", path, seed=3, runs_per_class=2, run_length=60)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == PUMP_CSV_SHA256


def test_the_cli_lists_every_scenario():
    assert tuple(SCENARIOS) == SCENARIO_NAMES
