"""The modelled energy as a known objective: exact pricing of configurations and the ParEGO surrogate."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smac.model.abstract_model import AbstractModel

from greenshift.config import DSNNConfig
from greenshift.errors import ConfigError
from greenshift.models import get_model
from greenshift.objectives import model_energy_j
from greenshift.objectives.energy_model import count_ops, energy_with_shift_settings_j
from greenshift.search import DSNNSearch, SearchSettings, build_space
from greenshift.search.facades import make_facade
from greenshift.search.known_energy import (
    ENERGY_FIELDS,
    ConfigurationEnergy,
    KnownEnergySurrogate,
    ModelledObjectiveEncoder,
    known_objective_indices,
    scalarised_moments,
)
from greenshift.search.parego import PreferenceParEGO
from greenshift.search.scenario import make_scenario
from greenshift.search.space import config_from_values
from greenshift.shift import count_shiftable_layers
from greenshift.testing import SyntheticTrial
from greenshift.train import build_model


@pytest.mark.parametrize(("backbone", "input_shape"), [("small_cnn", (1, 8, 8)), ("resnet20", (3, 8, 8))])
def test_configuration_energy_equals_the_built_models_modelled_energy(backbone, input_shape):
    layers = count_shiftable_layers(get_model(backbone, num_classes=10, in_channels=input_shape[0]))
    space, _ = build_space(layers, seed=5)
    price = ConfigurationEnergy(backbone, 10, input_shape)
    energies = set()
    for config in space.sample_configuration(25):
        values = dict(config)
        built = build_model(config_from_values(values), backbone, 10, input_shape[0])
        assert price(values) == pytest.approx(model_energy_j(built, input_shape), rel=1e-12)
        energies.add(price(values))
    assert len(energies) > 10  # the configurations really differ in energy
    # fields the space leaves out take the defaults (all layers shifted, 5 bits, 16 + 16 bits)
    full = model_energy_j(build_model(DSNNConfig(), backbone, 10, input_shape[0]), input_shape)
    assert price({}) == pytest.approx(full, rel=1e-12)


def test_pricing_by_columns_equals_pricing_one_configuration_at_a_time():
    space, _ = build_space(4, seed=2)
    price = ConfigurationEnergy("small_cnn", 10, (1, 8, 8))
    configs = [dict(c) for c in space.sample_configuration(200)]
    columns = {
        name: np.array([c[name] for c in configs], dtype=float) for name in ("shift_depth", "weight_bits")
    }
    columns["activation_integer_bits"] = np.array(
        [c["activation_integer_bits"] for c in configs], dtype=float
    )
    # a field the space does not have, or an inactive value, takes the default (16 fraction bits)
    columns["activation_integer_bits"][:20] = np.nan
    expected = [
        price({**c, "activation_fraction_bits": 16} | ({"activation_integer_bits": 16} if i < 20 else {}))
        for i, c in enumerate(configs)
    ]
    np.testing.assert_allclose(price.of_columns(columns, len(configs)), expected, rtol=1e-12)
    fixed = ConfigurationEnergy("small_cnn", 10, (1, 8, 8), fixed_extra={"weight_bits": 2})
    assert fixed.of_columns({}, 3).tolist() == [fixed({})] * 3


def test_configuration_energy_uses_the_searchs_fixed_values():
    price = ConfigurationEnergy("small_cnn", 10, (1, 8, 8), fixed_extra={"weight_bits": 2})
    expected = model_energy_j(build_model(DSNNConfig(weight_bits=2), "small_cnn", 10, 1), (1, 8, 8))
    assert price({}) == pytest.approx(expected, rel=1e-12)
    assert price({}) != pytest.approx(ConfigurationEnergy("small_cnn", 10, (1, 8, 8))({}), rel=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    weight_bits=st.integers(2, 5),
    integer_bits=st.integers(4, 32),
    fraction_bits=st.integers(4, 32),
    depth=st.integers(0, 4),
)
def test_repricing_counted_ops_at_new_widths_equals_counting_the_new_model(
    weight_bits, integer_bits, fraction_bits, depth
):
    counted = build_model(DSNNConfig(shift_depth=depth), "small_cnn", 10, 1)
    wanted = DSNNConfig(
        shift_depth=depth,
        weight_bits=weight_bits,
        activation_integer_bits=integer_bits,
        activation_fraction_bits=fraction_bits,
    )
    repriced = energy_with_shift_settings_j(
        count_ops(counted, (1, 8, 8)), weight_bits, integer_bits + fraction_bits
    )
    assert repriced == pytest.approx(
        model_energy_j(build_model(wanted, "small_cnn", 10, 1), (1, 8, 8)), rel=1e-12
    )


def test_known_objective_indices():
    assert known_objective_indices(["loss", "energy_model_j"]) == ([1], 0)
    assert known_objective_indices(["energy_model_j", "loss"]) == ([0], 1)
    assert known_objective_indices(["loss", "latency_ms"]) is None  # nothing known
    assert known_objective_indices(["loss", "latency_ms", "energy_model_j"]) is None  # two to learn


def _parego_value(values: np.ndarray, weights: np.ndarray, rho: float) -> np.ndarray:
    weighted = values * weights
    return weighted.max(axis=1) + rho * weighted.sum(axis=1)


@settings(max_examples=50, deadline=None)
@given(
    mean=st.floats(-0.5, 1.5),
    known=st.floats(-0.5, 1.5),
    loss_weight=st.floats(0.05, 0.95),
)
def test_scalarised_moments_without_uncertainty_are_paregos_scalarisation(mean, known, loss_weight):
    weights = np.array([loss_weight, 1 - loss_weight])
    got_mean, got_var = scalarised_moments(
        np.array([mean]), np.array([0.0]), np.array([[known]]), weights[0], weights[1:], 0.05
    )
    expected = _parego_value(np.array([[mean, known]]), weights, 0.05)
    np.testing.assert_allclose(got_mean, expected, rtol=1e-12, atol=1e-15)
    assert got_var[0] == 0.0


@pytest.mark.parametrize(("mean", "known"), [(0.5, 0.5), (0.2, 0.8), (0.9, 0.1), (0.4, 0.45)])
def test_scalarised_mean_matches_sampling_and_variance_its_first_order_slope(mean, known):
    rng = np.random.default_rng(0)
    weights, rho, std = np.array([0.6, 0.4]), 0.05, 0.2
    samples = rng.normal(mean, std, 400_000)
    values = np.column_stack([samples, np.full_like(samples, known)])
    sampled = _parego_value(values, weights, rho)
    got_mean, got_var = scalarised_moments(
        np.array([mean]), np.array([std**2]), np.array([[known]]), weights[0], weights[1:], rho
    )
    assert got_mean[0] == pytest.approx(sampled.mean(), abs=3 * sampled.std() / np.sqrt(samples.size))
    # far from the kink the scalarisation is linear in the loss, so the first-order variance is exact
    if abs(weights[0] * mean - weights[1] * known) > 3 * weights[0] * std:
        assert got_var[0] == pytest.approx(sampled.var(), rel=0.01)
    else:
        assert 0 < got_var[0] <= (weights[0] * std * (1 + rho)) ** 2


class _ConstantLoss(AbstractModel):
    """A stand-in forest predicting the same loss everywhere."""

    def _train(self, X, Y):
        self.trained_on = Y.copy()
        return self

    def _predict(self, X, covariance_type="diagonal"):
        return np.full((len(X), 1), 0.5), np.full((len(X), 1), 0.01)


class _Bounds:
    def __init__(self, bounds):
        self.objective_bounds = bounds


def test_surrogate_prefers_the_cheaper_of_two_configurations_the_forest_cannot_tell_apart(tmp_path):
    space, _ = build_space(4)
    price = ConfigurationEnergy("small_cnn", 10, (1, 8, 8))
    surrogate = KnownEnergySurrogate(
        _ConstantLoss(space),
        space,
        known=lambda columns, count: price.of_columns(columns, count)[:, None],
        known_indices=[1],
        modelled_index=0,
    )
    cheap = dict(space.get_default_configuration()) | {
        "activation_integer_bits": 4,
        "activation_fraction_bits": 4,
    }
    dear = dict(space.get_default_configuration()) | {
        "activation_integer_bits": 32,
        "activation_fraction_bits": 32,
    }
    configs = [space.get_default_configuration().__class__(space, values=v) for v in (cheap, dear)]
    X = np.array([c.get_array() for c in configs])
    low, high = price(cheap), price(dear)
    parego = PreferenceParEGO(make_scenario(space, **_scenario_args(tmp_path, "smac-bo")))
    parego.update_on_iteration_start()
    surrogate.attach(_Bounds([(0.0, 1.0), (low, high)]), parego)
    mean, var = surrogate.predict(X)
    expected, _ = scalarised_moments(
        np.array([0.5, 0.5]),
        np.array([0.01, 0.01]),
        np.array([[0.0], [1.0]]),
        parego.weights[0],
        parego.weights[1:],
        parego.rho,
    )
    np.testing.assert_allclose(mean[:, 0], expected)
    assert mean[0, 0] < mean[1, 0]
    assert (var > 0).all()
    np.testing.assert_allclose(surrogate.known_values(X)[:, 0], [low, high])


def _scenario_args(tmp_path, optimizer):
    return dict(
        multi_fidelity=optimizer == "smac",
        objectives=["loss", "energy_model_j"],
        output_directory=tmp_path / "smac",
        seed=0,
        n_trials=12,
        min_epochs=1,
        max_epochs=9,
        n_workers=1,
    )


@pytest.mark.parametrize("optimizer", ["smac", "smac-bo"])
def test_facade_learns_the_loss_only_and_adds_the_known_energy(tmp_path, optimizer):
    from smac.runhistory import TrialValue

    space, _ = build_space(4)
    scenario = make_scenario(space, **_scenario_args(tmp_path, optimizer))
    price = ConfigurationEnergy("small_cnn", 10, (1, 8, 8))
    facade = make_facade(
        scenario,
        optimizer=optimizer,
        eta=3,
        objective_weights=None,
        verbose=False,
        known_objectives=lambda columns, count: price.of_columns(columns, count)[:, None],
    )
    assert isinstance(facade._model, KnownEnergySurrogate)
    assert isinstance(facade._runhistory_encoder, ModelledObjectiveEncoder)
    predicted = []
    original = KnownEnergySurrogate._predict

    def spy(self, X, covariance_type="diagonal"):
        predicted.append(len(X))
        return original(self, X, covariance_type)

    KnownEnergySurrogate._predict = spy
    try:
        losses = []
        for _ in range(14):
            info = facade.ask()
            values = dict(info.config)
            loss = 0.1 + abs(np.log10(values["lr"]) + 1.5)  # a loss the forest can learn
            losses.append(loss)
            facade.tell(info, TrialValue(cost=[loss, price(values)]))
    finally:
        KnownEnergySurrogate._predict = original
    assert predicted, "the model-based part of the search never asked the surrogate"
    # the forest was trained on the loss normalised by the runhistory's bounds, not on a scalarisation
    _, Y = facade._runhistory_encoder.transform()
    low, high = facade.runhistory.objective_bounds[0]
    rows = [(k, v) for k, v in facade.runhistory.items()]
    expected = [(v.cost[0] - low) / (high - low) for _, v in rows]
    np.testing.assert_allclose(np.sort(Y[:, 0]), np.sort(expected))


def test_encoder_passes_new_weights_on_to_parego(tmp_path):
    space, _ = build_space(4)
    scenario = make_scenario(space, **_scenario_args(tmp_path, "smac-bo"))
    parego = PreferenceParEGO(scenario)
    encoder = ModelledObjectiveEncoder(scenario, modelled_index=0)
    encoder.multi_objective_algorithm = parego
    assert encoder.multi_objective_algorithm(np.array([0.3, 0.9])) == 0.3
    encoder.multi_objective_algorithm.update_on_iteration_start()
    first = parego.weights.copy()
    encoder.multi_objective_algorithm.update_on_iteration_start()
    assert not np.allclose(first, parego.weights)


def test_only_greenshifts_own_trials_in_a_model_based_search_price_energy_in_advance(tmp_path):
    from greenshift.search.trial import run_trial

    def search(optimizer, trial_function, objectives=("loss", "energy_model_j")):
        settings = SearchSettings(
            dataset="digits",
            backbone="small_cnn",
            out=str(tmp_path / optimizer),
            optimizer=optimizer,
            objectives=objectives,
            max_epochs=3,
        )
        return DSNNSearch(settings, trial_function=trial_function)

    own = search("smac", run_trial)
    known = own.get_known_objectives(own.get_trial_settings({}))
    assert known is not None
    values = dict(own.get_space()[0].get_default_configuration())
    # digits come as 8x8 greyscale images of 10 classes
    built = build_model(config_from_values(values), "small_cnn", 10, 1)
    columns = {name: np.array([float(values[name])]) for name in ENERGY_FIELDS if name in values}
    assert known(columns, 1)[0, 0] == pytest.approx(model_energy_j(built, (1, 8, 8)), rel=1e-12)
    for optimizer, trial, objectives in [
        ("random", run_trial, ("loss", "energy_model_j")),
        ("smac", SyntheticTrial(), ("loss", "energy_model_j")),
        ("smac-bo", run_trial, ("loss", "latency_ms")),
    ]:
        other = search(optimizer, trial, objectives)
        assert other.get_known_objectives(other.get_trial_settings({})) is None


def test_first_bracket_configs_is_the_size_of_smacs_first_hyperband_bracket():
    from smac.intensifier.successive_halving import SuccessiveHalving

    from greenshift.search.hyperband import first_bracket_configs

    for low, high, eta in [(1, 9, 3), (1, 27, 3), (2, 54, 3), (1, 8, 2), (1, 3, 3), (4, 4, 3)]:
        s_max = SuccessiveHalving._get_max_iterations(eta, high, low)
        _, counts = SuccessiveHalving._compute_configs_and_budgets_for_stages(eta, high, s_max, s_max)
        assert first_bracket_configs(low, high, eta) == counts[0]
    assert first_bracket_configs(1, 9, 3) == 9


@pytest.mark.parametrize(
    ("optimizer", "n_trials", "expected"), [("smac", 84, 9), ("smac", 20, 5), ("smac-bo", 84, 21)]
)
def test_initial_design_with_the_energy_known(tmp_path, optimizer, n_trials, expected):
    space, _ = build_space(4)
    scenario = make_scenario(space, **(_scenario_args(tmp_path, optimizer) | {"n_trials": n_trials}))
    known = make_facade(
        scenario,
        optimizer=optimizer,
        eta=3,
        objective_weights=None,
        verbose=False,
        known_objectives=lambda columns, count: np.ones((count, 1)),
    )
    # smac: the first bracket's 9 random configurations (at most a quarter of the trials, as SMAC caps it);
    # smac-bo keeps SMAC's size, a quarter of the trials
    assert len(known._initial_design.select_configurations()) == expected
    learned = make_facade(scenario, optimizer=optimizer, eta=3, objective_weights=None, verbose=False)
    assert len(learned._initial_design.select_configurations()) == n_trials // 4


def test_configuration_energy_refuses_a_depth_beyond_the_backbone():
    with pytest.raises(ConfigError, match="exceeds the 4 shiftable layers of small_cnn"):
        ConfigurationEnergy("small_cnn", 10, (1, 8, 8))({"shift_depth": 5})
