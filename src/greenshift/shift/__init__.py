"""Deep Shift Neural Network layers: weights ``sign * 2**p`` so that multiplications become bit shifts.

- :mod:`greenshift.shift.quantize`: rounding maths (power-of-two weights, fixed point) and STE wrappers.
- :mod:`greenshift.shift.layers`: :class:`ShiftConv2d`, :class:`ShiftLinear` (DeepShift-Q and -PS).
- :mod:`greenshift.shift.convert`: :func:`convert_to_shift` and reading weights back out.
"""

from __future__ import annotations

from greenshift.shift.convert import (
    convert_to_shift,
    count_shiftable_layers,
    encode_shift_weights,
    round_shift_weights,
    shift_size_bits,
    shiftable_layers,
)
from greenshift.shift.layers import ShiftConv2d, ShiftEncoding, ShiftLayer, ShiftLinear
from greenshift.shift.quantize import (
    fixed_point_range,
    power_of_two_exponent,
    round_exponent,
    round_fixed_point,
    round_power_of_two,
    round_sign_shift,
    round_ternary,
    shift_range,
    ste_fixed_point,
    ste_power_of_two,
    ste_sign_shift,
    validate_shift_settings,
)

__all__ = [
    "ShiftConv2d",
    "ShiftEncoding",
    "ShiftLayer",
    "ShiftLinear",
    "convert_to_shift",
    "count_shiftable_layers",
    "encode_shift_weights",
    "fixed_point_range",
    "power_of_two_exponent",
    "round_exponent",
    "round_fixed_point",
    "round_power_of_two",
    "round_shift_weights",
    "round_sign_shift",
    "round_ternary",
    "shift_range",
    "shift_size_bits",
    "shiftable_layers",
    "ste_fixed_point",
    "ste_power_of_two",
    "ste_sign_shift",
    "validate_shift_settings",
]
