"""How trials are placed on Dask workers: torch threads, worker preparation and the workers' malloc."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from greenshift.errors import ConfigError
from greenshift.search import DSNNSearch, SearchSettings
from greenshift.search import trial as trial_module


def settings(tmp_path, **overrides) -> SearchSettings:
    values = dict(dataset="digits", backbone="small_cnn", out=str(tmp_path / "run"), trials=4, max_epochs=3)
    values.update(overrides)
    return SearchSettings(**values)


def test_threads_per_trial_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match=r"^threads_per_trial must be at least 1, got 0"):
        settings(tmp_path, threads_per_trial=0)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, None),  # in process: torch's own default
        ({"threads_per_trial": 3}, 3),
        ({"workers": 2}, max(1, (os.cpu_count() or 1) // 2)),
        ({"workers": 2, "threads_per_trial": 1}, 1),
        ({"scheduler": "tcp://127.0.0.1:1"}, None),  # decided on the worker's own host
    ],
)
def test_threads_per_trial_split_the_cores_between_local_workers(tmp_path, overrides, expected):
    search = DSNNSearch(settings(tmp_path, **overrides))
    assert search.get_threads_per_worker() == expected
    assert search.get_trial_settings({}).threads_per_worker == expected


def test_host_thread_share_is_none_outside_dask():
    trial_module._host_thread_share.cache_clear()
    assert trial_module._host_thread_share() is None


@pytest.mark.slow
def test_workers_of_an_existing_cluster_split_their_hosts_cores(tmp_path, local_dask_client):
    with local_dask_client(2) as client:
        # as a task, like a trial (client.run executes outside any task, where get_worker() fails)
        addresses = list(client.scheduler_info()["workers"])
        shares = [
            client.submit(trial_module._host_thread_share, pure=False, workers=[a]).result()
            for a in addresses
        ]
        # the data set is loaded on every worker before the first trial
        trial_settings = DSNNSearch(
            settings(tmp_path, scheduler=client.scheduler.address)
        ).get_trial_settings({})
        client.run(trial_module.prepare_worker, trial_settings)
        loaded = client.run(lambda: sorted(key[0] for key in trial_module._DATASETS))
    assert set(shares) == {max(1, (os.cpu_count() or 1) // 2)}
    assert list(loaded.values()) == [["digits"], ["digits"]]


@pytest.mark.slow
def test_local_cluster_workers_keep_glibcs_adaptive_malloc_and_do_not_profile(tmp_path):
    # Dask's nanny exports MALLOC_TRIM_THRESHOLD_, which made every trial on a worker twice as slow;
    # the workers' statistical profiler cost 7 % of the trials' time with every core busy.
    # A fresh interpreter: a cluster started by another test may have left the variable in this one.
    script = textwrap.dedent(
        f"""
        import os
        from greenshift.search import DSNNSearch, SearchSettings
        search = DSNNSearch(SearchSettings(dataset="digits", backbone="small_cnn", out={str(tmp_path / "r")!r},
                                           workers=2))
        client = search.get_dask_client()
        print(sorted(set(map(str, client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values()))))
        import dask
        print(sorted(set(client.run(lambda: dask.config.get("distributed.worker.profile.enabled")).values())))
        client.close()
        search._own_cluster.close()
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-2:] == ["['None']", "[False]"]


def _constant_target(config, seed: int = 0, budget: float | None = None) -> float:
    return 1.0


def test_dask_runner_runs_identical_trials_as_separate_tasks(tmp_path, local_dask_client):
    # A trial has side effects (checkpoints, measured energy): submitting the same trial twice must run
    # it twice. Dask's default pure=True would give both one task key, and hash the runner every time.
    from ConfigSpace import ConfigurationSpace, Float
    from smac.runhistory import TrialInfo

    from greenshift.search.runners import make_runner
    from greenshift.search.scenario import make_scenario

    space = ConfigurationSpace(seed=0)
    space.add(Float("x", (0.0, 1.0)))
    scenario = make_scenario(
        space,
        multi_fidelity=False,
        objectives=["loss"],
        output_directory=tmp_path / "smac",
        seed=0,
        n_trials=2,
        min_epochs=1,
        max_epochs=1,
        n_workers=2,
    )
    with local_dask_client(2) as client:
        runner = make_runner(scenario, _constant_target, client)
        info = TrialInfo(config=space.get_default_configuration(), seed=0)
        runner.submit_trial(info)
        runner.submit_trial(info)
        assert len({future.key for future in runner._pending_trials}) == 2
        runner.wait()
        results = list(runner.iter_results())
        while runner.is_running():
            runner.wait()
            results += list(runner.iter_results())
    assert [value.cost for _, value in results] == [1.0, 1.0]


def test_worker_index_comes_from_the_workers_name():
    from types import SimpleNamespace

    assert trial_module._worker_index(SimpleNamespace(name=3)) == 3
    assert trial_module._worker_index(SimpleNamespace(name="gpu-node-2")) == 2
    assert trial_module._worker_index(SimpleNamespace(name="tcp://10.0.0.1:4000")) is None
    assert trial_module._worker_index() is None  # outside Dask


def test_an_in_process_trial_restores_the_callers_torch_threads():
    import torch

    before = torch.get_num_threads()
    seen = []
    with trial_module._torch_threads(before + 1):
        seen.append(torch.get_num_threads())
    assert seen == [before + 1] and torch.get_num_threads() == before
    with pytest.raises(RuntimeError), trial_module._torch_threads(before + 1):
        raise RuntimeError("a crashing trial restores the count too")
    assert torch.get_num_threads() == before
    with trial_module._torch_threads(None):
        assert torch.get_num_threads() == before


def test_an_in_process_search_prepares_before_its_first_trial(tmp_path):
    # A fresh interpreter: torch's lazy import of its compiler on the first optimizer (over a second
    # here) must happen before the first trial, not inside it, or that trial's time and energy grow.
    script = textwrap.dedent(
        f"""
        import sys
        from greenshift.search import DSNNSearch, SearchSettings
        from greenshift.search import trial as trial_module
        seen = []
        real = trial_module.run_trial
        def spy(*args, **kwargs):
            seen.append(("torch._dynamo" in sys.modules, sorted(k[0] for k in trial_module._DATASETS)))
            return real(*args, **kwargs)
        search = DSNNSearch(SearchSettings(dataset="digits", backbone="small_cnn", out={str(tmp_path / "r")!r},
                                           trials=1, max_epochs=1, min_epochs=1, optimizer="random",
                                           isolate_trials=False))
        search.trial_function = spy
        import greenshift.search.facade as facade
        facade.run_trial = spy  # the facade prepares only for the real trial function
        search.run()
        print(seen)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[(True, ['digits'])]"
