"""DeepShift-Q and DeepShift-PS convolution and linear layers.

Both layer classes share :class:`ShiftLayer`, which holds every piece of shift logic; the concrete
classes only say which float operation (``conv2d`` or ``linear``) consumes the rounded tensors.

- ``shift_type="Q"`` keeps the float ``weight`` Parameter; the forward pass uses it rounded to
  ``±2**p`` and the gradient flows straight through to the float weight.
- ``shift_type="PS"`` replaces ``weight`` by the Parameters ``sign`` and ``shift`` (same shape);
  the forward pass uses ``round_ternary(sign) * 2**round(shift)``.

Layer inputs and the bias are rounded to fixed point (straight-through gradient). Stochastic
rounding applies in training mode only; in eval mode rounding is deterministic (the deployed model).
In eval mode without autograd the rounded weight and bias are cached; the cache is keyed on the
parameters' storage and version counters, so optimiser steps, ``load_state_dict``, ``copy_`` or
replaced parameters invalidate it, and ``train()``/``eval()`` clear it.

Convolutions on the CPU (zero padding) run as one autograd node per layer that rounds the weight, bias
and input itself. In training, the rounded input goes into a buffer that the layer keeps and reuses
from step to step (one activation of memory per layer, released in eval mode), and the backward pass
uses it directly. A fresh rounded copy per step would page-fault whenever the C allocator has
returned that memory to the system: up to 8 ms per 8 MiB layer input measured in isolation (a
ResNet20 convolution at batch 128 takes about 20 ms), and 5,000 to 30,000 faults per ResNet20
training step in some runs; recomputing the rounding in the backward pass instead cost two
elementwise passes per layer. Without autograd (evaluation), the rounded input is written into a
per-thread scratch buffer that holds the largest convolution input seen by the thread (for example
64 MiB for ResNet20 at batch 1000).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from greenshift.errors import ConfigError
from greenshift.shift.quantize import (
    _round_fixed_point_by,
    _rounded_weight,
    _shift_gradient,
    _two_op_applies,
    clamp_magnitude,
    power_of_two_exponent,
    round_exponent,
    round_fixed_point,
    round_power_of_two,
    round_ternary,
    shift_range,
    ste_fixed_point,
    ste_power_of_two,
    ste_sign_shift,
    validate_shift_settings,
)

_scratch = threading.local()

SHIFT_INITS = ("scratch", "float")


def validate_shift_init(init: str) -> None:
    """Raise :class:`ConfigError` unless ``init`` names a DeepShift-PS initialisation (``SHIFT_INITS``)."""
    if init not in SHIFT_INITS:
        raise ConfigError(f"init={init!r} is not one of {', '.join(SHIFT_INITS)}")


def _shaped_like(flat: Tensor, x: Tensor) -> Tensor:
    """The first ``x.numel()`` elements of the flat buffer ``flat`` as a tensor of ``x``'s shape and layout.

    A channels-last input keeps its layout: the convolution then returns channels-last output too, so
    a shift layer never turns a channels-last network (faster convolutions on the CPU) back to NCHW.
    """
    head = flat[: x.numel()]
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        n, c, h, w = x.shape
        return head.view(n, h, w, c).permute(0, 3, 1, 2)
    return head.view(x.shape)


def _round_into_scratch(x: Tensor, fixed_point: tuple[int, int], two_op: bool) -> Tensor:
    """``x`` rounded to fixed point, written into this thread's scratch buffer (valid until reused)."""
    buffers: dict[tuple[torch.dtype, torch.device], Tensor] = _scratch.__dict__.setdefault("buffers", {})
    key = (x.dtype, x.device)
    buffer = buffers.get(key)
    if buffer is None or buffer.numel() < x.numel():
        with torch.inference_mode(False):  # a normal tensor can be written in and out of inference mode
            buffer = torch.empty(x.numel(), dtype=x.dtype, device=x.device)
        buffers[key] = buffer
    return _round_fixed_point_by(x, *fixed_point, two_op, out=_shaped_like(buffer, x))


# Per training layer: a flat buffer for its rounded input and a weak reference to the autograd node
# that saved it. Kept outside the module so that copying or pickling a layer never carries them.
_input_buffers: weakref.WeakKeyDictionary[nn.Module, tuple[Tensor, Any]] = weakref.WeakKeyDictionary()


def _node_released(node: Any) -> bool:
    """Whether an autograd node no longer needs its saved tensors (backward ran without retain_graph)."""
    try:
        _ = node.saved_tensors  # raises once backward has freed them
    except RuntimeError:
        return True
    return False


def _input_buffer(layer: nn.Module, x: Tensor) -> tuple[Tensor, bool]:
    """Where ``layer``'s rounded input goes: its own reusable buffer if free, else a fresh tensor.

    The buffer is free unless an autograd graph that saved it is still alive and not yet run
    backward (e.g. two forward passes before one backward); then a fresh tensor keeps both graphs
    right. Returns the tensor and whether it is the layer's own buffer.
    """
    entry = _input_buffers.get(layer)
    if entry is not None:
        buffer, owner_ref = entry
        owner = owner_ref() if owner_ref is not None else None
        if owner is not None and not _node_released(owner):
            return torch.empty_like(x, memory_format=torch.preserve_format), False
        if buffer.numel() >= x.numel() and buffer.dtype == x.dtype and buffer.device == x.device:
            return _shaped_like(buffer, x), True
    buffer = torch.empty(x.numel(), dtype=x.dtype, device=x.device)
    _input_buffers[layer] = (buffer, None)
    return _shaped_like(buffer, x), True


class _ShiftConv2dFunction(torch.autograd.Function):
    """A training-time shift convolution as one autograd node: weight and bias rounding, fixed-point input.

    One node per layer instead of three (weight STE, bias STE, convolution): the Python overhead of
    custom autograd functions was about 4 % of a ResNet20 training step. The rounded input is saved in
    the layer's reusable buffer (see the module docstring). Gradients are the
    convolution's at the rounded operands, passed straight through every rounding: to the float weight
    (Q), or ``d/dsign = d/dweight`` and ``d/dshift = d/dweight * weight * ln 2`` (PS), the same as
    :func:`ste_power_of_two` / :func:`ste_sign_shift` and :func:`ste_fixed_point` followed by ``F.conv2d``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        bias: Tensor | None,
        weight_or_sign: Tensor,
        shift: Tensor | None,
        spec: tuple[Any, ...],
    ) -> Tensor:
        layer, p_min, p_max, stochastic, conv_args, fixed_point = spec
        weight = _rounded_weight(weight_or_sign, shift, p_min, p_max, stochastic)
        bias_fixed = None if bias is None else round_fixed_point(bias, *fixed_point)
        buffer, owned = _input_buffer(layer, x)
        x_fixed = _round_fixed_point_by(x, *fixed_point, _two_op_applies(x, *fixed_point), out=buffer)
        out = F.conv2d(x_fixed, weight, bias_fixed, *conv_args)
        ctx.save_for_backward(x_fixed, weight)
        if owned:
            # Autograd's version check would also refuse a buffer overwritten before this backward.
            _input_buffers[layer] = (_input_buffers[layer][0], weakref.ref(ctx))
        ctx.conv_args = conv_args
        ctx.has_bias = bias is not None
        ctx.is_ps = shift is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x_fixed, weight = ctx.saved_tensors
        need_x, need_bias, need_first, need_shift = ctx.needs_input_grad[:4]
        stride, padding, dilation, groups = ctx.conv_args
        grad_x, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad,
            x_fixed,
            weight,
            [weight.shape[0]] if ctx.has_bias else None,
            stride,
            padding,
            dilation,
            False,
            [0, 0],
            groups,
            [need_x, need_first or need_shift, ctx.has_bias and need_bias],
        )
        grad_shift = None
        if ctx.is_ps and need_shift:
            grad_shift = _shift_gradient(grad_weight, weight)
        return grad_x, grad_bias, grad_weight if need_first else None, grad_shift, None


@dataclass(frozen=True, eq=False)
class ShiftEncoding:
    """The integer form of a shift weight: ``weight = sign * 2**shift`` elementwise.

    ``sign`` holds values in {-1, 0, +1} and ``shift`` values in ``[p_min, 0]``, both int8 tensors of
    the weight's ``shape``; ``weight_bits`` is the storage width of one weight.
    """

    sign: Tensor
    shift: Tensor
    weight_bits: int
    shape: tuple[int, ...]

    def decode(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The weight as a float tensor, ``sign * 2**shift``."""
        return torch.exp2(self.shift.to(dtype)).mul_(self.sign.to(dtype))

    @property
    def size_bits(self) -> int:
        """Storage size of the encoded weight in bits."""
        return self.sign.numel() * self.weight_bits


def _canonical_shift(sign: Tensor, shift: Tensor, p_min: int) -> Tensor:
    """A deployed PS shift: ``p_min`` wherever the weight is 0 (its shift is meaningless there).

    One representation per weight value, the one the export format decodes to, so that a rounded
    model and its exported copy hold equal state dicts.
    """
    return torch.where(sign == 0, torch.full_like(shift, p_min), shift)


class ShiftLayer(nn.Module):
    """Shared behaviour of :class:`ShiftConv2d` and :class:`ShiftLinear` (used as a mixin base).

    Attributes: ``shift_type`` ("Q" or "PS", fixed at construction), ``weight_bits``, ``rounding``
    ("deterministic" or "stochastic"), ``act_integer_bits`` and ``act_fraction_bits``.
    """

    weight: Tensor | None
    bias: Tensor | None
    weight_bits: int
    rounding: str
    act_integer_bits: int
    act_fraction_bits: int
    # Set by each concrete class: the float layer type, the constructor arguments to copy from it
    # and the float operation consuming the rounded tensors.
    _float_type: ClassVar[type[nn.Module]]
    _float_args: ClassVar[tuple[str, ...]]
    _shift_op: Callable[[Tensor, Tensor, Tensor | None], Tensor]

    def _setup_shift(
        self,
        shift_type: str,
        weight_bits: int,
        rounding: str,
        act_integer_bits: int,
        act_fraction_bits: int,
    ) -> None:
        """Store the settings; for PS, turn the float weight into ``sign`` and ``shift`` Parameters."""
        validate_shift_settings(shift_type, weight_bits, rounding, act_integer_bits, act_fraction_bits)
        self._shift_type = shift_type
        self.weight_bits = weight_bits
        self.rounding = rounding
        self.act_integer_bits = act_integer_bits
        self.act_fraction_bits = act_fraction_bits
        self._eval_cache: tuple[tuple[Any, ...], Tensor, Tensor | None] | None = None
        if shift_type == "PS":
            float_weight = self.weight.detach()
            del self.weight
            self.sign = nn.Parameter(torch.empty_like(float_weight))
            self.shift = nn.Parameter(torch.empty_like(float_weight))
            self.reset_sign_shift()

    @property
    def shift_type(self) -> str:
        """The flavour, "Q" or "PS"; fixed because the two keep different parameters."""
        return self._shift_type

    @property
    def shift_bounds(self) -> tuple[int, int]:
        """The allowed exponents ``(p_min, p_max)`` for the current settings."""
        return shift_range(self.weight_bits, self._shift_type)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """Shape of the (rounded) weight, whichever parameters represent it."""
        source = self.weight if self._shift_type == "Q" else self.sign
        return tuple(source.shape)

    @torch.no_grad()
    def _init_sign_shift(self, float_weight: Tensor) -> None:
        # log2|0| = -inf clamps to p_min, so zero weights start with sign 0 and a finite shift.
        self.sign.copy_(torch.sign(float_weight))
        self.shift.copy_(torch.log2(float_weight.abs()).clamp_(*self.shift_bounds))

    @torch.no_grad()
    def reset_sign_shift(self) -> None:
        """DeepShift-PS initialisation for training from scratch (draws from the global generator).

        ``sign`` uniform in [-1, 1], so about half of the weights start at 0 (the ternary sign rounds
        ``|s| <= 0.5`` to 0); ``shift`` uniform in [-10, -1] for convolutions and over the whole shift
        range for linear layers, clamped to the range. Starting PS from a float initialisation instead
        turns every weight into a power of two of the same magnitude as the float one, and
        from-scratch training then barely learns (docs/concepts.md, "Training DSNNs from scratch").
        """
        if self._shift_type != "PS":
            raise ConfigError("reset_sign_shift applies to DeepShift-PS layers only")
        p_min, p_max = self.shift_bounds
        low, high = (-10.0, -1.0) if isinstance(self, nn.Conv2d) else (float(p_min), float(p_max))
        self.sign.uniform_(-1.0, 1.0)
        self.shift.uniform_(low, high).clamp_(p_min, p_max)

    @torch.no_grad()
    def project_parameters_(self) -> None:
        """Put the trainable parameters back into the representable range, in place.

        Q: weight magnitudes into ``[2**p_min, 2**p_max]`` (:func:`clamp_magnitude`); PS: ``shift`` into
        ``[p_min, p_max]``. DeepShift does this before every training forward pass; the deployed
        weights are unchanged by it, but the training dynamics are not (see :func:`clamp_magnitude`).
        """
        p_min, p_max = self.shift_bounds
        if self._shift_type == "Q":
            self.weight.copy_(clamp_magnitude(self.weight, 2.0**p_min, 2.0**p_max))
        else:
            self.shift.clamp_(p_min, p_max)

    def _stochastic_now(self) -> bool:
        return self.training and self.rounding == "stochastic"

    def quantized_weight(self) -> Tensor:
        """The ``sign * 2**p`` weight the forward pass uses (with its STE gradient)."""
        p_min, p_max = self.shift_bounds
        stochastic = self._stochastic_now()
        if self._shift_type == "Q":
            return ste_power_of_two(self.weight, p_min, p_max, stochastic)
        return ste_sign_shift(self.sign, self.shift, p_min, p_max, stochastic)

    def quantized_bias(self) -> Tensor | None:
        """The bias rounded to the activation fixed-point format (``None`` without bias)."""
        if self.bias is None:
            return None
        return ste_fixed_point(self.bias, self.act_integer_bits, self.act_fraction_bits)

    @torch.no_grad()
    def encode(self) -> ShiftEncoding:
        """Integer sign and shift of the deployed (deterministically rounded) weight; a 0 weight has shift p_min."""
        p_min, p_max = self.shift_bounds
        if self._shift_type == "Q":
            sign = torch.sign(self.weight)
            shift = power_of_two_exponent(self.weight, p_min, p_max)
        else:
            sign = round_ternary(self.sign)
            shift = _canonical_shift(sign, round_exponent(self.shift, p_min, p_max), p_min)
        return ShiftEncoding(
            sign=sign.to(torch.int8),
            shift=shift.to(torch.int8),
            weight_bits=self.weight_bits,
            shape=self.weight_shape,
        )

    @torch.no_grad()
    def round_parameters_(self) -> None:
        """Overwrite the parameters with their deployed values (PS zeros get shift p_min); the forward is unchanged."""
        p_min, p_max = self.shift_bounds
        if self._shift_type == "Q":
            self.weight.copy_(round_power_of_two(self.weight, p_min, p_max))
        else:
            sign = round_ternary(self.sign)
            self.sign.copy_(sign)
            self.shift.copy_(_canonical_shift(sign, round_exponent(self.shift, p_min, p_max), p_min))
        if self.bias is not None:
            self.bias.copy_(round_fixed_point(self.bias, self.act_integer_bits, self.act_fraction_bits))

    def _cache_key(self) -> tuple[Any, ...]:
        params = (self.weight,) if self._shift_type == "Q" else (self.sign, self.shift)
        if self.bias is not None:
            params += (self.bias,)
        state = tuple((id(p), p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        return (self.weight_bits, self.act_integer_bits, self.act_fraction_bits, state)

    def _weight_and_bias(self) -> tuple[Tensor, Tensor | None]:
        if self.training or torch.is_grad_enabled():
            return self.quantized_weight(), self.quantized_bias()
        # Eval without autograd: the weights cannot change between calls unless the key does.
        key = self._cache_key()
        cache = self._eval_cache
        if cache is None or cache[0] != key:
            cache = (key, self.quantized_weight(), self.quantized_bias())
            self._eval_cache = cache
        return cache[1], cache[2]

    def forward(self, input: Tensor) -> Tensor:
        """Apply the float operation to fixed-point input, shift weight and fixed-point bias.

        In training mode the parameters are first projected into range (:meth:`project_parameters_`).
        """
        if self.training:
            self.project_parameters_()
        weight, bias = self._weight_and_bias()
        x = ste_fixed_point(input, self.act_integer_bits, self.act_fraction_bits)
        return self._shift_op(x, weight, bias)

    def train(self, mode: bool = True) -> ShiftLayer:
        """Switch mode; drop the eval-mode weight cache, and in eval mode the training input buffer."""
        self._eval_cache = None
        if not mode:
            _input_buffers.pop(self, None)
        return super().train(mode)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._eval_cache = None
        super()._load_from_state_dict(*args, **kwargs)

    def _shift_repr(self) -> str:
        return (
            f"shift_type={self._shift_type}, weight_bits={self.weight_bits}, rounding={self.rounding}, "
            f"act_integer_bits={self.act_integer_bits}, act_fraction_bits={self.act_fraction_bits}"
        )

    def extra_repr(self) -> str:
        """The float layer's description followed by the shift settings."""
        return f"{super().extra_repr()}, {self._shift_repr()}"

    @classmethod
    def from_float(
        cls,
        module: nn.Module,
        *,
        shift_type: str = "Q",
        weight_bits: int = 5,
        rounding: str = "deterministic",
        act_integer_bits: int = 16,
        act_fraction_bits: int = 16,
        init: str = "float",
    ) -> ShiftLayer:
        """A shift layer that replaces the float layer ``module``, on its device and dtype.

        The bias is copied. Q copies the float weight. PS takes ``init``: ``"float"`` derives sign and
        shift from the float weight (converting a trained model), ``"scratch"`` uses DeepShift-PS's own
        initialisation (:meth:`reset_sign_shift`; training from scratch). ``module`` keeps its own
        parameters.
        """
        validate_shift_init(init)
        if isinstance(module, ShiftLayer):
            raise ConfigError(f"{type(module).__name__} is already a shift layer")
        if not isinstance(module, cls._float_type):
            raise ConfigError(
                f"{cls.__name__}.from_float expects a torch.nn.{cls._float_type.__name__}, "
                f"got {type(module).__name__}"
            )
        float_weight = module.weight.detach()
        layer = cls(
            **{name: getattr(module, name) for name in cls._float_args},
            bias=module.bias is not None,
            device=float_weight.device,
            dtype=float_weight.dtype,
            shift_type=shift_type,
            weight_bits=weight_bits,
            rounding=rounding,
            act_integer_bits=act_integer_bits,
            act_fraction_bits=act_fraction_bits,
        )
        with torch.no_grad():
            if shift_type == "Q":
                layer.weight.copy_(float_weight)
            elif init == "float":
                layer._init_sign_shift(float_weight)
            if module.bias is not None:
                layer.bias.copy_(module.bias)
        layer.train(module.training)
        return layer


class ShiftConv2d(ShiftLayer, nn.Conv2d):
    """A 2-D convolution with shift weights (``nn.Conv2d`` arguments plus the shift settings)."""

    _float_type = nn.Conv2d
    _float_args = (
        "in_channels",
        "out_channels",
        "kernel_size",
        "stride",
        "padding",
        "dilation",
        "groups",
        "padding_mode",
    )

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: torch.dtype | None = None,
        *,
        shift_type: str = "Q",
        weight_bits: int = 5,
        rounding: str = "deterministic",
        act_integer_bits: int = 16,
        act_fraction_bits: int = 16,
    ) -> None:
        nn.Conv2d.__init__(
            self,
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            padding_mode=padding_mode,
            device=device,
            dtype=dtype,
        )
        self._setup_shift(shift_type, weight_bits, rounding, act_integer_bits, act_fraction_bits)

    def _shift_op(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return self._conv_forward(x, weight, bias)

    def forward(self, input: Tensor) -> Tensor:
        """Convolve the fixed-point input with the shift weight (one fused autograd node on the CPU)."""
        if input.device.type != "cpu" or self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super().forward(input)
        if self.training:
            self.project_parameters_()
        conv_args = (self.stride, self.padding, self.dilation, self.groups)
        fixed_point = (self.act_integer_bits, self.act_fraction_bits)
        if self._shift_type == "Q":
            weight_or_sign, shift = self.weight, None
        else:
            weight_or_sign, shift = self.sign, self.shift
        tracked = (
            input.requires_grad
            or weight_or_sign.requires_grad
            or (shift is not None and shift.requires_grad)
            or (self.bias is not None and self.bias.requires_grad)
        )
        if torch.is_grad_enabled() and tracked:
            p_min, p_max = self.shift_bounds
            spec = (self, p_min, p_max, self._stochastic_now(), conv_args, fixed_point)
            return _ShiftConv2dFunction.apply(input, self.bias, weight_or_sign, shift, spec)
        weight, bias = self._weight_and_bias()
        x_fixed = _round_into_scratch(input, fixed_point, _two_op_applies(input, *fixed_point))
        return F.conv2d(x_fixed, weight, bias, *conv_args)


class ShiftLinear(ShiftLayer, nn.Linear):
    """A fully connected layer with shift weights (``nn.Linear`` arguments plus the shift settings)."""

    _float_type = nn.Linear
    _float_args = ("in_features", "out_features")

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: Any = None,
        dtype: torch.dtype | None = None,
        *,
        shift_type: str = "Q",
        weight_bits: int = 5,
        rounding: str = "deterministic",
        act_integer_bits: int = 16,
        act_fraction_bits: int = 16,
    ) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._setup_shift(shift_type, weight_bits, rounding, act_integer_bits, act_fraction_bits)

    def _shift_op(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.linear(x, weight, bias)
