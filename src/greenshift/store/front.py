"""The Pareto front of a run and its hypervolume over budget: the one definition every command uses.

``search`` (its result and progress line), ``report``, ``compare``, ``pick`` and the benchmarks all
take the front from :func:`run_front` and the hypervolume curve from :func:`budget_steps` and
:func:`hypervolume_curve`, so the same run never shows two fronts.

Rules (all objectives minimised):

* **Full budget.** A trial ran at the full budget when ``budget_epochs >= max_budget * (1 -
  BUDGET_RTOL)``. Budgets are stored as floats and SMAC hands out real-valued budgets, so an exact
  ``>=`` could drop a trial whose budget came back as ``8.999999999``; the tolerance is far below
  one epoch, so it never admits a lower fidelity.
* **Usable.** Only ``OK`` trials with a finite value for every objective count. A non-finite value
  cannot be compared (NaN is neither better nor worse), and one infinite energy would make the
  hypervolume meaningless; such trials are the store's ``incomplete`` ones, reported separately.
* **Seeds averaged.** Trials of one configuration (same ``config_key``) at the full budget are one
  point: the mean of their objectives (:class:`FrontEntry`, ``n_trials`` of them). A configuration
  is one choice a user can make; listing each seed would show the same choice several times and let
  a lucky seed stand for the configuration.
* **Non-dominated.** The front is the set of these points that no other point dominates
  (:func:`greenshift.objectives.pareto.pareto_front_indices`; duplicates are all kept), sorted by
  the first objective, then the next ones, then the trial id.
* **Hypervolume over budget.** Finished trials in finish order; after each one the consumed budget
  is the sum of the epochs of all finished trials so far (lower budgets and failed trials included:
  ``metrics["epochs_trained"]`` where the search recorded it — a promoted trial that continued from a
  checkpoint trains only the extra epochs — else the allotted ``budget_epochs``) and the wall time is
  ``finished_at`` minus the earliest ``started_at``. The hypervolume at that moment is that of the
  full-budget configurations seen so far, each at its running seed mean.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from greenshift.store.records import TrialRecord, TrialStatus

#: Relative tolerance when deciding that a trial ran at the full budget (budgets are stored as floats).
BUDGET_RTOL = 1e-9


@dataclass(frozen=True)
class FrontEntry:
    """One configuration's objectives at one budget (several seeds averaged; ``n_trials`` of them).

    ``trial_id`` is the first of the averaged trials, ``trial_ids`` all of them; ``checkpoint`` the kept
    model of the first of them that kept one (a path relative to the run directory), else ``None``.
    """

    trial_id: int
    config: dict[str, Any]
    objectives: dict[str, float]
    budget_epochs: float
    config_key: str
    is_default: bool = False
    n_trials: int = 1
    trial_ids: tuple[int, ...] = ()
    checkpoint: str | None = None

    @property
    def status(self) -> TrialStatus:
        """Always ``OK``: only successful trials make entries (so an entry reads like a :class:`TrialRecord`)."""
        return TrialStatus.OK

    def point(self, objective_names: Sequence[str]) -> tuple[float, ...]:
        """The objective vector in the order of ``objective_names``."""
        return tuple(float(self.objectives[name]) for name in objective_names)

    def to_dict(self) -> dict[str, Any]:
        """The entry as plain JSON-ready values."""
        return {
            "trial_id": self.trial_id,
            "config": dict(self.config),
            "objectives": dict(self.objectives),
            "budget_epochs": self.budget_epochs,
            "n_trials": self.n_trials,
            "is_default": self.is_default,
        }


@dataclass(frozen=True)
class BudgetStep:
    """The state of the search right after one trial finished.

    ``config_key``/``point`` name the full-budget configuration this trial updated (its running mean
    over seeds), or are ``None`` when the trial added no point to the front.
    """

    trial_id: int
    epochs: float
    wall_time_s: float
    hypervolume: float
    config_key: str | None = None
    point: tuple[float, ...] | None = None


def at_full_budget(budget_epochs: float, max_budget: float) -> bool:
    """Whether a trial of ``budget_epochs`` ran at the full budget ``max_budget`` (see the module rules)."""
    return float(budget_epochs) >= float(max_budget) * (1 - BUDGET_RTOL)


def usable(record: TrialRecord, objective_names: Sequence[str]) -> bool:
    """Whether ``record`` is ``OK`` with a finite value for every objective."""
    if TrialStatus(record.status) is not TrialStatus.OK:
        return False
    values = record.objectives or {}
    return all(
        name in values and values[name] is not None and math.isfinite(float(values[name]))
        for name in objective_names
    )


def average(records: Sequence[TrialRecord], objective_names: Sequence[str]) -> FrontEntry:
    """The trials of one configuration as one entry: objectives averaged, the first trial's id and config."""
    first = min(records, key=lambda r: r.trial_id)
    means = {name: float(np.mean([float(r.objectives[name]) for r in records])) for name in objective_names}
    return FrontEntry(
        trial_id=int(first.trial_id),
        config=dict(first.config),
        objectives=means,
        budget_epochs=float(max(r.budget_epochs for r in records)),
        config_key=str(first.config_key),
        is_default=any(r.is_default for r in records),
        n_trials=len(records),
        trial_ids=tuple(sorted(int(r.trial_id) for r in records)),
        checkpoint=next(
            (r.checkpoint for r in sorted(records, key=lambda r: r.trial_id) if r.checkpoint), None
        ),
    )


def group_by_config(records: Iterable[TrialRecord]) -> dict[str, list[TrialRecord]]:
    """Records by ``config_key``, in the order each key first appears."""
    groups: dict[str, list[TrialRecord]] = {}
    for record in records:
        groups.setdefault(str(record.config_key), []).append(record)
    return groups


def full_budget_entries(
    records: Iterable[TrialRecord], objective_names: Sequence[str], max_budget: float
) -> tuple[FrontEntry, ...]:
    """Every usable full-budget configuration, seeds averaged, in the order of their first trial id."""
    names = tuple(objective_names)
    top = [r for r in records if usable(r, names) and at_full_budget(r.budget_epochs, max_budget)]
    entries = [average(group, names) for group in group_by_config(top).values()]
    return tuple(sorted(entries, key=lambda e: e.trial_id))


def front_of(entries: Sequence[FrontEntry], objective_names: Sequence[str]) -> tuple[FrontEntry, ...]:
    """The non-dominated ``entries``, sorted by the first objective, then the next ones, then position."""
    if not entries:
        return ()
    # Imported here: the objectives package loads torch, which opening a store never needs.
    from greenshift.objectives.pareto import pareto_front_indices

    points = np.asarray([e.point(objective_names) for e in entries], dtype=float)
    return tuple(entries[i] for i in pareto_front_indices(points))


def run_front(
    records: Iterable[TrialRecord], objective_names: Sequence[str], max_budget: float
) -> tuple[FrontEntry, ...]:
    """The Pareto front of a run: usable full-budget configurations, seeds averaged, none dominated.

    This is the front of every command (module docstring). It replaces the search's former rule (raw
    records, an exact budget test, no averaging), which listed each seed of a configuration apart
    and could keep a trial with a NaN objective.
    """
    return front_of(full_budget_entries(records, objective_names, max_budget), objective_names)


def run_default(
    records: Iterable[TrialRecord], objective_names: Sequence[str], max_budget: float
) -> FrontEntry | None:
    """The default configuration at the full budget, averaged like a front entry; ``None`` until it finished.

    The default is a configuration, not a trial: when a search also samples it (random search may),
    its trials count as further seeds, exactly as they do on the front.
    """
    records = list(records)
    keys = {str(r.config_key) for r in records if r.is_default}
    entry = next(
        (e for e in full_budget_entries(records, objective_names, max_budget) if e.config_key in keys), None
    )
    return None if entry is None else replace(entry, is_default=True)


def front_trial_ids(entries: Iterable[FrontEntry]) -> set[int]:
    """Every trial behind ``entries`` (all seeds of each configuration)."""
    return {tid for entry in entries for tid in (entry.trial_ids or (entry.trial_id,))}


def epochs_consumed(record: TrialRecord) -> float:
    """Epochs a finished trial trained: ``metrics["epochs_trained"]`` when recorded, else its budget."""
    trained = (record.metrics or {}).get("epochs_trained")
    if isinstance(trained, (int, float)) and not isinstance(trained, bool) and math.isfinite(trained):
        return max(0.0, float(trained))
    return float(record.budget_epochs)


def _finish_key(record: TrialRecord) -> tuple[float, int]:
    # Interrupted trials may lack a finish time: their start time is the best estimate of their place.
    when = record.finished_at if record.finished_at is not None else record.started_at
    return (float(when), int(record.trial_id))


def budget_steps(
    records: Iterable[TrialRecord], objective_names: Sequence[str], max_budget: float
) -> tuple[BudgetStep, ...]:
    """One :class:`BudgetStep` per finished trial, in finish order, with hypervolume 0 (module rules).

    :func:`hypervolume_curve` fills in the hypervolumes for a reference point.
    """
    names = tuple(objective_names)
    finished = sorted(
        (r for r in records if TrialStatus(r.status) is not TrialStatus.RUNNING), key=_finish_key
    )
    start = min((float(r.started_at) for r in finished), default=0.0)
    epochs = 0.0
    sums: dict[str, tuple[int, np.ndarray]] = {}
    steps = []
    for record in finished:
        epochs += epochs_consumed(record)
        key = point = None
        if usable(record, names) and at_full_budget(record.budget_epochs, max_budget):
            key = str(record.config_key)
            count, total = sums.get(key, (0, np.zeros(len(names))))
            total = total + np.asarray([float(record.objectives[n]) for n in names])
            sums[key] = (count + 1, total)
            point = tuple((total / (count + 1)).tolist())
        end = float(record.finished_at) if record.finished_at is not None else float(record.started_at)
        steps.append(BudgetStep(int(record.trial_id), epochs, max(0.0, end - start), 0.0, key, point))
    return tuple(steps)


def hypervolume_curve(
    steps: Sequence[BudgetStep], reference_point: npt.ArrayLike | None
) -> tuple[BudgetStep, ...]:
    """``steps`` with each hypervolume computed from the points seen so far against ``reference_point``.

    A configuration's latest running mean replaces its earlier one. With no reference point (``None``)
    every hypervolume is 0.0.
    """
    from greenshift.objectives.pareto import hypervolume

    ref = None if reference_point is None else np.asarray(reference_point, dtype=float).reshape(-1)
    current: dict[str, tuple[float, ...]] = {}
    value = 0.0
    out = []
    for step in steps:
        if step.config_key is not None and step.point is not None:
            current[step.config_key] = step.point
            value = hypervolume(np.asarray(list(current.values())), ref) if ref is not None else 0.0
        out.append(
            BudgetStep(step.trial_id, step.epochs, step.wall_time_s, value, step.config_key, step.point)
        )
    return tuple(out)


def hypervolume_at(curve: Sequence[BudgetStep], epochs: float) -> float:
    """Hypervolume reached once ``epochs`` epochs were consumed (0 before the first point)."""
    value = 0.0
    for step in curve:
        if step.epochs > epochs:
            break
        value = step.hypervolume
    return value
