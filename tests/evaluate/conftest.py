"""Session fixtures for the evaluate tests: a tiny teacher, a tiny student and its export."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def prepared_tiny(tiny_config):
    """The tiny config's prepared data (the splits every tiny model was trained and scored on)."""
    from edge_lstm.data.prepare import prepare_data

    return prepare_data(tiny_config)


@pytest.fixture(scope="session")
def tiny_baseline(prepared_tiny):
    """The window baseline fitted on the tiny training split, as evaluate fits it."""
    from edge_lstm.baselines import fit_window_baseline

    return fit_window_baseline(prepared_tiny, seed=0)


@pytest.fixture(scope="session")
def tiny_teacher(tiny_config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher checkpoint trained for a few epochs on the tiny data."""
    from edge_lstm.train_teacher import train_teacher

    return train_teacher(tiny_config, tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="session")
def tiny_student(tiny_config, tiny_teacher: Path, tmp_path_factory) -> Path:
    """A student distilled for one epoch (no baseline): enough to have a real checkpoint."""
    from converters.distill import distill
    from edge_lstm.config import config_from_dict, config_to_dict

    raw = config_to_dict(tiny_config)
    raw["distill"]["train"]["epochs"] = 1
    cfg = config_from_dict(raw)
    return distill(cfg, tiny_teacher, tmp_path_factory.mktemp("student"), baseline=False)


@pytest.fixture(scope="session")
def tiny_deploy(tiny_student: Path, tmp_path_factory) -> Path:
    """The tiny student exported to a deployment folder (model.onnx, step.onnx, manifest)."""
    from converters.export_onnx import export

    out = tmp_path_factory.mktemp("deploy")
    export(tiny_student, out)
    return out
