"""Integer reference inference: bit-exact with the float simulation, shifts and adds only."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from greenshift.config import DSNNConfig
from greenshift.errors import ConfigError
from greenshift.shift import ShiftConv2d, ShiftLinear
from greenshift.shift.integer import (
    IntegerReferenceModel,
    IntegerShiftLayer,
    accumulator_bits,
    integer_forward,
)
from greenshift.train import build_model

FLOAT32_BITS = 24
FLOAT64_BITS = 53


def _assert_exact(layer: torch.nn.Module, x: torch.Tensor) -> None:
    layer.eval()
    with torch.no_grad():
        expected = layer(x)
        got = integer_forward(layer, x)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert torch.equal(got, expected), f"max difference {(got - expected).abs().max().item()}"


CONV_GEOMETRIES = [
    {},
    {"stride": 2, "padding": 1},
    {"groups": 2, "padding": 2, "dilation": 2},
    {"groups": 4, "padding": "same"},
    {"padding": 1, "padding_mode": "reflect", "bias": False},
]


@pytest.mark.parametrize("shift_type", ["Q", "PS"])
@pytest.mark.parametrize("weight_bits", [3, 4, 5])
@pytest.mark.parametrize(
    "geometry", CONV_GEOMETRIES, ids=lambda g: ",".join(f"{k}={v}" for k, v in g.items()) or "plain"
)
def test_conv_is_bit_exact_in_float32_within_24_bits(shift_type, weight_bits, geometry):
    # 4 input channels, 3x3: fan-in <= 36; act 2.2 keeps even Q with 5 bits (p_min -15) within 24 bits.
    layer = ShiftConv2d(
        4,
        8,
        3,
        shift_type=shift_type,
        weight_bits=weight_bits,
        act_integer_bits=2,
        act_fraction_bits=2,
        **geometry,
    )
    if layer.bias is not None:
        torch.nn.init.uniform_(layer.bias, -1.5, 1.5)
    assert accumulator_bits(layer) <= FLOAT32_BITS
    _assert_exact(layer, torch.randn(3, 4, 9, 9) * 2)


@pytest.mark.parametrize("shift_type", ["Q", "PS"])
@pytest.mark.parametrize("weight_bits", [3, 4, 5])
def test_act_8_8_is_bit_exact_against_the_float64_simulation(shift_type, weight_bits):
    conv = ShiftConv2d(
        8,
        6,
        3,
        padding=1,
        groups=2,
        shift_type=shift_type,
        weight_bits=weight_bits,
        act_integer_bits=8,
        act_fraction_bits=8,
    ).double()
    linear = ShiftLinear(
        30, 7, shift_type=shift_type, weight_bits=weight_bits, act_integer_bits=8, act_fraction_bits=8
    )
    linear = linear.double()
    assert accumulator_bits(conv) <= FLOAT64_BITS and accumulator_bits(linear) <= FLOAT64_BITS
    _assert_exact(conv, torch.randn(2, 8, 7, 7, dtype=torch.float64) * 20)
    _assert_exact(linear, torch.randn(4, 30, dtype=torch.float64) * 20)


@pytest.mark.parametrize("shift_type", ["Q", "PS"])
@pytest.mark.parametrize("weight_bits", [3, 4])
def test_linear_is_bit_exact_in_float32(shift_type, weight_bits):
    layer = ShiftLinear(
        20, 7, shift_type=shift_type, weight_bits=weight_bits, act_integer_bits=4, act_fraction_bits=4
    )
    torch.nn.init.uniform_(layer.bias, -3, 3)
    assert accumulator_bits(layer) <= FLOAT32_BITS
    _assert_exact(layer, torch.randn(5, 20) * 4)
    _assert_exact(layer, torch.randn(2, 3, 20))  # leading dimensions are kept


@given(
    groups=st.sampled_from([1, 2]),
    per_group_in=st.integers(1, 3),
    per_group_out=st.integers(1, 3),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    padding=st.integers(0, 2),
    dilation=st.integers(1, 2),
    shift_type=st.sampled_from(["Q", "PS"]),
    weight_bits=st.integers(2, 5),
    seed=st.integers(0, 2**16),
)
def test_random_conv_geometries_are_bit_exact(
    groups, per_group_in, per_group_out, kernel, stride, padding, dilation, shift_type, weight_bits, seed
):
    torch.manual_seed(seed)
    layer = ShiftConv2d(
        groups * per_group_in,
        groups * per_group_out,
        kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        shift_type=shift_type,
        weight_bits=weight_bits,
        act_integer_bits=2,
        act_fraction_bits=3,
    )
    assert accumulator_bits(layer) <= FLOAT32_BITS
    _assert_exact(layer, torch.randn(2, groups * per_group_in, 6, 7) * 2)


@pytest.mark.parametrize("backbone", ["tiny_cnn", "tiny_resnet"])
@pytest.mark.parametrize(
    ("shift_type", "weight_bits", "integer_bits", "fraction_bits", "dtype"),
    [
        ("Q", 3, 4, 4, torch.float32),
        ("PS", 4, 4, 4, torch.float32),
        ("Q", 5, 8, 8, torch.float64),
        ("PS", 5, 8, 8, torch.float64),
    ],
)
def test_whole_network_is_bit_exact(backbone, shift_type, weight_bits, integer_bits, fraction_bits, dtype):
    config = DSNNConfig(
        shift_type=shift_type,
        weight_bits=weight_bits,
        activation_integer_bits=integer_bits,
        activation_fraction_bits=fraction_bits,
    )
    model = build_model(config, backbone, num_classes=5, in_channels=3).to(dtype)
    # Non-trivial batch-norm statistics so that the float layers between the shift layers matter.
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 3, 12, 12, dtype=dtype))
    limit = FLOAT32_BITS if dtype == torch.float32 else FLOAT64_BITS
    integer_model = IntegerReferenceModel(model)
    layers = [m for m in integer_model.modules() if isinstance(m, IntegerShiftLayer)]
    assert len(layers) == sum(1 for m in model.modules() if isinstance(m, ShiftConv2d | ShiftLinear)) > 1
    assert all(
        accumulator_bits(m) <= limit for m in model.modules() if isinstance(m, ShiftConv2d | ShiftLinear)
    )
    _assert_exact(model, torch.randn(4, 3, 12, 12, dtype=dtype))


class _OpRecorder(TorchDispatchMode):
    """Records every aten operation with the dtypes of its tensor arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple[torch.dtype, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        dtypes = tuple(a.dtype for a in args if isinstance(a, torch.Tensor))
        self.calls.append((str(func.overloadpacket), dtypes))
        return func(*args, **(kwargs or {}))


def test_shift_layers_use_no_multiplication_on_integers():
    integer_model = IntegerReferenceModel(
        torch.nn.Sequential(
            ShiftConv2d(4, 6, 3, padding=1, groups=2, act_integer_bits=4, act_fraction_bits=4),
            ShiftLinear(5, 3, act_integer_bits=4, act_fraction_bits=4),
        )
    )
    with torch.no_grad(), _OpRecorder() as recorder:
        integer_model(torch.randn(2, 4, 5, 5))
    names = {name for name, _ in recorder.calls}
    forbidden = {
        "aten.convolution",
        "aten.mm",
        "aten.bmm",
        "aten.addmm",
        "aten.matmul",
        "aten.linear",
        "aten.dot",
    }
    assert not names & forbidden
    assert "aten.bitwise_left_shift" in names
    integer_mul = [c for c in recorder.calls if "mul" in c[0] and any(not d.is_floating_point for d in c[1])]
    assert not integer_mul, integer_mul
    # The only float multiplications are the input quantiser's power-of-two scaling.
    assert all(d == (torch.float32,) for name, d in recorder.calls if "mul" in name)


def test_original_model_is_untouched_and_reference_stays_in_eval():
    model = build_model(DSNNConfig(activation_integer_bits=4, activation_fraction_bits=4), "tiny_cnn", 3, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reference = IntegerReferenceModel(model).train()
    assert not reference.training and not reference.model.training
    assert model.training  # build_model returns a training-mode model and it stays so
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(isinstance(m, IntegerShiftLayer) for m in model.modules())


def test_too_wide_accumulator_is_refused():
    layer = ShiftConv2d(4, 4, 3, weight_bits=8, act_integer_bits=16, act_fraction_bits=16)
    assert accumulator_bits(layer) > 62
    with pytest.raises(ConfigError, match="int64"):
        IntegerReferenceModel(layer)
