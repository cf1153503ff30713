"""Dependency floors (pyproject.toml) against the versions the test suite runs with."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]


def _floors() -> dict[str, tuple[int, ...]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"]) + list(project["optional-dependencies"]["dask"])
    floors = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", requirement)
        assert match, f"{requirement}: a plain lower bound is expected"
        floors[match.group(1)] = tuple(int(part) for part in match.group(2).split("."))
    return floors


def _installed(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", metadata.version(name))[:3])


def test_torch_floor_excludes_the_weights_only_bypass():
    # CVE-2025-32434: torch.load(weights_only=True) could run code before torch 2.6
    assert _floors()["torch"] >= (2, 6)


@pytest.mark.parametrize("name", sorted(_floors()))
def test_every_floor_lies_in_the_tested_major_version(name):
    floor = _floors()[name]
    try:
        installed = _installed(name)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{name} is not installed")
    assert installed >= floor, f"{name} {installed} is below its floor {floor}"
    same = 2 if floor[0] == 0 else 1  # 0.x: the minor version is the major one
    assert installed[:same] == floor[:same], f"{name}: floor {floor} was never tested (installed {installed})"
