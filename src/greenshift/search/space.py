"""The search space over DSNN hyperparameters, as a ConfigSpace space built for one backbone.

Defaults are the *default DSNN configuration* that every search evaluates as its baseline. Users can
fix values (``--set shift_type=Q``), narrow ranges (``--range lr=0.01:0.1``) or bring their own
space file (ConfigSpace's serialised JSON/YAML or its plain ``name: range-or-choices`` form); epochs
are the fidelity and never a hyperparameter.

The baseline is :func:`baseline_configuration`: the default DSNN configuration with the ``--set`` values
(they change every trial, so they change the baseline too). ``--range`` and a space file only change
what is searched, never the baseline, which may therefore lie outside the searched space
(:func:`outside_space` says where).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from ConfigSpace import (
    Categorical,
    ConfigurationSpace,
    Constant,
    Float,
    InCondition,
    Integer,
    OrdinalHyperparameter,
)
from ConfigSpace.hyperparameters import (
    CategoricalHyperparameter,
    Hyperparameter,
    NumericalHyperparameter,
    UniformIntegerHyperparameter,
)

from greenshift.config import (
    BATCH_SIZES,
    OPTIMIZERS,
    OPTIMIZERS_WITH_MOMENTUM,
    ROUNDINGS,
    SHIFT_TYPES,
    DSNNConfig,
    config_from_values,
)
from greenshift.errors import ConfigError

#: Hyperparameters that a search may vary (all other DSNNConfig fields can only be fixed).
SEARCHABLE = (
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "batch_size",
    "weight_bits",
    "activation_integer_bits",
    "activation_fraction_bits",
    "shift_depth",
    "shift_type",
    "rounding",
)
_CONFIG_FIELDS = {f.name for f in fields(DSNNConfig)}


def default_space(shiftable_layers: int, *, seed: int = 0) -> ConfigurationSpace:
    """The search space of the seeds for a backbone with ``shiftable_layers`` Conv2d/Linear layers.

    ``shift_depth`` runs from 1 to the number of shiftable layers (default: all of them);
    ``momentum`` is active only for the optimisers that have one.
    """
    if shiftable_layers < 1:
        raise ConfigError(f"the backbone has {shiftable_layers} shiftable layers; at least 1 is needed")
    space = ConfigurationSpace(seed=seed)
    optimizer = Categorical("optimizer", OPTIMIZERS, default="sgd")
    momentum = Float("momentum", (0.0, 0.9), default=0.9)
    space.add(
        [
            optimizer,
            Float("lr", (0.001, 0.2), default=0.1, log=True),
            momentum,
            Float("weight_decay", (1e-6, 1e-2), default=1e-4, log=True),
            OrdinalHyperparameter("batch_size", list(BATCH_SIZES), default_value=128),
            Integer("weight_bits", (2, 5), default=5),
            Integer("activation_integer_bits", (4, 32), default=16),
            Integer("activation_fraction_bits", (4, 32), default=16),
            Integer("shift_depth", (1, shiftable_layers), default=shiftable_layers),
            Categorical("shift_type", SHIFT_TYPES, default="PS"),
            Categorical("rounding", ROUNDINGS, default="deterministic"),
        ]
    )
    space.add(InCondition(momentum, optimizer, list(OPTIMIZERS_WITH_MOMENTUM)))
    return space


def build_space(
    shiftable_layers: int,
    *,
    fixed: Mapping[str, Any] | None = None,
    ranges: Mapping[str, Any] | None = None,
    space_file: str | Path | None = None,
    seed: int = 0,
) -> tuple[ConfigurationSpace, dict[str, Any]]:
    """Build the space to search and the settings fixed outside it.

    Returns ``(space, fixed_extra)``: ``fixed_extra`` holds values for DSNNConfig fields that are not
    hyperparameters of the space (e.g. ``test_batch_size``); they are applied to every trial.
    ``ranges`` maps a name to ``(low, high)`` for numbers or a list of choices for categories.
    """
    if space_file is not None:
        space = load_space_file(space_file, seed=seed)
    else:
        space = default_space(shiftable_layers, seed=seed)
    fixed = dict(fixed or {})
    ranges = dict(ranges or {})
    overlap = sorted(set(fixed) & set(ranges))
    if overlap:
        raise ConfigError(f"{', '.join(overlap)} cannot be both fixed (--set) and given a range (--range)")
    for name in [*fixed, *ranges]:
        if name not in _CONFIG_FIELDS:
            raise ConfigError(f"unknown hyperparameter {name!r}; valid: {', '.join(sorted(_CONFIG_FIELDS))}")
    if "shift_depth" in space and "shift_depth" not in fixed:
        _check_depth_bound(space["shift_depth"], shiftable_layers)
    _check_fixed_depth(fixed, shiftable_layers)

    fixed_extra: dict[str, Any] = {}
    replacements: dict[str, Hyperparameter] = {}
    for name, value in fixed.items():
        if name not in space:
            fixed_extra[name] = value
            continue
        replacements[name] = Constant(name, _coerce_value(space[name], value))
    for name, bounds in ranges.items():
        if name not in space:
            raise ConfigError(f"--range {name}: {name} is not a hyperparameter of the search space")
        replacements[name] = _narrowed(space[name], bounds, shiftable_layers)
    if replacements:
        space = _replace_hyperparameters(space, replacements, seed=seed)
    # Validate that the fixed extras form a valid configuration together with the space's default.
    config_from_values(dict(space.get_default_configuration()), fixed_extra)
    return space, fixed_extra


def baseline_configuration(
    shiftable_layers: int, *, fixed: Mapping[str, Any] | None = None, seed: int = 0
) -> Any:
    """The default DSNN configuration with the ``fixed`` values: the baseline every search evaluates.

    A ConfigSpace ``Configuration`` of the default space with ``fixed`` applied; ``--range`` and space
    files do not enter, so narrowing the search never moves the baseline.
    """
    space, _ = build_space(shiftable_layers, fixed=fixed, seed=seed)
    return space.get_default_configuration()


def outside_space(space: ConfigurationSpace, values: Mapping[str, Any]) -> dict[str, str]:
    """The ``values`` the searched ``space`` cannot produce, each with what the space allows instead.

    Hyperparameters the space does not hold are left out (trials take their default values for them).
    """
    outside: dict[str, str] = {}
    for name, value in values.items():
        if name not in space:
            continue
        hp = space[name]
        if isinstance(hp, Constant):
            if value != hp.value:
                outside[name] = f"fixed at {hp.value}"
        elif isinstance(hp, (CategoricalHyperparameter, OrdinalHyperparameter)):
            if value not in _choices(hp):
                outside[name] = "one of " + ", ".join(str(c) for c in _choices(hp))
        elif isinstance(hp, NumericalHyperparameter) and not hp.lower <= value <= hp.upper:
            outside[name] = f"in [{hp.lower:g}, {hp.upper:g}]"
    return outside


def load_space_file(path: str | Path, *, seed: int = 0) -> ConfigurationSpace:
    """Read a search space from JSON or YAML; every hyperparameter must be a DSNNConfig field.

    Two forms are accepted (docs/search.md shows both): ConfigSpace's serialised space (a mapping with
    ``hyperparameters``, as ``ConfigurationSpace.to_json``/``to_yaml`` write it), and the plain form
    ConfigSpace's constructor takes, one entry per hyperparameter (:func:`space_from_plain`). A space
    without hyperparameters is an error: every trial would train the same configuration.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search space file {path} does not exist")
    try:
        import yaml

        raw = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
        if isinstance(raw, Mapping) and "hyperparameters" not in raw:
            space = space_from_plain(raw, seed=seed, origin=f"search space file {path}")
        elif path.suffix.lower() in {".yaml", ".yml"}:
            space = ConfigurationSpace.from_yaml(path)
        else:
            space = ConfigurationSpace.from_json(path)
    except ConfigError:
        raise
    except (ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"search space file {path} is not a valid ConfigSpace JSON/YAML space: {reason}"
        ) from None
    except Exception as exc:  # yaml errors and ConfigSpace's own error types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"search space file {path} could not be read: {reason}") from None
    if len(space) == 0:
        raise ConfigError(
            f"search space file {path} defines no hyperparameters; write e.g. 'lr: [0.001, 0.1]' and "
            "'optimizer: [sgd, adam]', one line per hyperparameter (see docs/search.md)"
        )
    unknown = sorted(set(space.keys()) - _CONFIG_FIELDS)
    if unknown:
        raise ConfigError(
            f"search space file {path} has unknown hyperparameter(s) {', '.join(unknown)}; "
            f"valid: {', '.join(sorted(_CONFIG_FIELDS))}"
        )
    space.seed(seed)
    # Every value the space can produce must be a valid DSNNConfig: check the default and the bounds.
    for name in space:
        hp = space[name]
        if isinstance(hp, NumericalHyperparameter):
            for bound in (hp.lower, hp.upper):
                _validate_single(name, bound, path)
        elif isinstance(hp, (CategoricalHyperparameter, OrdinalHyperparameter)):
            for choice in _choices(hp):
                _validate_single(name, choice, path)
    return space


def space_from_plain(
    entries: Mapping[str, Any], *, seed: int = 0, origin: str = "search space"
) -> ConfigurationSpace:
    """A space from the plain form, one ``name: value`` entry per hyperparameter.

    JSON and YAML have no tuples, so the form differs from ConfigSpace's Python dictionary form in one
    place: a list of two numbers is a range (integers if both are whole numbers), as ``(low, high)`` is
    in Python. Otherwise a list is a set of choices, a single value a constant, and a mapping gives the
    details: ``{low: 0.001, high: 0.1, log: true, default: 0.01}`` or
    ``{choices: [sgd, adam], default: sgd}``.
    """
    hyperparameters: list[Hyperparameter] = []
    for name, entry in entries.items():
        name = str(name)
        try:
            hyperparameters.append(_plain_hyperparameter(name, entry))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{origin}: {name}: {str(exc).splitlines()[0]}") from None
    space = ConfigurationSpace(seed=seed)
    space.add(hyperparameters)
    if "momentum" in space and "optimizer" in space and not isinstance(space["optimizer"], Constant):
        with_momentum = [o for o in _choices(space["optimizer"]) if o in OPTIMIZERS_WITH_MOMENTUM]
        if with_momentum:
            space.add(InCondition(space["momentum"], space["optimizer"], with_momentum))
    return space


def _plain_hyperparameter(name: str, entry: Any) -> Hyperparameter:
    """One hyperparameter of the plain form (see :func:`space_from_plain`)."""
    details: dict[str, Any] = dict(entry) if isinstance(entry, Mapping) else {}
    if isinstance(entry, Mapping):
        unknown = sorted(set(details) - {"low", "high", "log", "default", "choices"})
        if unknown:
            raise ValueError(
                f"unknown key(s) {', '.join(unknown)}; use low/high/log/default or choices/default"
            )
        if "choices" in details:
            entry = list(details["choices"])
        elif "low" in details and "high" in details:
            entry = (details["low"], details["high"])
        else:
            raise ValueError("a mapping needs low and high, or choices")
    # ConfigSpace picks a default (the middle of a range, the first choice) where none is given.
    default: dict[str, Any] = {"default": details["default"]} if details.get("default") is not None else {}
    if isinstance(entry, (list, tuple)):
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in entry)
        if len(entry) == 2 and numbers and "choices" not in details:
            low, high = entry
            log = bool(details.get("log", False))
            if (
                float(low).is_integer()
                and float(high).is_integer()
                and not any(isinstance(v, float) for v in entry)
            ):
                return Integer(name, (int(low), int(high)), log=log, **default)
            return Float(name, (float(low), float(high)), log=log, **default)
        if not entry:
            raise ValueError("give at least one choice")
        if numbers and name == "batch_size":
            ordered = sorted(entry)
            return OrdinalHyperparameter(name, ordered, default_value=default.get("default", ordered[0]))
        return Categorical(name, list(entry), **default)
    if entry is None:
        raise ValueError("no value given")
    return Constant(name, entry)


def space_to_json(space: ConfigurationSpace) -> str:
    """Canonical JSON of a space: stored with a run so a resumed run can prove it searches the same space."""
    return json.dumps(space.to_serialized_dict(), sort_keys=True)


def _validate_single(name: str, value: Any, path: Path) -> None:
    try:
        DSNNConfig.from_dict({name: _plain(value)})
    except ConfigError as exc:
        raise ConfigError(f"search space file {path}: {exc}") from None


def _check_fixed_depth(fixed: Mapping[str, Any], shiftable_layers: int) -> None:
    """A fixed ``shift_depth`` must fit the backbone: checked before any trial, as ``train`` does."""
    if fixed.get("shift_depth") is None:
        return
    depth = DSNNConfig.from_dict({"shift_depth": fixed["shift_depth"]}).shift_depth
    if depth is not None and depth > shiftable_layers:
        raise ConfigError(
            f"shift_depth={depth} exceeds the {shiftable_layers} shiftable layers of the backbone"
        )


def _check_depth_bound(hp: Hyperparameter, shiftable_layers: int) -> None:
    upper = getattr(hp, "upper", None)
    if upper is None and isinstance(hp, (CategoricalHyperparameter, OrdinalHyperparameter)):
        upper = max(int(v) for v in _choices(hp))
    if upper is not None and upper > shiftable_layers:
        raise ConfigError(
            f"shift_depth can reach {int(upper)} in the search space, but the backbone has only "
            f"{shiftable_layers} shiftable layers"
        )


def _choices(hp: Hyperparameter) -> Sequence[Any]:
    return list(hp.choices if isinstance(hp, CategoricalHyperparameter) else hp.sequence)


def _coerce_value(hp: Hyperparameter, value: Any) -> Any:
    """Coerce a CLI string to the hyperparameter's type, checked by DSNNConfig's own validation."""
    config = DSNNConfig.from_dict({hp.name: value})
    coerced = getattr(config, hp.name)
    if isinstance(hp, (CategoricalHyperparameter, OrdinalHyperparameter)) and coerced not in _choices(hp):
        allowed = ", ".join(str(c) for c in _choices(hp))
        raise ConfigError(f"{hp.name}={value} is not one of the searchable values {allowed}")
    return coerced


def _narrowed(hp: Hyperparameter, bounds: Any, shiftable_layers: int) -> Hyperparameter:
    """A copy of ``hp`` restricted to ``bounds``; the default moves inside the new range if needed."""
    if isinstance(hp, (CategoricalHyperparameter, OrdinalHyperparameter)):
        values = bounds.split(",") if isinstance(bounds, str) else list(bounds)
        choices = [_coerce_value(hp, v) for v in values]
        if not choices:
            raise ConfigError(f"--range {hp.name}: give at least one choice")
        default = hp.default_value if hp.default_value in choices else choices[0]
        if isinstance(hp, OrdinalHyperparameter):
            return OrdinalHyperparameter(hp.name, sorted(choices), default_value=default)
        return Categorical(hp.name, choices, default=default)
    if isinstance(bounds, str):
        low_text, sep, high_text = bounds.partition(":")
        if not sep:
            raise ConfigError(f"--range {hp.name} expects LOW:HIGH, got {bounds!r}")
        bounds = (low_text, high_text)
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ConfigError(f"--range {hp.name} expects two numbers LOW:HIGH, got {bounds!r}") from None
    if not hp.lower <= low < high <= hp.upper:
        raise ConfigError(
            f"--range {hp.name}={low:g}:{high:g} must be a non-empty range inside [{hp.lower:g}, {hp.upper:g}]"
        )
    default = min(max(hp.default_value, low), high)
    log = bool(getattr(hp, "log", False))
    if isinstance(hp, UniformIntegerHyperparameter):
        if not (low.is_integer() and high.is_integer()):
            raise ConfigError(f"--range {hp.name} needs whole numbers, got {low:g}:{high:g}")
        return Integer(hp.name, (int(low), int(high)), default=int(default), log=log)
    return Float(hp.name, (low, high), default=default, log=log)


def _replace_hyperparameters(
    space: ConfigurationSpace, replacements: Mapping[str, Hyperparameter], *, seed: int
) -> ConfigurationSpace:
    """Rebuild ``space`` with some hyperparameters replaced; conditions on constants are dropped."""
    rebuilt = ConfigurationSpace(seed=seed)
    rebuilt.add([replacements.get(name, space[name]) for name in space])
    for condition in space.conditions:
        parent_name = condition.parent.name
        child_name = condition.child.name
        if isinstance(rebuilt[child_name], Constant):
            continue
        parent = rebuilt[parent_name]
        if isinstance(parent, Constant):
            # A fixed parent decides the condition once: keep the child only if it is active.
            if parent.value not in getattr(condition, "values", [getattr(condition, "value", None)]):
                rebuilt = _without(rebuilt, child_name, seed=seed)
            continue
        allowed = [v for v in condition.values if v in _choices(parent)]
        if not allowed:
            rebuilt = _without(rebuilt, child_name, seed=seed)
            continue
        rebuilt.add(InCondition(rebuilt[child_name], parent, allowed))
    return rebuilt


def _without(space: ConfigurationSpace, name: str, *, seed: int) -> ConfigurationSpace:
    smaller = ConfigurationSpace(seed=seed)
    smaller.add([space[n] for n in space if n != name])
    for condition in space.conditions:
        if name not in (condition.parent.name, condition.child.name):
            smaller.add(condition)
    return smaller


def _plain(value: Any) -> Any:
    """numpy scalars from ConfigSpace -> plain Python values."""
    return value.item() if hasattr(value, "item") else value
