"""The dependency rule, checked on the source: what each package may import.

See docs/ARCHITECTURE.md, "Packages and the dependency rule".
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    """Top-level package names imported anywhere in a file (lazy imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _sources(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


@pytest.mark.parametrize("path", _sources("runtime"), ids=lambda p: str(p.relative_to(REPO)))
def test_runtime_imports_nothing_of_the_training_side(path: Path) -> None:
    forbidden = {"torch", "edge_lstm", "converters", "pandas", "sklearn", "pydantic"}
    assert not _imports(path) & forbidden


@pytest.mark.parametrize("path", _sources("edge_lstm"), ids=lambda p: str(p.relative_to(REPO)))
def test_core_reaches_converters_and_runtime_only_from_the_cli(path: Path) -> None:
    rel = path.relative_to(REPO / "edge_lstm")
    if rel.parts[0] == "commands" or rel.name == "cli.py":
        return
    assert not _imports(path) & {"converters", "runtime"}
