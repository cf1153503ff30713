"""Quantisation maths of Deep Shift Neural Networks, as small pure functions plus STE wrappers.

A shift weight is ``sign * 2**p`` with an integer exponent ``p`` in ``[p_min, 0]`` (see
:func:`shift_range`). Activations and biases are signed fixed-point numbers.

Rounding schemes
----------------
*Exponents* (one implementation, :func:`round_exponent`, used for DeepShift-Q and -PS, conv and linear):

- deterministic: ``p = round(clamp(e, p_min, p_max))`` with round-half-to-even, where ``e`` is
  ``log2|w|`` (Q) or the trainable shift (PS). Rounding happens in the exponent, so the threshold
  between ``2**k`` and ``2**(k+1)`` is their geometric mean.
- stochastic: with ``c = clamp(e, p_min, p_max)`` and ``k = floor(c)``, ``p = k + 1`` with probability
  ``2**(c - k) - 1`` and ``p = k`` otherwise. Then ``E[2**p] = 2**k * (1 + 2**(c-k) - 1) = 2**c``: the
  rounded magnitude is unbiased with respect to the clamped magnitude (not merely the exponent).

*Signs*: Q keeps the binary sign of the float weight (``torch.sign``, so only an exact 0 stays 0);
PS rounds its trainable sign to the ternary ``{-1, 0, +1}`` by ``round(clamp(s, -1, 1))`` (half-to-even,
so ``|s| <= 0.5`` gives 0). Sign rounding is always deterministic.

*Fixed point* with ``integer_bits`` (sign included) and ``fraction_bits``: grid step ``2**-fraction_bits``,
range ``[-2**(integer_bits-1), 2**(integer_bits-1) - 2**-fraction_bits]``, round to the nearest grid point
(half-to-even), saturate at the ends. NaN stays NaN (a diverged run must stay visible). When the top of
the range is not representable in the tensor's dtype (float32 and ``integer_bits + fraction_bits > 25``)
the largest representable grid value below it is used, so results always lie on the grid and in range.

Gradients (straight-through estimators)
---------------------------------------
- :func:`ste_power_of_two` (Q): the gradient w.r.t. the float weight is the gradient w.r.t. the
  rounded weight.
- :func:`ste_sign_shift` (PS): ``d/dshift = d/dweight * weight * ln 2`` and ``d/dsign = d/dweight``,
  with ``weight`` the rounded ``sign * 2**p``.
- :func:`ste_fixed_point`: the gradient passes through unchanged (rounding and saturation alike).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

from greenshift.config import (
    ACTIVATION_FRACTION_BITS_RANGE,
    ACTIVATION_INTEGER_BITS_RANGE,
    ROUNDINGS,
    SHIFT_TYPES,
    WEIGHT_BITS_RANGE,
)
from greenshift.errors import ConfigError

_LN2 = math.log(2.0)


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name}={value!r} is out of range: expected an integer in [{low}, {high}]")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(choices)}")


def validate_shift_settings(
    shift_type: str, weight_bits: int, rounding: str, act_integer_bits: int, act_fraction_bits: int
) -> None:
    """Raise :class:`ConfigError` unless every setting of a shift layer is valid."""
    _check_choice("shift_type", shift_type, SHIFT_TYPES)
    _check_int("weight_bits", weight_bits, *WEIGHT_BITS_RANGE)
    _check_choice("rounding", rounding, ROUNDINGS)
    _check_int("act_integer_bits", act_integer_bits, *ACTIVATION_INTEGER_BITS_RANGE)
    _check_int("act_fraction_bits", act_fraction_bits, *ACTIVATION_FRACTION_BITS_RANGE)


@lru_cache(maxsize=64)
def shift_range(weight_bits: int, shift_type: str) -> tuple[int, int]:
    """The allowed exponents ``(p_min, p_max)`` of a shift weight with ``weight_bits`` bits.

    ``p_max`` is 0. DeepShift-Q spends one bit on a binary sign, leaving ``2**(weight_bits-1) - 1``
    negative exponents; DeepShift-PS needs one more code for its ternary sign's zero.
    """
    _check_choice("shift_type", shift_type, SHIFT_TYPES)
    _check_int("weight_bits", weight_bits, *WEIGHT_BITS_RANGE)
    levels = 2 ** (weight_bits - 1)
    p_min = -(levels - 1) if shift_type == "Q" else -(levels - 2)
    return p_min, 0


def fixed_point_range(integer_bits: int, fraction_bits: int) -> tuple[float, float]:
    """The exact ``(lowest, highest)`` value of the signed fixed-point format."""
    _check_int("act_integer_bits", integer_bits, *ACTIVATION_INTEGER_BITS_RANGE)
    _check_int("act_fraction_bits", fraction_bits, *ACTIVATION_FRACTION_BITS_RANGE)
    top = 2.0 ** (integer_bits - 1)
    return -top, top - 2.0**-fraction_bits


def round_exponent(
    exponent: Tensor,
    p_min: int,
    p_max: int,
    stochastic: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Round real exponents to integers in ``[p_min, p_max]`` (float tensor of integral values).

    The single rounding routine of all shift layers; see the module docstring for both schemes.
    ``-inf`` (the exponent of a zero weight) clamps to ``p_min``.
    """
    clamped = exponent.clamp(p_min, p_max)
    if not stochastic:
        return clamped.round_()
    low = torch.floor(clamped)
    # Probability 2**frac - 1 of rounding up makes E[2**p] equal 2**clamped exactly.
    p_up = torch.exp2(clamped - low).sub_(1.0)
    draw = torch.rand(clamped.shape, generator=generator, dtype=clamped.dtype, device=clamped.device)
    return low.add_((draw < p_up).to(clamped.dtype))


def power_of_two_exponent(
    weight: Tensor,
    p_min: int,
    p_max: int,
    stochastic: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The rounded, clamped ``log2|w|`` of DeepShift-Q (``p_min`` for zero weights)."""
    return round_exponent(torch.log2(weight.abs()), p_min, p_max, stochastic, generator)


def round_power_of_two(
    weight: Tensor,
    p_min: int,
    p_max: int,
    stochastic: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """DeepShift-Q rounding: ``sign(w) * 2**p`` with ``p`` the rounded, clamped ``log2|w|``."""
    p = power_of_two_exponent(weight, p_min, p_max, stochastic, generator)
    return torch.exp2(p).mul_(torch.sign(weight))


def clamp_magnitude(weight: Tensor, low: float, high: float) -> Tensor:
    """``sign(w) * clamp(|w|, low, high)``: magnitudes into ``[low, high]``, signs kept, zeros stay 0.

    DeepShift-Q projects its float weights onto the representable magnitudes ``[2**p_min, 2**p_max]``
    before every training step. Without it a small weight rounds to ``±2**p_min`` while its stored
    value sits near 0, so every tiny update can flip the sign of a weight of size ``2**p_min``; a weight
    beyond ``2**p_max`` drifts where rounding no longer follows it.
    """
    return weight.abs().clamp_(low, high).mul_(torch.sign(weight))


def round_ternary(sign: Tensor) -> Tensor:
    """Round a real-valued sign to ``{-1, 0, +1}``: ``round(clamp(s, -1, 1))``, half-to-even."""
    return sign.clamp(-1.0, 1.0).round_()


def round_sign_shift(
    sign: Tensor,
    shift: Tensor,
    p_min: int,
    p_max: int,
    stochastic: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """DeepShift-PS rounding: ``round_ternary(sign) * 2**round_exponent(shift)``."""
    p = round_exponent(shift, p_min, p_max, stochastic, generator)
    return torch.exp2(p).mul_(round_ternary(sign))


@lru_cache(maxsize=16)
def _significand_digits(dtype: torch.dtype) -> int:
    """Significand bits of a floating dtype, implicit leading one included (24 for float32)."""
    return 1 - math.frexp(torch.finfo(dtype).eps)[1] + 1


@lru_cache(maxsize=256)
def _max_representable_integer(exponent: int, dtype: torch.dtype) -> float:
    """Largest value of ``dtype`` that is an integer no greater than ``2**exponent - 1``."""
    digits = _significand_digits(dtype)
    if exponent <= digits:
        return float(2**exponent - 1)
    return float(2**exponent - 2 ** (exponent - digits))


# Below this many elements the range check of the two-operation path costs more than it saves.
_TWO_OP_MIN_NUMEL = 4096
# The two-operation path needs |x| < 2**(digits - 2 - fraction_bits); below 16 few activations fit.
_TWO_OP_MIN_LIMIT_EXPONENT = 4


def _round_fixed_point_scaled(
    x: Tensor, integer_bits: int, fraction_bits: int, out: Tensor | None = None
) -> Tensor:
    """General path: scale by ``2**f``, round to an integer, saturate, scale back (all exact)."""
    exponent = integer_bits - 1 + fraction_bits
    low, high = -(2.0**exponent), _max_representable_integer(exponent, x.dtype)
    out = torch.mul(x, 2.0**fraction_bits, out=out) if out is not None else x.mul(2.0**fraction_bits)
    out.round_().clamp_(low, high)
    return out.mul_(2.0**-fraction_bits) if fraction_bits else out


def _round_fixed_point_two_op(x: Tensor, fraction_bits: int, out: Tensor | None = None) -> Tensor:
    """Exact only for ``|x| < 2**(digits - 2 - fraction_bits)`` and ``x`` inside the fixed-point range.

    ``c = 1.5 * 2**(digits - 1 - f)`` has unit in the last place ``2**-f`` and ``x + c`` stays in c's
    binade, so the addition itself rounds ``x`` to the grid (to nearest, ties to an even multiple of
    ``2**-f`` because ``c / 2**-f`` is even); subtracting ``c`` again is exact.
    """
    c = 1.5 * 2.0 ** (_significand_digits(x.dtype) - 1 - fraction_bits)
    out = torch.add(x, c, out=out) if out is not None else x.add(c)
    return out.sub_(c)


def _two_op_applies(x: Tensor, integer_bits: int, fraction_bits: int) -> bool:
    """Whether :func:`_round_fixed_point_two_op` is exact for ``x`` and worth its min/max check."""
    limit_exponent = _significand_digits(x.dtype) - 2 - fraction_bits
    if (
        x.device.type != "cpu"  # the check reads two values back: a device sync elsewhere
        or x.numel() < _TWO_OP_MIN_NUMEL
        or limit_exponent < _TWO_OP_MIN_LIMIT_EXPONENT
        or x.dtype not in (torch.float32, torch.float64)
    ):
        return False
    limit = min(2.0**limit_exponent, 2.0 ** (integer_bits - 1) - 2.0**-fraction_bits)
    low, high = torch.aminmax(x)
    return -limit < low.item() and high.item() < limit  # False for NaN


def _round_fixed_point_by(
    x: Tensor, integer_bits: int, fraction_bits: int, two_op: bool, out: Tensor | None = None
) -> Tensor:
    """Round on the path chosen by :func:`_two_op_applies` (known again when ``x`` is recomputed)."""
    if two_op:
        return _round_fixed_point_two_op(x, fraction_bits, out)
    return _round_fixed_point_scaled(x, integer_bits, fraction_bits, out)


def round_fixed_point(x: Tensor, integer_bits: int, fraction_bits: int, out: Tensor | None = None) -> Tensor:
    """Round ``x`` to the signed fixed-point grid (nearest, half-to-even) and saturate; no autograd.

    ``out``, if given, is a contiguous tensor of ``x``'s shape and dtype that receives the result
    (it must not overlap ``x``). Scaling by ``2**fraction_bits`` is exact in floating point, so
    rounding the scaled value to an integer is exactly rounding to the grid. Large CPU tensors whose
    values are all small enough take an equally exact path of two elementwise operations (after a
    min/max check), cheaper than the four of the general path; ``torch.fake_quantize_per_tensor_affine``
    was slower than both here, cannot take more than 32 bits and maps NaN to the lowest value. The
    two paths may differ only in the sign of a zero.
    """
    two_op = _two_op_applies(x, integer_bits, fraction_bits)
    return _round_fixed_point_by(x, integer_bits, fraction_bits, two_op, out)


# Weights are small: ATen would split an elementwise op over threads from 32768 elements on, and on a
# busy machine each such split waits for a descheduled thread. Weight rounding is therefore run in
# chunks below that size, which keeps every operation on the calling thread.
_SERIAL_CHUNK = 16384


def _on_calling_thread(fn: Callable[..., Tensor], *tensors: Tensor) -> Tensor:
    """``fn(*tensors)`` for an elementwise ``fn`` of same-shaped tensors, computed chunk by chunk."""
    first = tensors[0]
    if first.device.type != "cpu" or first.numel() <= _SERIAL_CHUNK or torch.get_num_threads() == 1:
        return fn(*tensors)
    flat = [t.reshape(-1) for t in tensors]
    out = torch.empty(first.shape, dtype=first.dtype, device=first.device)
    out_flat = out.view(-1)
    for start in range(0, first.numel(), _SERIAL_CHUNK):
        stop = start + _SERIAL_CHUNK
        out_flat[start:stop].copy_(fn(*(t[start:stop] for t in flat)))
    return out


def _rounded_weight(
    weight_or_sign: Tensor,
    shift: Tensor | None,
    p_min: int,
    p_max: int,
    stochastic: bool,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The forward weight of a shift layer, without autograd: Q from its float weight (``shift`` None),
    PS from its sign and shift; on the calling thread (see :func:`_on_calling_thread`)."""
    if shift is None:
        return _on_calling_thread(
            lambda w: round_power_of_two(w, p_min, p_max, stochastic, generator), weight_or_sign
        )
    return _on_calling_thread(
        lambda s, p: round_sign_shift(s, p, p_min, p_max, stochastic, generator), weight_or_sign, shift
    )


def _shift_gradient(grad_weight: Tensor, weight: Tensor) -> Tensor:
    """DeepShift-PS gradient of the shift: d(s * 2**p)/dp = ln2 * s * 2**p times the weight's gradient."""
    return _on_calling_thread(lambda g, w: (g * w).mul_(_LN2), grad_weight, weight)


class _PowerOfTwoSTE(torch.autograd.Function):
    """Q weight rounding with an identity gradient."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, weight: Tensor, p_min: int, p_max: int, stochastic: bool, generator: Any
    ) -> Tensor:
        return _rounded_weight(weight, None, p_min, p_max, stochastic, generator)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None, None]:  # type: ignore[override]
        return grad, None, None, None, None


class _SignShiftSTE(torch.autograd.Function):
    """PS weight construction with the DeepShift-PS straight-through gradients."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, sign: Tensor, shift: Tensor, p_min: int, p_max: int, stochastic: bool, generator: Any
    ) -> Tensor:
        weight = _rounded_weight(sign, shift, p_min, p_max, stochastic, generator)
        ctx.save_for_backward(weight)
        return weight

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        (weight,) = ctx.saved_tensors
        # The sign gets the weight's gradient unscaled (STE).
        grad_shift = _shift_gradient(grad, weight)
        return grad, grad_shift, None, None, None, None


class _FixedPointSTE(torch.autograd.Function):
    """Fixed-point rounding with an identity gradient."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, integer_bits: int, fraction_bits: int) -> Tensor:  # type: ignore[override]
        return round_fixed_point(x, integer_bits, fraction_bits)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        return grad, None, None


def ste_power_of_two(
    weight: Tensor,
    p_min: int,
    p_max: int,
    stochastic: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """:func:`round_power_of_two` whose gradient w.r.t. ``weight`` is the identity (STE)."""
    return _PowerOfTwoSTE.apply(weight, p_min, p_max, stochastic, generator)


def ste_sign_shift(
    sign: Tensor,
    shift: Tensor,
    p_min: int,
    p_max: int,
    stochastic: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """:func:`round_sign_shift` with the DeepShift-PS gradients (module docstring)."""
    return _SignShiftSTE.apply(sign, shift, p_min, p_max, stochastic, generator)


def ste_fixed_point(x: Tensor, integer_bits: int, fraction_bits: int) -> Tensor:
    """:func:`round_fixed_point` with an identity gradient; plain call when no gradient is needed."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return round_fixed_point(x, integer_bits, fraction_bits)
    return _FixedPointSTE.apply(x, integer_bits, fraction_bits)
