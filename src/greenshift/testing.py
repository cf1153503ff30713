"""Helpers for testing code that uses greenshift: synthetic trials and factories.

Nothing in the library imports this module; tests and benchmarks do.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from greenshift.search.trial import CRASHED, DIVERGED, OK, TrialSettings


class SyntheticTrial:
    """A picklable trial function with a known, cheap accuracy/energy trade-off.

    ``loss`` falls with the epochs and with ``shift_depth``/``weight_bits`` moving towards float,
    ``energy_model_j`` rises with them, so a real Pareto front exists. ``crash_when`` maps a
    hyperparameter to values that make the trial raise; ``diverge_when`` likewise returns DIVERGED.
    ``sleep_s`` simulates training time per epoch (for scheduling tests).
    """

    def __init__(
        self,
        *,
        crash_when: Mapping[str, Any] | None = None,
        diverge_when: Mapping[str, Any] | None = None,
        sleep_s: float = 0.0,
        max_depth: int = 20,
    ):
        self.crash_when = dict(crash_when or {})
        self.diverge_when = dict(diverge_when or {})
        self.sleep_s = sleep_s
        self.max_depth = max_depth

    def __call__(
        self,
        settings: TrialSettings,
        values: Mapping[str, Any],
        budget_epochs: int,
        seed: int,
        config_key: str,
    ) -> dict[str, Any]:
        """Return the outcome dict a real trial returns (see :func:`greenshift.search.trial.run_trial`)."""
        outcome: dict[str, Any] = {
            "status": OK,
            "objectives": {},
            "metrics": {"synthetic": True},
            "error": None,
            "checkpoint": None,
            "worker": "synthetic",
            "epochs_trained": budget_epochs,
            "duration_s": self.sleep_s * budget_epochs,
        }
        if self.sleep_s:
            time.sleep(self.sleep_s * budget_epochs)
        if any(_matches(values.get(k), v) for k, v in self.crash_when.items()):
            outcome.update(status=CRASHED, error="RuntimeError: synthetic crash")
            return outcome
        if any(_matches(values.get(k), v) for k, v in self.diverge_when.items()):
            outcome.update(status=DIVERGED, error="training diverged (non-finite loss)")
            return outcome
        depth = float(values.get("shift_depth", self.max_depth)) / self.max_depth
        bits = float(values.get("weight_bits", 5))
        act_bits = float(values.get("activation_integer_bits", 16)) + float(
            values.get("activation_fraction_bits", 16)
        )
        lr = float(values.get("lr", 0.1))
        lr_penalty = (math.log10(lr) + 1.5) ** 2 * 0.05
        loss = 0.05 + 0.5 / (1 + budget_epochs) + 0.15 * depth * (5 - bits + 1) / 4 + lr_penalty
        energy = 1e-4 * ((1 - depth) * 3.0 + depth * (0.2 + act_bits / 64) + bits / 50)
        objectives = {"loss": min(loss, 1.0), "energy_model_j": energy}
        outcome["objectives"] = {name: objectives[name] for name in settings.objectives}
        outcome["metrics"]["accuracy"] = 1 - objectives["loss"]
        return outcome


def _matches(value: Any, target: Any) -> bool:
    if isinstance(target, (list, tuple, set)):
        return value in target
    return value == target


class WorkerKillingTrial(SyntheticTrial):
    """A synthetic trial that kills its whole process for configurations matching ``kill_when``.

    Used to test that a search survives a Dask worker dying mid-trial.
    """

    def __init__(self, *, kill_when: Mapping[str, Any], **kwargs: Any):
        super().__init__(**kwargs)
        self.kill_when = dict(kill_when)

    def __call__(
        self,
        settings: TrialSettings,
        values: Mapping[str, Any],
        budget_epochs: int,
        seed: int,
        config_key: str,
    ) -> dict[str, Any]:
        """Like :class:`SyntheticTrial`, but ``os._exit`` for matching configurations."""
        import os

        if any(_matches(values.get(k), v) for k, v in self.kill_when.items()):
            os._exit(17)
        return super().__call__(settings, values, budget_epochs, seed, config_key)


class FaultyTrial(SyntheticTrial):
    """A synthetic trial that trains ``epoch_s`` seconds per epoch and fails hard for some configurations.

    For configurations matching ``fault_when``, after ``fault_after_epochs`` epochs it ``"hang"``s
    forever, dies of a ``"segfault"`` (a real SIGSEGV) or ``"exit"``s with code 17. It reports its
    epochs like a real trial does in a trial process (:data:`greenshift.search.trial.epoch_reporter`),
    so tests can check what a killed trial is charged.
    """

    def __init__(
        self,
        *,
        fault: str,
        fault_when: Mapping[str, Any],
        fault_after_epochs: int = 0,
        epoch_s: float = 0.0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if fault not in ("hang", "segfault", "exit"):
            raise ValueError(f"unknown fault {fault!r}")
        self.fault = fault
        self.fault_when = dict(fault_when)
        self.fault_after_epochs = fault_after_epochs
        self.epoch_s = epoch_s

    def __call__(
        self,
        settings: TrialSettings,
        values: Mapping[str, Any],
        budget_epochs: int,
        seed: int,
        config_key: str,
    ) -> dict[str, Any]:
        """Like :class:`SyntheticTrial`, with epochs reported one by one and the fault injected."""
        from greenshift.search import trial as trial_module

        faulty = any(_matches(values.get(k), v) for k, v in self.fault_when.items())
        report = trial_module.epoch_reporter or (lambda done, planned: None)
        report(0, budget_epochs)
        for epoch in range(1, budget_epochs + 1):
            if faulty and epoch > self.fault_after_epochs:
                self._fail()
            time.sleep(self.epoch_s)
            report(epoch, budget_epochs)
        if faulty:
            self._fail()
        return super().__call__(settings, values, budget_epochs, seed, config_key)

    def _fail(self) -> None:
        import ctypes
        import os

        if self.fault == "hang":
            while True:
                time.sleep(3600)
        elif self.fault == "segfault":
            ctypes.string_at(0)  # reads address 0: SIGSEGV
        os._exit(17)
