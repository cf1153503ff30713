"""How trials reach SMAC's runners: the target function, and the runner in process or on Dask.

greenshift drives SMAC through ask/tell (SMAC chooses configurations and budgets; greenshift runs,
records and limits) and executes trials with SMAC's own runners: ``TargetFunctionRunner`` in
process, ``DaskParallelRunner`` on a Dask cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ConfigSpace import Configuration
from smac import Scenario
from smac.runhistory import StatusType, TrialInfo, TrialValue
from smac.runner import DaskParallelRunner, TargetFunctionRunner

from greenshift.search.trial import TrialSettings
from greenshift.store.records import config_key


def configuration_values(config: Configuration) -> dict[str, Any]:
    """Active hyperparameter values of a SMAC configuration as plain Python values."""
    return plain_values(dict(config))


def plain_values(values: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameter values with numpy scalars turned into Python ones (what the store keys)."""
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in values.items()}


def budget_to_epochs(budget: float | None, max_epochs: int) -> int:
    """SMAC's real-valued budget as whole epochs (at least 1); no budget means the maximum."""
    if budget is None:
        return max_epochs
    return max(1, min(max_epochs, round(budget)))


class SmacTarget:
    """The target function SMAC's runners call: one trial through ``trial_function``."""

    def __init__(self, settings: TrialSettings, trial_function: Callable[..., dict[str, Any]]):
        self.settings = settings
        self.trial_function = trial_function

    def __call__(self, config: Any, seed: int = 0, budget: float | None = None) -> tuple[list[float], dict]:
        """Run one trial; costs of failed trials are replaced by the search before SMAC sees them."""
        values = configuration_values(config)
        epochs = budget_to_epochs(budget, self.settings.max_epochs)
        outcome = self.trial_function(self.settings, values, epochs, int(seed), config_key(values))
        costs = [float(outcome["objectives"].get(name, 0.0)) for name in self.settings.objectives]
        return costs, {"greenshift": outcome}


class ResilientDaskRunner(DaskParallelRunner):
    """SMAC's Dask runner, except that a trial whose worker died is reported as crashed, and trials
    are submitted as impure tasks (see :meth:`submit_trial`).

    SMAC's runner re-raises the exception of a lost future (e.g. ``KilledWorker``) out of the
    optimisation loop, which would end the whole search; greenshift records it and goes on.
    """

    def __init__(self, single_worker: TargetFunctionRunner, dask_client: Any):
        super().__init__(single_worker=single_worker, dask_client=dask_client)
        self._submitted: dict[Any, TrialInfo] = {}

    def submit_trial(self, trial_info: TrialInfo, **dask_data_to_scatter: dict[str, Any]) -> None:
        """Submit one trial as an impure Dask task, after waiting for a free worker if none is.

        A trial is not a pure function (it writes checkpoints, measures energy), and Dask's default
        ``pure=True`` names each task by hashing the pickled runner and configuration: about 10 ms of
        the search process per trial (py-spy), taken from the cores the workers train on.
        """
        if self.count_available_workers() <= 0 and self._pending_trials:
            from distributed import wait  # Dask is an optional extra

            wait(self._pending_trials, return_when="FIRST_COMPLETED")
            self._process_pending_trials()
        future = self._client.submit(
            self._single_worker.run_wrapper, trial_info=trial_info, pure=False, **dask_data_to_scatter
        )
        self._pending_trials.append(future)
        self._submitted[future] = trial_info

    def _process_pending_trials(self) -> None:
        for future in [f for f in self._pending_trials if f.done()]:
            info = self._submitted.pop(future, None)
            self._pending_trials.remove(future)
            try:
                self._results_queue.append(future.result())
            except Exception as exc:  # lost worker, cancelled future, unpicklable result
                if info is None:
                    raise
                value = TrialValue(
                    cost=self._crash_cost,
                    status=StatusType.CRASHED,
                    additional_info={"greenshift": {"status": "crashed", "error": f"worker lost: {exc!r}"}},
                )
                self._results_queue.append((info, value))


def make_runner(
    scenario: Scenario, target: Callable[..., Any], dask_client: Any | None
) -> TargetFunctionRunner | ResilientDaskRunner:
    """SMAC's in-process runner, or its Dask runner on ``dask_client``."""
    single = TargetFunctionRunner(
        scenario=scenario, target_function=target, required_arguments=["seed", "budget"]
    )
    if dask_client is None:
        return single
    return ResilientDaskRunner(single, dask_client)
