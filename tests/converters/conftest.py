"""Session-wide tiny checkpoints and deployment folders for the converter tests.

Fixtures named `*_deploy` are shared: tests that modify a folder copy it first (`copy_deploy`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers_deploy import make_tiny_checkpoint


@pytest.fixture(scope="session")
def prepared(tiny_config):
    from edge_lstm.data.prepare import prepare_data

    return prepare_data(tiny_config)


@pytest.fixture(scope="session")
def conv_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("converters")


@pytest.fixture(scope="session")
def gru_checkpoint(conv_root: Path, tiny_config, prepared) -> Path:
    return make_tiny_checkpoint(conv_root / "ck-gru", tiny_config, cell="gru", data=prepared)


@pytest.fixture(scope="session")
def lstm_checkpoint(conv_root: Path, tiny_config, prepared) -> Path:
    return make_tiny_checkpoint(
        conv_root / "ck-lstm", tiny_config, cell="lstm", layers=2, data=prepared
    )


@pytest.fixture(scope="session")
def teacher_checkpoint(conv_root: Path, tiny_config, prepared) -> Path:
    return make_tiny_checkpoint(
        conv_root / "ck-teacher", tiny_config, kind="teacher", data=prepared
    )


@pytest.fixture(scope="session")
def wide_gru_checkpoint(conv_root: Path, tiny_config, prepared) -> Path:
    """Wide enough (hidden 64) that weights, not graph structure, dominate the file size."""
    return make_tiny_checkpoint(
        conv_root / "ck-gru64", tiny_config, cell="gru", hidden_size=64, data=prepared
    )


@pytest.fixture(scope="session")
def trained_checkpoint(conv_root: Path, tiny_config, prepared) -> Path:
    """A GRU trained two epochs, so its macro-F1 is well above a constant prediction."""
    return make_tiny_checkpoint(
        conv_root / "ck-trained", tiny_config, cell="gru", epochs=2, data=prepared
    )


def _export(checkpoint: Path, out: Path) -> Path:
    from converters.export_onnx import export

    export(checkpoint, out)
    return out


@pytest.fixture(scope="session")
def gru_deploy(conv_root: Path, gru_checkpoint: Path) -> Path:
    return _export(gru_checkpoint, conv_root / "deploy-gru")


@pytest.fixture(scope="session")
def lstm_deploy(conv_root: Path, lstm_checkpoint: Path) -> Path:
    return _export(lstm_checkpoint, conv_root / "deploy-lstm")


@pytest.fixture
def copy_deploy(tmp_path: Path):
    """Copies a shared deployment folder so a test can change it."""

    def copy(src: Path) -> Path:
        return Path(shutil.copytree(src, tmp_path / src.name))

    return copy
