"""The one front of a run and its hypervolume curve (greenshift.store.front), from synthetic trial records."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenshift.store import TrialRecord, TrialStatus, hypervolume_curve, run_default, run_front
from greenshift.store.front import (
    BUDGET_RTOL,
    BudgetStep,
    at_full_budget,
    budget_steps,
    front_trial_ids,
    hypervolume_at,
)
from test_report import record as report_record

NAMES = ("loss", "energy_model_j")


def record(
    trial_id: int,
    label: str,
    budget: float,
    loss: float | None,
    energy: float | None,
    *,
    status: TrialStatus = TrialStatus.OK,
    seed: int = 0,
    metrics: dict[str, Any] | None = None,
) -> TrialRecord:
    """Trial ``n`` of configuration ``label`` starts at ``100 + 10 n`` s and takes 5 s."""
    values = {name: value for name, value in zip(NAMES, (loss, energy), strict=True) if value is not None}
    objectives = values if status is TrialStatus.OK else {}
    return report_record(trial_id, {"label": label}, budget, status, objectives, seed=seed, metrics=metrics)


def test_seeds_of_a_configuration_are_one_averaged_point() -> None:
    records = [
        record(1, "A", 9, 0.10, 4.0, seed=0),
        record(2, "A", 9, 0.20, 4.0, seed=1),
        record(3, "B", 9, 0.12, 5.0),
    ]
    front = run_front(records, NAMES, 9)
    # A averages to (0.15, 4.0): B (0.12, 5.0) no longer dominates it, nor it B.
    assert [(e.config["label"], e.n_trials) for e in front] == [("B", 1), ("A", 2)]
    a = front[1]
    assert a.trial_id == 1 and a.trial_ids == (1, 2)
    assert a.objectives == pytest.approx({"loss": 0.15, "energy_model_j": 4.0})
    assert front_trial_ids(front) == {1, 2, 3}


def test_the_default_is_its_configuration_averaged_as_on_the_front() -> None:
    import dataclasses

    flagged = dataclasses.replace(record(1, "D", 9, 0.10, 2.0, seed=0), is_default=True)
    records = [
        flagged,
        record(2, "D", 9, 0.20, 2.0, seed=5),  # the search sampled the default configuration again
        record(3, "D", 3, 0.50, 2.0, seed=0),  # a lower budget never counts
        record(4, "B", 9, 0.05, 9.0),
    ]
    default = run_default(records, NAMES, 9)
    assert default is not None and default.is_default and default.trial_ids == (1, 2)
    assert default.objectives == pytest.approx({"loss": 0.15, "energy_model_j": 2.0})
    on_front = next(e for e in run_front(records, NAMES, 9) if e.config_key == default.config_key)
    assert on_front.objectives == default.objectives
    assert run_default(records[1:], NAMES, 9) is None  # nothing flagged: no default
    assert run_default([dataclasses.replace(flagged, budget_epochs=3)], NAMES, 9) is None


def test_a_good_seed_does_not_stand_for_its_configuration() -> None:
    # Seed 0 of A alone would dominate B; the configuration's mean does not.
    records = [
        record(1, "A", 9, 0.05, 1.0, seed=0),
        record(2, "A", 9, 0.45, 9.0, seed=1),
        record(3, "B", 9, 0.10, 2.0),
    ]
    assert [e.config["label"] for e in run_front(records, NAMES, 9)] == ["B"]


def test_non_finite_and_incomplete_trials_are_left_out() -> None:
    records = [
        record(1, "nan", 9, math.nan, 0.1),
        record(2, "inf", 9, 0.01, math.inf),
        record(3, "missing", 9, 0.01, None),
        record(4, "crashed", 9, 0.0, 0.0, status=TrialStatus.CRASHED),
        record(5, "running", 9, 0.0, 0.0, status=TrialStatus.RUNNING),
        record(6, "ok", 9, 0.3, 3.0),
    ]
    assert [e.config["label"] for e in run_front(records, NAMES, 9)] == ["ok"]


def test_budget_tolerance_admits_float_noise_but_never_a_lower_budget() -> None:
    assert at_full_budget(9.0, 9) and at_full_budget(9 * (1 - BUDGET_RTOL / 2), 9)
    assert not at_full_budget(8.99, 9) and not at_full_budget(3, 9)
    records = [
        record(1, "noise", 9 - 1e-12, 0.2, 2.0),
        record(2, "low", 3, 0.01, 0.1),  # better, but only a preview at a lower budget
    ]
    assert [e.config["label"] for e in run_front(records, NAMES, 9)] == ["noise"]


def test_no_usable_trial_no_front() -> None:
    assert run_front([], NAMES, 9) == ()
    assert run_front([record(1, "low", 1, 0.1, 1.0)], NAMES, 9) == ()


# ------------------------------------------------------------------------- property


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


trial = st.tuples(
    st.integers(0, 5),  # configuration label: few labels make several seeds per configuration
    st.sampled_from([1.0, 3.0, 9.0]),
    st.integers(0, 6).map(float),  # small integer grid: ties and duplicates are common
    st.integers(0, 6).map(float),
    st.sampled_from([TrialStatus.OK, TrialStatus.OK, TrialStatus.OK, TrialStatus.CRASHED]),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(trial, max_size=20))
def test_front_is_non_dominated_and_dominates_every_other_full_budget_configuration(rows: list) -> None:
    records = [
        record(i + 1, f"c{label}", budget, loss, energy, status=status, seed=i)
        for i, (label, budget, loss, energy, status) in enumerate(rows)
    ]
    front = run_front(records, NAMES, 9)
    points = {e.config_key: e.point(NAMES) for e in front}
    for a in points.values():
        assert not any(_dominates(b, a) for b in points.values())
    # Every other full-budget configuration (seed mean) is dominated by a front member.
    groups: dict[str, list[TrialRecord]] = {}
    for r in records:
        if r.status is TrialStatus.OK and r.budget_epochs == 9.0:
            groups.setdefault(r.config_key, []).append(r)
    assert set(points) <= set(groups)
    for key, group in groups.items():
        mean = tuple(float(np.mean([r.objectives[n] for r in group])) for n in NAMES)
        if key in points:
            assert points[key] == pytest.approx(mean)
        else:
            assert any(_dominates(p, mean) for p in points.values()), (key, mean)


# ------------------------------------------------------------------------- hypervolume over budget


def test_budget_steps_count_every_finished_trial_and_average_seeds() -> None:
    records = [
        record(1, "A", 1, 0.5, 0.5),
        record(2, "B", 9, 0.5, 0.5, metrics={"epochs_trained": 6}),  # continued from 3 epochs
        record(3, "C", 9, 0.0, 0.0, status=TrialStatus.CRASHED),
        record(4, "B", 9, 0.3, 0.5, seed=1),
        record(5, "D", 9, 0.0, 0.0, status=TrialStatus.RUNNING),
    ]
    steps = budget_steps(records, NAMES, 9)
    assert [s.trial_id for s in steps] == [1, 2, 3, 4]
    assert [s.epochs for s in steps] == [1.0, 7.0, 16.0, 25.0]
    assert [s.point for s in steps] == [None, (0.5, 0.5), None, pytest.approx((0.4, 0.5))]
    assert steps[0].wall_time_s == 5.0 and steps[-1].wall_time_s == 35.0
    curve = hypervolume_curve(steps, [1.0, 1.0])
    # B's running mean replaces its first seed: 0.5 * 0.5, then 0.6 * 0.5.
    assert [s.hypervolume for s in curve] == pytest.approx([0.0, 0.25, 0.25, 0.3])
    assert hypervolume_at(curve, 0.5) == 0.0 and hypervolume_at(curve, 16) == pytest.approx(0.25)
    assert hypervolume_at(curve, 100) == pytest.approx(0.3)
    assert all(s.hypervolume == 0.0 for s in hypervolume_curve(steps, None))


def test_hypervolume_curve_of_points_in_order() -> None:
    points = [None, (0.5, 0.5), (0.9, 0.9), None, (0.25, 0.75)]
    steps = [
        BudgetStep(i, float(i), 0.0, 0.0, None if p is None else f"k{i}", p) for i, p in enumerate(points)
    ]
    curve = hypervolume_curve(steps, [1.0, 1.0])
    assert [s.hypervolume for s in curve] == pytest.approx([0.0, 0.25, 0.25, 0.25, 0.25 + 0.25 * 0.25])
    assert hypervolume_curve([], [1.0, 1.0]) == ()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), max_size=12))
def test_hypervolume_curve_is_monotone_and_ends_at_the_front_hypervolume(pairs: list) -> None:
    records = [record(i + 1, f"c{i}", 9, float(a), float(b)) for i, (a, b) in enumerate(pairs)]
    ref = np.array([7.0, 7.0])
    curve = hypervolume_curve(budget_steps(records, NAMES, 9), ref)
    values = [s.hypervolume for s in curve]
    assert values == sorted(values)
    if records:
        from greenshift.objectives.pareto import hypervolume

        front = np.asarray([e.point(NAMES) for e in run_front(records, NAMES, 9)])
        assert values[-1] == pytest.approx(hypervolume(front, ref))
