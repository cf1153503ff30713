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
