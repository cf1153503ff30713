"""Imports follow the layers of docs/architecture.md: nothing imports from a layer above it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "greenshift"

LAYERS = {
    "errors": 0,
    "config": 0,
    "fileio": 0,
    "testing": 0,
    "shift": 1,
    "data": 1,
    "models": 2,
    "train": 3,
    "objectives": 4,
    "deploy": 4,
    "store": 5,
    "search": 6,
    "report": 7,
    "export": 7,
    "api": 8,
    "cli": 8,
    "__init__": 9,
    "__main__": 9,
}


def _component(path: Path) -> str:
    return path.relative_to(SRC).parts[0].removesuffix(".py")


def _imported_components(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "greenshift" and len(parts) > 1:
                found.add(parts[1])
    return found


MODULES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_imports_from_a_higher_layer(path: Path) -> None:
    own = _component(path)
    assert own in LAYERS, f"{own} is not placed in a layer (docs/architecture.md)"
    for other in _imported_components(path):
        assert other in LAYERS, f"{path.name} imports unknown component greenshift.{other}"
        # testing helpers may use anything; nothing but tests may use testing
        if own == "testing" or other == own:
            continue
        assert other != "testing", f"{path} imports greenshift.testing"
        assert LAYERS[other] <= LAYERS[own], (
            f"{path.relative_to(SRC)} imports greenshift.{other} from a higher layer"
        )


def _module_imports(path: Path) -> set[str]:
    """Every greenshift module ``path`` imports, at any place (functions and TYPE_CHECKING blocks too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("greenshift.")}


def _package_graph(package: str) -> dict[str, set[str]]:
    """Import graph of the modules of ``greenshift.<package>`` among themselves (the package's own
    ``__init__`` left out: it only gathers names)."""
    folder = SRC / package
    modules = {
        f"greenshift.{package}.{p.stem}": p for p in sorted(folder.glob("*.py")) if p.stem != "__init__"
    }
    return {name: _module_imports(path) & set(modules) - {name} for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as the list of modules along it), or ``None``."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for other in sorted(graph[node]):
            if state.get(other) == 1:
                return [*path[path.index(other) :], other]
            if other not in state and (found := visit(other)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


@pytest.mark.parametrize("package", ["report", "store", "export"])
def test_package_has_no_import_cycle(package: str) -> None:
    cycle = _cycle(_package_graph(package))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("package", ["report", "export"])
def test_readers_of_a_run_do_not_import_the_search(package: str) -> None:
    for path in sorted((SRC / package).rglob("*.py")):
        assert "search" not in _imported_components(path), (
            f"{path.relative_to(SRC)} imports greenshift.search"
        )
