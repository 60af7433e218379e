"""`edgelstm feedback export`: the readings of confirmed alerts, in a file the training loader
takes as it is and appended to the training data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from edge_lstm.config import load_config
from edge_lstm.data.loader import load_readings
from tests.conftest import run_cli, write_config

VERDICTS = {"cavitation": ["confirmed", "confirmed"], "overheating": ["rejected"]}


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_confirmed_alerts_export_as_labelled_runs(
    feedback_store, tiny_data: Path, tmp_path: Path, suffix: str
) -> None:
    state, raised = feedback_store(VERDICTS)
    out = tmp_path / f"feedback{suffix}"
    result = run_cli("feedback", "export", str(state), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "wrote 140 readings of 2 alerts (2 cavitation)" in result.output
    frame = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    source = pd.read_parquet(tiny_data)
    assert list(frame.columns) == ["run_id", "ts", "label", *source.columns[2:-1]]
    assert sorted(frame["run_id"].unique()) == sorted(raised["cavitation"])
    assert set(frame["label"]) == {"cavitation"}
    # 40 readings up to the window's end (fewer than window + before exist), 30 after
    assert frame.groupby("run_id").size().tolist() == [70, 70]
    # the values are the readings the gateway saw, in raw units
    merged = frame.merge(source, on="ts", suffixes=("", "_source"))
    feature = source.columns[2]
    assert len(merged) >= 140
    assert (merged[feature] - merged[f"{feature}_source"]).abs().max() < 1e-4


def test_rejected_alerts_as_normal_and_the_file_appends_to_training_data(
    feedback_store, tiny_data: Path, tmp_path: Path
) -> None:
    state, raised = feedback_store(VERDICTS)
    out = tmp_path / "feedback.parquet"
    result = run_cli(
        "feedback", "export", str(state / "feedback.sqlite3"), "--out", str(out),
        "--rejected-as-normal",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    labels = frame.groupby("run_id")["label"].first().to_dict()
    assert labels[raised["overheating"][0]] == "normal"
    combined = tmp_path / "combined.parquet"
    source = pd.read_parquet(tiny_data)
    pd.concat([source, frame[source.columns]], ignore_index=True).to_parquet(combined)
    config = load_config(write_config(tmp_path / "retrain.yaml", combined))
    readings = load_readings(config)
    runs = set(readings.frame[readings.run_column])
    assert set(raised["cavitation"]) | set(raised["overheating"]) <= runs
    assert readings.features == list(source.columns[2:-1])


def test_export_errors_are_one_line(feedback_store, tmp_path: Path) -> None:
    result = run_cli("feedback", "export", str(tmp_path), "--out", str(tmp_path / "f.csv"))
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "feedback.enabled" in result.output
    state, _ = feedback_store({"overheating": ["rejected"]})
    result = run_cli("feedback", "export", str(state), "--out", str(tmp_path / "f.csv"))
    assert result.exit_code == 2 and "no confirmed alert with readings" in result.output
    result = run_cli("feedback", "export", str(state), "--out", str(tmp_path / "f.txt"))
    assert result.exit_code == 2 and "must end with .csv" in result.output
