"""Settings of one search run: what ``greenshift search`` and :class:`~greenshift.search.facade.DSNNSearch` take.

:class:`SearchSettings` holds them, validated; :func:`resolve_search_settings` merges them from their
sources with the precedence *overrides (the command line) > config file > preset > defaults*. A config
file's keys are :func:`search_keys` (the command line's flags with underscores: ``max_epochs: 9``);
``set`` and ``range`` take a mapping or a list of ``key=value`` strings and merge key by key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from greenshift.config import OPTIMIZERS as TRAINING_OPTIMIZERS
from greenshift.config import (
    coerce_assignments,
    coerce_bool,
    coerce_choice,
    coerce_float,
    coerce_floats,
    coerce_int,
    coerce_names,
    coerce_str,
    merge_settings,
    read_settings_file,
    require_settings,
)
from greenshift.errors import ConfigError

#: The search optimisers (``SearchSettings.optimizer``); each names a facade class registered in
#: :mod:`greenshift.search.facades`. Kept here so that settings and the command line load without SMAC.
SEARCH_OPTIMIZERS: tuple[str, ...] = ("smac", "smac-bo", "random")
DEFAULT_OBJECTIVES = ("loss", "energy_model_j")
KEEP_MODELS = ("pareto", "all", "none")

#: Bundles of search settings, keyed like a config file. Config-file values and overrides win over a
#: preset. ``demo`` is the main job of ``make run``: it must finish in under ten minutes on two CPU cores
#: with ``dataset=digits, backbone=resnet20``.
PRESETS: dict[str, dict[str, Any]] = {
    # The `make run` job: ResNet20 on digits in about 5 minutes on 2 idle CPU cores. The total epoch budget
    # is the binding limit (the default baseline takes 9 of the 200 epochs); trials only cap the count.
    "demo": {"trials": 100, "min_epochs": 1, "max_epochs": 9, "eta": 3, "seed": 0, "max_total_epochs": 200},
}

#: Config-file key -> :class:`SearchSettings` field, where the two differ (elsewhere they are equal).
CONFIG_KEYS: dict[str, str] = {
    "walltime": "walltime_s",
    "trial_timeout": "trial_timeout_s",
    "set": "fixed",
    "range": "ranges",
    "space": "space_file",
    "country": "country_iso_code",
}

#: Config-file keys that name input files or folders: relative to the config file's folder. ``out``, the
#: run directory written, stays relative to the current directory.
CONFIG_PATH_KEYS = ("data_dir", "space", "energy_table")

#: Fields no config file sets (the data split's seed is fixed for a run's lifetime; Python may pass it).
_NOT_IN_FILES = ("split_seed",)


@dataclass(frozen=True)
class SearchSettings:
    """Settings of one search run (the CLI flags of ``greenshift search``)."""

    dataset: str
    backbone: str
    out: str
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES
    optimizer: str = "smac"
    trials: int = 30
    min_epochs: int = 1
    max_epochs: int = 9
    eta: int = 3
    walltime_s: float | None = None
    max_total_epochs: int | None = None
    seed: int = 0
    workers: int = 1
    scheduler: str | None = None
    threads_per_trial: int | None = None
    device: str = "auto"
    data_dir: str | None = None
    image_size: int | None = None
    split_seed: int = 0
    fixed: Mapping[str, Any] = field(default_factory=dict)
    ranges: Mapping[str, Any] = field(default_factory=dict)
    space_file: str | None = None
    objective_weights: tuple[float, ...] | None = None
    # Measured in bench/continue_promoted.py (docs/results.md): continuing never fell behind retraining
    # in hypervolume over consumed epochs and reached the same fronts sooner, so it is the default.
    continue_promoted: bool = True
    keep_models: str = "pareto"
    trial_timeout_s: float | None = None
    energy_table: str | None = None
    meter: str = "auto"
    #: Country whose grid carbon intensity converts measured energy to emissions (docs/energy.md).
    country_iso_code: str = "DEU"
    force_new: bool = False
    verbose: bool = False
    # Each trial runs in a trial process that a timeout can kill and whose crash the search survives
    # (.isolation); False runs trials in the search's own process (debugging, tests that count calls).
    isolate_trials: bool = True

    def __post_init__(self) -> None:
        # Errors name the fields (``fields=``); the command line shows its flags instead.
        if self.optimizer not in SEARCH_OPTIMIZERS:
            raise ConfigError(
                f"optimizer {self.optimizer!r} is not one of {', '.join(SEARCH_OPTIMIZERS)}",
                fields=("optimizer",),
            )
        if len(self.objectives) < 2 or len(set(self.objectives)) != len(self.objectives):
            raise ConfigError(
                "objectives needs at least two different objectives, e.g. loss,energy_model_j",
                fields=("objectives",),
            )
        _check_at_least("trials", self.trials, 1)
        if not 1 <= self.min_epochs <= self.max_epochs:
            raise ConfigError(
                f"epochs must satisfy 1 <= min_epochs <= max_epochs, got {self.min_epochs} and {self.max_epochs}",
                fields=("min_epochs", "max_epochs"),
            )
        _check_at_least("eta", self.eta, 2)
        _check_at_least("workers", self.workers, 1)
        if self.threads_per_trial is not None:
            _check_at_least("threads_per_trial", self.threads_per_trial, 1)
        if self.workers > 1 and self.scheduler:
            raise ConfigError(
                "give either workers (a local cluster) or scheduler (an existing one), not both",
                fields=("workers", "scheduler"),
            )
        if self.keep_models not in KEEP_MODELS:
            raise ConfigError(f"keep_models must be one of {', '.join(KEEP_MODELS)}", fields=("keep_models",))
        for name, value in (("walltime_s", self.walltime_s), ("trial_timeout_s", self.trial_timeout_s)):
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be positive, got {value}", fields=(name,))
        if self.max_total_epochs is not None and self.max_total_epochs < self.max_epochs:
            raise ConfigError(
                f"max_total_epochs {self.max_total_epochs} is below max_epochs {self.max_epochs}: "
                "not even the default configuration fits",
                fields=("max_total_epochs", "max_epochs"),
            )
        code = self.country_iso_code
        if not (isinstance(code, str) and len(code) == 3 and code.isalpha() and code.isupper()):
            raise ConfigError(
                f"country_iso_code must be a three-letter ISO 3166 code such as DEU or FRA, got {code!r}",
                fields=("country_iso_code",),
            )
        if self.objective_weights is not None:
            weights = self.objective_weights
            if len(weights) != len(self.objectives) or any(not w >= 0 for w in weights) or sum(weights) <= 0:
                raise ConfigError(
                    f"objective_weights needs {len(self.objectives)} non-negative numbers that do not all equal 0",
                    fields=("objective_weights",),
                )

    def identity(self, space_json: str, fixed_extra: Mapping[str, Any]) -> dict[str, Any]:
        """What must not change when a run is resumed (limits and execution settings may)."""
        return {
            "dataset": self.dataset,
            "image_size": self.image_size,
            "split_seed": self.split_seed,
            "backbone": self.backbone,
            "objectives": list(self.objectives),
            "optimizer": self.optimizer,
            "min_epochs": self.min_epochs,
            "max_epochs": self.max_epochs,
            "eta": self.eta,
            "seed": self.seed,
            "space": space_json,
            "fixed": dict(sorted(fixed_extra.items())),
            "objective_weights": None if self.objective_weights is None else list(self.objective_weights),
            "continue_promoted": self.continue_promoted,
            # Only a country other than the default enters, so that runs from before the setting resume.
            **({} if self.country_iso_code == "DEU" else {"country_iso_code": self.country_iso_code}),
        }


def _check_at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"{name} must be at least {low}, got {value}", fields=(name,))


def search_keys() -> tuple[str, ...]:
    """The keys of a search config file (and of :data:`PRESETS`), in the order of the fields."""
    by_field = {name: key for key, name in CONFIG_KEYS.items()}
    return tuple(by_field.get(f.name, f.name) for f in fields(SearchSettings) if f.name not in _NOT_IN_FILES)


def field_name(key: str) -> str:
    """The :class:`SearchSettings` field of a config-file key (``walltime`` -> ``walltime_s``)."""
    return CONFIG_KEYS.get(key, key)


def search_defaults() -> dict[str, Any]:
    """The default of every setting by config-file key (``None`` where required), from :class:`SearchSettings`."""
    by_field = {name: key for key, name in CONFIG_KEYS.items()}
    defaults: dict[str, Any] = {}
    for f in fields(SearchSettings):
        if f.default is not MISSING:
            value = f.default
        elif f.default_factory is not MISSING:
            value = f.default_factory()
        else:
            value = None
        defaults[by_field.get(f.name, f.name)] = value
    return defaults


def _search_optimizer(key: str, value: Any) -> str:
    """``optimizer`` of a search is the search optimiser; a training optimiser gets a hint."""
    text = coerce_str(key, value)
    if text not in SEARCH_OPTIMIZERS and text in TRAINING_OPTIMIZERS:
        raise ConfigError(
            f"optimizer={text!r} is a training optimiser, but optimizer here is the search "
            f"optimiser ({', '.join(SEARCH_OPTIMIZERS)}); fix the training optimiser with set: {{optimizer: {text}}}"
        )
    return coerce_choice(SEARCH_OPTIMIZERS)(key, value)


def _meter(key: str, value: Any) -> str:
    from greenshift.objectives.meters import METER_NAMES

    return coerce_choice(METER_NAMES)(key, value)


#: How each setting, by config-file key, is read from strings (command line, YAML).
_COERCERS: dict[str, Callable[[str, Any], Any]] = {
    "dataset": coerce_str,
    "backbone": coerce_str,
    "out": coerce_str,
    "data_dir": coerce_str,
    "image_size": coerce_int,
    "split_seed": coerce_int,
    "optimizer": _search_optimizer,
    "objectives": coerce_names,
    "objective_weights": coerce_floats,
    "trials": coerce_int,
    "min_epochs": coerce_int,
    "max_epochs": coerce_int,
    "eta": coerce_int,
    "walltime": coerce_float,
    "max_total_epochs": coerce_int,
    "workers": coerce_int,
    "scheduler": coerce_str,
    "threads_per_trial": coerce_int,
    "seed": coerce_int,
    "device": coerce_str,
    "set": coerce_assignments,
    "range": coerce_assignments,
    "space": coerce_str,
    "continue_promoted": coerce_bool,
    "keep_models": coerce_choice(KEEP_MODELS),
    "trial_timeout": coerce_float,
    "energy_table": coerce_str,
    "meter": _meter,
    "country": coerce_str,
    "force_new": coerce_bool,
    "verbose": coerce_bool,
    "isolate_trials": coerce_bool,
}


def preset_settings(name: str) -> dict[str, Any]:
    """The settings of preset ``name`` (a copy), keyed like a config file."""
    if name not in PRESETS:
        raise ConfigError(
            f"unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}", fields=("preset",)
        )
    return dict(PRESETS[name])


def read_search_file(path: str | Path) -> dict[str, Any]:
    """The settings of a search config file; relative paths in it are relative to its folder."""
    return read_settings_file(path, search_keys(), path_keys=CONFIG_PATH_KEYS)


def resolve_search_settings(
    *,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    check_device: bool = True,
) -> SearchSettings:
    """Merge the sources of a search's settings into validated :class:`SearchSettings`.

    Precedence: ``overrides`` > ``config_file`` > ``preset`` > the defaults of :class:`SearchSettings`.
    ``overrides`` takes config-file keys or field names (``walltime`` or ``walltime_s``); ``None`` means
    "not given". ``dataset``, ``backbone`` and ``out`` must come from one of the sources. The objectives
    are checked, and, without a ``scheduler`` (whose workers run the trials elsewhere), so is ``device``
    on this machine unless ``check_device`` is false.

    Example: ``resolve_search_settings(preset="demo", overrides={"dataset": "digits",
    "backbone": "resnet20", "out": "runs/demo", "max_epochs": 27})``.
    """
    layers: list[tuple[str | None, Mapping[str, Any]]] = []
    if preset is not None:
        layers.append((f"preset {preset}", preset_settings(preset)))
    if config_file is not None:
        layers.append((f"config file {config_file}", read_search_file(config_file)))
    layers.append((None, _override_layer(overrides or {})))
    merged = merge_settings(layers, _COERCERS, search_defaults(), merged_keys=("set", "range"))
    require_settings(merged, ("dataset", "backbone", "out"))

    from greenshift.objectives.evaluate import check_objectives

    merged["objectives"] = tuple(check_objectives(list(merged["objectives"])))
    if check_device and not merged["scheduler"]:
        from greenshift.train import resolve_device

        resolve_device(merged["device"])
    return SearchSettings(**{field_name(key): value for key, value in merged.items()})


def _override_layer(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` by config-file key (field names are accepted too)."""
    by_field = {name: key for key, name in CONFIG_KEYS.items()}
    layer = {by_field.get(str(key), str(key)): value for key, value in overrides.items()}
    unknown = sorted(key for key in layer if key not in _COERCERS)
    if unknown:
        raise ConfigError(f"unknown search setting(s) {', '.join(unknown)}; valid: {', '.join(_COERCERS)}")
    return layer
