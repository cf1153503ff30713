"""The report as plain data: Pareto front, default, reference point, hypervolume, improvement, importance.

:func:`build_report` turns the trial records of one run into a frozen :class:`ReportData`; nothing
here draws or writes files (see :mod:`greenshift.report.render`).

Rules the numbers follow:

* **Front** and **hypervolume over budget**: :mod:`greenshift.store.front` defines them for every
  command (:func:`~greenshift.store.front.run_front`: ``OK`` full-budget trials with finite objectives,
  seeds of one configuration averaged, none dominated). Configurations with usable trials only at
  lower budgets are listed in ``lower_budget`` and never mixed into the front; crashed, diverged,
  timed-out, interrupted and running trials are only counted.
* **Default.** :func:`~greenshift.store.run_default`: the default configuration's ``OK`` max-budget trials
  (also those the search sampled again), averaged like a front entry; ``None`` when there
  is none.
* **Reference point** (first rule that applies, recorded in :class:`ReferencePoint`):
  an explicit ``reference_point``; else :func:`~greenshift.objectives.pareto.reference_point_for` on a
  caller-given ``baseline`` (e.g. the all-float model); else on the default configuration's objectives
  (from any budget: inference costs do not depend on how long a model was trained); else ``margin``
  times the worst value seen, which is *not* comparable between runs and flagged so.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from greenshift.errors import ConfigError, StoreError
from greenshift.objectives.pareto import (
    DEFAULT_REFERENCE_MARGIN,
    hypervolume,
    knee_point,
    reference_point_for,
)
from greenshift.report.format import LOSS
from greenshift.report.importance import Importance, compute_importance
from greenshift.report.improvement import Improvement, compute_improvement
from greenshift.store.front import (
    BudgetStep,
    FrontEntry,
    average,
    budget_steps,
    full_budget_entries,
    group_by_config,
    hypervolume_curve,
    run_default,
    run_front,
    usable,
)
from greenshift.store.records import FAILED_STATUSES, FailureGroup, TrialRecord, TrialStatus, failure_groups

if TYPE_CHECKING:
    from greenshift.report.crosscheck import EnergyCrosscheck


@dataclass(frozen=True)
class ReferencePoint:
    """The hypervolume reference point, the rule that produced it and whether runs can be compared by it.

    A value is ``None`` only when no trial gave anything to derive it from.
    """

    values: dict[str, float | None]
    rule: str
    comparable: bool

    def vector(self, objective_names: Sequence[str]) -> np.ndarray | None:
        """The values as an array in ``objective_names`` order, or ``None`` if any is unknown."""
        values = [self.values.get(name) for name in objective_names]
        if any(v is None for v in values):
            return None
        return np.asarray(values, dtype=float)


@dataclass(frozen=True)
class ReportData:
    """Everything a report shows, as plain frozen data (see the module docstring for the rules).

    ``crosscheck`` holds modelled next to measured energy of the front and the default
    (:func:`greenshift.report.energy.add_crosscheck`), or ``None`` when none was added.
    """

    objective_names: tuple[str, ...]
    max_budget: float
    front: tuple[FrontEntry, ...]
    default: FrontEntry | None
    knee: FrontEntry | None
    lower_budget: tuple[FrontEntry, ...]
    trials: tuple[FrontEntry, ...]
    reference_point: ReferencePoint
    hypervolume: float
    hypervolume_over_budget: tuple[BudgetStep, ...]
    improvement: Improvement
    importance: Importance
    status_counts: dict[str, int]
    incomplete: tuple[int, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    crosscheck: EnergyCrosscheck | None = None
    #: Failed trials grouped by error, the most frequent first (:func:`greenshift.store.failure_groups`).
    failures: tuple[FailureGroup, ...] = ()
    #: Hyperparameters where the default configuration (the baseline) lies outside the searched space,
    #: each with what the space allows; empty when it lies inside (recorded by the search).
    baseline_outside: dict[str, str] = field(default_factory=dict)

    @property
    def energy_objectives(self) -> tuple[str, ...]:
        """Every objective except ``loss`` (energy, latency, size ...)."""
        return tuple(name for name in self.objective_names if name != LOSS)

    @property
    def n_failed(self) -> int:
        """Trials that crashed, diverged, timed out or were interrupted."""
        return sum(self.status_counts.get(status.value, 0) for status in FAILED_STATUSES)

    @property
    def total_epochs(self) -> float:
        """Epochs consumed by all finished trials."""
        return self.hypervolume_over_budget[-1].epochs if self.hypervolume_over_budget else 0.0


@dataclass(frozen=True)
class RunSummary:
    """One run in a comparison; its hypervolumes use the comparison's common reference point."""

    name: str
    report: ReportData
    final_hypervolume: float
    curve: tuple[BudgetStep, ...]
    n_trials: int
    epochs: float


@dataclass(frozen=True)
class Comparison:
    """Several runs of one problem, with hypervolumes recomputed against one common reference point."""

    objective_names: tuple[str, ...]
    reference_point: dict[str, float]
    comparable: bool
    runs: tuple[RunSummary, ...]


def baseline_outside_text(outside: Mapping[str, str]) -> str:
    """One sentence on a default configuration that lies outside the searched space (``""`` if it does not)."""
    if not outside:
        return ""
    where = ", ".join(f"{name} (searched: {allowed})" for name, allowed in outside.items())
    return (
        "The default configuration is the default DSNN, evaluated as it is; it lies outside the searched "
        f"space in {where}, so improvements are measured against a configuration the search could not pick."
    )


def _status(record: TrialRecord) -> TrialStatus:
    return TrialStatus(record.status)


def resolve_reference_point(
    objective_names: Sequence[str],
    *,
    reference_point: Mapping[str, float] | Sequence[float] | None = None,
    baseline: Mapping[str, float] | None = None,
    default_objectives: Mapping[str, float] | None = None,
    observed: Sequence[Mapping[str, float]] = (),
    margin: float = DEFAULT_REFERENCE_MARGIN,
) -> ReferencePoint:
    """Choose the reference point by the rules in the module docstring."""
    names = list(objective_names)
    if reference_point is not None:
        if isinstance(reference_point, Mapping):
            missing = [n for n in names if n not in reference_point]
            if missing:
                raise ConfigError(f"reference point lacks objective(s) {', '.join(missing)}")
            values = [float(reference_point[n]) for n in names]
        else:
            values = [float(v) for v in reference_point]
            if len(values) != len(names):
                raise ConfigError(f"reference point has {len(values)} values for {len(names)} objectives")
        if not all(math.isfinite(v) for v in values):
            raise ConfigError("reference point values must be finite")
        return ReferencePoint(dict(zip(names, values, strict=True)), "given explicitly", comparable=True)
    for source, label in (
        (baseline, "the given baseline"),
        (default_objectives, "the default configuration"),
    ):
        if source is not None:
            vector = reference_point_for(names, source, margin=margin)
            rule = f"loss = 1.0 (worst possible); every other objective = {margin:g} x its value for {label}"
            return ReferencePoint(dict(zip(names, vector.tolist(), strict=True)), rule, comparable=True)
    worst: dict[str, float | None] = {}
    for name in names:
        if name == LOSS:
            worst[name] = 1.0
            continue
        seen = [float(o[name]) for o in observed if name in o]
        worst[name] = margin * max(seen) if seen and max(seen) > 0 else None
    rule = (
        f"no default configuration finished: loss = 1.0; every other objective = {margin:g} x the worst "
        "value seen in this run (not comparable with other runs)"
    )
    return ReferencePoint(worst, rule, comparable=False)


def build_report(
    records: Iterable[TrialRecord],
    *,
    objective_names: Sequence[str],
    max_budget: float,
    reference_point: Mapping[str, float] | Sequence[float] | None = None,
    baseline: Mapping[str, float] | None = None,
    margin: float = DEFAULT_REFERENCE_MARGIN,
    importance_seed: int = 0,
    importance_space: Any = None,
    meta: Mapping[str, Any] | None = None,
    baseline_outside: Mapping[str, str] | None = None,
) -> ReportData:
    """Build the report of one run from its trial records (pure: no files, no plots).

    ``max_budget`` is the highest fidelity in epochs; ``reference_point``/``baseline``/``margin`` follow
    the reference-point rules of the module docstring; ``importance_space`` is an optional
    ConfigSpace space for the importance analysis; ``meta`` (data set, backbone, ...) is carried along
    for display; ``baseline_outside`` is what the search recorded about a baseline outside its space.
    """
    names = tuple(objective_names)
    if not names:
        raise ConfigError("a report needs at least one objective")
    if not (math.isfinite(float(max_budget)) and float(max_budget) > 0):
        raise ConfigError(f"max_budget must be a positive number of epochs, got {max_budget!r}")
    max_budget = float(max_budget)
    records = list(records)
    status_counts = dict(Counter(_status(r).value for r in records))

    ok = [r for r in records if _status(r) is TrialStatus.OK]
    valid = [r for r in ok if usable(r, names)]
    incomplete = tuple(sorted(int(r.trial_id) for r in ok if not usable(r, names)))

    configs = list(full_budget_entries(records, names, max_budget))
    front = run_front(records, names, max_budget)

    top_keys = {e.config_key for e in configs}
    lower_groups = group_by_config(r for r in valid if str(r.config_key) not in top_keys)
    lower = []
    for group in lower_groups.values():
        highest = max(r.budget_epochs for r in group)
        lower.append(average([r for r in group if r.budget_epochs == highest], names))
    lower.sort(key=lambda e: (-e.budget_epochs, e.trial_id))

    default = run_default(records, names, max_budget)
    default_any = [r for r in valid if r.is_default]
    if default is not None:
        default_objectives: Mapping[str, float] | None = default.objectives
    elif default_any:
        default_objectives = average(default_any, names).objectives
    else:
        default_objectives = None

    ref = resolve_reference_point(
        names,
        reference_point=reference_point,
        baseline=baseline,
        default_objectives=default_objectives,
        observed=[r.objectives for r in valid],
        margin=margin,
    )
    ref_vector = ref.vector(names)
    front_points = np.asarray([e.point(names) for e in front], dtype=float).reshape(-1, len(names))
    hv = hypervolume(front_points, ref_vector) if ref_vector is not None else 0.0

    curve = hypervolume_curve(budget_steps(records, names, max_budget), ref_vector)

    knee = front[knee_point(front_points)] if front else None
    improvement = compute_improvement(front, default, names)
    importance = compute_importance(configs, names, space=importance_space, seed=importance_seed)
    trials = tuple(
        sorted(
            (average([r], names) for r in valid),
            key=lambda e: (e.budget_epochs, e.trial_id),
        )
    )
    return ReportData(
        objective_names=names,
        max_budget=max_budget,
        front=front,
        default=default,
        knee=knee,
        lower_budget=tuple(lower),
        trials=trials,
        reference_point=ref,
        hypervolume=hv,
        hypervolume_over_budget=curve,
        improvement=improvement,
        importance=importance,
        status_counts=status_counts,
        incomplete=incomplete,
        meta=dict(meta or {}),
        failures=tuple(failure_groups(records)),
        baseline_outside=dict(baseline_outside or {}),
    )


def _stored_space(identity: Mapping[str, Any]) -> Any:
    """The run's ConfigSpace space from its identity (``space``: serialised JSON), or ``None``."""
    text = identity.get("space")
    if not isinstance(text, str):
        return None
    import json

    from ConfigSpace import ConfigurationSpace

    try:
        return ConfigurationSpace.from_serialized_dict(json.loads(text))
    except (ValueError, KeyError, TypeError):
        # An unreadable space only costs the importance analysis its declared defaults: infer them.
        return None


def load_report(run_dir: Any, **kwargs: Any) -> ReportData:
    """Open the run directory's store and build its report (keyword arguments go to :func:`build_report`).

    Objectives, ``max_epochs`` and the search space (for the importance analysis) come from the run's
    identity. Only reads: the report has no ``crosscheck``; to set measured next to modelled energy,
    pass it to :func:`greenshift.report.energy.add_crosscheck` (which measures only when asked).
    """
    from greenshift.store import RunStore

    with RunStore.open(run_dir) as store:
        identity = dict(store.identity)
        records = store.trials()
        kwargs.setdefault("baseline_outside", store.get_state("baseline_outside", {}))
    try:
        names = list(identity["objectives"])
        max_budget = float(identity["max_epochs"])
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"run {run_dir} does not record its objectives and max_epochs: {exc}") from None
    meta = {k: identity[k] for k in ("dataset", "backbone", "optimizer", "max_epochs") if k in identity}
    kwargs.setdefault("meta", meta)
    if kwargs.get("importance_space") is None:
        kwargs["importance_space"] = _stored_space(identity)
    return build_report(records, objective_names=names, max_budget=max_budget, **kwargs)


def compare_runs(
    reports: Sequence[tuple[str, ReportData]] | Mapping[str, ReportData],
    *,
    reference_point: Mapping[str, float] | None = None,
) -> Comparison:
    """Put several runs of one problem side by side with one common reference point.

    The common point is ``reference_point`` if given, else the element-wise maximum of the runs'
    reference points (identical when every run used the fixed per-problem rule). Hypervolumes and
    their curves are recomputed against it. All runs must have the same objectives.
    """
    pairs = list(reports.items()) if isinstance(reports, Mapping) else list(reports)
    if not pairs:
        raise ConfigError("compare_runs needs at least one run")
    names = pairs[0][1].objective_names
    for name, report in pairs:
        if report.objective_names != names:
            raise ConfigError(
                f"run {name!r} has objectives {list(report.objective_names)}, expected {list(names)}"
            )
    datasets = {str(name): r.meta.get("dataset") for name, r in pairs if r.meta.get("dataset")}
    if len(set(datasets.values())) > 1:
        # Losses on different data sets measure different things: no common front or hypervolume exists.
        listed = ", ".join(f"{name}: {dataset}" for name, dataset in datasets.items())
        raise ConfigError(f"the runs are on different data sets ({listed}); compare runs of one data set")
    comparable = all(r.reference_point.comparable for _, r in pairs)
    if reference_point is not None:
        common = resolve_reference_point(names, reference_point=reference_point).values
        comparable = True
    else:
        common = {}
        for obj in names:
            values = [r.reference_point.values.get(obj) for _, r in pairs]
            known = [v for v in values if v is not None]
            if not known:
                raise ConfigError(f"no run has a reference value for {obj!r}; give reference_point")
            common[obj] = max(known)
            comparable = comparable and len(set(known)) == 1 and len(known) == len(values)
    ref = np.asarray([common[n] for n in names], dtype=float)
    runs = []
    for name, report in pairs:
        points = np.asarray([e.point(names) for e in report.front], dtype=float).reshape(-1, len(names))
        curve = hypervolume_curve(report.hypervolume_over_budget, ref)
        runs.append(
            RunSummary(
                name=str(name),
                report=report,
                final_hypervolume=hypervolume(points, ref),
                curve=curve,
                n_trials=len(report.hypervolume_over_budget),
                epochs=report.total_epochs,
            )
        )
    return Comparison(names, {k: float(v) for k, v in common.items()}, comparable, tuple(runs))
