"""`edgelstm replay` publishes a dataset's runs through a real broker: its own column names,
a training config's split and columns, and clear refusals of impossible option sets."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from runtime.replay import Columns, load_runs
from tests.conftest import run_cli
from tests.runtime.helpers import Collector, wait_until

pytestmark = pytest.mark.broker


def _renamed_csv(path: Path, rows: int = 12) -> Path:
    """Two devices of three features with columns called machine/time/state."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["machine", "time", "a", "b", "c", "state"])
        for i in range(rows):
            for machine in ("m1", "m2"):
                writer.writerow([machine, 1_700_000_000 + i * 0.5, i, 2 * i, 3 * i, "normal"])
    return path


def test_replay_with_the_datasets_own_column_names(broker, tmp_path: Path) -> None:
    data = _renamed_csv(tmp_path / "renamed.csv")
    collector = Collector(broker.host, broker.port, topic="sensors/#")
    try:
        result = run_cli(
            "replay", str(data), "--broker", f"{broker.host}:{broker.port}", "--qos", "1",
            "--run-column", "machine", "--ts-column", "time", "--label-column", "state",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "replayed 24 readings of 2 devices in 24 messages" in result.output
        assert wait_until(lambda: len(collector.payloads("/data")) == 24, 5)
    finally:
        collector.close()
    first = collector.payloads("sensors/m1/data")[0]
    assert first == {"ts": 1_700_000_000.0, "values": [0.0, 0.0, 0.0]}
    names, runs = load_runs(data, columns=Columns("machine", "time", "state"))
    assert names == ["a", "b", "c"] and [r.run_id for r in runs] == ["m1", "m2"]


def test_replay_of_a_split_uses_the_training_configs_columns(
    broker, tiny_config_path: Path, tiny_data: Path
) -> None:
    from edge_lstm.config import load_config
    from edge_lstm.data.prepare import prepare_data

    test_runs = prepare_data(load_config(tiny_config_path), tiny_data).split_runs["test"]
    result = run_cli(
        "replay", str(tiny_data), "--broker", f"{broker.host}:{broker.port}",
        "--split", "test", "--config", str(tiny_config_path), "--limit", "3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"replayed {3 * len(test_runs)} readings of {len(test_runs)} devices" in result.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--rate", "5", "--speedup", "2"], "give --rate or --speedup, not both"),
        (["--split", "test"], "--split and --config go together"),
        (["--topic", "sensors/x/data"], "--topic needs {device_id}"),
    ],
)
def test_impossible_option_sets_are_refused_in_one_line(tmp_path, extra, message) -> None:
    data = _renamed_csv(tmp_path / "renamed.csv")
    result = run_cli("replay", str(data), *extra)
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output


def test_a_missing_column_names_the_options_that_fix_it(tmp_path) -> None:
    data = _renamed_csv(tmp_path / "renamed.csv")
    result = run_cli("replay", str(data), "--broker", "127.0.0.1:1")
    assert result.exit_code == 2
    assert "missing column(s)" in result.output and "--run-column" in result.output
