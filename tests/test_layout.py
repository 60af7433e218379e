"""The dependency rule, checked on the source: what each package may import.

See docs/ARCHITECTURE.md, "Packages and the dependency rule". The rule itself is written once,
as the import-linter contracts in pyproject.toml ([tool.importlinter]; `make test` runs
`lint-imports`, which also follows indirect imports and finds cycles). This file checks the
same forbidden contracts file by file with `ast` (lazy imports included), so that pytest alone
enforces them; that the core contract lists every module of edge_lstm, so a new module cannot
escape the rule; and what converters may take from runtime, which has no contract.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: import-linter (dev extra) brings tomli
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
IMPORTLINTER = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
CONTRACTS = {c["id"]: c for c in IMPORTLINTER["contracts"]}
# the modules of edge_lstm outside the core contract: the CLI and what only it may reach
ENTRY_POINTS = {"edge_lstm.cli", "edge_lstm.__main__", "edge_lstm.commands", "edge_lstm.reporting"}
# what converters/ may import from runtime/ (docs/ARCHITECTURE.md, the converters row)
CONVERTERS_FROM_RUNTIME = {"runtime.manifest", "runtime.errors", "runtime.backends"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module a file imports anywhere (lazy imports included), as absolute dotted names;
    `from a import b` yields both `a` and `a.b` (b may be a module)."""
    return _imports_of(path.read_text(), _module_name(path), path.name == "__init__.py")


def _imports_of(source: str, module: str, is_package: bool) -> set[str]:
    package = module.split(".") if is_package else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source, filename=module)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            parent = ".".join([*base, *([node.module] if node.module else [])])
            if parent:
                names.add(parent)
            names.update(f"{parent}.{alias.name}".lstrip(".") for alias in node.names)
    return names


def _within(name: str, modules: list[str] | set[str]) -> bool:
    """name is one of modules or inside one of them."""
    return any(name == m or name.startswith(f"{m}.") for m in modules)


def _sources(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (REPO / package).rglob("*.py"))


def _source_files(contract: dict) -> list[Path]:
    files = _sources(*{m.split(".")[0] for m in contract["source_modules"]})
    chosen = [p for p in files if _within(_module_name(p), contract["source_modules"])]
    if contract["id"] == "core":
        chosen.append(REPO / "edge_lstm" / "__init__.py")  # the package itself is core too
    return chosen


FORBIDDEN = [
    pytest.param(contract, path, id=f"{contract['id']}:{path.relative_to(REPO)}")
    for contract in CONTRACTS.values()
    if contract["type"] == "forbidden"
    for path in _source_files(contract)
]


@pytest.mark.parametrize(("contract", "path"), FORBIDDEN)
def test_forbidden_imports(contract: dict, path: Path) -> None:
    broken = sorted(n for n in _imports(path) if _within(n, contract["forbidden_modules"]))
    assert not broken, f"{contract['name']}: {path.relative_to(REPO)} imports {broken}"


def test_every_forbidden_contract_covers_files() -> None:
    """A contract whose source modules were renamed away would check nothing."""
    for contract in CONTRACTS.values():
        if contract["type"] == "forbidden":
            assert _source_files(contract), contract["id"]


def _edge_lstm_children() -> set[str]:
    """The modules and subpackages directly under edge_lstm/."""
    root = REPO / "edge_lstm"
    modules = {p.stem for p in root.glob("*.py") if p.name != "__init__.py"}
    packages = {p.name for p in root.iterdir() if (p / "__init__.py").is_file()}
    return {f"edge_lstm.{name}" for name in modules | packages}


def test_every_module_of_edge_lstm_is_core_or_an_entry_point() -> None:
    core = set(CONTRACTS["core"]["source_modules"])
    children = _edge_lstm_children()
    missing = children - core - ENTRY_POINTS
    assert not missing, (
        f"{sorted(missing)} under no rule: add them to the source_modules of the core contract "
        "in pyproject.toml ([tool.importlinter], id core)"
    )
    stale = core - children
    assert not stale, f"the core contract lists modules that do not exist: {sorted(stale)}"
    assert not core & ENTRY_POINTS
    assert children >= ENTRY_POINTS


def test_every_root_package_is_in_the_contracts() -> None:
    roots = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests"}
    assert roots == set(IMPORTLINTER["root_packages"])


@pytest.mark.parametrize("path", _sources("converters"), ids=lambda p: str(p.relative_to(REPO)))
def test_converters_take_from_runtime_only_manifest_errors_and_backends(path: Path) -> None:
    taken = {n for n in _imports(path) if _within(n, {"runtime"}) and n != "runtime"}
    assert all(_within(n, CONVERTERS_FROM_RUNTIME) for n in taken), sorted(taken)
    assert "runtime" not in _imports(path)  # `import runtime` / `from runtime import x`


def test_the_import_scanner_sees_every_form() -> None:
    """_imports itself: plain, from, relative, lazy and `from a import module` forms."""
    source = (
        "import torch.nn\n"
        "from edge_lstm import commands\n"
        "from .windows import make_windows\n"
        "from .. import errors\n"
        "def f():\n"
        "    from runtime.manifest import Manifest\n"
    )
    found = _imports_of(source, "edge_lstm.data.loader", is_package=False)
    assert {"torch.nn", "edge_lstm.commands", "edge_lstm.data.windows", "edge_lstm.errors"} <= found
    assert {"runtime.manifest", "runtime.manifest.Manifest"} <= found
    assert "edge_lstm.data.errors" in _imports_of(source, "edge_lstm.data.sub", is_package=True)
