"""A DSNN as an ONNX model: integer power-of-two shift weights, fixed-point activations in integer types.

How a shift layer is written
----------------------------
Every other module (batch norm, pooling, residual sums, float convolutions) is exported by
``torch.onnx.export``; each :class:`~greenshift.shift.ShiftLayer` becomes

    x -> [Clip] -> QuantizeLinear(scale 2**-F) -> DequantizeLinear -> Conv / MatMul+Add
                                       DequantizeLinear(q, per-channel 2**s) -^

*Activations* (``I`` integer bits with the sign, ``F`` fraction bits) become ``int8`` when ``I + F <= 8``
and ``int16`` when ``I + F <= 16``, with scale ``2**-F``: QuantizeLinear rounds half to even and
saturates to the integer type, which is the fixed-point rounding of :mod:`greenshift.shift.quantize`
when ``I + F`` equals the type's width; a narrower format is clipped to its range first (the bounds
are grid points, so clipping before rounding equals saturating after). Wider formats stay float32 and
are rounded by ``Mul(2**F) -> Round -> Clip -> Mul(2**-F)``, the simulation's own float32 steps.

*Weights* ``sign * 2**p`` are stored as integers ``q = sign * 2**(p - s_c)`` with a power-of-two scale
``2**s_c`` per output channel, ``s_c`` the channel's smallest exponent. ``q`` fits ``int8`` when the
exponents of a channel span at most 6 (``|q| <= 64``; ``+128`` does not fit), ``int16`` when they span
at most 14. A layer takes the narrowest type all its channels fit; a layer with a wider span (possible
with 6 to 8 weight bits) keeps float32 weights, which still hold every ``2**p`` exactly. The dequantised
weight is then exactly the simulated one.

*Biases* are float32 constants on the fixed-point grid (as the simulation rounds them).

What is exact
-------------
Every rounded activation and every weight equals the simulation's bit for bit. The convolutions run
in float32 in both (onnxruntime's integer convolution kernels requantise their output to 8 bits per
tensor, which a DSNN's batch norm and residual sums between shift layers do not allow), so logits
differ only by float32 summation order: about 1e-6 relative, which can move an activation across a
rounding boundary of the next shift layer now and then.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from greenshift.errors import ExportError
from greenshift.shift import ShiftConv2d, ShiftLayer, ShiftLinear

OPSET = 21
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
# Integer weight types, narrowest first; width w holds a channel whose exponents span up to w - 2
# (|q| <= 2**(w - 2), since +2**(w - 1) does not fit).
_WEIGHT_TYPES = ((8, torch.int8), (16, torch.int16))


def require_onnx() -> tuple[Any, Any]:
    """The ``onnx`` and ``onnxruntime`` modules, or an :class:`ExportError` with the install hint."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise ExportError(
            f"ONNX deployment needs onnx and onnxruntime ({exc.name} is missing): "
            "pip install 'greenshift[deploy]'"
        ) from None
    return onnx, onnxruntime


@dataclass(frozen=True)
class WeightFormat:
    """How one shift layer's weight is stored: integer type (or float32) and per-channel scale exponents."""

    dtype: torch.dtype
    values: Tensor
    scale_exponents: Tensor | None
    span: int

    @property
    def type_name(self) -> str:
        """``int8``, ``int16`` or ``float32``."""
        return str(self.dtype).removeprefix("torch.")


def activation_type(integer_bits: int, fraction_bits: int) -> str:
    """The ONNX type a fixed-point activation maps to: ``int8``, ``int16`` or ``float32`` (wider formats)."""
    bits = integer_bits + fraction_bits
    if bits <= 8:
        return "int8"
    if bits <= 16:
        return "int16"
    return "float32"


def weight_format(sign: Tensor, shift: Tensor) -> WeightFormat:
    """Integer form of ``sign * 2**shift`` (output channels on dim 0) with power-of-two channel scales."""
    sign = sign.to(torch.int64).reshape(sign.shape[0], -1)
    shift = shift.to(torch.int64).reshape(shift.shape[0], -1)
    nonzero = sign != 0
    big = torch.iinfo(torch.int64).max
    low = torch.where(nonzero, shift, big).amin(dim=1)
    high = torch.where(nonzero, shift, -big).amax(dim=1)
    empty = ~nonzero.any(dim=1)
    low = torch.where(empty, 0, low)
    high = torch.where(empty, 0, high)
    span = int((high - low).max()) if sign.numel() else 0
    for width, dtype in _WEIGHT_TYPES:
        if span <= width - 2:
            q = sign * torch.bitwise_left_shift(torch.ones_like(shift), (shift - low[:, None]).clamp_min(0))
            return WeightFormat(dtype, q.to(dtype), low, span)
    return WeightFormat(torch.float32, torch.exp2(shift.to(torch.float32)) * sign, None, span)


@dataclass(frozen=True)
class _LayerSpec:
    layer: ShiftLayer
    weight: WeightFormat
    bias: Tensor | None


# Specs of the shift layers of the export in progress, indexed by the integer the traced op carries
# (the TorchScript exporter hands a symbolic function only tensors and plain scalars).
_SPECS: list[_LayerSpec] = []


class _ShiftOp(torch.autograd.Function):
    """The simulated shift layer when traced; its ``symbolic`` writes the QDQ form (module docstring)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, index: int) -> Tensor:  # type: ignore[override]
        # Only the output's shape matters to the tracer; plain operators avoid the layer's scratch buffers.
        spec = _SPECS[index]
        layer = spec.layer
        weight = spec.weight.values.to(torch.float32).reshape(layer.weight_shape)
        if isinstance(layer, ShiftConv2d):
            return F.conv2d(x, weight, spec.bias, layer.stride, layer.padding, layer.dilation, layer.groups)
        return F.linear(x, weight, spec.bias)

    @staticmethod
    def symbolic(g: Any, x: Any, index: int) -> Any:
        spec = _SPECS[index]
        layer = spec.layer
        x = _fixed_point_nodes(g, x, layer.act_integer_bits, layer.act_fraction_bits)
        shape = tuple(layer.weight_shape)
        fmt = spec.weight
        values = fmt.values.reshape(shape)
        axis = 0
        if isinstance(layer, ShiftLinear):
            values, axis = values.t().contiguous(), 1
        if fmt.scale_exponents is None:
            weight = _const(g, values)
        else:
            scales = torch.exp2(fmt.scale_exponents.to(torch.float64)).to(torch.float32)
            weight = g.op(
                "DequantizeLinear",
                _const(g, values),
                _const(g, scales),
                _const(g, torch.zeros(scales.shape, dtype=fmt.dtype)),
                axis_i=axis,
            )
        if isinstance(layer, ShiftConv2d):
            inputs = [x, weight] + ([] if spec.bias is None else [_const(g, spec.bias)])
            return g.op(
                "Conv",
                *inputs,
                strides_i=list(layer.stride),
                pads_i=list(layer.padding) * 2,
                dilations_i=list(layer.dilation),
                group_i=int(layer.groups),
                kernel_shape_i=list(layer.kernel_size),
            )
        out = g.op("MatMul", x, weight)
        return out if spec.bias is None else g.op("Add", out, _const(g, spec.bias))


def _const(g: Any, value: Tensor) -> Any:
    return g.op("Constant", value_t=value.detach().cpu().contiguous())


def _scalar(value: float) -> Tensor:
    return torch.tensor(value, dtype=torch.float32)


def float32_integer_below(exponent: int) -> float:
    """The largest float32 integer not above ``2**exponent - 1`` (the simulation's saturation bound)."""
    top = np.float32(2.0**exponent - 1)
    if float(top) > 2.0**exponent - 1:
        top = np.nextafter(np.float32(2.0**exponent), np.float32(0))
    return float(top)


def _fixed_point_nodes(g: Any, x: Any, integer_bits: int, fraction_bits: int) -> Any:
    """ONNX nodes rounding ``x`` to the fixed-point format, in the narrowest integer type that holds it."""
    kind = activation_type(integer_bits, fraction_bits)
    bits = integer_bits + fraction_bits
    step = 2.0**-fraction_bits
    if kind == "float32":
        scaled = g.op("Mul", x, _const(g, _scalar(2.0**fraction_bits)))
        rounded = g.op("Round", scaled)
        limit = float32_integer_below(bits - 1)
        clipped = g.op("Clip", rounded, _const(g, _scalar(-(2.0 ** (bits - 1)))), _const(g, _scalar(limit)))
        return g.op("Mul", clipped, _const(g, _scalar(step)))
    dtype = torch.int8 if kind == "int8" else torch.int16
    width = 8 if kind == "int8" else 16
    if bits < width:
        top = 2.0 ** (integer_bits - 1)
        x = g.op("Clip", x, _const(g, _scalar(-top)), _const(g, _scalar(top - step)))
    scale, zero = _const(g, _scalar(step)), _const(g, torch.zeros((), dtype=dtype))
    return g.op("DequantizeLinear", g.op("QuantizeLinear", x, scale, zero), scale, zero)


class _ShiftExport(nn.Module):
    """Stands in for one shift layer during the export."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def forward(self, x: Tensor) -> Tensor:
        return _ShiftOp.apply(x, self.index)


class _Normalised(nn.Module):
    """``uint8`` images in, normalised exactly as greenshift's data pipeline does, then the model."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        std_t = torch.tensor([float(s) for s in std], dtype=torch.float32)
        mean_t = torch.tensor([float(m) for m in mean], dtype=torch.float32)
        self.register_buffer("scale", (1.0 / (255.0 * std_t)).view(1, -1, 1, 1))
        self.register_buffer("shift", (-mean_t / std_t).view(1, -1, 1, 1))
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images.to(torch.float32) * self.scale + self.shift)


def _check_layer(name: str, layer: ShiftLayer) -> None:
    if isinstance(layer, ShiftConv2d) and (layer.padding_mode != "zeros" or isinstance(layer.padding, str)):
        raise ExportError(
            f"shift layer {name!r} pads with {layer.padding_mode!r}/{layer.padding!r}; "
            "the ONNX export supports numeric zero padding"
        )
    params = (layer.weight,) if layer.shift_type == "Q" else (layer.sign, layer.shift)
    if not all(bool(torch.isfinite(p).all()) for p in params):
        raise ExportError(
            f"shift layer {name!r} has non-finite weights (a diverged model cannot be exported)"
        )


# torch.onnx.export is not thread-safe and the specs are process-global: one export at a time (trials
# running in threads of one worker wait for each other here).
_EXPORT_LOCK = threading.Lock()


@contextlib.contextmanager
def _registered(specs: list[_LayerSpec]) -> Iterator[None]:
    with _EXPORT_LOCK:
        _SPECS.extend(specs)
        try:
            yield
        finally:
            _SPECS.clear()


@dataclass(frozen=True)
class OnnxExport:
    """An exported ONNX model (serialised bytes) and what each shift layer became."""

    model_bytes: bytes
    layers: dict[str, dict[str, Any]]
    input_shape: tuple[int, ...]

    def summary(self) -> dict[str, int]:
        """How many shift layers store int8, int16 and float32 weights."""
        counts: dict[str, int] = {}
        for info in self.layers.values():
            counts[info["weight_type"]] = counts.get(info["weight_type"], 0) + 1
        return counts


@torch.no_grad()
def to_onnx_bytes(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    metadata: Mapping[str, str] | None = None,
) -> OnnxExport:
    """``model`` (float or DSNN, not modified) as an ONNX model taking ``uint8`` images.

    ``input_shape`` is ``(C, H, W)`` of one image; the batch dimension is dynamic. The graph
    normalises with ``mean``/``std`` (``pixel / 255`` units) as greenshift's data pipeline does and
    returns the logits. Shift layers take the integer QDQ form of the module docstring; the result
    passes ``onnx.checker``. ``metadata`` goes into the model's ``metadata_props``.
    """
    onnx, _ = require_onnx()
    work = copy.deepcopy(model).cpu().eval()
    # The tracer stores parameters it meets inside the shift op as constants, which needs them detached.
    work.requires_grad_(False)
    specs: list[_LayerSpec] = []
    layers: dict[str, dict[str, Any]] = {}
    for name, layer in list(work.named_modules()):
        if not isinstance(layer, ShiftLayer):
            continue
        _check_layer(name, layer)
        encoding = layer.encode()
        fmt = weight_format(encoding.sign, encoding.shift)
        bias = layer.quantized_bias()
        specs.append(_LayerSpec(layer, fmt, None if bias is None else bias.detach().to(torch.float32)))
        layers[name] = {
            "weight_type": fmt.type_name,
            "exponent_span": fmt.span,
            "activation_type": activation_type(layer.act_integer_bits, layer.act_fraction_bits),
        }
        _replace(work, name, _ShiftExport(len(specs) - 1))
    wrapped = _Normalised(work, mean, std).eval()
    shape = tuple(int(v) for v in input_shape)
    sample = torch.zeros((1, *shape), dtype=torch.uint8)
    buffer = io.BytesIO()
    with _registered(specs), warnings_quiet():
        torch.onnx.export(
            wrapped,
            (sample,),
            buffer,
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    proto.doc_string = "greenshift model: uint8 images [N, C, H, W] in, logits out"
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    onnx.checker.check_model(proto, full_check=True)
    return OnnxExport(proto.SerializeToString(), layers, shape)


@contextlib.contextmanager
def warnings_quiet() -> Iterator[None]:
    """Silence the TorchScript exporter's deprecation notices (the path is chosen on purpose)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@torch.no_grad()
def float_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose shift layers are plain float layers with the same (decoded) weights.

    The activations are not rounded: this is the float network the DSNN deploys in place of, exported
    the same way for side-by-side accuracy and latency.
    """
    twin = copy.deepcopy(model).cpu().eval()
    for name, layer in list(twin.named_modules()):
        if not isinstance(layer, ShiftLayer):
            continue
        weight = layer.encode().decode()
        bias = layer.quantized_bias()
        if isinstance(layer, ShiftConv2d):
            plain: nn.Module = nn.Conv2d(
                layer.in_channels,
                layer.out_channels,
                layer.kernel_size,
                stride=layer.stride,
                padding=layer.padding,
                dilation=layer.dilation,
                groups=layer.groups,
                bias=bias is not None,
                padding_mode=layer.padding_mode,
            )
        else:
            plain = nn.Linear(layer.in_features, layer.out_features, bias=bias is not None)
        plain.weight.copy_(weight)
        if bias is not None:
            plain.bias.copy_(bias)
        _replace(twin, name, plain.eval())
    return twin


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    if not child:
        raise ExportError("the model itself is a shift layer; wrap it in a module to export it")
    setattr(parent, child, module)


# onnxruntime keeps DequantizeLinear nodes of constant weights in the graph (it looks for QDQ groups
# to fuse into integer kernels) and so dequantises every weight on every run and cannot fold batch
# norm into the convolution. A DSNN's groups never fuse (module docstring), so this turns that off:
# the weights are dequantised once, at load. ResNet20 Q 4-bit, 8-bit activations, batch 64, one thread
# (bench/deploy.py): 114 ms instead of 186 ms; the float model takes 102 ms.
FAST_SESSION_CONFIG = {"session.disable_quant_qdq": "1"}


def session(model_bytes: bytes, *, threads: int | None = None, fast: bool = True) -> Any:
    """An onnxruntime CPU inference session for the model (all graph optimisations on).

    ``fast`` applies :data:`FAST_SESSION_CONFIG` (weights dequantised once at load; same results up
    to float32 summation order).
    """
    _, ort = require_onnx()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    for key, value in (FAST_SESSION_CONFIG if fast else {}).items():
        options.add_session_config_entry(key, value)
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def predict(sess: Any, images: np.ndarray | Tensor, *, batch_size: int = 500) -> np.ndarray:
    """Logits (float32 ``[N, classes]``) of ``uint8`` images ``[N, C, H, W]`` run in batches."""
    array = images.numpy() if isinstance(images, Tensor) else np.asarray(images)
    if array.dtype != np.uint8:
        raise ExportError(f"the ONNX model takes uint8 images, got {array.dtype}")
    outputs = [
        sess.run(None, {INPUT_NAME: array[start : start + batch_size]})[0]
        for start in range(0, len(array), batch_size)
    ]
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), dtype=np.float32)


def timed_runs_ms(sess: Any, batch: np.ndarray, *, warmup: int = 3, repeats: int = 20) -> list[float]:
    """Wall-clock milliseconds of ``repeats`` runs of one batch after ``warmup`` untimed ones."""
    import time

    feed = {INPUT_NAME: batch}
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def median(values: Sequence[float]) -> float:
    """The median (NaN for no values)."""
    return float(np.median(values)) if len(values) else math.nan
