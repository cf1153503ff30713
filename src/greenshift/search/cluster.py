"""The Dask side of a search: connecting to a cluster or starting a local one, and running set-up and
tear-down on every worker (or in this process when trials run here)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from greenshift.errors import ConfigError, GreenshiftError
from greenshift.search.isolation import IsolatedTrial, close_trial_processes
from greenshift.search.trial import TrialSettings, prepare_worker

logger = logging.getLogger(__name__)

# Dask's nanny exports MALLOC_TRIM_THRESHOLD_ to its workers; setting it at all switches off
# glibc's adaptive mmap threshold, so every large tensor is mmapped and page-faulted afresh,
# which made trials twice as slow as in process (bench/dask_scaling.py). None leaves it out.
# The workers' statistical profiler only feeds the dashboard, which greenshift does not start;
# its thread takes the GIL every 10 ms, and with every core busy each handover waits for the
# operating system to schedule a thread: 2 workers finished 24 trials 7 % sooner without it.
LOCAL_CLUSTER_CONFIG = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    "distributed.worker.profile.enabled": False,
}


def connect(scheduler: str | None, workers: int) -> tuple[Any | None, Any | None]:
    """``(client, local cluster)``: a client of ``scheduler``, a local cluster of ``workers`` processes
    when ``workers > 1``, or ``(None, None)`` to run trials in this process.

    The local cluster is returned only when started here: :func:`close` closes it, never a cluster that
    someone else runs.
    """
    if not scheduler and workers <= 1:
        return None, None
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("parallel search needs Dask: pip install 'greenshift[dask]'") from None
    if scheduler:
        try:
            return Client(scheduler, timeout="10s"), None
        except OSError as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    import dask

    with dask.config.set(LOCAL_CLUSTER_CONFIG):
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
    return Client(cluster), cluster


def close(client: Any | None, local_cluster: Any | None) -> None:
    """Close a local cluster that :func:`connect` started, and its client; leave any other cluster be."""
    if local_cluster is None:
        return
    if client is not None:
        client.close()
    local_cluster.close()


def worker_slots(client: Any | None) -> int:
    """How many trials can run at once: the cluster's worker threads, or 1 in this process."""
    if client is None:
        return 1
    return max(1, sum(client.nthreads().values()))


def run_everywhere(client: Any | None, function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` on every worker of ``client``, or in this process without one."""
    if client is None:
        return function(*args)
    return client.run(function, *args)


def prepare_workers(client: Any | None, trial_settings: TrialSettings) -> None:
    """Import torch and load the data set on every worker at once (in this process without ``client``),
    before the first trial arrives.

    A failure here is left for the trials to meet and record with their own error.
    """
    try:
        run_everywhere(client, prepare_worker, trial_settings)
    except Exception as exc:  # the trials meet and report the same problem one by one
        logger.debug("preparing the workers failed: %s", exc)


def start_trial_processes(client: Any | None, trial: IsolatedTrial, trial_settings: TrialSettings) -> None:
    """Start the trial process of this process (without ``client``) or of every Dask worker now.

    They load torch and the data set while SMAC sets up; a failure is left for the trials to record.
    """
    try:
        run_everywhere(client, trial.prepare, trial_settings)
    except GreenshiftError:
        raise  # an unpicklable trial function: the user must change it or the settings
    except Exception as exc:
        logger.debug("starting the trial processes failed: %s", exc)


def wait_for_trial_processes(client: Any | None, trial: IsolatedTrial, trial_settings: TrialSettings) -> None:
    """Wait until the trial processes have loaded torch and the data set (they did so while SMAC set up).

    Their loading is start-up, like the imports: without the wait it fell inside the first trial's
    wall time and made up most of the search's overhead per trial in bench/search_overhead.py.
    """
    try:
        run_everywhere(client, trial.wait_ready, trial_settings)
    except Exception as exc:  # the trials meet a process that did not start and record it
        logger.debug("waiting for the trial processes failed: %s", exc)


def close_worker_trial_processes(client: Any) -> None:
    """Stop the trial processes on the workers of a cluster that outlives the search."""
    try:
        client.run(close_trial_processes)
    except Exception as exc:  # a worker that is gone has no trial process left either
        logger.debug("closing the trial processes on the workers failed: %s", exc)
