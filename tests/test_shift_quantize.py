"""Quantisation maths: shift ranges, power-of-two and fixed-point rounding, STE gradients."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from greenshift.errors import ConfigError
from greenshift.shift import quantize
from greenshift.shift.quantize import (
    _round_fixed_point_scaled,
    _round_fixed_point_two_op,
    clamp_magnitude,
    fixed_point_range,
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

finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
weight_bits_st = st.integers(2, 8)
shift_type_st = st.sampled_from(["Q", "PS"])


def test_shift_range_values() -> None:
    assert shift_range(5, "Q") == (-15, 0)
    assert shift_range(5, "PS") == (-14, 0)
    assert shift_range(2, "Q") == (-1, 0)
    assert shift_range(2, "PS") == (0, 0)
    assert shift_range(8, "Q") == (-127, 0)
    assert shift_range(8, "PS") == (-126, 0)


@pytest.mark.parametrize(
    ("args", "match"),
    [((1, "Q"), "weight_bits=1"), ((9, "PS"), "weight_bits=9"), ((5, "X"), "shift_type='X'")],
)
def test_shift_range_rejects_bad_settings(args: tuple[int, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        shift_range(*args)


def test_validate_shift_settings_names_the_bad_value() -> None:
    validate_shift_settings("PS", 5, "stochastic", 16, 16)
    with pytest.raises(ConfigError, match="rounding='up'"):
        validate_shift_settings("Q", 5, "up", 16, 16)
    with pytest.raises(ConfigError, match="act_integer_bits=0"):
        validate_shift_settings("Q", 5, "deterministic", 0, 16)
    with pytest.raises(ConfigError, match="act_fraction_bits=33"):
        validate_shift_settings("Q", 5, "deterministic", 16, 33)


def _reference_power_of_two(value: float, p_min: int, p_max: int) -> float:
    if value == 0:
        return 0.0
    exponent = min(max(math.log2(abs(value)), p_min), p_max)
    return math.copysign(2.0 ** round(exponent), value)


@given(st.lists(finite32, min_size=1, max_size=40), weight_bits_st, shift_type_st)
def test_power_of_two_rounding_matches_reference_and_range(
    values: list[float], weight_bits: int, shift_type: str
) -> None:
    p_min, p_max = shift_range(weight_bits, shift_type)
    weight = torch.tensor(values, dtype=torch.float32)
    rounded = round_power_of_two(weight, p_min, p_max)
    for w, r in zip(weight.tolist(), rounded.tolist(), strict=True):
        if w == 0:
            assert r == 0
            continue
        p = math.log2(abs(r))
        assert p == int(p) and p_min <= p <= p_max
        assert math.copysign(1.0, r) == math.copysign(1.0, w)
        expected = _reference_power_of_two(w, p_min, p_max)
        # log2 in float32 may land on the other side of a half-way exponent by one ulp.
        if r != expected:
            assert abs(abs(math.log2(abs(w))) % 1 - 0.5) < 1e-5


def test_round_exponent_deterministic_values() -> None:
    e = torch.tensor([-0.4, -0.6, -2.5, -3.5, 0.7, -float("inf"), -20.0])
    assert round_exponent(e, -4, 0).tolist() == [-0.0, -1.0, -2.0, -4.0, 0.0, -4.0, -4.0]


@given(st.lists(st.floats(-30.0, 5.0, width=32), min_size=1, max_size=30), weight_bits_st)
def test_stochastic_exponent_is_a_neighbour_in_range(values: list[float], weight_bits: int) -> None:
    p_min, p_max = shift_range(weight_bits, "Q")
    e = torch.tensor(values)
    p = round_exponent(e, p_min, p_max, stochastic=True)
    clamped = e.clamp(p_min, p_max)
    assert torch.all((p == torch.floor(clamped)) | (p == torch.ceil(clamped)))
    assert torch.all(p == torch.round(p))


@pytest.mark.parametrize("value", [0.3, -0.7, 0.0451, 0.99, -3.0, 1e-7])
def test_stochastic_power_of_two_is_unbiased(value: float) -> None:
    p_min, p_max = shift_range(4, "Q")  # [-7, 0]
    n = 200_000
    generator = torch.Generator().manual_seed(123)
    samples = round_power_of_two(torch.full((n,), value), p_min, p_max, stochastic=True, generator=generator)
    clamped = math.copysign(min(max(abs(value), 2.0**p_min), 2.0**p_max), value)
    low = 2.0 ** math.floor(math.log2(abs(clamped)))
    # Bernoulli between low and 2*low: standard error of the mean is at most low/2/sqrt(n).
    assert abs(samples.mean().item() - clamped) < 5 * (low / 2) / math.sqrt(n) + 1e-12
    assert set(samples.abs().unique().tolist()) <= {low, 2 * low}


def test_stochastic_ps_rounding_is_unbiased_in_magnitude() -> None:
    shift = torch.full((200_000,), -2.3)
    samples = round_sign_shift(torch.ones_like(shift), shift, -6, 0, stochastic=True)
    assert samples.mean().item() == pytest.approx(2.0**-2.3, abs=5 * 0.125 / math.sqrt(2e5))
    # Rounding the exponent itself (floor(e + u)) would give mean 0.7*0.25 + 0.3*0.125 = 0.2125.
    assert abs(samples.mean().item() - 0.2125) > 0.005


def test_round_ternary_values() -> None:
    s = torch.tensor([-3.0, -0.6, -0.5, -0.2, 0.0, 0.4, 0.5, 0.51, 7.0])
    assert round_ternary(s).tolist() == [-1.0, -1.0, -0.0, -0.0, 0.0, 0.0, 0.0, 1.0, 1.0]


def test_round_sign_shift_values() -> None:
    sign = torch.tensor([0.9, -1.2, 0.1, -0.7])
    shift = torch.tensor([-1.4, -0.3, -2.0, -9.0])
    assert round_sign_shift(sign, shift, -4, 0).tolist() == [0.5, -1.0, 0.0, -1.0 / 16]


def test_fixed_point_range_values() -> None:
    assert fixed_point_range(16, 16) == (-32768.0, 32768.0 - 2.0**-16)
    assert fixed_point_range(1, 0) == (-1.0, 0.0)
    assert fixed_point_range(4, 2) == (-8.0, 7.75)


def _reference_fixed(value: float, integer_bits: int, fraction_bits: int) -> float:
    scaled = value * 2.0**fraction_bits  # exact for doubles made from float32 values
    q = round(scaled)  # Python rounds half to even, like the implementation
    top = 2 ** (integer_bits - 1 + fraction_bits)
    q = min(max(q, -top), top - 1)
    return q / 2.0**fraction_bits


@given(
    st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=40),
    st.integers(1, 12),
    st.integers(0, 12),
)
def test_fixed_point_matches_reference_on_grid_and_in_range(
    values: list[float], integer_bits: int, fraction_bits: int
) -> None:
    x = torch.tensor(values, dtype=torch.float32)
    out = round_fixed_point(x, integer_bits, fraction_bits)
    low, high = fixed_point_range(integer_bits, fraction_bits)
    for v, r in zip(x.tolist(), out.tolist(), strict=True):
        assert r == _reference_fixed(v, integer_bits, fraction_bits)
        assert low <= r <= high
        assert (r * 2.0**fraction_bits).is_integer()


def test_fixed_point_rounds_half_to_even_and_saturates() -> None:
    step = 2.0**-2
    x = torch.tensor([0.5 * step, 1.5 * step, 2.5 * step, -0.5 * step, 7.9, 100.0, -8.0, -8.2, -1e30])
    assert round_fixed_point(x, 4, 2).tolist() == [0.0, 0.5, 0.5, -0.0, 7.75, 7.75, -8.0, -8.0, -8.0]


def test_fixed_point_special_values() -> None:
    x = torch.tensor([float("inf"), -float("inf"), float("nan"), 3e38])
    out = round_fixed_point(x, 16, 16)
    assert out[0].item() == out[3].item() and out[1].item() == -32768.0
    assert math.isnan(out[2].item())


def test_fixed_point_top_of_range_when_not_representable() -> None:
    # 2**15 - 2**-16 needs 32 significant bits: float32 saturates at the largest grid value it holds.
    out = round_fixed_point(torch.tensor([1e9, 32767.99]), 16, 16)
    assert out.tolist() == [32768.0 - 2.0**-9, 32767.990234375]
    assert out.dtype == torch.float32
    out64 = round_fixed_point(torch.tensor([1e9], dtype=torch.float64), 16, 16)
    assert out64.item() == 32768.0 - 2.0**-16


def test_fixed_point_wide_formats_keep_small_values() -> None:
    x = torch.tensor([1.0 + 2.0**-20, 2.0**-40, 12345.678])
    out = round_fixed_point(x, 32, 32)
    assert out[0].item() == 1.0 + 2.0**-20
    assert out[1].item() == 0.0
    assert out[2].item() == x[2].item()


def test_ste_power_of_two_gradient_is_identity() -> None:
    w = torch.tensor([0.3, -0.7, 2.0, 1e-9], requires_grad=True)
    out = ste_power_of_two(w, -8, 0)
    assert out.tolist() == [0.25, -0.5, 1.0, 2.0**-8]
    out.backward(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert w.grad.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_ste_sign_shift_gradients_are_analytic() -> None:
    sign = torch.tensor([0.8, -1.3, 0.2, -0.6], requires_grad=True)
    shift = torch.tensor([-1.2, -0.4, -3.0, -2.6], requires_grad=True)
    weight = ste_sign_shift(sign, shift, -6, 0)
    expected_weight = torch.tensor([0.5, -1.0, 0.0, -0.125])
    assert torch.equal(weight, expected_weight)
    upstream = torch.tensor([1.0, -2.0, 3.0, 0.5])
    weight.backward(upstream)
    assert torch.allclose(shift.grad, upstream * expected_weight * math.log(2.0))
    assert torch.equal(sign.grad, upstream)


def test_ste_fixed_point_gradient_is_identity_even_when_saturated() -> None:
    x = torch.tensor([0.3, 100.0, -100.0], requires_grad=True)
    out = ste_fixed_point(x, 4, 2)
    assert out.tolist() == [0.25, 7.75, -8.0]
    out.backward(torch.tensor([1.0, 2.0, 3.0]))
    assert x.grad.tolist() == [1.0, 2.0, 3.0]


@given(
    st.lists(st.floats(-(2.0**13), 2.0**13, width=32, exclude_max=True, exclude_min=True), min_size=1),
    st.integers(0, 8),
)
def test_two_operation_fixed_point_path_is_exact_in_its_domain(
    values: list[float], fraction_bits: int
) -> None:
    # Domain of the two-operation path for float32: |x| < 2**(22 - fraction_bits).
    limit = 2.0 ** (22 - fraction_bits)
    x = torch.tensor([v for v in values if abs(v) < limit] or [0.0])
    two_op = _round_fixed_point_two_op(x, fraction_bits)
    assert torch.equal(two_op, _round_fixed_point_scaled(x, 24, fraction_bits))
    assert two_op.tolist() == [_reference_fixed(v, 24, fraction_bits) for v in x.tolist()]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_tensors_round_identically_on_both_paths(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    monkeypatch.setattr(
        quantize,
        "_round_fixed_point_two_op",
        lambda *args: calls.append(1) or _round_fixed_point_two_op(*args),
    )
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(20_000, generator=generator, dtype=dtype) * 8
    x[:1000] = torch.arange(-500, 500, dtype=dtype) * 2.0**-17  # exact ties between grid points
    general = _round_fixed_point_scaled(x, 16, 16)
    assert torch.equal(round_fixed_point(x, 16, 16), general)
    assert calls == [1]  # that was the two-operation path
    assert general[:1000].tolist() == [_reference_fixed(v, 16, 16) for v in x[:1000].tolist()]
    x[7] = 1e6  # out of the two-operation domain and of the range: the general path saturates it
    out = round_fixed_point(x, 16, 16)
    assert torch.equal(out, _round_fixed_point_scaled(x, 16, 16))
    assert out[7].item() == round_fixed_point(torch.tensor([1e6], dtype=dtype), 16, 16).item()
    x[7] = float("nan")
    assert math.isnan(round_fixed_point(x, 16, 16)[7].item())
    # Near the top of a narrow range the check must fall back so that saturation happens.
    narrow = torch.full((5000,), 7.9, dtype=dtype)
    assert round_fixed_point(narrow, 4, 2).unique().tolist() == [7.75]
    assert calls == [1]


def test_chunked_weight_rounding_matches_the_direct_computation(monkeypatch: pytest.MonkeyPatch) -> None:
    # Chunking applies only with several threads (the test session runs with one).
    monkeypatch.setattr(quantize, "_SERIAL_CHUNK", 1000)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        w = (torch.randn(7, 1001) * 0.2).requires_grad_()
        q = ste_power_of_two(w, -15, 0)
        assert torch.equal(q, round_power_of_two(w.detach(), -15, 0))
        q.sum().backward()
        assert torch.equal(w.grad, torch.ones_like(w))

        sign = torch.randn(7, 1001).requires_grad_()
        shift = (torch.rand(7, 1001) * -8).requires_grad_()
        ps = ste_sign_shift(sign, shift, -6, 0)
        assert torch.equal(ps, round_sign_shift(sign.detach(), shift.detach(), -6, 0))
        upstream = torch.randn(7, 1001)
        ps.backward(upstream)
        assert torch.equal(shift.grad, (upstream * ps.detach()).mul_(math.log(2.0)))
        assert torch.equal(sign.grad, upstream)

        stochastic = ste_power_of_two(w, -15, 0, stochastic=True).detach()
        exponent = torch.log2(w.detach().abs()).clamp(-15, 0)
        p = torch.log2(stochastic.abs())
        assert torch.all((p == exponent.floor()) | (p == exponent.ceil()))
    finally:
        torch.set_num_threads(previous)


@given(
    st.lists(st.floats(-8.0, 8.0, allow_nan=False), min_size=1, max_size=32),
    st.integers(-7, 0),
)
def test_clamp_magnitude_keeps_signs_and_puts_magnitudes_in_range(values: list[float], p_min: int) -> None:
    weight = torch.tensor(values, dtype=torch.float64)
    low, high = 2.0**p_min, 1.0
    out = clamp_magnitude(weight, low, high)
    assert torch.equal(torch.sign(out), torch.sign(weight))
    nonzero = weight != 0
    assert bool(((out.abs() >= low) & (out.abs() <= high))[nonzero].all())
    inside = nonzero & (weight.abs() >= low) & (weight.abs() <= high)
    assert torch.equal(out[inside], weight[inside])
    assert torch.equal(
        clamp_magnitude(out, low, high), out
    )  # a projection: applying it twice changes nothing
