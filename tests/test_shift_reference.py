"""greenshift's shift layers trained side by side with an independent reference of DeepShift-Q and -PS.

The reference below is written from the formulas (Elhoushi et al., DeepShift, and docs/concepts.md), not
from greenshift's code: it imports nothing from ``greenshift.shift`` and computes every rounding with
plain torch operations. Both networks start from the same parameters, see the same batches and take 25
SGD steps (momentum and weight decay on); after every step all parameters must agree. Runs are in
float64, where a different memory layout changes results only in the last bits, so any disagreement
beyond that is a difference in what is computed (element order, projection, gradients, optimiser
groups), not rounding noise amplified by a chaotic trajectory.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from greenshift.config import DSNNConfig
from greenshift.shift import ShiftLayer, convert_to_shift
from greenshift.train import make_optimizer, parameter_groups

STEPS = 25
LN2 = math.log(2.0)


# --- the reference ------------------------------------------------------------------------------------


def exponent_range(weight_bits: int, shift_type: str) -> tuple[int, int]:
    """Q: a sign bit and 2**(b-1) exponents down from 0; PS: one code less (its ternary sign has a 0)."""
    levels = 2 ** (weight_bits - 1)
    return (-(levels - 1) if shift_type == "Q" else -(levels - 2)), 0


def fixed_point(x: torch.Tensor, integer_bits: int = 16, fraction_bits: int = 16) -> torch.Tensor:
    """Nearest point of the grid 2**-f (ties to even), saturated to the signed range."""
    scale = 2.0**fraction_bits
    top = 2.0 ** (integer_bits - 1)
    return torch.clamp(torch.round(x * scale) / scale, -top, top - 1.0 / scale)


def round_exponent(e: torch.Tensor, p_min: int, p_max: int, stochastic: bool) -> torch.Tensor:
    """Deterministic: nearest integer. Stochastic: up with probability 2**frac - 1, so E[2**p] = 2**e."""
    e = torch.clamp(e, p_min, p_max)
    if not stochastic:
        return torch.round(e)
    low = torch.floor(e)
    u = torch.rand(e.shape, dtype=e.dtype)
    return low + (u < (2.0 ** (e - low) - 1.0)).to(e.dtype)


class PassThrough(torch.autograd.Function):
    """Forward: a precomputed value; backward: the gradient unchanged (straight-through estimator)."""

    @staticmethod
    def forward(ctx, x, value):  # type: ignore[override]
        return value

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad, None


class SignShiftWeight(torch.autograd.Function):
    """PS weight s*2**p with d/dsign = g and d/dshift = g * (s*2**p) * ln 2."""

    @staticmethod
    def forward(ctx, sign, shift, weight):  # type: ignore[override]
        ctx.save_for_backward(weight)
        return weight

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (weight,) = ctx.saved_tensors
        return grad, grad * weight * LN2, None


class ReferenceShift(nn.Module):
    """One DeepShift layer: ``op`` is conv2d or linear, the rest is the same for both."""

    def __init__(self, layer: ShiftLayer, op) -> None:
        super().__init__()
        self.shift_type = layer.shift_type
        self.bits = layer.weight_bits
        self.stochastic = layer.rounding == "stochastic"
        self.op = op
        if self.shift_type == "Q":
            self.weight = nn.Parameter(layer.weight.detach().clone().contiguous())
        else:
            self.sign = nn.Parameter(layer.sign.detach().clone().contiguous())
            self.shift = nn.Parameter(layer.shift.detach().clone().contiguous())
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p_min, p_max = exponent_range(self.bits, self.shift_type)
        stochastic = self.stochastic and self.training
        with torch.no_grad():  # DeepShift projects its parameters into range before every training step
            if self.training and self.shift_type == "Q":
                magnitude = torch.clamp(self.weight.abs(), 2.0**p_min, 2.0**p_max)
                self.weight.copy_(torch.sign(self.weight) * magnitude)
            elif self.training:
                self.shift.copy_(torch.clamp(self.shift, p_min, p_max))
        if self.shift_type == "Q":
            with torch.no_grad():
                p = round_exponent(torch.log2(self.weight.abs()), p_min, p_max, stochastic)
                value = torch.sign(self.weight) * 2.0**p
            weight = PassThrough.apply(self.weight, value)
        else:
            with torch.no_grad():
                p = round_exponent(self.shift, p_min, p_max, stochastic)
                value = torch.round(torch.clamp(self.sign, -1.0, 1.0)) * 2.0**p
            weight = SignShiftWeight.apply(self.sign, self.shift, value)
        bias = None if self.bias is None else PassThrough.apply(self.bias, fixed_point(self.bias.detach()))
        return self.op(PassThrough.apply(x, fixed_point(x.detach())), weight, bias)


def reference_of(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose greenshift shift layers are replaced by reference layers."""
    reference = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    for parent in reference.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, ShiftLayer) and isinstance(child, nn.Conv2d):
                args = (child.stride, child.padding, child.dilation, child.groups)
                parent._modules[name] = ReferenceShift(child, lambda x, w, b, a=args: F.conv2d(x, w, b, *a))
            elif isinstance(child, ShiftLayer):
                parent._modules[name] = ReferenceShift(child, F.linear)
    return reference


def reference_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float):
    """SGD as in DeepShift's training scripts: no weight decay on PS signs and shifts."""
    named = list(model.named_parameters())
    shift_params = [p for n, p in named if n.endswith((".sign", ".shift"))]
    others = [p for n, p in named if not n.endswith((".sign", ".shift"))]
    groups = [{"params": others}] + ([{"params": shift_params, "weight_decay": 0.0}] if shift_params else [])
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)


# --- the comparison -----------------------------------------------------------------------------------


def small_net() -> nn.Module:
    """Four shiftable layers (three convolutions, one linear) with batch norm, as in the backbones."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 12, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(12),
        nn.ReLU(),
        nn.Conv2d(12, 16, 3, padding=1, bias=True),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def named_values(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach() for name, p in model.named_parameters()}


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("rounding", ["deterministic", "stochastic"])
@pytest.mark.parametrize("weight_bits", [2, 5])
@pytest.mark.parametrize("shift_type", ["Q", "PS"])
def test_training_trajectory_equals_the_reference(
    shift_type: str, weight_bits: int, rounding: str, channels_last: bool
) -> None:
    torch.manual_seed(1)
    config = DSNNConfig(shift_type=shift_type, weight_bits=weight_bits, rounding=rounding, weight_decay=5e-3)
    # Depth 3 of 4: the first convolution stays float. PS starts from its from-scratch initialisation.
    model = convert_to_shift(
        small_net().double(),
        3,
        shift_type=shift_type,
        weight_bits=weight_bits,
        rounding=rounding,
        init="scratch",
    )
    reference = reference_of(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(config, parameter_groups(model))
    reference_opt = reference_optimizer(reference, config.lr, config.momentum, config.weight_decay)
    data = torch.Generator().manual_seed(2)
    model.train()
    reference.train()
    for step in range(STEPS):
        images = torch.rand(16, 3, 8, 8, generator=data, dtype=torch.float64)
        labels = torch.randint(0, 10, (16,), generator=data)
        rng = torch.get_rng_state()  # both networks draw the same stochastic-rounding numbers
        for net, opt, x in (
            (
                model,
                optimizer,
                images.contiguous(memory_format=torch.channels_last) if channels_last else images,
            ),
            (reference, reference_opt, images),
        ):
            torch.set_rng_state(rng)
            opt.zero_grad()
            F.cross_entropy(net(x), labels).backward()
            opt.step()
        ours, theirs = named_values(model), named_values(reference)
        assert ours.keys() == theirs.keys()
        for name, value in ours.items():
            torch.testing.assert_close(
                value, theirs[name], rtol=1e-9, atol=1e-9, msg=f"{name} after step {step + 1}"
            )
    model.eval()
    reference.eval()
    with torch.no_grad():
        probe = torch.rand(8, 3, 8, 8, generator=data, dtype=torch.float64)
        torch.testing.assert_close(model(probe), reference(probe), rtol=1e-9, atol=1e-9)


def test_q_parameters_are_projected_into_the_representable_range() -> None:
    # A 3-bit Q weight represents magnitudes 2**-3 .. 1: the stored weight is clamped there when training.
    layer = convert_to_shift(nn.Linear(4, 2, bias=False), 1, shift_type="Q", weight_bits=3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.01, -0.02, 3.0, 0.0], [-5.0, 0.3, -0.2, 0.125]]))
    layer.train()
    layer(torch.ones(1, 4))
    expected = torch.tensor([[0.125, -0.125, 1.0, 0.0], [-1.0, 0.3, -0.2, 0.125]])
    torch.testing.assert_close(layer.weight.detach(), expected)
    # Evaluation never changes the parameters.
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.01, -0.02, 3.0, 0.0], [-5.0, 0.3, -0.2, 0.125]]))
    layer.eval()
    layer(torch.ones(1, 4))
    assert layer.weight[0, 0].item() == pytest.approx(0.01)


def test_ps_shift_is_projected_and_sign_and_shift_are_not_weight_decayed() -> None:
    layer = convert_to_shift(
        nn.Linear(3, 1, bias=False), 1, shift_type="PS", weight_bits=3
    )  # shifts in [-2, 0]
    with torch.no_grad():
        layer.shift.copy_(torch.tensor([[-7.0, 0.6, -1.2]]))
    layer.train()(torch.ones(1, 3))
    torch.testing.assert_close(layer.shift.detach(), torch.tensor([[-2.0, 0.0, -1.2]]))
    groups = parameter_groups(nn.Sequential(layer, nn.Linear(1, 1)))
    by_decay = {g.get("weight_decay", "default"): {id(p) for p in g["params"]} for g in groups}
    assert by_decay[0.0] == {id(layer.sign), id(layer.shift)}
    assert len(by_decay["default"]) == 2  # the float layer's weight and bias keep the configured decay


def test_ps_from_scratch_uses_deepshift_initialisation_and_from_float_the_float_weights() -> None:
    torch.manual_seed(0)
    float_net = nn.Sequential(nn.Conv2d(16, 32, 3), nn.Flatten(), nn.Linear(32, 10))
    scratch = convert_to_shift(copy.deepcopy(float_net), 2, shift_type="PS", weight_bits=5, init="scratch")
    conv, linear = scratch[0], scratch[2]
    p_min, _ = exponent_range(5, "PS")
    assert conv.shift.min() >= -10 and conv.shift.max() <= -1
    assert linear.shift.min() >= p_min and linear.shift.max() <= 0 and linear.shift.std() > 3
    # Signs uniform in [-1, 1]: about half of the weights start at 0 after ternary rounding.
    zero_fraction = (torch.round(conv.sign) == 0).double().mean().item()
    assert 0.4 < zero_fraction < 0.6
    converted = convert_to_shift(copy.deepcopy(float_net), 2, shift_type="PS", weight_bits=5, init="float")
    torch.testing.assert_close(converted[0].sign.detach(), torch.sign(float_net[0].weight.detach()))
    torch.testing.assert_close(
        converted[0].shift.detach(), torch.log2(float_net[0].weight.detach().abs()).clamp(p_min, 0)
    )
