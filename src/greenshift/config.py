"""The hyperparameters of one DSNN configuration: frozen, validated, serialisable; and settings' plumbing.

Precedence where several sources set a value: command line (``--set``) > config file > defaults.
The defaults are the *default DSNN configuration* that searches compare against.

The search's and training's settings (:mod:`greenshift.search.settings`, :mod:`greenshift.train.settings`)
share the pieces below: ``coerce_*`` turn strings of a command line or YAML file into typed values,
:func:`read_settings_file` reads a config file, :func:`merge_settings` merges sources by precedence. Their
errors name settings as Python spells them and list them in :attr:`ConfigError.fields`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from greenshift.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adadelta", "adagrad", "rmsprop", "radam", "ranger")
OPTIMIZERS_WITH_MOMENTUM = ("sgd", "rmsprop")
SHIFT_TYPES = ("Q", "PS")
ROUNDINGS = ("deterministic", "stochastic")
BATCH_SIZES = (32, 64, 128, 256)

#: The only fields that decide the modelled inference energy (``energy_model_j``); every other field
#: changes how a model is trained, never what it computes per image. Search and report rely on it.
MODELLED_ENERGY_FIELDS = ("shift_depth", "weight_bits", "activation_integer_bits", "activation_fraction_bits")

# Valid ranges of a single configuration (a search space may use narrower ones).
WEIGHT_BITS_RANGE = (2, 8)  # the encoding stores sign and shift as int8
ACTIVATION_INTEGER_BITS_RANGE = (1, 32)
ACTIVATION_FRACTION_BITS_RANGE = (0, 32)


@dataclass(frozen=True)
class DSNNConfig:
    """Every hyperparameter that decides how a DSNN is built and trained.

    ``shift_depth=None`` means "all shiftable layers of the backbone"; it is resolved against
    the backbone when the model is built. Epochs are not here: they are the fidelity and come
    from the caller.
    """

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 128
    test_batch_size: int = 1000
    shift_depth: int | None = None
    shift_type: str = "PS"
    weight_bits: int = 5
    rounding: str = "deterministic"
    activation_integer_bits: int = 16
    activation_fraction_bits: int = 16

    def __post_init__(self) -> None:
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("shift_type", self.shift_type, SHIFT_TYPES)
        _check_choice("rounding", self.rounding, ROUNDINGS)
        _check_positive_float("lr", self.lr)
        _check_float_range("momentum", self.momentum, 0.0, 1.0)
        _check_float_range("weight_decay", self.weight_decay, 0.0, 1.0)
        _check_int_range("batch_size", self.batch_size, 1, 1 << 20)
        _check_int_range("test_batch_size", self.test_batch_size, 1, 1 << 20)
        _check_int_range("weight_bits", self.weight_bits, *WEIGHT_BITS_RANGE)
        _check_int_range(
            "activation_integer_bits", self.activation_integer_bits, *ACTIVATION_INTEGER_BITS_RANGE
        )
        _check_int_range(
            "activation_fraction_bits", self.activation_fraction_bits, *ACTIVATION_FRACTION_BITS_RANGE
        )
        if self.shift_depth is not None:
            _check_int_range("shift_depth", self.shift_depth, 0, 10_000)

    @property
    def uses_momentum(self) -> bool:
        """Whether the chosen optimiser has a momentum hyperparameter."""
        return self.optimizer in OPTIMIZERS_WITH_MOMENTUM

    @property
    def activation_bits(self) -> int:
        """Total fixed-point width of activations (sign included in the integer bits)."""
        return self.activation_integer_bits + self.activation_fraction_bits

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dictionary of all fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DSNNConfig:
        """Build from a mapping; unknown keys and wrongly typed values are a ConfigError."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(
                f"unknown hyperparameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
            )
        return cls(**{k: _coerce(k, v) for k, v in values.items()})

    def replace(self, **changes: Any) -> DSNNConfig:
        """Copy with some fields changed (validated like the constructor)."""
        return DSNNConfig.from_dict({**self.to_dict(), **changes})


def config_from_values(values: Mapping[str, Any], fixed_extra: Mapping[str, Any] | None = None) -> DSNNConfig:
    """Turn a sampled or stored configuration (inactive hyperparameters absent) into a :class:`DSNNConfig`.

    ``fixed_extra`` holds the values every trial of a run shares (``--set``); NumPy scalars become plain
    Python values.
    """
    merged = {k: (v.item() if hasattr(v, "item") else v) for k, v in values.items()}
    merged.update(fixed_extra or {})
    return DSNNConfig.from_dict(merged)


def parse_assignments(
    assignments: Mapping[str, Any] | Iterable[str] | str, *, key: str = "set"
) -> dict[str, Any]:
    """Parse ``["key=value", ...]`` (the CLI's ``--set``), one such string or a mapping into a dict.

    Values of strings stay strings; :meth:`DSNNConfig.from_dict` or the search space coerces them.
    ``key`` is the setting being parsed (``set``, ``range``), named in errors.
    """
    if isinstance(assignments, Mapping):
        return {str(k): v for k, v in assignments.items()}
    items = [assignments] if isinstance(assignments, str) else assignments
    if not isinstance(items, (list, tuple)):
        raise ConfigError(
            f"{key} must be a mapping or a list of key=value, got {assignments!r}", fields=(key,)
        )
    parsed: dict[str, Any] = {}
    for item in items:
        name, sep, value = str(item).partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise ConfigError(f"{key} expects key=value, got {item!r}", fields=(key,))
        parsed[name] = value
    return parsed


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON mapping of settings from ``path``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML/JSON: {exc}".splitlines()[0]) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of key: value, not {type(loaded).__name__}"
        )
    return loaded


def read_settings_file(
    path: str | Path,
    allowed: Sequence[str],
    *,
    extra_ok: Sequence[str] = (),
    path_keys: Sequence[str] = (),
) -> dict[str, Any]:
    """The settings of a YAML/JSON config file whose keys must lie in ``allowed`` or ``extra_ok``.

    Values of ``path_keys`` name input files or folders: a relative one is taken relative to the
    file's folder, so that the file works from any current directory.
    """
    values = dict(load_config_file(path))
    for key in path_keys:
        value = values.get(key)
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            values[key] = str(Path(path).parent / value)
    unknown = sorted(str(k) for k in values if k not in allowed and k not in extra_ok)
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join([*allowed, *extra_ok])}"
        )
    return values


def merge_settings(
    layers: Sequence[tuple[str | None, Mapping[str, Any]]],
    coercers: Mapping[str, Callable[[str, Any], Any]],
    defaults: Mapping[str, Any],
    *,
    merged_keys: Sequence[str] = (),
) -> dict[str, Any]:
    """Merge ``(origin, values)`` layers over ``defaults``, lowest precedence first.

    Each value is coerced by ``coercers[key]``; ``None`` means "not given" and is skipped. The mappings
    of ``merged_keys`` (``set``, ``range``) merge key by key. An error from a layer with an origin (a
    config file, a preset) is prefixed with it and names the key as the layer spells it; an error from a
    layer without one (the caller's own arguments) keeps ``fields`` so that a front end can rename them.
    """
    merged = {key: dict(value) if key in merged_keys else value for key, value in defaults.items()}
    for origin, values in layers:
        for key, value in values.items():
            if value is None:
                continue
            try:
                converted = coercers[key](key, value)
            except ConfigError as exc:
                if origin is None:
                    raise
                raise ConfigError(f"{origin}: {exc}") from None
            merged[key] = {**merged[key], **converted} if key in merged_keys else converted
    return merged


def require_settings(settings: Mapping[str, Any], keys: Sequence[str]) -> None:
    """A ConfigError naming the first of ``keys`` that ``settings`` leaves empty."""
    for key in keys:
        if settings.get(key) in (None, ""):
            raise ConfigError(f"{key} is required (as an argument or in the config file)", fields=(key,))


# Coercion of settings given as strings (command line, YAML) into their types, with errors naming the key.
def coerce_int(key: str, value: Any) -> int:
    """An integer from ``3``, ``3.0`` or ``"3"``; booleans and fractions are errors."""
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
        if not number.is_integer():
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be an integer, got {value!r}", fields=(key,)) from None
    return int(number)


def coerce_float(key: str, value: Any, *, finite: bool = True) -> float:
    """A number; with ``finite`` (the default) infinities and NaN are errors."""
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a number, got {value!r}", fields=(key,)) from None
    if finite and not math.isfinite(number):
        raise ConfigError(f"{key} must be a finite number, got {value!r}", fields=(key,))
    return number


def coerce_bool(key: str, value: Any) -> bool:
    """``True``/``False`` or one of true/yes/on/1, false/no/off/0."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "yes", "on", "1"}:
        return True
    if text in {"false", "no", "off", "0"}:
        return False
    raise ConfigError(f"{key} must be true or false, got {value!r}", fields=(key,))


def coerce_str(key: str, value: Any) -> str:
    """A single value as a string (not a list or mapping)."""
    if isinstance(value, (Mapping, list, tuple)) or value is None:
        raise ConfigError(f"{key} must be a single value, got {value!r}", fields=(key,))
    return str(value)


def coerce_names(key: str, value: Any) -> tuple[str, ...]:
    """A list, or a comma-separated string, of names."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigError(f"{key} must be a comma-separated list, got {value!r}", fields=(key,))
    return tuple(str(item).strip() for item in items if str(item).strip())


def coerce_floats(key: str, value: Any) -> tuple[float, ...]:
    """A list, or a comma-separated string, of finite numbers."""
    return tuple(coerce_float(key, item) for item in coerce_names(key, value))


def coerce_choice(choices: Sequence[str]) -> Callable[[str, Any], str]:
    """A coercion to one of ``choices``."""

    def convert(key: str, value: Any) -> str:
        text = coerce_str(key, value)
        if text not in choices:
            raise ConfigError(f"{key}={text!r} is not one of {', '.join(choices)}", fields=(key,))
        return text

    return convert


def coerce_assignments(key: str, value: Any) -> dict[str, Any]:
    """``set``/``range``: a mapping, or ``key=value`` strings (the command line's form)."""
    return parse_assignments(value, key=key)


def _coerce(name: str, value: Any) -> Any:
    """Turn CLI/YAML strings into the field's type, with a clear error."""
    if name == "shift_depth" and (
        value is None or (isinstance(value, str) and value.lower() in {"all", "none"})
    ):
        return None
    kind = str({f.name: f.type for f in fields(DSNNConfig)}[name])
    if "int" in kind:
        return coerce_int(name, value)
    if "float" in kind:
        # Infinities pass here: the field's range check names the allowed range.
        return coerce_float(name, value, finite=False)
    return str(value)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(choices)}")


def _check_int_range(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name}={value!r} is out of range: expected an integer in [{low}, {high}]")


def _check_float_range(name: str, value: float, low: float, high: float) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(f"{name}={value!r} is out of range: expected a number in [{low}, {high}]")


def _check_positive_float(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}={value!r} must be a positive number")
