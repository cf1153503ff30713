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
)
from greenshift.shift.layers import ShiftConv2d, ShiftLayer, ShiftLinear

# What users need (docs/api.md); everything else is imported from its module.
__all__ = [
    "ShiftConv2d",
    "ShiftLayer",
    "ShiftLinear",
    "convert_to_shift",
    "count_shiftable_layers",
    "encode_shift_weights",
    "round_shift_weights",
    "shift_size_bits",
]
