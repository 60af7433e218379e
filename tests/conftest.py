"""Shared fixtures: a tiny simulated dataset and a matching tiny config, made once per session.

Area-specific fixtures (trained checkpoints, deployment folders, the Mosquitto broker) live in
the conftest.py of each test folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / "configs" / "test.yaml"


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated dataset (every class, few short runs) as Parquet."""
    from edge_lstm.simulate import write_dataset

    path = tmp_path_factory.mktemp("data") / "sensors.parquet"
    write_dataset(path, seed=1, runs_per_class=4, run_length=200)
    return path


def write_config(path: Path, data_path: Path, **sections: dict) -> Path:
    """configs/test.yaml with data.path pointed at `data_path` and sections overridden."""
    raw = yaml.safe_load(TEST_CONFIG.read_text())
    raw["data"]["path"] = str(data_path)
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="session")
def tiny_config_path(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(tmp_path_factory.mktemp("config") / "test.yaml", tiny_data)


@pytest.fixture(scope="session")
def tiny_config(tiny_config_path: Path):
    from edge_lstm.config import load_config

    return load_config(tiny_config_path)


def run_cli(*argv: str):
    """Invokes `edgelstm ARGV` in-process and returns click's Result (output, exit_code)."""
    from click.testing import CliRunner

    from edge_lstm.cli import main

    return CliRunner().invoke(main, list(argv))
