"""Turning float models into DSNNs, and reading the shift weights back out.

The counting convention for ``shift_depth`` is the one of docs/architecture.md: the shiftable layers
are the ``nn.Conv2d`` and ``nn.Linear`` modules (shifted ones included) in ``named_modules()`` order,
and ``shift_depth = k`` converts the last ``k`` of them, the ones nearest the output.
"""

from __future__ import annotations

import math

from torch import nn

from greenshift.errors import ConfigError
from greenshift.shift.layers import ShiftConv2d, ShiftEncoding, ShiftLayer, ShiftLinear, validate_shift_init
from greenshift.shift.quantize import validate_shift_settings

_FLOAT_BITS = 32


def shiftable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every ``nn.Conv2d`` and ``nn.Linear`` of ``model`` (shifted ones included), in module order."""
    return [
        (name, module) for name, module in model.named_modules() if isinstance(module, nn.Conv2d | nn.Linear)
    ]


def count_shiftable_layers(model: nn.Module) -> int:
    """How many shiftable layers ``model`` has: the largest valid ``shift_depth``."""
    return len(shiftable_layers(model))


def _to_shift(module: nn.Module, settings: dict[str, object]) -> nn.Module:
    if isinstance(module, ShiftLayer):
        return module  # already shifted: it keeps its own settings
    if isinstance(module, nn.Conv2d):
        return ShiftConv2d.from_float(module, **settings)  # type: ignore[arg-type]
    return ShiftLinear.from_float(module, **settings)  # type: ignore[arg-type]


def convert_to_shift(
    model: nn.Module,
    shift_depth: int,
    shift_type: str = "Q",
    weight_bits: int = 5,
    rounding: str = "deterministic",
    act_integer_bits: int = 16,
    act_fraction_bits: int = 16,
    convert_all_linear: bool = True,
    init: str = "float",
) -> nn.Module:
    """Replace the last ``shift_depth`` shiftable layers (and, optionally, every linear layer) by shift layers.

    ``init`` says where DeepShift-PS layers start: ``"float"`` from the float weights (converting a
    trained model), ``"scratch"`` from DeepShift-PS's own initialisation (training from scratch,
    :meth:`ShiftLayer.reset_sign_shift`). Q layers always start from the float weights, and biases are
    always copied. ``shift_depth=0`` returns ``model`` unchanged (even with
    ``convert_all_linear``: depth 0 is the float baseline). The model is modified in place and returned;
    if ``model`` itself is a single conv/linear layer, the converted layer is returned instead.
    """
    validate_shift_settings(shift_type, weight_bits, rounding, act_integer_bits, act_fraction_bits)
    validate_shift_init(init)
    if isinstance(shift_depth, bool) or not isinstance(shift_depth, int):
        raise ConfigError(f"shift_depth must be an integer, got {shift_depth!r}")
    if shift_depth < 0:
        raise ConfigError(f"shift_depth={shift_depth} is negative; use 0 for no shift layers")
    layers = shiftable_layers(model)
    if shift_depth > len(layers):
        convs = sum(isinstance(m, nn.Conv2d) for _, m in layers)
        raise ConfigError(
            f"shift_depth={shift_depth} exceeds the {len(layers)} shiftable layers of this model "
            f"({convs} Conv2d, {len(layers) - convs} Linear)"
        )
    if shift_depth == 0:
        return model
    chosen = layers[len(layers) - shift_depth :]
    if convert_all_linear:
        chosen += [(n, m) for n, m in layers[: len(layers) - shift_depth] if isinstance(m, nn.Linear)]
    settings: dict[str, object] = {
        "shift_type": shift_type,
        "weight_bits": weight_bits,
        "rounding": rounding,
        "act_integer_bits": act_integer_bits,
        "act_fraction_bits": act_fraction_bits,
        "init": init,
    }
    # Keyed by identity so that a module registered under several names is replaced everywhere.
    replacement = {id(m): _to_shift(m, settings) for _, m in chosen}
    if id(model) in replacement:
        return replacement[id(model)]
    for parent in model.modules():
        for child_name, child in parent._modules.items():
            if child is not None and id(child) in replacement:
                parent._modules[child_name] = replacement[id(child)]
    return model


def _shift_layers(model: nn.Module) -> list[tuple[str, ShiftLayer]]:
    return [(name, module) for name, module in model.named_modules() if isinstance(module, ShiftLayer)]


def round_shift_weights(model: nn.Module) -> nn.Module:
    """Write the deployed rounded values into every shift layer's parameters, in place.

    Q: ``weight := sign * 2**p``; PS: ``sign := ternary sign``, ``shift := rounded, clamped shift``;
    biases are put on the fixed-point grid. The forward pass is unchanged in eval mode (rounding is
    idempotent), and a saved ``state_dict`` then holds exactly the deployed weights.
    """
    for _, layer in _shift_layers(model):
        layer.round_parameters_()
    return model


def encode_shift_weights(model: nn.Module) -> dict[str, ShiftEncoding]:
    """The integer sign/shift encoding of every shift layer, keyed by module name."""
    return {name: layer.encode() for name, layer in _shift_layers(model)}


def shift_size_bits(model: nn.Module) -> int:
    """Model size in bits: shift weights at ``weight_bits`` each, every other parameter at 32 bits.

    PS layers count their weight once (``sign`` and ``shift`` together are one ``weight_bits`` code).
    Buffers such as batch-norm running statistics are not parameters and are not counted.
    """
    shift_params: set[int] = set()
    total = 0
    for _, layer in _shift_layers(model):
        params = (layer.weight,) if layer.shift_type == "Q" else (layer.sign, layer.shift)
        shift_params.update(id(p) for p in params)
        total += layer.weight_bits * math.prod(layer.weight_shape)
    total += sum(p.numel() * _FLOAT_BITS for p in model.parameters() if id(p) not in shift_params)
    return total
