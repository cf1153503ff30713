"""ShiftConv2d / ShiftLinear: forward equivalence, weight values, STE gradients, caching, persistence."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from greenshift.errors import ConfigError
from greenshift.shift import ShiftConv2d, ShiftLayer, ShiftLinear
from greenshift.shift.layers import ShiftEncoding
from greenshift.shift.quantize import round_fixed_point, round_power_of_two, round_sign_shift, shift_range

SETTINGS = {"weight_bits": 5, "rounding": "deterministic", "act_integer_bits": 16, "act_fraction_bits": 16}


def _reference_weight(layer: ShiftLayer) -> torch.Tensor:
    p_min, p_max = shift_range(layer.weight_bits, layer.shift_type)
    with torch.no_grad():
        if layer.shift_type == "Q":
            return round_power_of_two(layer.weight, p_min, p_max)
        return round_sign_shift(layer.sign, layer.shift, p_min, p_max)


def _fixed(t: torch.Tensor | None, layer: ShiftLayer) -> torch.Tensor | None:
    if t is None:
        return None
    return round_fixed_point(t, layer.act_integer_bits, layer.act_fraction_bits)


@st.composite
def conv_cases(draw: st.DrawFn) -> dict:
    groups = draw(st.integers(1, 3))
    depthwise = draw(st.booleans())
    in_channels = groups * draw(st.integers(1, 3))
    out_channels = in_channels if depthwise else groups * draw(st.integers(1, 3))
    if depthwise:
        groups = in_channels
    return {
        "in_channels": in_channels,
        "out_channels": out_channels,
        "kernel_size": (draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        "stride": draw(st.integers(1, 2)),
        "padding": draw(st.integers(0, 2)),
        "dilation": draw(st.integers(1, 2)),
        "groups": groups,
        "bias": draw(st.booleans()),
    }


@given(
    conv_cases(),
    st.sampled_from(["Q", "PS"]),
    st.integers(2, 8),
    st.integers(2, 16),
    st.integers(0, 16),
    st.floats(0.01, 30.0),
)
def test_conv_forward_equals_reference(
    case: dict, shift_type: str, weight_bits: int, int_bits: int, frac_bits: int, scale: float
) -> None:
    conv = nn.Conv2d(**case)
    layer = ShiftConv2d.from_float(
        conv,
        shift_type=shift_type,
        weight_bits=weight_bits,
        rounding="deterministic",
        act_integer_bits=int_bits,
        act_fraction_bits=frac_bits,
    )
    x = torch.randn(2, case["in_channels"], 7, 6) * scale
    expected = F.conv2d(
        _fixed(x, layer),
        _reference_weight(layer),
        _fixed(layer.bias, layer),
        case["stride"],
        case["padding"],
        case["dilation"],
        case["groups"],
    )
    for mode in (True, False):
        layer.train(mode)
        with torch.no_grad():
            assert torch.equal(layer(x), expected)


@given(
    st.integers(1, 6),
    st.integers(1, 6),
    st.booleans(),
    st.sampled_from(["Q", "PS"]),
    st.integers(2, 8),
    st.integers(1, 16),
    st.integers(0, 12),
)
def test_linear_forward_equals_reference(
    n_in: int, n_out: int, bias: bool, shift_type: str, weight_bits: int, int_bits: int, frac_bits: int
) -> None:
    layer = ShiftLinear(
        n_in,
        n_out,
        bias=bias,
        shift_type=shift_type,
        weight_bits=weight_bits,
        act_integer_bits=int_bits,
        act_fraction_bits=frac_bits,
    )
    x = torch.randn(3, 2, n_in) * 4
    expected = F.linear(_fixed(x, layer), _reference_weight(layer), _fixed(layer.bias, layer))
    assert torch.equal(layer(x), expected)


def test_hand_computed_linear_forward() -> None:
    float_layer = nn.Linear(2, 1)
    with torch.no_grad():
        float_layer.weight.copy_(torch.tensor([[0.3, -0.7]]))
        float_layer.bias.fill_(0.3)
    layer = ShiftLinear.from_float(float_layer, act_integer_bits=4, act_fraction_bits=2, weight_bits=3)
    # weights -> 0.25, -0.5; input (1.1, 2.9) -> (1.0, 3.0); bias 0.3 -> 0.25
    out = layer(torch.tensor([[1.1, 2.9]]))
    assert out.item() == 0.25 * 1.0 - 0.5 * 3.0 + 0.25


@pytest.mark.parametrize("shift_type", ["Q", "PS"])
@pytest.mark.parametrize("weight_bits", [2, 3, 5, 8])
def test_quantized_weights_are_signed_powers_of_two_in_range(shift_type: str, weight_bits: int) -> None:
    conv = nn.Conv2d(4, 6, 3)
    with torch.no_grad():
        conv.weight.mul_(torch.logspace(-12, 1, conv.weight.numel(), base=2).view_as(conv.weight))
        conv.weight[0, 0] = 0.0
    layer = ShiftConv2d.from_float(conv, shift_type=shift_type, **{**SETTINGS, "weight_bits": weight_bits})
    w = layer.quantized_weight().detach()
    p_min, p_max = shift_range(weight_bits, shift_type)
    nonzero = w != 0
    exponents = torch.log2(w[nonzero].abs())
    assert torch.equal(exponents, exponents.round())
    assert exponents.min() >= p_min and exponents.max() <= p_max
    assert torch.equal(torch.sign(w[nonzero]), torch.sign(conv.weight[nonzero]))
    # Zeros come from exact zeros of the float weight (Q keeps a binary sign; PS starts with sign 0 there).
    assert torch.equal(~nonzero, conv.weight == 0)


def test_ps_initialisation_from_float() -> None:
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.3, -0.7, 0.0], [1.5, -1e-6, 0.126]]))
    layer = ShiftLinear.from_float(lin, shift_type="PS", **SETTINGS)
    assert "weight" not in dict(layer.named_parameters())
    assert layer.sign.tolist() == [[1.0, -1.0, 0.0], [1.0, -1.0, 1.0]]
    expected_shift = [[math.log2(0.3), math.log2(0.7), -14.0], [0.0, -14.0, math.log2(0.126)]]
    assert torch.allclose(layer.shift, torch.tensor(expected_shift))
    assert torch.equal(layer.bias, lin.bias)
    # Inside the PS range both flavours round the same float weights to the same values; the Q range
    # reaches one exponent lower (2**-15 for the tiny weight, PS clamps it to 2**-14).
    q = ShiftLinear.from_float(lin, shift_type="Q", **SETTINGS)
    ps_w, q_w = layer.quantized_weight(), q.quantized_weight()
    assert ps_w[1, 1].item() == -(2.0**-14) and q_w[1, 1].item() == -(2.0**-15)
    ps_w[1, 1] = q_w[1, 1]
    assert torch.equal(ps_w, q_w)


def test_q_gradient_equals_float_layer_gradient_at_rounded_weight() -> None:
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)
    layer = ShiftConv2d.from_float(conv, shift_type="Q", **SETTINGS)
    x = torch.randn(3, 4, 9, 9, requires_grad=True)
    upstream = torch.randn(3, 6, 5, 5)
    layer(x).backward(upstream)

    rounded = _reference_weight(layer).requires_grad_()
    bias = _fixed(layer.bias.detach(), layer).requires_grad_()
    x_fixed = _fixed(x.detach(), layer).requires_grad_()
    F.conv2d(x_fixed, rounded, bias, 2, 1, 1, 2).backward(upstream)
    assert torch.allclose(layer.weight.grad, rounded.grad, rtol=1e-5, atol=1e-5)
    assert torch.allclose(layer.bias.grad, bias.grad, rtol=1e-5, atol=1e-5)
    assert torch.allclose(x.grad, x_fixed.grad, rtol=1e-5, atol=1e-5)


def test_ps_gradients_are_analytic() -> None:
    lin = nn.Linear(5, 4)
    with torch.no_grad():
        lin.weight[0, 0] = 0.0  # a sign-0 entry gets no shift gradient
    layer = ShiftLinear.from_float(lin, shift_type="PS", **SETTINGS)
    x = torch.randn(8, 5)
    upstream = torch.randn(8, 4)
    layer(x).backward(upstream)

    rounded = _reference_weight(layer).requires_grad_()
    F.linear(_fixed(x, layer), rounded, _fixed(layer.bias.detach(), layer)).backward(upstream)
    grad_w = rounded.grad
    assert torch.allclose(layer.sign.grad, grad_w, rtol=1e-5, atol=1e-6)
    assert torch.allclose(layer.shift.grad, grad_w * rounded.detach() * math.log(2.0), rtol=1e-5, atol=1e-6)
    assert layer.shift.grad[0, 0].item() == 0.0


@pytest.mark.parametrize("shift_type", ["Q", "PS"])
def test_stochastic_rounding_in_training_only(shift_type: str) -> None:
    lin = nn.Linear(50, 40)
    layer = ShiftLinear.from_float(lin, shift_type=shift_type, **{**SETTINGS, "rounding": "stochastic"})
    deterministic = _reference_weight(layer)
    first, second = layer.quantized_weight(), layer.quantized_weight()
    assert not torch.equal(first, second)
    assert not torch.equal(first, deterministic)
    layer.eval()
    assert torch.equal(layer.quantized_weight(), deterministic)
    with torch.no_grad():
        assert torch.equal(layer(torch.ones(1, 50)), layer(torch.ones(1, 50)))


def _count_weight_computations(layer: ShiftLayer) -> list[int]:
    calls = [0]
    original = layer.quantized_weight

    def counting() -> torch.Tensor:
        calls[0] += 1
        return original()

    layer.quantized_weight = counting  # type: ignore[method-assign]
    return calls


@pytest.mark.parametrize("shift_type", ["Q", "PS"])
def test_eval_cache_is_used_and_invalidated_by_an_optimiser_step(shift_type: str) -> None:
    layer = ShiftConv2d(3, 4, 3, padding=1, shift_type=shift_type)
    calls = _count_weight_computations(layer)
    x = torch.randn(2, 3, 6, 6)
    layer.eval()
    with torch.no_grad():
        before = layer(x)
        assert torch.equal(layer(x), before)
    assert calls[0] == 1

    layer.train()
    optimiser = torch.optim.SGD(layer.parameters(), lr=1.0)
    layer(x).square().sum().backward()
    optimiser.step()
    layer.eval()
    with torch.no_grad():
        after = layer(x)
        expected = F.conv2d(_fixed(x, layer), _reference_weight(layer), _fixed(layer.bias, layer), padding=1)
    assert not torch.equal(after, before)
    assert torch.equal(after, expected)

    with torch.no_grad():  # an in-place edit outside any optimiser
        (layer.weight if shift_type == "Q" else layer.sign).mul_(-1.0)
        assert not torch.equal(layer(x), after)


@pytest.mark.parametrize("shift_type", ["Q", "PS"])
def test_eval_cache_invalidated_by_load_state_dict(shift_type: str) -> None:
    a = ShiftLinear(6, 3, shift_type=shift_type).eval()
    b = ShiftLinear(6, 3, shift_type=shift_type).eval()
    x = torch.randn(4, 6)
    with torch.no_grad():
        out_a, out_b = a(x), b(x)
        assert not torch.equal(out_a, out_b)
        a.load_state_dict(b.state_dict())
        assert torch.equal(a(x), out_b)


def test_eval_with_autograd_still_gives_gradients() -> None:
    layer = ShiftLinear(4, 2).eval()
    with torch.no_grad():
        layer(torch.randn(1, 4))
    layer(torch.randn(3, 4)).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("shift_type", ["Q", "PS"])
def test_state_dict_round_trip_and_deepcopy(shift_type: str) -> None:
    layer = ShiftConv2d(3, 5, 3, stride=2, padding=1, shift_type=shift_type, weight_bits=4)
    x = torch.randn(2, 3, 8, 8)
    expected = layer(x)
    names = set(layer.state_dict())
    assert names == ({"weight", "bias"} if shift_type == "Q" else {"sign", "shift", "bias"})

    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    fresh = ShiftConv2d(3, 5, 3, stride=2, padding=1, shift_type=shift_type, weight_bits=4)
    fresh.load_state_dict(torch.load(buffer))
    assert torch.equal(fresh(x), expected)

    twin = copy.deepcopy(layer)
    assert torch.equal(twin(x), expected)
    with torch.no_grad():
        for p in twin.parameters():
            p.zero_()
    assert torch.equal(layer(x), expected)


def test_depthwise_reflect_padding_and_float64() -> None:
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=4, padding_mode="reflect", dtype=torch.float64)
    layer = ShiftConv2d.from_float(conv, shift_type="PS", **SETTINGS)
    assert layer.shift.dtype == torch.float64
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    padded = F.pad(_fixed(x, layer), (1, 1, 1, 1), mode="reflect")
    expected = F.conv2d(padded, _reference_weight(layer), _fixed(layer.bias, layer), groups=4)
    assert torch.equal(layer(x), expected)


def test_encode_hand_computed() -> None:
    lin = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.3, -0.7, 0.0], [1.5, -0.01, 0.126]]))
    q = ShiftLinear.from_float(lin, shift_type="Q", **{**SETTINGS, "weight_bits": 3}).encode()
    assert isinstance(q, ShiftEncoding)
    assert q.sign.dtype == torch.int8 and q.shift.dtype == torch.int8
    assert q.shape == (2, 3) and q.weight_bits == 3 and q.size_bits == 18
    assert q.sign.tolist() == [[1, -1, 0], [1, -1, 1]]
    assert q.shift.tolist() == [[-2, -1, -3], [0, -3, -3]]
    assert q.decode().tolist() == [[0.25, -0.5, 0.0], [1.0, -0.125, 0.125]]

    ps = ShiftLinear.from_float(lin, shift_type="PS", **{**SETTINGS, "weight_bits": 3}).encode()
    assert ps.sign.tolist() == [[1, -1, 0], [1, -1, 1]]
    assert ps.shift.tolist() == [[-2, -1, -2], [0, -2, -2]]


def test_extra_repr_shows_settings() -> None:
    text = repr(ShiftConv2d(2, 3, 1, shift_type="PS", weight_bits=4, rounding="stochastic"))
    assert "ShiftConv2d(2, 3, kernel_size=(1, 1)" in text
    for part in ("shift_type=PS", "weight_bits=4", "rounding=stochastic", "act_integer_bits=16"):
        assert part in text
    assert "in_features=2, out_features=3, bias=False, shift_type=Q" in repr(ShiftLinear(2, 3, bias=False))


def test_invalid_settings_and_inputs_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="weight_bits=9"):
        ShiftLinear(2, 2, weight_bits=9)
    with pytest.raises(ConfigError, match="shift_type='R'"):
        ShiftConv2d(2, 2, 1, shift_type="R")
    with pytest.raises(ConfigError, match=r"expects a torch\.nn\.Conv2d, got Linear"):
        ShiftConv2d.from_float(nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="already a shift layer"):
        ShiftLinear.from_float(ShiftLinear(2, 2))
    with pytest.raises(ConfigError, match="act_fraction_bits=-1"):
        ShiftLinear.from_float(nn.Linear(2, 2), act_fraction_bits=-1)


def test_shift_type_is_read_only() -> None:
    layer = ShiftLinear(2, 2, shift_type="PS")
    assert layer.shift_type == "PS" and layer.weight_shape == (2, 2)
    with pytest.raises(AttributeError):
        layer.shift_type = "Q"  # type: ignore[misc]


def _grads(layer: ShiftLayer, x: torch.Tensor, upstream: torch.Tensor, generic: bool) -> list[torch.Tensor]:
    layer.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    out = ShiftLayer.forward(layer, x) if generic else layer(x)
    out.backward(upstream)
    return [out.detach(), x.grad, *(p.grad for p in layer.parameters())]


@given(conv_cases(), st.sampled_from(["Q", "PS"]), st.integers(0, 12))
def test_conv_fast_path_matches_generic_autograd_path(case: dict, shift_type: str, frac_bits: int) -> None:
    # ShiftConv2d on the CPU is one autograd node that rounds weight, bias and input itself, saves the
    # input, not the rounded copy, and recomputes it for backward: the same values and gradients.
    layer = ShiftConv2d(**case, shift_type=shift_type, act_fraction_bits=frac_bits, act_integer_bits=8)
    x = torch.randn(2, case["in_channels"], 7, 6) * 3
    upstream = torch.randn_like(layer(x))
    fast = _grads(layer, x, upstream, generic=False)
    generic = _grads(layer, x, upstream, generic=True)
    assert torch.equal(fast[0], generic[0])
    for a, b in zip(fast[1:], generic[1:], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fast_path_survives_reuse_of_the_scratch_buffer() -> None:
    # Two layers share the per-thread scratch buffer; each backward must recompute its own input.
    first = ShiftConv2d(2, 3, 3, padding=1)
    second = ShiftConv2d(3, 2, 3, padding=1)
    x = torch.randn(2, 2, 5, 5) * 2
    upstream = torch.randn(2, 2, 5, 5)
    second(first(x)).backward(upstream)
    fast = [p.grad.clone() for p in (*first.parameters(), *second.parameters())]
    for p in (*first.parameters(), *second.parameters()):
        p.grad = None
    ShiftLayer.forward(second, ShiftLayer.forward(first, x)).backward(upstream)
    for a, p in zip(fast, (*first.parameters(), *second.parameters()), strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-5, atol=1e-6)


def test_same_padding_and_inference_mode() -> None:
    conv = nn.Conv2d(3, 4, 3, padding="same", bias=False)
    layer = ShiftConv2d.from_float(conv, shift_type="Q", **SETTINGS).eval()
    x = torch.randn(1, 3, 6, 6)
    expected = F.conv2d(_fixed(x, layer), _reference_weight(layer), None, padding="same")
    with torch.inference_mode():
        assert torch.equal(layer(x), expected)
    fast = ShiftConv2d.from_float(nn.Conv2d(3, 4, 3, padding=1), shift_type="PS", **SETTINGS).eval()
    with torch.inference_mode():
        inferred = fast(x)
    with torch.no_grad():
        assert torch.equal(fast(x), inferred)
    fast.train()
    fast(x).sum().backward()  # the scratch buffer made in inference mode is usable with autograd
    assert fast.shift.grad is not None


def _input_buffer_of(layer: ShiftLayer) -> torch.Tensor:
    from greenshift.shift.layers import _input_buffers

    return _input_buffers[layer][0]


@pytest.mark.parametrize("shift_type", ["Q", "PS"])
def test_training_input_buffer_is_reused_and_never_overwrites_a_live_graph(shift_type: str) -> None:
    layer = ShiftConv2d(3, 4, 3, padding=1, shift_type=shift_type)
    x1, x2 = torch.randn(2, 3, 6, 6) * 2, torch.randn(2, 3, 6, 6) * 2
    g1, g2 = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)

    def generic_grads(pairs):
        layer.zero_grad(set_to_none=True)
        sum((ShiftLayer.forward(layer, x) * g).sum() for x, g in pairs).backward()
        return [p.grad.clone() for p in layer.parameters()]

    # two forward passes before one backward: the second must not overwrite the first's input
    expected = generic_grads([(x1, g1), (x2, g2)])
    layer.zero_grad(set_to_none=True)
    ((layer(x1) * g1).sum() + (layer(x2) * g2).sum()).backward()
    for got, want in zip((p.grad for p in layer.parameters()), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)

    # a retained graph keeps its input even when another forward pass runs in between
    expected_once = generic_grads([(x1, g1)])
    layer.zero_grad(set_to_none=True)
    out = layer(x1)
    out.backward(g1, retain_graph=True)
    layer(x2)
    out.backward(g1)
    for got, want in zip((p.grad for p in layer.parameters()), expected_once, strict=True):
        torch.testing.assert_close(got, 2 * want, rtol=1e-5, atol=1e-6)

    # ordinary steps reuse one buffer; eval mode releases it
    layer(x1).backward(g1)
    first = _input_buffer_of(layer).data_ptr()
    layer(x2).backward(g2)
    assert _input_buffer_of(layer).data_ptr() == first
    layer.eval()
    with pytest.raises(KeyError):
        _input_buffer_of(layer)


def test_a_trained_layer_still_copies_and_pickles() -> None:
    import copy
    import io

    layer = ShiftConv2d(2, 2, 3, padding=1, shift_type="PS")
    layer(torch.randn(1, 2, 4, 4)).sum().backward()
    clone = copy.deepcopy(layer)
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    x = torch.randn(1, 2, 4, 4)
    with torch.no_grad():
        assert torch.equal(clone(x), layer(x)) and torch.equal(loaded(x), layer(x))


@pytest.mark.parametrize("shift_type", ["Q", "PS"])
def test_channels_last_input_stays_channels_last_with_the_same_values(shift_type: str) -> None:
    torch.manual_seed(3)
    layer = ShiftConv2d(3, 8, 3, padding=1, bias=True, shift_type=shift_type, **SETTINGS)
    x = torch.randn(2, 3, 6, 5) * 3
    g = torch.randn(2, 8, 6, 5)

    def step(inp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        layer.zero_grad(set_to_none=True)
        inp = inp.detach().requires_grad_()
        out = layer(inp)
        out.backward(g)
        return out.detach(), inp.grad, [p.grad.clone() for p in layer.parameters()]

    # NCHW first, so the layer's buffer exists in the other layout when the channels-last step reuses it
    out_nchw, gx_nchw, grads_nchw = step(x)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    out_cl, gx_cl, grads_cl = step(x_cl)
    assert out_cl.is_contiguous(memory_format=torch.channels_last) and not out_cl.is_contiguous()
    torch.testing.assert_close(out_cl, out_nchw, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx_cl, gx_nchw, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads_cl, grads_nchw, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)

    # a second forward pass while the first graph is alive takes a fresh tensor, also channels-last
    first, second = layer(x_cl), layer(x_cl)
    assert second.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(second, first)

    layer.eval()
    with torch.inference_mode():
        inferred = layer(x_cl)
    assert inferred.is_contiguous(memory_format=torch.channels_last) and not inferred.is_contiguous()
    with torch.no_grad():
        torch.testing.assert_close(inferred, layer(x))
