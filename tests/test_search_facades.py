"""SMAC's side of the search: facades built from overridable parts, their registry, and repeatability."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ConfigSpace import Configuration
from smac import HyperparameterOptimizationFacade

from greenshift.errors import ConfigError
from greenshift.search import SEARCH_OPTIMIZERS, DSNNSearch, SearchSettings, build_space
from greenshift.search.facades import RandomSearchFacade, SearchFacade, SmacBOFacade, SmacFacade, facade_for
from greenshift.search.hyperband import bracket_configurations
from greenshift.search.scenario import make_scenario
from greenshift.testing import SyntheticTrial


def make_settings(out: Path, **overrides) -> SearchSettings:
    values = dict(
        dataset="digits",
        backbone="tiny_cnn",
        out=str(out),
        trials=12,
        min_epochs=1,
        max_epochs=9,
        seed=3,
        isolate_trials=False,
        keep_models="none",
    )
    values.update(overrides)
    return SearchSettings(**values)


# Two configurations far from anything SMAC's Sobol design draws first.
CHOSEN = [{"lr": 0.001, "shift_depth": 1, "weight_bits": 2}, {"lr": 0.2, "shift_depth": 2, "weight_bits": 3}]


class TwoChosenConfigurations(SmacBOFacade):
    """An initial design of exactly the two CHOSEN configurations (SMAC's own draws three here)."""

    def get_initial_design(self):
        space = self.scenario.configspace
        chosen = [Configuration(space, {**dict(space.get_default_configuration()), **c}) for c in CHOSEN]
        return HyperparameterOptimizationFacade.get_initial_design(
            self.scenario, n_configs=0, additional_configs=chosen
        )


def _first_asked(result, count: int) -> list[dict]:
    asked = [t.config for t in result.trials if not t.is_default][:count]
    return [{k: c[k] for k in CHOSEN[0]} for c in asked]


@pytest.mark.filterwarnings("ignore:Please use `dict\\(config\\)`:DeprecationWarning")  # SMAC's own call
def test_a_subclass_that_overrides_one_part_is_the_one_the_search_uses(tmp_path):
    def search(out: Path, facade_class=None):
        settings = make_settings(out, optimizer="smac-bo")
        return DSNNSearch(settings, trial_function=SyntheticTrial(), facade_class=facade_class).run()

    variant = search(tmp_path / "variant", TwoChosenConfigurations)
    assert _first_asked(variant, 2) == CHOSEN  # the override's design, then the model's proposals
    assert CHOSEN[0] not in _first_asked(variant, 12)[2:] and len(variant.completed) == 12
    assert all(c not in CHOSEN for c in _first_asked(search(tmp_path / "plain"), 3))


def test_every_search_optimiser_has_its_facade():
    assert SEARCH_OPTIMIZERS == ("smac", "smac-bo", "random")
    classes = [facade_for(name) for name in SEARCH_OPTIMIZERS]
    assert classes == [SmacFacade, SmacBOFacade, RandomSearchFacade]
    assert [c.name for c in classes] == list(SEARCH_OPTIMIZERS)
    assert [c.multi_fidelity for c in classes] == [True, False, False]
    assert [c.uses_known_objectives for c in classes] == [True, True, False]


def test_an_unknown_optimiser_is_refused_with_the_close_name():
    with pytest.raises(ConfigError, match=r"'smca'.*did you mean 'smac'\?.*smac, smac-bo, random"):
        facade_for("smca")
    with pytest.raises(ConfigError, match="available: smac, smac-bo, random"):
        facade_for("hyperopt")


def test_a_facade_class_must_belong_to_the_settings_optimiser(tmp_path):
    settings = make_settings(tmp_path / "run", optimizer="random")
    with pytest.raises(
        ConfigError, match=r"TwoChosenConfigurations builds the 'smac-bo' optimiser.*'random'"
    ):
        DSNNSearch(settings, facade_class=TwoChosenConfigurations)
    with pytest.raises(ConfigError, match="subclass of SearchFacade"):
        DSNNSearch(settings, facade_class=HyperparameterOptimizationFacade)  # SMAC's, not greenshift's
    assert DSNNSearch(settings).facade_class is RandomSearchFacade
    assert issubclass(DSNNSearch(make_settings(tmp_path / "r2")).facade_class, SearchFacade)


def _scenario(tmp_path: Path, *, multi_fidelity: bool):
    space, _ = build_space(4)
    return make_scenario(
        space,
        multi_fidelity=multi_fidelity,
        objectives=["loss", "energy_model_j"],
        output_directory=tmp_path / f"smac-{multi_fidelity}",
        seed=0,
        n_trials=20,
        min_epochs=1,
        max_epochs=9,
        n_workers=1,
    )


def test_bracket_configurations_are_what_hyperbands_tracker_holds(tmp_path):
    smac = SmacFacade(_scenario(tmp_path, multi_fidelity=True)).build()
    for _ in range(4):
        smac.ask()
    configurations = bracket_configurations(smac.intensifier)
    tracked = [dict(c) for pairs in smac.intensifier._tracker.values() for _seed, cs in pairs for c in cs]
    assert configurations == tracked and len(configurations) == 9  # the first bracket's
    bo = SmacBOFacade(_scenario(tmp_path, multi_fidelity=False)).build()
    assert bracket_configurations(bo.intensifier) is None  # no brackets: keep every continuation


_REPEAT_SCRIPT = textwrap.dedent(
    """
    import json, sys, tempfile
    from greenshift.search import DSNNSearch, SearchSettings
    from greenshift.testing import SyntheticTrial

    def known(columns, count):  # the energy priced before training, as greenshift's own search does
        depth = columns["shift_depth"] / 4
        bits = columns["activation_integer_bits"] + columns["activation_fraction_bits"]
        return (1e-4 * ((1 - depth) * 3.0 + depth * (0.2 + bits / 64) + columns["weight_bits"] / 50))[:, None]

    class PricedSearch(DSNNSearch):
        def get_known_objectives(self, trial_settings):
            return known

    rows = []
    for optimizer, search in [("smac", DSNNSearch), ("smac-bo", DSNNSearch), ("smac", PricedSearch)]:
        with tempfile.TemporaryDirectory() as out:
            settings = SearchSettings(dataset="digits", backbone="tiny_cnn", out=out, trials=16, min_epochs=1,
                                      max_epochs=9, seed=5, optimizer=optimizer, isolate_trials=False,
                                      keep_models="none")
            result = search(settings, trial_function=SyntheticTrial(max_depth=4)).run()
            rows += [[optimizer, t.config, t.budget_epochs, t.seed, t.status.value, t.objectives]
                     for t in result.trials]
    print(json.dumps(rows, sort_keys=True))
    """
)


def test_a_search_repeats_exactly_under_another_hash_seed(tmp_path):
    # SMAC starts its local searches from a set of configurations, whose order follows string hashes;
    # greenshift orders them itself (greenshift.search.acquisition), so no PYTHONHASHSEED is needed.
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-c", _REPEAT_SCRIPT], env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert len(outputs[0]) == 3 * 16
    assert outputs[0] == outputs[1]


class ContinuationWritingTrial(SyntheticTrial):
    """Leaves a continuation checkpoint below the maximum budget, as a real trial does, and notes
    which continuations exist whenever a trial starts."""

    def __init__(self):
        super().__init__(max_depth=4)
        self.seen: list[tuple[str, int, set[str]]] = []

    def __call__(self, settings, values, budget_epochs, seed, config_key):
        from greenshift.store import RunLayout
        from greenshift.store.layout import continuation_key

        layout = RunLayout(settings.run_dir)
        present = {continuation_key(path) for path in layout.continuation_checkpoints()}
        self.seen.append((config_key, budget_epochs, present))
        if budget_epochs < settings.max_epochs:
            path = layout.continuation_checkpoint(config_key, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
        return super().__call__(settings, values, budget_epochs, seed, config_key)


def test_continuations_live_while_hyperband_may_promote_them(tmp_path):
    trial = ContinuationWritingTrial()
    DSNNSearch(make_settings(tmp_path / "run", trials=20), trial_function=trial).run()
    last_budget: dict[str, int] = {}
    promoted = 0
    for key, budget, present in trial.seen:
        # promoted to the next stage (eta 3): the continuation it left one stage lower is still there
        if last_budget.get(key, 0) * 3 == budget:
            assert key in present
            promoted += 1
        last_budget[key] = budget
    assert promoted >= 2
    # configurations that successive halving dropped lost their continuations before the last trial
    written = {key for key, budget in last_budget.items() if budget < 9}
    assert written - trial.seen[-1][2]
    assert not list((tmp_path / "run" / "checkpoints").glob("continue-*"))  # and all of them at the end
