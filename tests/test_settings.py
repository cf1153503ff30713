"""Settings from Python: presets and their merge, config files, field-named errors (no CLI involved)."""

from __future__ import annotations

from dataclasses import MISSING, fields

import pytest

from greenshift.config import DSNNConfig, coerce_bool, coerce_float, coerce_int, parse_assignments
from greenshift.errors import ConfigError
from greenshift.search import SearchSettings
from greenshift.search.settings import (
    CONFIG_KEYS,
    PRESETS,
    resolve_search_settings,
    search_defaults,
    search_keys,
)
from greenshift.train.settings import TrainSettings, resolve_train_settings, train_defaults

REQUIRED = {"dataset": "digits", "backbone": "resnet20", "out": "runs/x"}


def test_search_defaults_are_the_dataclass_defaults():
    by_name = {f.name: f for f in fields(SearchSettings)}
    defaults = search_defaults()
    for key, value in defaults.items():
        f = by_name[CONFIG_KEYS.get(key, key)]
        if f.default is not MISSING:
            assert value == f.default, key
        elif f.default_factory is not MISSING:
            assert value == f.default_factory(), key
        else:
            assert value is None, key
    assert "split_seed" not in search_keys()  # no config file sets it


def test_precedence_overrides_file_preset_defaults(tmp_path):
    config = tmp_path / "search.yaml"
    config.write_text("trials: 7\nmax_epochs: 3\nset: {shift_type: Q}\nspace: space.yaml\n")
    settings = resolve_search_settings(
        preset="demo", config_file=config, overrides={**REQUIRED, "trials": 5, "set": ["weight_bits=4"]}
    )
    assert settings.trials == 5  # overrides > file
    assert settings.max_epochs == 3  # file > preset
    assert settings.max_total_epochs == PRESETS["demo"]["max_total_epochs"]  # preset > defaults
    assert settings.optimizer == "smac"  # defaults
    assert dict(settings.fixed) == {"shift_type": "Q", "weight_bits": "4"}  # merged key by key
    assert settings.space_file == str(tmp_path / "space.yaml")  # relative to the file


def test_overrides_take_field_names_and_none_means_not_given():
    settings = resolve_search_settings(
        preset="demo", overrides={**REQUIRED, "walltime_s": 60, "country_iso_code": "FRA", "trials": None}
    )
    assert settings.walltime_s == 60.0 and settings.country_iso_code == "FRA"
    assert settings.trials == PRESETS["demo"]["trials"]


@pytest.mark.parametrize(
    ("overrides", "message", "names"),
    [
        ({"max_epochs": 3, "min_epochs": 4}, "1 <= min_epochs <= max_epochs", ("min_epochs", "max_epochs")),
        ({"trials": 0}, "trials must be at least 1, got 0", ("trials",)),
        ({"walltime": -1}, "walltime_s must be positive", ("walltime_s",)),
        ({"threads_per_trial": 0}, "threads_per_trial must be at least 1", ("threads_per_trial",)),
        ({"trials": "many"}, "trials must be an integer, got 'many'", ("trials",)),
        ({"range": ["lr"]}, "range expects key=value", ("range",)),
        ({"backbone": None}, "backbone is required", ("backbone",)),
    ],
)
def test_errors_name_fields_not_flags(overrides, message, names):
    with pytest.raises(ConfigError) as caught:
        resolve_search_settings(overrides={**REQUIRED, **overrides})
    assert message in str(caught.value) and "--" not in str(caught.value)
    assert caught.value.fields == names


def test_the_dataclass_itself_names_fields():
    with pytest.raises(ConfigError, match=r"^max_total_epochs 2 is below max_epochs 9") as caught:
        SearchSettings(**REQUIRED, max_total_epochs=2)
    assert caught.value.fields == ("max_total_epochs", "max_epochs")


def test_unknown_preset_and_unknown_setting():
    with pytest.raises(ConfigError, match="unknown preset 'fast'; available: demo"):
        resolve_search_settings(preset="fast", overrides=REQUIRED)
    with pytest.raises(ConfigError, match="unknown search setting"):
        resolve_search_settings(overrides={**REQUIRED, "trails": 3})


def test_a_training_optimiser_as_search_optimiser_gets_a_hint(tmp_path):
    config = tmp_path / "search.yaml"
    config.write_text("optimizer: adam\n")
    with pytest.raises(ConfigError, match=r"config file .*: optimizer='adam' is a training optimiser"):
        resolve_search_settings(config_file=config, overrides=REQUIRED)


def test_train_settings_precedence(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(
        "dataset: digits\nbackbone: tiny_cnn\nepochs: 2\nweight_bits: 4\nset: {shift_depth: 2}\n"
    )
    settings = resolve_train_settings(config_file=config, overrides={"set": {"weight_bits": 3}, "seed": 5})
    assert settings == TrainSettings(
        dataset="digits",
        backbone="tiny_cnn",
        epochs=2,
        config=DSNNConfig(weight_bits=3, shift_depth=2),
        seed=5,
    )
    assert train_defaults()["device"] == "auto" and train_defaults()["epochs"] is None


def test_train_settings_errors_name_fields(tmp_path):
    with pytest.raises(ConfigError, match=r"^epochs is required") as caught:
        resolve_train_settings(overrides={"dataset": "digits", "backbone": "tiny_cnn"})
    assert caught.value.fields == ("epochs",)
    with pytest.raises(ConfigError, match=r"^epochs must be at least 1, got 0"):
        resolve_train_settings(overrides={"dataset": "digits", "backbone": "tiny_cnn", "epochs": 0})
    config = tmp_path / "train.yaml"
    config.write_text("optimizer: adam\n")
    with pytest.raises(ConfigError, match="put the training optimiser under set"):
        resolve_train_settings(config_file=config)


def test_coercion():
    assert coerce_int("n", "3") == 3 and coerce_int("n", 3.0) == 3
    for bad in ("3.5", True, None):
        with pytest.raises(ConfigError, match="n must be an integer"):
            coerce_int("n", bad)
    with pytest.raises(ConfigError, match="finite"):
        coerce_float("x", "inf")
    assert coerce_float("x", "inf", finite=False) == float("inf")
    assert coerce_bool("b", "yes") is True and coerce_bool("b", "off") is False
    assert parse_assignments(["a=1", "b = x"]) == {"a": "1", "b": "x"}
    assert parse_assignments({"a": 1}) == {"a": 1}
    with pytest.raises(ConfigError, match=r"^set expects key=value"):
        parse_assignments(["a"])


def test_profile_configuration_from_python():
    from greenshift.objectives import profile_configuration

    profiled = profile_configuration(DSNNConfig(shift_depth=2), "tiny_cnn", input_shape="1,8,8", classes=10)
    assert profiled.input_shape == (1, 8, 8) and profiled.source == "input 1x8x8"
    data = profiled.to_dict()
    assert data["totals"]["energy_j"] == pytest.approx(sum(layer["energy_j"] for layer in data["layers"]))
    with pytest.raises(ConfigError, match=r"^give either dataset or input_shape"):
        profile_configuration(DSNNConfig(), "tiny_cnn")
