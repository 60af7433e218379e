"""read_yaml and load_config: each way a config file can be wrong ends in one line naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_lstm.config import load_config, read_yaml
from edge_lstm.errors import ConfigError


def test_read_yaml_returns_the_mapping(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("a: 1\nb: {c: [2, 3]}\n")
    assert read_yaml(path) == {"a": 1, "b": {"c": [2, 3]}}
    assert read_yaml(str(path)) == {"a": 1, "b": {"c": [2, 3]}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "config file not found"),
        ("a: [1, 2\n", r"not valid YAML \("),
        ("- 1\n- 2\n", "expected a mapping at the top level"),
        ("just a string\n", "expected a mapping at the top level"),
        ("", "expected a mapping at the top level"),
    ],
    ids=["missing", "not-yaml", "a-list", "a-scalar", "empty"],
)
def test_read_yaml_errors_name_the_file(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "bad.yaml"
    if text is not None:
        path.write_text(text)
    for reader in (read_yaml, load_config):
        with pytest.raises(ConfigError, match=message) as info:
            reader(path)
        assert str(info.value).startswith(f"{path}: ")
        assert "\n" not in str(info.value)


def test_a_folder_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        read_yaml(tmp_path)
