"""Shared test settings: one torch thread per test process, deterministic seeds, hypothesis profile."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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


@contextmanager
def _local_dask_client(n_workers: int) -> Iterator[Any]:
    """A client of a real local Dask cluster with ``n_workers`` single-thread worker processes."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.fixture
def local_dask_client():
    """``with local_dask_client(n) as client``: a real local Dask cluster of ``n`` single-thread workers."""
    return _local_dask_client
