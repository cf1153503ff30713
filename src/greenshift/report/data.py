"""The report as plain data: Pareto front, default, reference point, hypervolume, improvement, importance.

:func:`build_report` turns the trial records of one run into a frozen :class:`ReportData`; nothing
here draws or writes files (see :mod:`greenshift.report.render`).

Rules the numbers follow:

* **Front.** Only ``OK`` trials at the highest budget (``budget_epochs >= max_budget``) with a finite
  value for every objective take part. Trials of one configuration (same ``config_key``) at that
  budget — several seeds — are averaged into one point. Configurations with ``OK`` trials only at
  lower budgets are listed in ``lower_budget`` and never mixed into the front; crashed, diverged,
  timed-out, interrupted and running trials are only counted.
* **Default.** The average of the ``OK`` max-budget trials flagged ``is_default``; ``None`` when there
  is none.
* **Reference point** (first rule that applies, recorded in :class:`ReferencePoint`):
  an explicit ``reference_point``; else :func:`~greenshift.objectives.pareto.reference_point_for` on a
  caller-given ``baseline`` (e.g. the all-float model); else on the default configuration's objectives
  (from any budget: inference costs do not depend on how long a model was trained); else ``margin``
  times the worst value seen, which is *not* comparable between runs and flagged so.
* **Hypervolume over budget.** Finished trials in finish order; after each one the consumed budget is
  the sum of the epochs of all finished trials so far (lower budgets and failed trials included:
  ``metrics["epochs_trained"]`` where the search recorded it — a promoted trial that continued from a
  checkpoint trains only the extra epochs — else the allotted ``budget_epochs``) and the wall time is ``finished_at`` minus the earliest ``started_at``. The
  hypervolume at that moment is that of the max-budget configurations seen so far.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from greenshift.errors import ConfigError, StoreError
from greenshift.objectives.pareto import (
    DEFAULT_REFERENCE_MARGIN,
    hypervolume,
    knee_point,
    pareto_front_indices,
    reference_point_for,
)
from greenshift.report.importance import Importance, compute_importance
from greenshift.report.improvement import Improvement, compute_improvement
from greenshift.store.records import FailureGroup, TrialRecord, TrialStatus, failure_groups

if TYPE_CHECKING:
    from greenshift.report.energy import EnergyCrosscheck

LOSS = "loss"
# Relative tolerance when deciding that a trial ran at the full budget (budgets are stored as floats).
_BUDGET_RTOL = 1e-9


@dataclass(frozen=True)
class Entry:
    """One configuration's objectives at one budget (several seeds averaged; ``n_trials`` of them).

    ``trial_id`` is the first of the averaged trials.
    """

    trial_id: int
    config: dict[str, Any]
    objectives: dict[str, float]
    budget_epochs: float
    config_key: str
    is_default: bool = False
    n_trials: int = 1

    def point(self, objective_names: Sequence[str]) -> tuple[float, ...]:
        """The objective vector in the order of ``objective_names``."""
        return tuple(float(self.objectives[name]) for name in objective_names)


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
class BudgetStep:
    """The state of the search right after one trial finished.

    ``config_key``/``point`` name the max-budget configuration this trial updated (its running mean
    over seeds), or are ``None`` when the trial added no point to the front.
    """

    trial_id: int
    epochs: float
    wall_time_s: float
    hypervolume: float
    config_key: str | None = None
    point: tuple[float, ...] | None = None


@dataclass(frozen=True)
class ReportData:
    """Everything a report shows, as plain frozen data (see the module docstring for the rules).

    ``crosscheck`` holds modelled next to measured energy of the front and the default
    (:func:`greenshift.report.energy.energy_crosscheck`), or ``None`` when it was skipped.
    """

    objective_names: tuple[str, ...]
    max_budget: float
    front: tuple[Entry, ...]
    default: Entry | None
    knee: Entry | None
    lower_budget: tuple[Entry, ...]
    trials: tuple[Entry, ...]
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
        failed = (TrialStatus.CRASHED, TrialStatus.DIVERGED, TrialStatus.TIMEOUT, TrialStatus.INTERRUPTED)
        return sum(self.status_counts.get(status.value, 0) for status in failed)

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


def _has_objectives(record: TrialRecord, objective_names: Sequence[str]) -> bool:
    values = record.objectives or {}
    return all(
        name in values and values[name] is not None and math.isfinite(float(values[name]))
        for name in objective_names
    )


def _at_max(budget: float, max_budget: float) -> bool:
    return float(budget) >= max_budget * (1 - _BUDGET_RTOL)


def _finish_key(record: TrialRecord) -> tuple[float, int]:
    # Interrupted trials may lack a finish time: their start time is the best estimate of their place.
    when = record.finished_at if record.finished_at is not None else record.started_at
    return (float(when), int(record.trial_id))


def _epochs_consumed(record: TrialRecord) -> float:
    trained = (record.metrics or {}).get("epochs_trained")
    if isinstance(trained, (int, float)) and not isinstance(trained, bool) and math.isfinite(trained):
        return max(0.0, float(trained))
    return float(record.budget_epochs)


def _average(records: Sequence[TrialRecord], objective_names: Sequence[str]) -> Entry:
    first = min(records, key=lambda r: r.trial_id)
    means = {name: float(np.mean([float(r.objectives[name]) for r in records])) for name in objective_names}
    return Entry(
        trial_id=int(first.trial_id),
        config=dict(first.config),
        objectives=means,
        budget_epochs=float(max(r.budget_epochs for r in records)),
        config_key=str(first.config_key),
        is_default=any(r.is_default for r in records),
        n_trials=len(records),
    )


def _group(records: Iterable[TrialRecord]) -> dict[str, list[TrialRecord]]:
    groups: dict[str, list[TrialRecord]] = {}
    for record in records:
        groups.setdefault(str(record.config_key), []).append(record)
    return groups


def _front_of(entries: Sequence[Entry], objective_names: Sequence[str]) -> tuple[Entry, ...]:
    if not entries:
        return ()
    points = np.asarray([e.point(objective_names) for e in entries], dtype=float)
    return tuple(entries[i] for i in pareto_front_indices(points))


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


def _budget_curve(steps: Sequence[BudgetStep], ref: np.ndarray | None) -> tuple[BudgetStep, ...]:
    """Recompute each step's hypervolume from the points seen so far (a config's latest mean replaces earlier)."""
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
    valid = [r for r in ok if _has_objectives(r, names)]
    incomplete = tuple(sorted(int(r.trial_id) for r in ok if not _has_objectives(r, names)))
    top = [r for r in valid if _at_max(r.budget_epochs, max_budget)]
    top_ids = {int(r.trial_id) for r in top}

    top_groups = _group(top)
    configs = [_average(group, names) for group in top_groups.values()]
    configs.sort(key=lambda e: e.trial_id)
    front = _front_of(configs, names)

    lower_groups = _group(r for r in valid if str(r.config_key) not in top_groups)
    lower = []
    for group in lower_groups.values():
        highest = max(r.budget_epochs for r in group)
        lower.append(_average([r for r in group if r.budget_epochs == highest], names))
    lower.sort(key=lambda e: (-e.budget_epochs, e.trial_id))

    default_top = [r for r in top if r.is_default]
    default = _average(default_top, names) if default_top else None
    default_any = [r for r in valid if r.is_default]
    if default is not None:
        default_objectives: Mapping[str, float] | None = default.objectives
    elif default_any:
        default_objectives = _average(default_any, names).objectives
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

    steps = []
    finished = sorted((r for r in records if _status(r) is not TrialStatus.RUNNING), key=_finish_key)
    start = min((float(r.started_at) for r in finished), default=0.0)
    epochs = 0.0
    sums: dict[str, tuple[int, np.ndarray]] = {}
    for record in finished:
        epochs += _epochs_consumed(record)
        key = point = None
        if int(record.trial_id) in top_ids:
            key = str(record.config_key)
            count, total = sums.get(key, (0, np.zeros(len(names))))
            total = total + np.asarray([float(record.objectives[n]) for n in names])
            sums[key] = (count + 1, total)
            point = tuple((total / (count + 1)).tolist())
        end = float(record.finished_at) if record.finished_at is not None else float(record.started_at)
        steps.append(BudgetStep(int(record.trial_id), epochs, max(0.0, end - start), 0.0, key, point))
    curve = _budget_curve(steps, ref_vector)

    knee = front[knee_point(front_points)] if front else None
    improvement = compute_improvement(front, default, names)
    importance = compute_importance(configs, names, space=importance_space, seed=importance_seed)
    trials = tuple(
        sorted(
            (_average([r], names) for r in valid),
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


def load_report(run_dir: Any, *, crosscheck: bool | Mapping[str, Any] = False, **kwargs: Any) -> ReportData:
    """Open the run directory's store and build its report (other keyword arguments go to :func:`build_report`).

    Objectives, ``max_epochs`` and the search space (for the importance analysis) come from the run's
    identity. ``crosscheck`` adds modelled next to measured energy of the front and the default
    (``report.crosscheck``): ``True`` with the defaults, or a mapping of keyword arguments for
    :func:`greenshift.report.energy.energy_crosscheck` (``meter``, ``measure_options``, ``remeasure``,
    ``device``, ``energy_table``, ``progress``). It may measure energy, which takes seconds per
    model unless cached; ``False`` (the default) skips it.
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
    report = build_report(records, objective_names=names, max_budget=max_budget, **kwargs)
    if crosscheck is False or crosscheck is None:
        return report
    from greenshift.report.energy import energy_crosscheck

    options = dict(crosscheck) if isinstance(crosscheck, Mapping) else {}
    return replace(report, crosscheck=energy_crosscheck(run_dir, report, **options))


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
        curve = _budget_curve(report.hypervolume_over_budget, ref)
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
