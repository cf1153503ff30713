"""The hyperparameters of one DSNN configuration: frozen, validated, serialisable.

Precedence where several sources set a value: command line (``--set``) > config file > defaults.
The defaults are the *default DSNN configuration* that searches compare against.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
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


def parse_assignments(assignments: Iterable[str]) -> dict[str, Any]:
    """Parse ``["key=value", ...]`` (the CLI's ``--set``) into a dict of raw strings.

    Values stay strings here; :meth:`DSNNConfig.from_dict` or the search space coerces them.
    """
    parsed: dict[str, Any] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        parsed[key] = value
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


def _coerce(name: str, value: Any) -> Any:
    """Turn CLI/YAML strings into the field's type, with a clear error."""
    if name == "shift_depth" and (
        value is None or (isinstance(value, str) and value.lower() in {"all", "none"})
    ):
        return None
    kind = {f.name: f.type for f in fields(DSNNConfig)}[name]
    try:
        if "int" in str(kind) and not isinstance(value, bool):
            as_float = float(value)
            if not as_float.is_integer():
                raise ValueError
            return int(as_float)
        if "float" in str(kind):
            return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
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
