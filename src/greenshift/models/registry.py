"""Name -> factory registry of backbones, plus the weight initialisation they share.

A factory takes ``(num_classes, in_channels)`` and returns a freshly initialised ``nn.Module``.
Factories register themselves with :func:`register_model` when their module is imported by
``greenshift.models``; nothing else happens at import time.
"""

from __future__ import annotations

import difflib
import fnmatch
import numbers
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from greenshift.errors import ConfigError, ModelError

ModelFactory = Callable[[int, int], nn.Module]


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one backbone.

    ``tiny`` marks variants that exist only to make tests and smoke runs fast; they are not
    meant to be trained for accuracy.
    """

    name: str
    description: str
    tiny: bool


@dataclass(frozen=True)
class _Entry:
    info: ModelInfo
    factory: ModelFactory


_REGISTRY: dict[str, _Entry] = {}


def register_model(
    name: str, *, description: str, tiny: bool = False
) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator that registers ``factory(num_classes, in_channels) -> nn.Module`` under ``name``.

    The factory is returned unchanged. Registering a name twice raises :class:`ModelError`, so that
    one model cannot silently shadow another.
    """
    if not name or name != name.strip() or name != name.lower():
        raise ModelError(f"model name must be non-empty, lower case and without surrounding spaces: {name!r}")
    if not description.strip():
        raise ModelError(f"model {name!r} needs a description")

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ModelError(f"model {name!r} is already registered")
        _REGISTRY[name] = _Entry(ModelInfo(name=name, description=description, tiny=tiny), factory)
        return factory

    return decorator


def list_models(pattern: str | None = None, *, include_tiny: bool = True) -> list[str]:
    """Sorted names of the registered models, optionally filtered by a shell-style ``pattern``.

    ``include_tiny=False`` hides the test-only variants (e.g. for a user-facing listing).
    """
    names = sorted(name for name, entry in _REGISTRY.items() if include_tiny or not entry.info.tiny)
    if pattern is None:
        return names
    # fnmatchcase: the result must not depend on the operating system's case rules.
    return [name for name in names if fnmatch.fnmatchcase(name, pattern)]


def model_info(name: str) -> ModelInfo:
    """Description and tiny flag of the model registered as ``name``."""
    return _lookup(name).info


def get_model(name: str, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Build a freshly initialised instance of the model registered as ``name``.

    Raises :class:`ModelError` for an unknown name (with the closest names as suggestions) and
    :class:`ConfigError` when ``num_classes`` or ``in_channels`` is not a positive integer.
    """
    entry = _lookup(name)
    _check_positive_int("num_classes", num_classes)
    _check_positive_int("in_channels", in_channels)
    return entry.factory(int(num_classes), int(in_channels))


def initialise_weights(model: nn.Module) -> None:
    """Kaiming-normal convolutions, unit/zero batch norm, small-normal linear layers, zero biases.

    Kaiming with ``fan_out`` keeps activation variance stable through ReLU stacks, which matters
    for the deep plain parts of VGG and the 56-layer ResNet.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.01)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def _lookup(name: str) -> _Entry:
    entry = _REGISTRY.get(name) if isinstance(name, str) else None
    if entry is not None:
        return entry
    available = sorted(_REGISTRY)
    message = f"unknown model {name!r}"
    close = _suggestions(name, available) if isinstance(name, str) else []
    if close:
        quoted = [repr(c) for c in close]
        alternatives = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
        message += f"; did you mean {alternatives}?"
    else:
        message += "."
    message += " Available models: " + ", ".join(available)
    raise ModelError(message)


def _suggestions(name: str, available: list[str], limit: int = 3) -> list[str]:
    query = name.strip().lower()
    # A truncated name ("resnet2") should suggest its completions first; difflib alone ranks
    # "resnet32" and "resnet20" equally and would order them arbitrarily.
    prefixed = [n for n in available if query and n.startswith(query)]
    similar = difflib.get_close_matches(query, available, n=limit, cutoff=0.6)
    return list(dict.fromkeys(prefixed + similar))[:limit]


def _check_positive_int(label: str, value: object) -> None:
    # bool is an int subclass, but `num_classes=True` is surely a mistake.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{label} must be a positive integer, got {value!r}")
