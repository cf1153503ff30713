"""Integer reference inference for shift layers: fixed-point integers, arithmetic shifts and adds.

This is a *correctness reference and a demonstration* of what a DSNN computes on integer hardware,
not a fast kernel: it gathers convolution patches into large ``int64`` tensors and is far slower than
the float simulation. It makes no speed or energy claim.

How a shift layer is computed here
----------------------------------
With activation format ``I.F`` (``act_integer_bits``, ``act_fraction_bits``) and shift weights
``s * 2**p`` (``s`` in {-1, 0, +1}, ``p`` in ``[p_min, 0]``):

1. The input is rounded to the fixed-point grid exactly as the float layer does it and held as the
   integer ``X = x * 2**F`` (``int64``).
2. Every weight contributes ``s * (X << (p - p_min))``: a left shift by a non-negative amount and a
   signed add (a negation for ``s = -1``, nothing for ``s = 0``). There is no multiplication.
   Convolutions gather their patches (im2col by strided views, groups supported) and sum over them.
3. The accumulator ``A`` then has the scale ``2**-(F - p_min)``; the bias, an integer ``B`` on the
   ``2**-F`` grid, is added as ``B << -p_min``.
4. The result is converted back to a float tensor (``A * 2**(p_min - F)``, an exact power-of-two
   rescale at the layer boundary) for the layers that run in float (batch norm, ReLU, pooling, ...).

When the float simulation is bit-exact
--------------------------------------
Every product and every partial sum of a shift layer is an integer multiple of ``2**(p_min - F)``.
Measured in that unit, its magnitude is below ``(fan_in + 1) * 2**(I - 1 + F - p_min)`` (weights are at
most 1, the bias adds one more term), which needs :func:`accumulator_bits` bits. If that is at most
the significand width of the float type (24 bits for float32, 53 for float64), every intermediate
value of the float layer is exactly representable, so any summation order gives the exact result and
the model's own float forward equals this integer reference bit for bit. Beyond it the float
simulation rounds and the two may differ in the last bits (the integer reference is then the exact
one). The integer accumulator itself is ``int64``: settings needing more than 62 bits are refused.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from greenshift.errors import ConfigError
from greenshift.shift.layers import ShiftConv2d, ShiftLayer, ShiftLinear
from greenshift.shift.quantize import round_fixed_point

# Keep one gathered block of shifted patches below this many int64 elements (about 128 MiB).
_BLOCK_ELEMENTS = 1 << 24
_INT64_VALUE_BITS = 62  # magnitude bits an int64 accumulator can hold with room for the sign


def fan_in(layer: ShiftLayer) -> int:
    """Number of products summed into one output value of ``layer`` (inputs per group x kernel)."""
    shape = layer.weight_shape
    return math.prod(shape[1:])


def accumulator_bits(layer: ShiftLayer) -> int:
    """Significant bits the exact accumulator of ``layer`` may need (see the module docstring).

    ``(I - 1 + F) + (-p_min) + ceil(log2(fan_in + 1))``: the float simulation of the layer is
    bit-exact when this is at most 24 (float32) or 53 (float64).
    """
    p_min, _ = layer.shift_bounds
    magnitude = layer.act_integer_bits - 1 + layer.act_fraction_bits - p_min
    return magnitude + math.ceil(math.log2(fan_in(layer) + 1))


def _grid_to_integers(on_grid: Tensor, fraction_bits: int) -> Tensor:
    """Values already on the ``2**-fraction_bits`` grid as the ``int64`` integers ``value * 2**F``."""
    # float64 holds every float32 grid value times 2**F exactly (|value| < 2**31, F <= 32).
    return torch.ldexp(on_grid.to(torch.float64), torch.tensor(float(fraction_bits))).to(torch.int64)


def _to_fixed_integers(x: Tensor, integer_bits: int, fraction_bits: int) -> Tensor:
    """``round_fixed_point(x) * 2**fraction_bits`` as ``int64``, rounded exactly like the float layer."""
    return _grid_to_integers(round_fixed_point(x, integer_bits, fraction_bits), fraction_bits)


def _from_accumulator(acc: Tensor, exponent: int, dtype: torch.dtype) -> Tensor:
    """The float value ``acc * 2**exponent`` in ``dtype`` (exact when it fits the significand)."""
    return torch.ldexp(acc.to(torch.float64), torch.tensor(float(exponent))).to(dtype)


def _apply_shift_weights(patches: Tensor, sign: Tensor, amount: Tensor) -> Tensor:
    """Sum ``sign * (patches << amount)`` over the fan-in axis, without multiplying.

    ``patches``: ``[N, G, K, L]`` int64 (K inputs per group and output position, L positions);
    ``sign``: ``[G, O_g, K]`` int8 in {-1, 0, 1}; ``amount``: ``[G, O_g, K]`` int64 shifts >= 0.
    Returns ``[N, G * O_g, L]`` int64.
    """
    batch, groups, k, positions = patches.shape
    out_per_group = sign.shape[1]
    out = torch.empty((batch, groups, out_per_group, positions), dtype=torch.int64, device=patches.device)
    # Output channels are processed in blocks so the gathered [N, block, K, L] tensor stays bounded.
    block = max(1, _BLOCK_ELEMENTS // max(1, batch * k * positions))
    for g in range(groups):
        source = patches[:, g].unsqueeze(1)  # [N, 1, K, L]
        for start in range(0, out_per_group, block):
            stop = min(out_per_group, start + block)
            shifts = amount[g, start:stop].unsqueeze(-1)  # [B, K, 1]
            signs = sign[g, start:stop].unsqueeze(-1)
            shifted = torch.bitwise_left_shift(source, shifts)  # [N, B, K, L]
            contribution = torch.where(signs > 0, shifted, torch.where(signs < 0, -shifted, 0))
            out[:, g, start:stop] = contribution.sum(dim=2)
    return out.reshape(batch, groups * out_per_group, positions)


def _same_padding(kernel: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """``F.pad`` amounts (left, right, top, bottom) of ``padding="same"``, as torch pads it."""
    pads: list[int] = []
    for k, d in ((kernel[1], dilation[1]), (kernel[0], dilation[0])):
        total = d * (k - 1)
        pads += [total // 2, total - total // 2]
    return pads[0], pads[1], pads[2], pads[3]


class IntegerShiftLayer(nn.Module):
    """The integer counterpart of one :class:`ShiftConv2d` or :class:`ShiftLinear` (eval behaviour).

    Holds the weight as int8 signs and int64 shift amounts ``p - p_min`` and the bias as int64 on the
    accumulator grid; see the module docstring for the arithmetic.
    """

    sign: Tensor
    amount: Tensor
    bias_acc: Tensor | None

    def __init__(self, layer: ShiftLayer) -> None:
        super().__init__()
        if not isinstance(layer, ShiftConv2d | ShiftLinear):
            raise ConfigError(f"no integer reference for {type(layer).__name__}")
        self.is_conv = isinstance(layer, ShiftConv2d)
        self.integer_bits = layer.act_integer_bits
        self.fraction_bits = layer.act_fraction_bits
        self.p_min = layer.shift_bounds[0]
        bits = accumulator_bits(layer)
        if bits > _INT64_VALUE_BITS:
            raise ConfigError(
                f"the integer reference of this {type(layer).__name__} needs a {bits}-bit accumulator "
                f"(activations {self.integer_bits}.{self.fraction_bits}, shifts down to {self.p_min}, "
                f"fan-in {fan_in(layer)}), more than int64's {_INT64_VALUE_BITS}"
            )
        encoding = layer.encode()
        groups = layer.groups if self.is_conv else 1
        out_channels = encoding.shape[0]
        flat = (groups, out_channels // groups, -1)
        self.register_buffer("sign", encoding.sign.reshape(flat).clone())
        self.register_buffer("amount", (encoding.shift.to(torch.int64) - self.p_min).reshape(flat))
        bias = None
        if layer.bias is not None:
            with torch.no_grad():
                bias = _to_fixed_integers(layer.bias.detach(), self.integer_bits, self.fraction_bits)
            bias = torch.bitwise_left_shift(bias, -self.p_min)
        self.register_buffer("bias_acc", bias)
        if self.is_conv:
            conv = layer
            self.kernel_size = tuple(conv.kernel_size)
            self.stride = tuple(conv.stride)
            self.dilation = tuple(conv.dilation)
            self.groups = groups
            if isinstance(conv.padding, str):
                pad = (
                    (0, 0, 0, 0)
                    if conv.padding == "valid"
                    else _same_padding(self.kernel_size, self.dilation)
                )
            else:
                pad = (conv.padding[1], conv.padding[1], conv.padding[0], conv.padding[0])
            self.pad = pad
            self.pad_mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode

    def _patches(self, x: Tensor) -> tuple[Tensor, int, int]:
        """im2col of the padded float input as ``[N, G, C_g * kh * kw, L]`` views, plus the output size."""
        if any(self.pad):
            x = F.pad(x, self.pad, mode=self.pad_mode)
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
        windows = x.unfold(2, span_h, sh).unfold(3, span_w, sw)[..., ::dh, ::dw]  # [N, C, Ho, Wo, kh, kw]
        batch, channels, out_h, out_w = windows.shape[:4]
        grouped = windows.reshape(batch, self.groups, channels // self.groups, out_h, out_w, kh, kw)
        # K ordered (c, kh, kw) like the conv weight's flattened fan-in.
        cols = grouped.permute(0, 1, 2, 5, 6, 3, 4).reshape(batch, self.groups, -1, out_h * out_w)
        return cols, out_h, out_w

    def forward(self, x: Tensor) -> Tensor:
        """Quantise ``x`` to integers, apply the weights by shifts and adds, add the bias, rescale."""
        exponent = self.p_min - self.fraction_bits
        if self.is_conv:
            # Padding the rounded float input is exact and supports every padding mode; the integers
            # are taken afterwards so the gathered patches are int64 from the start.
            on_grid = round_fixed_point(x, self.integer_bits, self.fraction_bits)
            cols, out_h, out_w = self._patches(on_grid)
            ints = _grid_to_integers(cols, self.fraction_bits)
            acc = _apply_shift_weights(ints, self.sign, self.amount)
            if self.bias_acc is not None:
                acc = acc + self.bias_acc.view(1, -1, 1)
            return _from_accumulator(acc, exponent, x.dtype).reshape(x.shape[0], -1, out_h, out_w)
        lead = x.shape[:-1]
        ints = _to_fixed_integers(x.reshape(-1, x.shape[-1]), self.integer_bits, self.fraction_bits)
        acc = _apply_shift_weights(ints.unsqueeze(1).unsqueeze(-1), self.sign, self.amount).squeeze(-1)
        if self.bias_acc is not None:
            acc = acc + self.bias_acc
        return _from_accumulator(acc, exponent, x.dtype).reshape(*lead, -1)

    def extra_repr(self) -> str:
        """Kind, activation format and smallest shift."""
        kind = "conv2d" if self.is_conv else "linear"
        return f"{kind}, act={self.integer_bits}.{self.fraction_bits}, p_min={self.p_min}"


class IntegerReferenceModel(nn.Module):
    """A copy of ``model`` in eval mode whose shift layers compute with integers (module docstring).

    Every :class:`ShiftLayer` is replaced by an :class:`IntegerShiftLayer`; all other layers (batch
    norm, ReLU, pooling, float convolutions) run as in the float model. ``model`` is not modified.
    A correctness reference, not a fast implementation.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        inner = copy.deepcopy(model).eval()
        if isinstance(inner, ShiftLayer):
            inner = IntegerShiftLayer(inner)
        else:
            for parent in list(inner.modules()):
                for name, child in list(parent._modules.items()):
                    if isinstance(child, ShiftLayer):
                        parent._modules[name] = IntegerShiftLayer(child)
        self.model = inner.eval()

    def forward(self, x: Tensor) -> Tensor:
        """The model's output with integer shift layers."""
        return self.model(x)

    def train(self, mode: bool = True) -> IntegerReferenceModel:
        """Always stays in eval mode: the integer model is the deployed network."""
        return super().train(False)


@torch.no_grad()
def integer_forward(model: nn.Module, x: Tensor) -> Tensor:
    """``model(x)`` in eval mode with every shift layer computed by the integer reference."""
    return IntegerReferenceModel(model)(x)
