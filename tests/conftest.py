"""Shared test settings: one torch thread per test process, deterministic seeds, hypothesis profile."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, settings

# Tests run on 2 shared cores next to Dask workers and subprocesses: one torch thread per process avoids oversubscription.
torch.set_num_threads(1)


settings.register_profile(
    "greenshift",
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("greenshift")


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    torch.manual_seed(0)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A private data-set cache directory (never the user's)."""
    path = tmp_path / "cache"
    monkeypatch.setenv("GREENSHIFT_CACHE", str(path))
    return path
