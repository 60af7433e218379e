"""converters/ has no import cycles (lazy imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

CONVERTERS = Path(__file__).resolve().parents[2] / "converters"


def _imports(path: Path) -> set[str]:
    """converters modules `path` imports anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m.removeprefix("converters.") for m in found if m.startswith("converters.")}


def test_converters_modules_import_each_other_without_cycles() -> None:
    graph = {p.stem: _imports(p) for p in CONVERTERS.glob("*.py")}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, "import cycle: " + " -> ".join((*path, module))
        if module in done:
            return
        for imported in graph.get(module, ()):
            visit(imported, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())
