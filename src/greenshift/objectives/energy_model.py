"""Modelled inference energy: per-layer operation counts times per-operation energies.

The model is deterministic and hardware-independent in the sense that it only depends on the
network and an *energy table* (picojoules per arithmetic operation and per bit read from memory).
See ``docs/energy.md`` for the conventions; in short, per image:

- float ``Conv``/``Linear``: every MAC is one fp32 multiplication plus one fp32 addition;
- shift layers: every MAC is one shift plus one integer addition at the activation width
  ``act_integer_bits + act_fraction_bits``;
- bias additions: one addition per output element at the layer's arithmetic;
- weight reads: ``weight_bits`` per shift weight, 32 bits per float weight, 32 bits per bias and
  BatchNorm scale/shift value, from the table's ``weight_memory``;
- activation traffic: input plus output elements of every Conv/Linear at the layer's activation width
  (fixed point into/out of shift layers, 32 bits otherwise), from the table's ``activation_memory``;
- BatchNorm, ReLU-like, pooling and residual additions: elementwise fp32 operations (assumed fused with
  the producing layer, so without extra memory traffic).

The arithmetic lives in small pure functions (property-tested); :func:`count_ops` collects the counts
with forward hooks and a torch function mode on one sample input.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from functools import cache
from importlib import resources
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from greenshift.errors import ConfigError
from greenshift.objectives._runtime import inference_context, model_device

FLOAT_BITS = 32
PICO = 1e-12

# How energy scales with operand width: adders and shifters grow linearly with the number of bits,
# array multipliers quadratically. Used both between table entries and beyond them.
SCALING_EXPONENT = {"int_add": 1, "int_mult": 2, "fp_add": 1, "fp_mult": 2, "shift": 1}
OPERATIONS = tuple(SCALING_EXPONENT)

_REQUIRED_KEYS = (
    "int_add_pj",
    "fp_add_pj",
    "fp_mult_pj",
    "memory_read_pj_per_64_bits",
    "weight_memory",
    "activation_memory",
)
_OPTIONAL_KEYS = ("name", "source", "notes", "int_mult_pj", "shift_pj")


# --------------------------------------------------------------------------------------------------
# Energy table
# --------------------------------------------------------------------------------------------------


def interpolate_energy(points: Mapping[int, float], bits: float, exponent: int) -> float:
    """Energy of an operation ``bits`` wide from the table ``points`` (width -> pJ).

    Between the two nearest widths the energy is linear in ``bits**exponent`` (exponent 1 for adders
    and shifters, 2 for multipliers); below the smallest or above the largest width the nearest entry
    is scaled by ``(bits / width) ** exponent``. With non-decreasing table values the result never
    decreases with ``bits``.
    """
    if not points:
        raise ValueError("an energy table entry needs at least one bit width")
    if not bits > 0:
        raise ValueError(f"bit width must be positive, got {bits}")
    widths = sorted(points)
    if bits <= widths[0]:
        return points[widths[0]] * (bits / widths[0]) ** exponent
    if bits >= widths[-1]:
        return points[widths[-1]] * (bits / widths[-1]) ** exponent
    for low, high in pairwise(widths):
        if low <= bits <= high:
            t = (bits**exponent - low**exponent) / (high**exponent - low**exponent)
            return points[low] + t * (points[high] - points[low])
    raise AssertionError("unreachable: bits lies between the smallest and largest width")


@dataclass(frozen=True)
class EnergyTable:
    """Per-operation energies in picojoules and where weights and activations live.

    ``*_pj`` map a bit width to the energy of one operation of that width; ``shift_pj=None`` means a
    shift costs an integer addition of the same width (the default, a barrel shifter approximated by
    an adder). ``memory_read_pj_per_64_bits`` maps a memory name (e.g. ``sram``, ``dram``) to the energy
    of one 64-bit read; ``weight_memory`` and ``activation_memory`` name entries of it.
    """

    int_add_pj: Mapping[int, float]
    fp_add_pj: Mapping[int, float]
    fp_mult_pj: Mapping[int, float]
    memory_read_pj_per_64_bits: Mapping[str, float]
    weight_memory: str
    activation_memory: str
    int_mult_pj: Mapping[int, float] | None = None
    shift_pj: Mapping[int, float] | None = None
    name: str = "custom"
    source: str = ""

    def op_pj(self, op: str, bits: float) -> float:
        """Energy in pJ of one ``op`` (one of :data:`OPERATIONS`) on ``bits``-wide operands."""
        if op not in SCALING_EXPONENT:
            raise ValueError(f"unknown operation {op!r}; known: {', '.join(OPERATIONS)}")
        points = getattr(self, f"{op}_pj")
        if op == "shift" and points is None:
            points = self.int_add_pj
        if points is None:
            raise ConfigError(f"energy table {self.name!r} has no {op}_pj entry")
        return interpolate_energy(points, bits, SCALING_EXPONENT[op])

    def read_pj_per_bit(self, memory: str) -> float:
        """Energy in pJ to read one bit from ``memory``."""
        return self.memory_read_pj_per_64_bits[memory] / 64.0

    @property
    def shift_rule(self) -> str:
        """How a shift is costed, in words."""
        if self.shift_pj is None:
            return "shift costed as an integer add of the same width"
        return "shift costed from the table's shift_pj entry"

    def describe(self) -> str:
        """One line naming the table and its memory assumptions."""
        return (
            f"energy table {self.name} (weights in {self.weight_memory}, activations in "
            f"{self.activation_memory}; {self.shift_rule})"
        )

    def to_dict(self) -> dict[str, Any]:
        """The table in its JSON file format."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, Mapping):
                value = {str(k): v for k, v in value.items()}
            out[f.name] = value
        if self.shift_pj is None:
            out["shift_pj"] = "int_add"
        return out


def energy_table_from_dict(data: Any, origin: str = "energy table") -> EnergyTable:
    """Validate a parsed JSON table; every problem is a :class:`ConfigError` naming ``origin``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{origin} must be a JSON object, not {type(data).__name__}")
    missing = [k for k in _REQUIRED_KEYS if k not in data]
    if missing:
        raise ConfigError(
            f"{origin} lacks key(s) {', '.join(missing)}; required: {', '.join(_REQUIRED_KEYS)}"
        )
    unknown = sorted(set(data) - set(_REQUIRED_KEYS) - set(_OPTIONAL_KEYS))
    if unknown:
        raise ConfigError(
            f"{origin} has unknown key(s) {', '.join(unknown)}; valid: "
            f"{', '.join(_REQUIRED_KEYS + _OPTIONAL_KEYS)}"
        )
    memories = _named_energies(data["memory_read_pj_per_64_bits"], "memory_read_pj_per_64_bits", origin)
    for key in ("weight_memory", "activation_memory"):
        if data[key] not in memories:
            raise ConfigError(
                f"{origin}: {key}={data[key]!r} is not one of memory_read_pj_per_64_bits "
                f"({', '.join(memories)})"
            )
    shift = data.get("shift_pj", "int_add")
    shift_points = None if shift == "int_add" else _width_energies(shift, "shift_pj", origin)
    int_mult = data.get("int_mult_pj")
    for key in ("name", "source", "notes"):
        if key in data and not isinstance(data[key], str):
            raise ConfigError(f"{origin}: {key} must be a string")
    return EnergyTable(
        int_add_pj=_width_energies(data["int_add_pj"], "int_add_pj", origin),
        fp_add_pj=_width_energies(data["fp_add_pj"], "fp_add_pj", origin),
        fp_mult_pj=_width_energies(data["fp_mult_pj"], "fp_mult_pj", origin),
        int_mult_pj=None if int_mult is None else _width_energies(int_mult, "int_mult_pj", origin),
        shift_pj=shift_points,
        memory_read_pj_per_64_bits=memories,
        weight_memory=data["weight_memory"],
        activation_memory=data["activation_memory"],
        name=data.get("name", "custom"),
        source=data.get("source", ""),
    )


def load_energy_table(path: str | Path | None = None) -> EnergyTable:
    """Read an energy table from a JSON file; ``None`` gives the shipped Horowitz (45 nm) table."""
    if path is None:
        return default_energy_table()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"energy table {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"energy table {path} is not valid JSON: {exc}") from None
    return energy_table_from_dict(data, origin=f"energy table {path}")


@cache
def default_energy_table() -> EnergyTable:
    """The shipped table (``energy_table.json``: Horowitz, ISSCC 2014, 45 nm)."""
    text = resources.files("greenshift.objectives").joinpath("energy_table.json").read_text()
    return energy_table_from_dict(json.loads(text), origin="shipped energy table")


def resolve_energy_table(table: EnergyTable | str | Path | None) -> EnergyTable:
    """Accept a table, a path to one, or ``None`` (the default table)."""
    return table if isinstance(table, EnergyTable) else load_energy_table(table)


def _number(value: Any, where: str, origin: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{origin}: {where} = {value!r} must be a finite number")
    if value < 0:
        raise ConfigError(f"{origin}: {where} = {value!r} must not be negative")
    return float(value)


def _width_energies(value: Any, key: str, origin: str) -> dict[int, float]:
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(
            f'{origin}: {key} must be a non-empty object of bit width -> pJ, e.g. {{"32": 0.1}}'
        )
    points: dict[int, float] = {}
    for width, energy in value.items():
        try:
            bits = int(str(width))
        except ValueError:
            bits = 0
        if bits <= 0 or str(bits) != str(width).strip():
            raise ConfigError(f"{origin}: {key} has bit width {width!r}; widths must be positive integers")
        points[bits] = _number(energy, f"{key}[{width!r}]", origin)
    ordered = [points[w] for w in sorted(points)]
    # Monotone tables keep the model's promise "fewer bits never cost more".
    if any(b < a for a, b in pairwise(ordered)):
        raise ConfigError(f"{origin}: {key} energies must not decrease as the bit width grows")
    return points


def _named_energies(value: Any, key: str, origin: str) -> dict[str, float]:
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(f"{origin}: {key} must be a non-empty object of memory name -> pJ")
    return {str(name): _number(energy, f"{key}[{name!r}]", origin) for name, energy in value.items()}


# --------------------------------------------------------------------------------------------------
# Pure energy arithmetic
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerOps:
    """Operation counts of one layer (or functional operation) for a single image.

    ``kind`` is ``"shift"`` for shift layers and ``"float"`` otherwise. ``macs`` are multiply-
    accumulates of Conv/Linear layers; ``elementwise_adds``/``elementwise_mults`` are fp32 operations of
    BatchNorm, ReLU-like (comparisons count as additions), pooling and residual additions.
    """

    name: str
    op: str
    kind: str = "float"
    macs: int = 0
    bias_adds: int = 0
    elementwise_adds: int = 0
    elementwise_mults: int = 0
    weights: int = 0
    weight_bits: int = FLOAT_BITS
    other_params: int = 0
    act_bits: int = FLOAT_BITS
    in_activations: int = 0
    out_activations: int = 0

    def merged(self, other: LayerOps) -> LayerOps:
        """Counts of two calls of the same layer added together (a module used twice)."""
        summed = (
            "macs",
            "bias_adds",
            "elementwise_adds",
            "elementwise_mults",
            "in_activations",
            "out_activations",
        )
        return replace(self, **{k: getattr(self, k) + getattr(other, k) for k in summed})


@dataclass(frozen=True)
class EnergyBreakdown:
    """Modelled energy of one layer split by cause, in picojoules."""

    compute_pj: float
    weight_memory_pj: float
    activation_memory_pj: float

    @property
    def total_pj(self) -> float:
        """Sum of the three parts in pJ."""
        return self.compute_pj + self.weight_memory_pj + self.activation_memory_pj

    @property
    def total_j(self) -> float:
        """Sum of the three parts in joules."""
        return self.total_pj * PICO


def mac_energy_pj(table: EnergyTable, kind: str, act_bits: int) -> float:
    """Energy of one multiply-accumulate: fp32 mult + add, or shift + integer add at ``act_bits``."""
    if kind == "shift":
        return table.op_pj("shift", act_bits) + table.op_pj("int_add", act_bits)
    return table.op_pj("fp_mult", FLOAT_BITS) + table.op_pj("fp_add", FLOAT_BITS)


def compute_energy_pj(
    table: EnergyTable,
    *,
    kind: str,
    macs: int,
    act_bits: int,
    bias_adds: int = 0,
    elementwise_adds: int = 0,
    elementwise_mults: int = 0,
) -> float:
    """Arithmetic energy of a layer in pJ (MACs, bias additions and fp32 elementwise operations)."""
    add_pj = table.op_pj("int_add", act_bits) if kind == "shift" else table.op_pj("fp_add", FLOAT_BITS)
    return (
        macs * mac_energy_pj(table, kind, act_bits)
        + bias_adds * add_pj
        + elementwise_adds * table.op_pj("fp_add", FLOAT_BITS)
        + elementwise_mults * table.op_pj("fp_mult", FLOAT_BITS)
    )


def weight_memory_energy_pj(
    table: EnergyTable, *, weights: int, weight_bits: int, other_params: int = 0
) -> float:
    """Energy in pJ to read ``weights`` values of ``weight_bits`` plus ``other_params`` 32-bit values."""
    bits = weights * weight_bits + other_params * FLOAT_BITS
    return bits * table.read_pj_per_bit(table.weight_memory)


def activation_memory_energy_pj(
    table: EnergyTable, *, in_activations: int, out_activations: int, act_bits: int
) -> float:
    """Energy in pJ to read the input and write the output activations at ``act_bits`` each."""
    return (in_activations + out_activations) * act_bits * table.read_pj_per_bit(table.activation_memory)


def layer_energy(ops: LayerOps, table: EnergyTable) -> EnergyBreakdown:
    """Modelled energy of one layer's operation counts."""
    return EnergyBreakdown(
        compute_pj=compute_energy_pj(
            table,
            kind=ops.kind,
            macs=ops.macs,
            act_bits=ops.act_bits,
            bias_adds=ops.bias_adds,
            elementwise_adds=ops.elementwise_adds,
            elementwise_mults=ops.elementwise_mults,
        ),
        weight_memory_pj=weight_memory_energy_pj(
            table, weights=ops.weights, weight_bits=ops.weight_bits, other_params=ops.other_params
        ),
        activation_memory_pj=activation_memory_energy_pj(
            table,
            in_activations=ops.in_activations,
            out_activations=ops.out_activations,
            act_bits=ops.act_bits,
        ),
    )


# --------------------------------------------------------------------------------------------------
# Counting operations
# --------------------------------------------------------------------------------------------------


def shift_settings(module: nn.Module) -> tuple[int, int] | None:
    """``(weight_bits, activation_bits)`` of a shift layer, ``None`` for any other module.

    Recognised by the ShiftLayer attributes (``weight_bits``, ``act_integer_bits``,
    ``act_fraction_bits``) on a Conv/Linear, so every implementation of the shift layers counts.
    """
    if not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
        return None
    try:
        weight_bits = int(module.weight_bits)
        act_bits = int(module.act_integer_bits) + int(module.act_fraction_bits)
    except (AttributeError, TypeError):
        return None
    return weight_bits, act_bits


def count_ops(model: nn.Module, input_shape: Sequence[int]) -> list[LayerOps]:
    """Per-layer operation counts of ``model`` for one input of ``input_shape`` (no batch dimension).

    The model runs once in eval mode without autograd on a zero input on its own device; its
    train/eval flags are restored. Modules called several times are merged into one entry; functional
    operations in a module's ``forward`` (e.g. ``out + shortcut``, ``F.relu``) appear as
    ``"<module>.<function>()"``.
    """
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s <= 0 for s in shape):
        raise ConfigError(
            f"input_shape must be positive sizes without the batch dimension, got {tuple(input_shape)}"
        )
    counter = _OpCounter(model)
    sample = torch.zeros((1, *shape), device=model_device(model))
    with inference_context(model), counter.attached(), _FunctionalCounter(counter):
        model(sample)
    return counter.results()


class _OpCounter:
    """Forward hooks that record :class:`LayerOps` for known leaf modules and track the module stack."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.names = {id(m): name for name, m in model.named_modules()}
        self.stack: list[str] = []
        self.leaf_depth = 0
        self.entries: dict[str, LayerOps] = {}

    @contextmanager
    def attached(self) -> Iterator[None]:
        handles = []
        for module in self.model.modules():
            handles.append(module.register_forward_pre_hook(self._pre))
            handles.append(module.register_forward_hook(self._post, always_call=True))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self.stack.append(self.names.get(id(module), type(module).__name__))
        if _module_counter(module) is not None:
            self.leaf_depth += 1

    def _post(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        name = self.stack.pop()
        counter = _module_counter(module)
        if counter is None:
            return
        self.leaf_depth -= 1
        inp = args[0] if args and isinstance(args[0], Tensor) else None
        if inp is not None and isinstance(output, Tensor):
            self.add(counter(name, module, inp, output))

    def add(self, ops: LayerOps) -> None:
        previous = self.entries.get(ops.name)
        self.entries[ops.name] = ops if previous is None else previous.merged(ops)

    def parent(self) -> str:
        return self.stack[-1] if self.stack else ""

    def results(self) -> list[LayerOps]:
        return list(self.entries.values())


class _FunctionalCounter(torch.overrides.TorchFunctionMode):
    """Counts elementwise functional operations called outside known leaf modules."""

    def __init__(self, counter: _OpCounter) -> None:
        super().__init__()
        self.counter = counter
        self.categories = _functional_categories()

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: Any = (), kwargs: Any = None
    ) -> Any:
        result = func(*args, **(kwargs or {}))
        category = self.categories.get(func)
        if category is None or self.counter.leaf_depth > 0 or not isinstance(result, Tensor):
            return result
        inp = args[0] if args and isinstance(args[0], Tensor) else result
        fn_name = getattr(func, "__name__", "op").strip("_")
        parent = self.counter.parent()
        name = f"{parent}.{fn_name}()" if parent else f"{fn_name}()"
        self.counter.add(_elementwise_ops(name, fn_name, category, inp.numel(), result.numel()))
        return result


def _functional_categories() -> dict[Any, str]:
    """Functional operations that cost arithmetic, by cost category."""
    T = torch.Tensor
    F = torch.nn.functional
    groups = {
        "add": [
            "add",
            "add_",
            "sub",
            "sub_",
            "__add__",
            "__radd__",
            "__iadd__",
            "__sub__",
            "__rsub__",
            "__isub__",
        ],
        "mult": [
            "mul",
            "mul_",
            "div",
            "div_",
            "__mul__",
            "__rmul__",
            "__imul__",
            "__truediv__",
            "__itruediv__",
        ],
        "compare": ["relu", "relu_", "clamp", "clamp_", "maximum", "minimum"],
    }
    categories: dict[Any, str] = {}
    for category, names in groups.items():
        for name in names:
            for owner in (T, torch):
                if hasattr(owner, name):
                    categories[getattr(owner, name)] = category
    for name in ("relu", "relu6", "leaky_relu", "hardtanh"):
        categories[getattr(F, name)] = "compare"
    for name in ("max_pool1d", "max_pool2d", "max_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d"):
        categories[getattr(F, name)] = "max_pool"
    for name in ("avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d"):
        categories[getattr(F, name)] = "avg_pool"
    categories[F.batch_norm] = "norm"
    return categories


def _elementwise_ops(name: str, op: str, category: str, n_in: int, n_out: int) -> LayerOps:
    """Counts of an elementwise/pooling operation from its input and output sizes.

    Pooling without a known window counts ``n_in - n_out`` reductions, exact when windows tile the
    input (e.g. global average pooling).
    """
    adds = mults = 0
    if category in ("add", "compare"):
        adds = n_out
    elif category == "mult":
        mults = n_out
    elif category == "norm":
        adds = mults = n_out
    elif category == "max_pool":
        adds = max(n_in - n_out, 0)
    elif category == "avg_pool":
        adds, mults = max(n_in - n_out, 0), n_out
    return LayerOps(name=name, op=op, elementwise_adds=adds, elementwise_mults=mults)


_ModuleCounter = Callable[[str, nn.Module, Tensor, Tensor], LayerOps]


def _module_counter(module: nn.Module) -> _ModuleCounter | None:
    """The counting rule for a module type, ``None`` for modules whose inner calls are counted instead."""
    if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
        return _count_weighted
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return _count_batchnorm
    if isinstance(module, (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh)):
        return _count_compare
    if isinstance(module, (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd)):
        return _count_window_pool
    if isinstance(module, (nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)):
        return _count_adaptive_pool
    return None


def _count_weighted(name: str, module: nn.Module, inp: Tensor, out: Tensor) -> LayerOps:
    """Conv/Linear: MACs from the output size and the weight's fan-in."""
    if isinstance(module, nn.Linear):
        weights = module.in_features * module.out_features
        macs = out.numel() * module.in_features
    else:
        kernel = math.prod(module.kernel_size)
        weights = module.out_channels * (module.in_channels // module.groups) * kernel
        if module.transposed:
            # Every input element is scattered to out_channels/groups * kernel outputs.
            macs = inp.numel() * (module.out_channels // module.groups) * kernel
        else:
            macs = out.numel() * (module.in_channels // module.groups) * kernel
    bias = getattr(module, "bias", None)
    bias_count = bias.numel() if isinstance(bias, Tensor) else 0
    settings = shift_settings(module)
    weight_bits, act_bits = settings if settings is not None else (FLOAT_BITS, FLOAT_BITS)
    return LayerOps(
        name=name,
        op=type(module).__name__,
        kind="shift" if settings is not None else "float",
        macs=macs,
        bias_adds=out.numel() if bias_count else 0,
        weights=weights,
        weight_bits=weight_bits,
        other_params=bias_count,
        act_bits=act_bits,
        in_activations=inp.numel(),
        out_activations=out.numel(),
    )


def _count_batchnorm(name: str, module: nn.Module, inp: Tensor, out: Tensor) -> LayerOps:
    """Inference BatchNorm folds to one multiplication and one addition per element."""
    return LayerOps(
        name=name,
        op=type(module).__name__,
        elementwise_adds=out.numel(),
        elementwise_mults=out.numel(),
        other_params=2 * module.num_features,
    )


def _count_compare(name: str, module: nn.Module, inp: Tensor, out: Tensor) -> LayerOps:
    return LayerOps(name=name, op=type(module).__name__, elementwise_adds=out.numel())


def _count_window_pool(name: str, module: nn.Module, inp: Tensor, out: Tensor) -> LayerOps:
    """Fixed-window pooling: window-1 reductions per output (+1 scaling for averages)."""
    kernel = module.kernel_size
    window = math.prod(kernel) if isinstance(kernel, tuple) else kernel ** (inp.dim() - 2)
    is_avg = isinstance(module, nn.modules.pooling._AvgPoolNd)
    return LayerOps(
        name=name,
        op=type(module).__name__,
        elementwise_adds=out.numel() * (window - 1),
        elementwise_mults=out.numel() if is_avg else 0,
    )


def _count_adaptive_pool(name: str, module: nn.Module, inp: Tensor, out: Tensor) -> LayerOps:
    category = "avg_pool" if isinstance(module, nn.modules.pooling._AdaptiveAvgPoolNd) else "max_pool"
    return _elementwise_ops(name, type(module).__name__, category, inp.numel(), out.numel())


def model_energy_j(model: nn.Module, input_shape: Sequence[int], table: EnergyTable | None = None) -> float:
    """Modelled inference energy per image in joules (sum of :func:`layer_energy` over all layers)."""
    table = table or default_energy_table()
    return sum(layer_energy(ops, table).total_pj for ops in count_ops(model, input_shape)) * PICO


def energy_with_shift_settings_j(
    ops: Sequence[LayerOps], weight_bits: int, act_bits: int, table: EnergyTable | None = None
) -> float:
    """Modelled energy per image in joules of counted ``ops`` with every shift layer at new widths.

    A shift layer's counts do not depend on its widths, only its costs do, so the energy of a network
    whose shift layers get ``weight_bits`` and ``act_bits`` follows from the counts of the same network
    at any other widths: the search prices many configurations from one count per shift depth.
    """
    table = table or default_energy_table()
    total_pj = 0.0
    for layer in ops:
        if layer.kind == "shift":
            layer = replace(layer, weight_bits=weight_bits, act_bits=act_bits)
        total_pj += layer_energy(layer, table).total_pj
    return total_pj * PICO
