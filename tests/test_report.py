"""Report data from synthetic trial records: front, default, reference point, hypervolume, improvement, pick."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from greenshift.errors import ConfigError, StoreError
from greenshift.objectives.pareto import hypervolume
from greenshift.report import compare_runs, load_report, pick
from greenshift.report.data import FrontEntry, build_report
from greenshift.report.improvement import compute_improvement
from greenshift.store.records import TrialRecord, TrialStatus, config_key

NAMES = ("loss", "energy_model_j")


def record(
    trial_id: int,
    config: dict[str, Any],
    budget: float,
    status: TrialStatus = TrialStatus.OK,
    objectives: dict[str, float] | None = None,
    *,
    is_default: bool = False,
    seed: int = 0,
    metrics: dict[str, Any] | None = None,
) -> TrialRecord:
    """A finished trial; trial ``n`` starts at ``10 n`` s and takes 5 s so finish order is trial order."""
    return TrialRecord(
        trial_id=trial_id,
        config=config,
        budget_epochs=float(budget),
        seed=seed,
        status=status,
        objectives=dict(objectives or {}),
        metrics=dict(metrics or {}),
        error=None if status is TrialStatus.OK else "boom",
        is_default=is_default,
        started_at=100.0 + 10 * trial_id,
        finished_at=None if status is TrialStatus.RUNNING else 105.0 + 10 * trial_id,
        duration_s=5.0,
        worker="w0",
        checkpoint=None,
        config_key=config_key(config),
    )


def cfg(name: str, **extra: Any) -> dict[str, Any]:
    """A configuration told apart by its label."""
    return {"label": name, "optimizer": "sgd", **extra}


def lo(loss: float, energy: float) -> dict[str, float]:
    return {"loss": loss, "energy_model_j": energy}


def synthetic_records() -> list[TrialRecord]:
    """Default (0.10, 10) at 9 epochs; front A (0.08, 12), B (0.09, 8), C (0.15, 4); traps around it."""
    return [
        record(1, cfg("C"), 3, objectives=lo(0.30, 4.0)),  # C at a lower budget first
        record(2, cfg("default"), 9, objectives=lo(0.10, 10.0), is_default=True),
        record(3, cfg("A"), 9, objectives=lo(0.08, 12.0)),
        record(4, cfg("E"), 3, objectives=lo(0.05, 1.0)),  # only at a lower budget: never on the front
        record(5, cfg("B"), 9, objectives=lo(0.09, 8.0)),
        record(6, cfg("F"), 9, TrialStatus.CRASHED, objectives=lo(0.01, 0.5)),  # crashed: never on the front
        record(7, cfg("C"), 9, objectives=lo(0.15, 4.0)),
        record(8, cfg("D"), 9, objectives=lo(0.20, 9.0)),  # dominated by B
        record(9, cfg("G"), 9, TrialStatus.DIVERGED),
        record(10, cfg("H"), 9, TrialStatus.RUNNING),
        record(11, cfg("I"), 9, objectives={"loss": 0.01}),  # OK but lacks an objective
    ]


@pytest.fixture(scope="module")
def report():
    return build_report(synthetic_records(), objective_names=NAMES, max_budget=9)


def labels(entries) -> list[str]:
    return [e.config["label"] for e in entries]


def test_front_excludes_lower_budgets_failures_and_dominated(report) -> None:
    assert labels(report.front) == ["A", "B", "C"]  # sorted by loss
    assert [e.trial_id for e in report.front] == [3, 5, 7]
    assert labels(report.lower_budget) == ["E"]
    assert report.default is not None and report.default.trial_id == 2
    assert report.default.objectives == lo(0.10, 10.0)
    assert report.status_counts == {"ok": 8, "crashed": 1, "diverged": 1, "running": 1}
    assert report.n_failed == 2
    assert report.incomplete == (11,)
    # "all trials" for plotting: every valid OK trial, lower budgets included, failures not.
    assert sorted(e.trial_id for e in report.trials) == [1, 2, 3, 4, 5, 7, 8]


def test_reference_point_and_hypervolume(report) -> None:
    assert report.reference_point.values == pytest.approx({"loss": 1.0, "energy_model_j": 11.0})
    assert "default configuration" in report.reference_point.rule
    assert report.reference_point.comparable
    # A (energy 12) lies outside the reference box; B and C give slabs 0.91 * 3 + 0.85 * 4.
    assert report.hypervolume == pytest.approx(0.91 * 3 + 0.85 * 4)


def test_hypervolume_over_budget(report) -> None:
    steps = report.hypervolume_over_budget
    assert [s.trial_id for s in steps] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 11]  # running trial 10 excluded
    assert [s.epochs for s in steps] == [3, 12, 21, 24, 33, 42, 51, 60, 69, 78]
    # Wall time runs from the first start (110 s) to each finish.
    assert steps[0].wall_time_s == pytest.approx(5.0)
    assert steps[-1].wall_time_s == pytest.approx(105.0)
    hv = [s.hypervolume for s in steps]
    assert hv[0] == 0.0  # a lower-budget trial adds nothing
    assert hv[1] == pytest.approx(0.9 * 1.0)  # the default alone
    assert hv == sorted(hv)
    assert hv[-1] == pytest.approx(report.hypervolume)


def test_epochs_trained_metric_overrides_budget() -> None:
    # A promoted trial continued from a checkpoint only trains the extra epochs.
    records = [
        record(1, cfg("X"), 3, objectives=lo(0.3, 1.0)),
        record(2, cfg("X"), 9, objectives=lo(0.2, 1.0), metrics={"epochs_trained": 6}),
    ]
    rep = build_report(records, objective_names=NAMES, max_budget=9, reference_point=[1.0, 2.0])
    assert [s.epochs for s in rep.hypervolume_over_budget] == [3.0, 9.0]


def test_knee_and_improvement(report) -> None:
    assert report.knee is not None and report.knee.config["label"] == "B"
    per = {c.trial_id: c.percent_change for c in report.improvement.per_config}
    assert per[3] == pytest.approx({"loss": -20.0, "energy_model_j": 20.0})
    assert per[5] == pytest.approx({"loss": -10.0, "energy_model_j": -20.0})
    assert per[7] == pytest.approx({"loss": 50.0, "energy_model_j": -60.0})
    best_loss = report.improvement.best_loss_reduction
    assert (
        best_loss is not None and best_loss.trial_id == 5 and best_loss.percent_change == pytest.approx(-10.0)
    )
    best_energy = report.improvement.best_energy_reduction["energy_model_j"]
    assert best_energy is not None and best_energy.trial_id == 5
    assert best_energy.percent_change == pytest.approx(-20.0)
    assert best_energy.value == 8.0 and best_energy.default_value == 10.0


def entry(trial_id: int, loss: float, energy: float, **extra: float) -> FrontEntry:
    return FrontEntry(
        trial_id,
        {"label": str(trial_id)},
        {"loss": loss, "energy_model_j": energy, **extra},
        9.0,
        str(trial_id),
    )


def test_improvement_headlines_none_when_nothing_qualifies() -> None:
    default = entry(0, 0.10, 10.0)
    # One config is better in loss but costlier; the other cheaper but worse in loss.
    front = [entry(1, 0.05, 20.0), entry(2, 0.30, 2.0)]
    imp = compute_improvement(front, default, NAMES)
    assert imp.best_loss_reduction is None
    assert imp.best_energy_reduction == {"energy_model_j": None}
    # The default itself qualifies but does not improve: still None.
    imp = compute_improvement([default], default, NAMES)
    assert imp.best_loss_reduction is None
    assert imp.per_config[0].percent_change == {"loss": 0.0, "energy_model_j": 0.0}


def test_beat_default_counts_configurations_better_in_every_objective() -> None:
    default = entry(0, 0.10, 10.0)
    front = [entry(1, 0.05, 5.0), entry(2, 0.05, 20.0), entry(3, 0.10, 2.0), entry(4, 0.01, 9.0)]
    assert compute_improvement(front, default, NAMES).beat_default == 2  # 1 and 4; 3 ties in loss
    assert compute_improvement(front, None, NAMES).beat_default == 0


def test_improvement_with_three_objectives_and_zero_default() -> None:
    default = entry(0, 0.10, 10.0, latency_ms=0.0)
    names = (*NAMES, "latency_ms")
    front = [entry(1, 0.08, 9.0, latency_ms=0.0), entry(2, 0.06, 9.5, latency_ms=1.0)]
    imp = compute_improvement(front, default, names)
    assert imp.per_config[0].percent_change["latency_ms"] is None  # relative to 0: undefined
    # Trial 2 has the lower loss but a worse latency, so it does not qualify.
    assert imp.best_loss_reduction is not None and imp.best_loss_reduction.trial_id == 1
    assert imp.best_loss_reduction.percent_change == pytest.approx(-20.0)
    assert compute_improvement(front, None, names).per_config == ()


def test_reference_point_fallbacks() -> None:
    records = [
        record(1, cfg("A"), 9, objectives=lo(0.2, 5.0)),
        record(2, cfg("B"), 9, objectives=lo(0.3, 4.0)),
    ]
    rep = build_report(records, objective_names=NAMES, max_budget=9)
    assert rep.default is None and rep.improvement.best_loss_reduction is None
    assert not rep.reference_point.comparable
    assert rep.reference_point.values == pytest.approx({"loss": 1.0, "energy_model_j": 5.5})
    rep = build_report(records, objective_names=NAMES, max_budget=9, baseline={"energy_model_j": 10.0})
    assert rep.reference_point.values["energy_model_j"] == pytest.approx(11.0)
    assert rep.reference_point.comparable
    rep = build_report(
        records, objective_names=NAMES, max_budget=9, reference_point={"loss": 0.5, "energy_model_j": 6}
    )
    assert rep.hypervolume == pytest.approx(hypervolume([[0.2, 5.0], [0.3, 4.0]], [0.5, 6.0]))
    # A default seen only at a lower budget still fixes the energy reference (inference cost does not
    # depend on training length), but it is not the default on the report.
    records.append(record(3, cfg("default"), 3, objectives=lo(0.5, 2.0), is_default=True))
    rep = build_report(records, objective_names=NAMES, max_budget=9)
    assert rep.default is None
    assert rep.reference_point.values["energy_model_j"] == pytest.approx(2.2)
    with pytest.raises(ConfigError, match="3 values"):
        build_report(records, objective_names=NAMES, max_budget=9, reference_point=[1, 2, 3])


def test_seeds_of_one_configuration_are_averaged() -> None:
    records = [
        record(1, cfg("A"), 9, objectives=lo(0.2, 5.0), seed=0),
        record(2, cfg("A"), 9, objectives=lo(0.4, 5.0), seed=1),
        record(3, cfg("B"), 9, objectives=lo(0.25, 6.0)),
    ]
    rep = build_report(records, objective_names=NAMES, max_budget=9, reference_point=[1.0, 10.0])
    # Averaged A (0.3, 5) no longer dominates B (0.25, 6).
    assert [(e.trial_id, e.n_trials) for e in rep.front] == [(3, 1), (1, 2)]
    assert rep.front[1].objectives["loss"] == pytest.approx(0.3)
    assert rep.hypervolume_over_budget[-1].hypervolume == pytest.approx(rep.hypervolume)


def test_empty_run() -> None:
    rep = build_report([], objective_names=NAMES, max_budget=9)
    assert rep.front == () and rep.knee is None and rep.default is None
    assert rep.hypervolume == 0.0 and rep.hypervolume_over_budget == ()
    assert rep.reference_point.values["energy_model_j"] is None
    assert not rep.importance.reliable
    with pytest.raises(ConfigError, match="max_budget"):
        build_report([], objective_names=NAMES, max_budget=0)


def test_load_report_from_store(tmp_path) -> None:
    from ConfigSpace import Categorical, ConfigurationSpace, Float

    from greenshift.store import RunStore

    space = ConfigurationSpace(seed=0)
    space.add([Categorical("label", [*"ABCDEFGHI", "default"]), Float("momentum", (0.0, 0.99), default=0.5)])
    identity = {
        "objectives": list(NAMES),
        "dataset": "cifar10",
        "backbone": "resnet20",
        "max_epochs": 9,
        "optimizer": "smac",
        "space": json.dumps(space.to_serialized_dict()),
    }
    # Momentum only in one configuration: the stored space's default (0.5) fills the others.
    records = synthetic_records()
    records[2] = record(3, cfg("A", momentum=0.7), 9, objectives=lo(0.08, 12.0))
    with RunStore.create(tmp_path / "run", identity=identity) as store:
        for rec in records:
            tid = store.start_trial(rec.config, rec.budget_epochs, rec.seed, is_default=rec.is_default)
            if rec.status is not TrialStatus.RUNNING:
                objectives = rec.objectives if rec.status is TrialStatus.OK else None
                store.finish_trial(tid, rec.status, objectives=objectives)
    rep = load_report(tmp_path / "run")
    assert labels(rep.front) == ["A", "B", "C"]
    assert rep.meta["dataset"] == "cifar10" and rep.max_budget == 9.0
    assert rep.hypervolume == pytest.approx(0.91 * 3 + 0.85 * 4)
    assert rep.importance.filled == {"momentum": 0.5}
    with pytest.raises(StoreError):
        load_report(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------- pick


def test_pick_bounds(report) -> None:
    assert pick(report, max_loss=0.1).config["label"] == "B"
    assert pick(report, max_loss=0.085).config["label"] == "A"
    assert pick(report, max_energy=5.0).config["label"] == "C"
    assert pick(report, max_energy=8.0).config["label"] == "B"
    chosen = pick(report, knee=True)
    assert chosen.trial_id == 5 and chosen.objectives == lo(0.09, 8.0) and "knee" in chosen.reason


def test_pick_errors(report) -> None:
    with pytest.raises(ConfigError, match=r"lowest loss available is 0\.08"):
        pick(report, max_loss=0.05)
    with pytest.raises(ConfigError, match="lowest energy_model_j available is 4"):
        pick(report, max_energy=3.0)
    with pytest.raises(ConfigError, match="exactly one"):
        pick(report)
    with pytest.raises(ConfigError, match="max_loss, knee"):
        pick(report, max_loss=0.1, knee=True)
    with pytest.raises(ConfigError, match="not one of"):
        pick(report, max_loss=0.1, energy_objective="latency_ms")
    with pytest.raises(ConfigError, match="no configuration to pick"):
        pick([], knee=True)


def test_pick_from_points_and_several_energies() -> None:
    points = [
        {
            "trial_id": 1,
            "config": {"a": 1},
            "objectives": {"loss": 0.1, "energy_model_j": 5.0, "latency_ms": 9.0},
        },
        {
            "trial_id": 2,
            "config": {"a": 2},
            "objectives": {"loss": 0.2, "energy_model_j": 3.0, "latency_ms": 1.0},
        },
        # Dominated by trial 2: must never be picked.
        {
            "trial_id": 3,
            "config": {"a": 3},
            "objectives": {"loss": 0.2, "energy_model_j": 3.0, "latency_ms": 2.0},
        },
    ]
    with pytest.raises(ConfigError, match="several energy objectives"):
        pick(points, max_loss=0.3)
    assert pick(points, max_loss=0.3, energy_objective="latency_ms").trial_id == 2
    assert pick(points, max_energy=4.0, energy_objective="energy_model_j").trial_id == 2
    assert pick(points, max_energy=10.0, energy_objective="latency_ms").trial_id == 1
    assert pick(points, knee=True).trial_id in (1, 2)


# ---------------------------------------------------------------------------------------------- compare


def test_compare_runs_uses_common_reference(report) -> None:
    other = build_report(
        [
            record(1, cfg("default"), 9, objectives=lo(0.12, 20.0), is_default=True),
            record(2, cfg("Z"), 9, objectives=lo(0.05, 15.0)),
        ],
        objective_names=NAMES,
        max_budget=9,
    )
    comparison = compare_runs([("smac", report), ("random", other)])
    assert comparison.reference_point == pytest.approx({"loss": 1.0, "energy_model_j": 22.0})
    assert not comparison.comparable  # the defaults' energies differ
    ref = np.array([1.0, 22.0])
    first = comparison.runs[0]
    assert first.final_hypervolume == pytest.approx(hypervolume([[0.08, 12], [0.09, 8], [0.15, 4]], ref))
    assert first.curve[-1].hypervolume == pytest.approx(first.final_hypervolume)
    assert first.n_trials == 10 and first.epochs == 78
    same = compare_runs({"a": report, "b": report})
    assert same.comparable and same.runs[0].final_hypervolume == pytest.approx(report.hypervolume)
    three = build_report([], objective_names=(*NAMES, "latency_ms"), max_budget=9, reference_point=[1, 1, 1])
    with pytest.raises(ConfigError, match="objectives"):
        compare_runs([("a", report), ("b", three)])
    assert math.isclose(
        compare_runs([("a", report)], reference_point={"loss": 1, "energy_model_j": 11})
        .runs[0]
        .final_hypervolume,
        report.hypervolume,
    )
