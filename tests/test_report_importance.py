"""fANOVA importance on synthetic configurations whose objectives depend on known hyperparameters."""

from __future__ import annotations

import numpy as np
import pytest

from greenshift.report.data import FrontEntry
from greenshift.report.importance import compute_importance

NAMES = ("loss", "energy_model_j")


def synthetic(n: int, seed: int = 0) -> list[FrontEntry]:
    """Loss depends only on shift_depth, energy only on weight_bits; momentum only exists for sgd."""
    rng = np.random.default_rng(seed)
    entries = []
    for i in range(n):
        optimizer = str(rng.choice(["sgd", "adam", "rmsprop"]))
        config = {
            "optimizer": optimizer,
            "lr": float(10 ** rng.uniform(-4, 0)),
            "shift_depth": int(rng.integers(0, 21)),
            "weight_bits": int(rng.integers(2, 9)),
            "shift_type": str(rng.choice(["Q", "PS"])),
        }
        if optimizer in ("sgd", "rmsprop"):
            config["momentum"] = float(rng.uniform(0.5, 0.99))
        objectives = {
            "loss": 0.05 + 0.02 * config["shift_depth"] + float(rng.normal(0, 0.002)),
            "energy_model_j": 1.0 + 0.5 * config["weight_bits"],
        }
        entries.append(FrontEntry(i, config, objectives, 9.0, f"k{i}"))
    return entries


@pytest.fixture(scope="module")
def importance():
    return compute_importance(synthetic(40), NAMES, seed=0, n_trees=16)


def test_obviously_important_hyperparameter_ranks_first(importance) -> None:
    assert next(iter(importance.values["loss"])) == "shift_depth"
    assert importance.values["loss"]["shift_depth"] > 0.8
    assert next(iter(importance.values["energy_model_j"])) == "weight_bits"
    assert importance.reliable and importance.n_trials == 40
    assert sum(importance.values["loss"].values()) == pytest.approx(1.0, abs=0.05)


def test_inactive_momentum_is_filled_with_the_default(importance) -> None:
    assert importance.filled == {"momentum": 0.9}
    assert "momentum" in importance.values["loss"]
    assert importance.dropped == ()


def test_seeded_result_is_reproducible(importance) -> None:
    again = compute_importance(synthetic(40), NAMES, seed=0, n_trees=16)
    assert again.values == importance.values


def test_few_trials_are_flagged_unreliable() -> None:
    result = compute_importance(synthetic(5), NAMES, seed=0, n_trees=8)
    assert not result.reliable and "only 5" in result.note
    assert set(result.values) == set(NAMES)
    assert set(result.values["loss"]) >= {"shift_depth", "weight_bits", "lr"}


def test_degenerate_inputs_do_not_crash() -> None:
    empty = compute_importance([], NAMES)
    assert not empty.reliable and empty.values == {"loss": {}, "energy_model_j": {}}
    one = compute_importance(synthetic(1), NAMES)
    assert not one.reliable and all(v == 0.0 for v in one.values["loss"].values())
    constant = [
        FrontEntry(i, {"lr": 0.1 * (i + 1)}, {"loss": 0.3, "energy_model_j": float(i)}, 9.0, str(i))
        for i in range(12)
    ]
    result = compute_importance(constant, NAMES, n_trees=8)
    assert not result.reliable and "loss is the same" in result.note
    assert result.values["loss"] == {"lr": 0.0}
    # the modelled energy cannot depend on lr, whatever the trials show: lr is left out of its analysis
    assert result.values["energy_model_j"]["lr"] == 0.0 and result.excluded["energy_model_j"] == ("lr",)
    same_configs = [
        FrontEntry(i, {"lr": 0.1}, {"loss": float(i), "energy_model_j": 1.0}, 9.0, str(i)) for i in range(12)
    ]
    result = compute_importance(same_configs, NAMES)
    assert not result.reliable and "no hyperparameter varies" in result.note


def test_unknown_inactive_hyperparameter_is_dropped() -> None:
    entries = synthetic(12)
    entries = [
        FrontEntry(
            e.trial_id, {**e.config, **({"warmup": 3} if i % 2 else {})}, e.objectives, 9.0, e.config_key
        )
        for i, e in enumerate(entries)
    ]
    result = compute_importance(entries, NAMES, n_trees=8)
    assert result.dropped == ("warmup",)
    assert "warmup" not in result.values["loss"]


def test_configspace_space_gives_distributions_and_fill_values() -> None:
    from ConfigSpace import Categorical, ConfigurationSpace, Float, Integer

    space = ConfigurationSpace(seed=0)
    space.add(
        [
            Categorical("optimizer", ["sgd", "adam", "rmsprop"]),
            Float("lr", (1e-4, 1.0), log=True),
            Float("momentum", (0.0, 0.99), default=0.5),
            Integer("shift_depth", (0, 20)),
            Integer("weight_bits", (2, 8)),
            Categorical("shift_type", ["Q", "PS"]),
        ]
    )
    result = compute_importance(synthetic(30), NAMES, space=space, seed=1, n_trees=16)
    assert result.filled == {"momentum": 0.5}
    assert next(iter(result.values["loss"])) == "shift_depth"
