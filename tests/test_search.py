"""The search facade with synthetic trials: limits, crashes, resume, kill-and-resume, Dask."""

from __future__ import annotations

import itertools
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from greenshift.errors import ConfigError, StoreError
from greenshift.search import DSNNSearch, SearchSettings, build_space
from greenshift.search.facade import FINAL_STATUSES
from greenshift.search.runners import budget_to_epochs
from greenshift.store import RunStore, TrialStatus
from greenshift.testing import SyntheticTrial, WorkerKillingTrial


def make_settings(out: Path, **overrides) -> SearchSettings:
    # Synthetic trials in this process (CountingTrial counts here); tests/test_faults.py covers trial processes.
    values = dict(
        dataset="digits",
        backbone="resnet20",
        out=str(out),
        trials=12,
        min_epochs=1,
        max_epochs=9,
        seed=3,
        isolate_trials=False,
    )
    values.update(overrides)
    return SearchSettings(**values)


def run(out: Path, trial=None, **overrides):
    return DSNNSearch(make_settings(out, **overrides), trial_function=trial or SyntheticTrial()).run()


def test_multi_fidelity_search_records_exactly_the_asked_trials(tmp_path):
    result = run(tmp_path / "run", trials=14)
    finished = [t for t in result.trials if t.status in FINAL_STATUSES]
    assert len(finished) == 14
    budgets = Counter(t.budget_epochs for t in finished)
    assert set(budgets) <= {1, 3, 9} and budgets[1] > budgets[9]  # Hyperband: many cheap, few full
    default = result.default
    assert default is not None and default.is_default and default.budget_epochs == 9
    assert default.config["shift_type"] == "PS" and default.config["shift_depth"] == 20
    assert result.pareto, "a front must exist"
    assert all(t.budget_epochs == 9 and t.status == TrialStatus.OK for t in result.pareto)


def test_pareto_front_only_holds_non_dominated_max_budget_trials(tmp_path):
    result = run(tmp_path / "run", trials=16)
    top = [t for t in result.trials if t.status == TrialStatus.OK and t.budget_epochs == 9]
    for member in result.pareto:
        for other in top:
            dominates = all(other.objectives[k] <= member.objectives[k] for k in result.objectives) and any(
                other.objectives[k] < member.objectives[k] for k in result.objectives
            )
            assert not dominates


def test_crashing_configurations_are_recorded_and_the_search_goes_on(tmp_path):
    trial = SyntheticTrial(
        crash_when={"optimizer": ["adam", "adagrad", "rmsprop"]}, diverge_when={"rounding": "stochastic"}
    )
    result = run(tmp_path / "run", trial=trial, trials=20)
    statuses = Counter(t.status for t in result.trials)
    assert statuses[TrialStatus.CRASHED] >= 1 and statuses[TrialStatus.DIVERGED] >= 1
    assert sum(statuses[s] for s in FINAL_STATUSES) == 20
    crashed = [t for t in result.trials if t.status == TrialStatus.CRASHED]
    assert all("synthetic crash" in t.error for t in crashed)
    assert all(t.status == TrialStatus.OK for t in result.pareto)


def test_default_configuration_crashing_first_does_not_abort(tmp_path):
    # SMAC's own loop aborts when the first trial crashes; greenshift records it and continues.
    result = run(tmp_path / "run", trial=SyntheticTrial(crash_when={"shift_type": "PS"}), trials=8)
    assert result.default is None
    default_rows = [t for t in result.trials if t.is_default]
    assert default_rows and default_rows[0].status == TrialStatus.CRASHED
    assert sum(t.status in FINAL_STATUSES for t in result.trials) == 8


def test_resume_never_reruns_completed_trials_and_replays_the_same_run(tmp_path):
    straight = run(tmp_path / "straight", trials=16)
    # Stopped after 7 trials, like a kill. (Not by --max-total-epochs: an epoch budget sizes SMAC's
    # initial design, so a run started with one is a different run.)
    counting = CountingTrial()
    search = DSNNSearch(make_settings(tmp_path / "resumed", trials=16), trial_function=counting)
    counting.stop_after = (7, search)
    search.run()
    first_calls = counting.calls
    counting2 = CountingTrial()
    resumed = run(tmp_path / "resumed", trial=counting2, trials=16)
    assert 0 < first_calls < 16 and counting2.calls == 16 - first_calls  # only the missing trials ran
    as_rows = lambda res: [(t.config_key, t.budget_epochs) for t in res.trials]  # noqa: E731
    assert as_rows(resumed) == as_rows(straight)  # the replay rebuilds SMAC's state exactly


def test_extending_a_finished_run_runs_only_the_new_trials(tmp_path):
    counting = CountingTrial()
    run(tmp_path / "run", trial=counting, trials=9)
    more = CountingTrial()
    result = run(tmp_path / "run", trial=more, trials=16)
    assert counting.calls == 9 and more.calls == 7
    assert len(result.completed) == 16


def test_resume_with_other_objectives_is_refused_and_leaves_the_run_intact(tmp_path):
    run(tmp_path / "run", trials=5)
    before = (tmp_path / "run" / "run.sqlite").read_bytes()
    with pytest.raises(StoreError, match="force-new"):
        run(tmp_path / "run", trials=5, seed=4)
    assert (tmp_path / "run" / "run.sqlite").read_bytes() == before
    fresh = run(tmp_path / "run", trials=4, seed=4, force_new=True)
    assert len(fresh.completed) == 4
    assert any(p.name.startswith("previous-") for p in (tmp_path / "run").iterdir())


def test_trials_running_when_the_process_died_are_retried(tmp_path):
    out = tmp_path / "run"
    run(out, trials=6)
    store = RunStore.open(out)
    last = store.trials()[-1]
    # Simulate a death mid-trial: a RUNNING row for a configuration the replay will ask again.
    victim = store.start_trial(last.config, last.budget_epochs, last.seed)
    store.close()
    result = run(out, trials=10)
    rows = {t.trial_id: t for t in result.trials}
    assert rows[victim].status == TrialStatus.INTERRUPTED
    assert sum(t.status in FINAL_STATUSES for t in result.trials) == 10


def _search_script(out: Path, sleep_s: float) -> str:
    return textwrap.dedent(
        f"""
        from greenshift.search import DSNNSearch, SearchSettings
        from greenshift.testing import SyntheticTrial, WorkerKillingTrial
        settings = SearchSettings(dataset="digits", backbone="resnet20", out={str(out)!r}, trials=14,
                                  min_epochs=1, max_epochs=9, seed=5)
        DSNNSearch(settings, trial_function=SyntheticTrial(sleep_s={sleep_s})).run()
        """
    )


def _finished_count(out: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(out / "run.sqlite", timeout=5) as con:
            return con.execute("select count(*) from trials where status != 'running'").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path):
    out = tmp_path / "run"
    script = _search_script(out, sleep_s=0.05)
    rng = random.Random(7)
    for target in (3, 8, 12):
        proc = subprocess.Popen([sys.executable, "-c", script])
        deadline = time.time() + 120
        while _finished_count(out) < target and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))  # somewhere inside a trial, SMAC's ask or a store write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    final = subprocess.run([sys.executable, "-c", script], timeout=300)
    assert final.returncode == 0
    done = [r for r in RunStore.open(out).trials() if r.status in FINAL_STATUSES]
    assert len(done) == 14
    keys = [(r.config_key, r.budget_epochs, r.seed) for r in done]
    assert len(keys) == len(set(keys)), "a completed trial was run twice"
    reference_dir = tmp_path / "reference"
    subprocess.run([sys.executable, "-c", _search_script(reference_dir, 0.0)], timeout=300, check=True)
    reference = [r for r in RunStore.open(reference_dir).trials() if r.status in FINAL_STATUSES]
    assert sorted(keys) == sorted((r.config_key, r.budget_epochs, r.seed) for r in reference)


@pytest.mark.parametrize("continue_promoted", [False, True])
def test_multi_objective_hyperband_never_trips_over_smac_incumbents(tmp_path, continue_promoted):
    # SMAC3 issue 1050: with two objectives and budgets, SMAC's own incumbent update asserts on an empty
    # key set in exactly this search (seed 0, a diverging optimizer); greenshift's front comes from its
    # store, so the search must finish and report a front.
    result = run(
        tmp_path / "run",
        trial=SyntheticTrial(diverge_when={"optimizer": "adadelta"}),
        backbone="small_cnn",
        seed=0,
        trials=10_000,
        max_total_epochs=45,
        continue_promoted=continue_promoted,
    )
    assert "max-total-epochs" in result.stop_reason
    assert len(result.completed) >= 10 and result.pareto


def test_total_epoch_budget_limits_the_search(tmp_path):
    result = run(tmp_path / "run", trials=100, max_total_epochs=40)
    spent = sum(t.metrics["epochs_trained"] for t in result.completed)
    assert spent <= 40 and "max-total-epochs" in result.stop_reason


def test_walltime_limits_the_search(tmp_path):
    result = run(tmp_path / "run", trial=SyntheticTrial(sleep_s=0.1), trials=200, walltime_s=3)
    assert "walltime" in result.stop_reason and len(result.completed) < 200


@pytest.mark.parametrize("optimizer", ["smac-bo", "random"])
def test_single_fidelity_optimizers_train_every_trial_at_max_epochs(tmp_path, optimizer):
    result = run(tmp_path / optimizer, optimizer=optimizer, trials=7)
    assert len(result.completed) == 7
    assert {t.budget_epochs for t in result.completed} == {9}


def test_objective_weights_and_fixed_values_reach_the_trials(tmp_path):
    result = run(tmp_path / "run", trials=8, fixed={"shift_type": "Q"}, objective_weights=(0.9, 0.1))
    assert {t.config["shift_type"] for t in result.trials} == {"Q"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # Python callers read field names; the CLI shows its flags instead (tests/test_cli.py)
        ({"optimizer": "bohb"}, "^optimizer 'bohb'"),
        ({"objectives": ("loss",)}, "at least two"),
        ({"min_epochs": 5, "max_epochs": 3}, "min_epochs"),
        ({"objective_weights": (1.0,)}, "^objective_weights"),
        ({"workers": 2, "scheduler": "tcp://127.0.0.1:1"}, "not both"),
        ({"max_total_epochs": 3}, "^max_total_epochs"),
    ],
)
def test_bad_settings_are_clear_errors(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_settings(tmp_path, **overrides)


def test_unknown_backbone_and_dataset_are_errors_before_anything_is_written(tmp_path):
    with pytest.raises(Exception, match="resnet2"):
        run(tmp_path / "a", backbone="resnet2")
    with pytest.raises(ConfigError, match="data set"):
        run(tmp_path / "b", dataset="imagenet21k")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_budget_to_epochs():
    assert budget_to_epochs(None, 9) == 9
    assert budget_to_epochs(1.0, 9) == 1
    assert budget_to_epochs(3.0000001, 9) == 3
    assert budget_to_epochs(0.2, 9) == 1


def test_space_bounds_follow_the_backbone():
    space, _ = build_space(20)
    assert space["shift_depth"].upper == 20 and space["shift_depth"].default_value == 20
    with pytest.raises(ConfigError, match="shift_depth"):
        build_space(20, ranges={"shift_depth": "1:25"})


@pytest.mark.slow
@pytest.mark.parametrize("workers", [2, 3])
def test_dask_local_cluster_runs_trials_in_parallel(tmp_path, workers, local_dask_client):
    with local_dask_client(workers) as client:
        search = DSNNSearch(
            make_settings(tmp_path / "run", trials=12),
            trial_function=SyntheticTrial(sleep_s=0.05),
            dask_client=client,
        )
        result = search.run()
    done = result.completed
    assert len(done) == 12
    keys = [(t.config_key, t.budget_epochs) for t in done]
    assert len(keys) == len(set(keys))
    # several workers really ran trials at the same time
    spans = sorted((t.started_at, t.finished_at) for t in done)
    overlaps = sum(1 for a, b in itertools.pairwise(spans) if b[0] < a[1])
    assert overlaps >= 1
    assert {t.budget_epochs for t in done} >= {1, 3}


class CountingTrial(SyntheticTrial):
    """Counts how many trials really ran (in process only)."""

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.stop_after: tuple[int, DSNNSearch] | None = None  # (calls, search to stop)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        outcome = super().__call__(*args, **kwargs)
        if self.stop_after is not None and self.calls == self.stop_after[0]:
            self.stop_after[1].request_stop()
        return outcome


@pytest.mark.slow
def test_a_worker_dying_mid_trial_is_recorded_and_the_run_goes_on(tmp_path, local_dask_client):
    # Dask retries a task whose worker died on another worker, then gives up: the trial is recorded as
    # crashed instead of the error ending the whole search.
    with local_dask_client(2) as client:
        search = DSNNSearch(
            make_settings(tmp_path / "run", trials=10, optimizer="random"),
            trial_function=WorkerKillingTrial(kill_when={"optimizer": "adagrad"}),
            dask_client=client,
        )
        result = search.run()
    assert len(result.completed) == 10
    lost = [t for t in result.trials if t.status == TrialStatus.CRASHED]
    assert lost and all("worker lost" in t.error for t in lost)
    assert all(t.config["optimizer"] == "adagrad" for t in lost)
    # a trial lost without a word is charged its whole budget (it was charged nothing)
    assert all(t.metrics["epochs_trained"] == t.budget_epochs for t in lost)


def test_ctrl_c_stops_after_the_running_trial_and_records_everything(tmp_path):
    out = tmp_path / "run"
    script = textwrap.dedent(
        f"""
        from greenshift.search import DSNNSearch, SearchSettings
        from greenshift.testing import SyntheticTrial
        settings = SearchSettings(dataset="digits", backbone="resnet20", out={str(out)!r}, trials=500,
                                  min_epochs=1, max_epochs=9, seed=1)
        result = DSNNSearch(settings, trial_function=SyntheticTrial(sleep_s=0.1)).run()
        print("STOPPED:", result.stop_reason)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while _finished_count(out) < 4 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "STOPPED: stopped by the user" in stdout
    records = RunStore.open(out).trials()
    assert 4 <= len(records) < 500
    assert all(r.status in FINAL_STATUSES for r in records), "no trial may be left running"


def test_hyperband_iteration_matches_smacs_brackets():
    from smac.intensifier.successive_halving import SuccessiveHalving

    from greenshift.search.hyperband import hyperband_iteration

    for low, high, eta in [(1, 9, 3), (1, 27, 3), (2, 54, 3), (1, 8, 2), (1, 3, 3), (4, 4, 3)]:
        s_max = SuccessiveHalving._get_max_iterations(eta, high, low)
        trials, epochs, continued = 0, 0.0, 0.0
        for s in range(s_max, -1, -1):
            budgets, counts = SuccessiveHalving._compute_configs_and_budgets_for_stages(eta, high, s, s_max)
            trials += sum(counts)
            epochs += sum(b * n for b, n in zip(budgets, counts, strict=True))
            continued += sum(
                n * (b - p) for b, p, n in zip(budgets, [0.0, *budgets[:-1]], counts, strict=True)
            )
        assert hyperband_iteration(low, high, eta, continue_promoted=False) == (trials, pytest.approx(epochs))
        assert hyperband_iteration(low, high, eta, continue_promoted=True) == (
            trials,
            pytest.approx(continued),
        )
    # 1..9 epochs, eta 3: brackets of 9+3+1, 5+1 and 3 trials
    assert hyperband_iteration(1, 9, 3, continue_promoted=True) == (22, 69.0)


def test_the_initial_design_is_sized_by_the_trials_the_epoch_budget_affords(tmp_path):
    from greenshift.search.scenario import affordable_trials

    common = dict(min_epochs=1, max_epochs=9, eta=3, continue_promoted=True)
    assert affordable_trials(10_000, None, multi_fidelity=True, **common) == 10_000
    assert affordable_trials(10_000, 270, multi_fidelity=True, **common) == 86  # 270 / (69 / 22)
    assert affordable_trials(50, 270, multi_fidelity=True, **common) == 50
    assert affordable_trials(10_000, 270, multi_fidelity=False, **common) == 30
    # a huge --trials with an epoch budget no longer keeps SMAC in its random initial design
    run(tmp_path / "run", trials=10_000, max_total_epochs=90)
    assert RunStore.open(tmp_path / "run").get_state("scenario_trials") == 28


def test_ask_hides_only_smacs_empty_mean_warning():
    import warnings

    import numpy as np

    from greenshift.search.facade import _ask

    class FakeSmac:
        def __init__(self, other: bool):
            self.other = other

        def ask(self):
            np.mean([])  # what SMAC's local-search debug log computes with no timings
            if self.other:
                warnings.warn("overflow somewhere else", RuntimeWarning, stacklevel=1)
            return "trial"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _ask(FakeSmac(other=False)) == "trial"
        assert _ask(FakeSmac(other=True)) == "trial"
    assert [str(w.message) for w in caught] == ["overflow somewhere else"]


def test_serial_forest_predicts_exactly_what_smacs_forest_predicts(tmp_path):
    import copy

    import numpy as np
    from smac import Scenario
    from smac.model.random_forest import RandomForest

    from greenshift.search.forest import SerialRandomForest, single_thread_forest

    space, _ = build_space(3)
    scenario = Scenario(space, output_directory=tmp_path / "smac", seed=3, deterministic=True)
    configs = space.sample_configuration(60)
    X = np.array([c.get_array() for c in configs])  # inactive momentum is NaN, as SMAC encodes it
    y = np.random.default_rng(0).random((60, 1))
    ours = single_thread_forest(scenario)
    assert isinstance(ours, SerialRandomForest)
    # the same settings and seed, predicting through SMAC's own code
    reference = copy.deepcopy(ours)
    reference.__class__ = RandomForest
    ours.train(X[:40], y[:40])
    reference.train(X[:40], y[:40])
    for method in ("predict", "predict_marginalized"):
        mean, var = getattr(ours, method)(X[40:])
        ref_mean, ref_var = getattr(reference, method)(X[40:])
        np.testing.assert_array_equal(mean, ref_mean)
        np.testing.assert_array_equal(var, ref_var)
    assert np.unique(mean).size > 1  # a forest that predicts one constant would compare equal trivially


@pytest.mark.parametrize("optimizer", ["smac", "smac-bo"])
def test_acquisition_optimisation_uses_the_measured_settings(tmp_path, optimizer):
    from greenshift.search.facades import make_facade
    from greenshift.search.forest import SerialRandomForest
    from greenshift.search.scenario import make_scenario

    space, _ = build_space(3)
    scenario = make_scenario(
        space,
        multi_fidelity=optimizer == "smac",
        objectives=["loss", "energy_model_j"],
        output_directory=tmp_path / "smac",
        seed=0,
        n_trials=20,
        min_epochs=1,
        max_epochs=9,
        n_workers=1,
    )
    facade = make_facade(scenario, optimizer=optimizer, eta=3, objective_weights=None, verbose=False)
    maximizer = facade._acquisition_maximizer
    # docs/search.md gives the evidence for both numbers
    assert maximizer._challengers == 1000
    assert maximizer._local_search_iterations == 5
    assert maximizer._local_search._n_steps_plateau_walk == 5
    assert isinstance(facade._model, SerialRandomForest)
