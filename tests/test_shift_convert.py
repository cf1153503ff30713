"""convert_to_shift and friends: which layers convert, errors, rounding in place, encoding, size, training."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from greenshift.errors import ConfigError
from greenshift.shift import (
    ShiftConv2d,
    ShiftLayer,
    ShiftLinear,
    convert_to_shift,
    count_shiftable_layers,
    encode_shift_weights,
    round_shift_weights,
    shift_size_bits,
)
from greenshift.shift.convert import shiftable_layers


def _sequential() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),  # 0
        nn.ReLU(),
        nn.Linear(8, 8),  # 2: a linear layer in the middle
        nn.Conv2d(4, 4, 3, padding=1),  # 3
        nn.BatchNorm2d(4),
        nn.Conv2d(4, 2, 1),  # 5
        nn.Flatten(),
        nn.Linear(128, 3),  # 7
    )


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x))) + x


class _Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.blocks = nn.Sequential(_Block(), nn.Sequential(_Block(), _Block()))
        self.head = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(x.mean(dim=(2, 3)))


def _converted_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, ShiftLayer)]


def test_shiftable_layers_in_module_order() -> None:
    names = [name for name, _ in shiftable_layers(_Nested())]
    assert names == ["stem", "blocks.0.conv", "blocks.1.0.conv", "blocks.1.1.conv", "head"]
    assert count_shiftable_layers(_sequential()) == 5


@pytest.mark.parametrize(
    ("depth", "all_linear", "expected"),
    [
        (1, False, ["7"]),
        (2, False, ["5", "7"]),
        (3, False, ["3", "5", "7"]),
        (1, True, ["2", "7"]),
        (2, True, ["2", "5", "7"]),
        (4, True, ["2", "3", "5", "7"]),
        (5, False, ["0", "2", "3", "5", "7"]),
    ],
)
def test_convert_sequential_from_output_side(depth: int, all_linear: bool, expected: list[str]) -> None:
    model = _sequential()
    originals = dict(model.named_modules())
    out = convert_to_shift(model, depth, convert_all_linear=all_linear)
    assert out is model
    assert _converted_names(model) == expected
    for name in expected:
        layer = dict(model.named_modules())[name]
        assert isinstance(layer, ShiftConv2d | ShiftLinear)
        assert torch.equal(layer.weight, originals[name].weight)  # the float weights are the start
    assert count_shiftable_layers(model) == 5


def test_convert_nested_model() -> None:
    model = _Nested()
    convert_to_shift(model, 3, shift_type="PS", weight_bits=4, convert_all_linear=False)
    assert _converted_names(model) == ["blocks.1.0.conv", "blocks.1.1.conv", "head"]
    head = model.head
    assert isinstance(head, ShiftLinear) and head.shift_type == "PS" and head.weight_bits == 4
    assert model(torch.randn(2, 3, 6, 6)).shape == (2, 5)


def test_depth_zero_returns_model_unchanged() -> None:
    model = _sequential()
    before = copy.deepcopy(model.state_dict())
    assert convert_to_shift(model, 0, convert_all_linear=True) is model
    assert _converted_names(model) == []
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_already_shifted_layers_are_kept() -> None:
    model = _sequential()
    convert_to_shift(model, 1, shift_type="PS", convert_all_linear=False)
    first = model[7]
    convert_to_shift(model, 2, shift_type="Q", convert_all_linear=False)
    assert model[7] is first and first.shift_type == "PS"
    assert isinstance(model[5], ShiftConv2d) and model[5].shift_type == "Q"


def test_shared_module_is_replaced_everywhere_and_root_layer_is_returned() -> None:
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    convert_to_shift(model, 1)
    assert isinstance(model[0], ShiftLinear) and model[0] is model[2]
    converted = convert_to_shift(nn.Conv2d(1, 1, 1), 1)
    assert isinstance(converted, ShiftConv2d)


def test_depth_beyond_layer_count_names_the_count() -> None:
    with pytest.raises(ConfigError) as err:
        convert_to_shift(_sequential(), 6)
    assert str(err.value) == "shift_depth=6 exceeds the 5 shiftable layers of this model (3 Conv2d, 2 Linear)"


def test_resnet20_has_twenty_shiftable_layers() -> None:
    from greenshift.models import get_model

    model = get_model("resnet20", num_classes=10, in_channels=3)
    assert count_shiftable_layers(model) == 20
    with pytest.raises(
        ConfigError, match=r"shift_depth=25 exceeds the 20 shiftable layers .*\(19 Conv2d, 1 Linear\)"
    ):
        convert_to_shift(model, 25)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shift_depth": -1}, "shift_depth=-1 is negative"),
        ({"shift_depth": 1.5}, "shift_depth must be an integer"),
        ({"shift_depth": True}, "shift_depth must be an integer"),
        (
            {"shift_depth": 1, "weight_bits": 1},
            r"weight_bits=1 is out of range: expected an integer in \[2, 8\]",
        ),
        ({"shift_depth": 1, "shift_type": "q"}, "shift_type='q' is not one of Q, PS"),
        ({"shift_depth": 1, "rounding": "nearest"}, "rounding='nearest'"),
        ({"shift_depth": 0, "act_integer_bits": 40}, "act_integer_bits=40"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        convert_to_shift(_sequential(), **kwargs)


def _train_steps(model: nn.Module, steps: int) -> None:
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(steps):
        x = torch.randn(4, 3, 4, 4)
        optimiser.zero_grad()
        model(x).square().mean().backward()
        optimiser.step()


def _small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)
    )


@pytest.mark.parametrize("shift_type", ["Q", "PS"])
def test_round_shift_weights_then_state_dict_round_trip(shift_type: str) -> None:
    model = convert_to_shift(_small_cnn(), 2, shift_type=shift_type, act_fraction_bits=8)
    _train_steps(model, 3)
    model.eval()
    x = torch.randn(5, 3, 4, 4)
    with torch.no_grad():
        before = model(x)
        assert round_shift_weights(model) is model
        after = model(x)
    assert torch.equal(before, after)
    for layer in (model[0], model[4]):
        if shift_type == "Q":
            w = layer.weight
            assert torch.equal(torch.log2(w.abs()), torch.log2(w.abs()).round())
        else:
            assert set(layer.sign.unique().tolist()) <= {-1.0, 0.0, 1.0}
            assert torch.equal(layer.shift, layer.shift.round())
        assert torch.equal(layer.bias * 256, (layer.bias * 256).round())

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = convert_to_shift(_small_cnn(), 2, shift_type=shift_type, act_fraction_bits=8).eval()
    fresh.load_state_dict(torch.load(buffer))
    with torch.no_grad():
        assert torch.equal(fresh(x), before)
    # Training-mode outputs agree too: the rounded parameters are fixed points of the rounding.
    fresh.train()
    model.train()
    assert torch.equal(fresh(x), model(x))


def test_encode_and_size_bits_hand_computed() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.5, -0.3], [0.0, 2.0]]))
        model[2].weight.copy_(torch.tensor([[-0.06, 0.9]]))
    assert shift_size_bits(model) == (6 + 4 + 2) * 32  # all float
    convert_to_shift(model, 1, shift_type="PS", weight_bits=4, convert_all_linear=False)
    # Linear 0: 6 floats; BN: 4 parameters (running stats are buffers); Linear 2: 2 weights at 4 bits.
    assert shift_size_bits(model) == (6 + 4) * 32 + 2 * 4
    convert_to_shift(model, 2, shift_type="Q", weight_bits=3)
    assert shift_size_bits(model) == 4 * 3 + 2 * 32 + 4 * 32 + 2 * 4

    codes = encode_shift_weights(model)
    assert list(codes) == ["0", "2"]
    assert codes["0"].sign.tolist() == [[1, -1], [0, 1]]
    assert codes["0"].shift.tolist() == [[-1, -2], [-3, 0]]  # Q range for 3 bits is [-3, 0]
    assert codes["2"].sign.tolist() == [[-1, 1]]
    assert codes["2"].shift.tolist() == [[-4, 0]]  # log2(0.06) = -4.06; PS range for 4 bits is [-6, 0]
    assert codes["2"].weight_bits == 4 and codes["0"].shape == (2, 2)


def _blobs(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    centres = torch.tensor([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    labels = torch.randint(0, 3, (n,), generator=generator)
    return centres[labels] + 1.1 * torch.randn(n, 2, generator=generator), labels


def _fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> tuple[float, float]:
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    first = math.nan
    for step in range(steps):
        optimiser.zero_grad()
        loss = F.cross_entropy(model(x), y)
        if step == 0:
            first = loss.item()
        loss.backward()
        optimiser.step()
    return first, F.cross_entropy(model(x), y).item()


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def test_shifted_mlp_trains_and_q_stays_near_its_float_twin() -> None:
    generator = torch.Generator().manual_seed(7)
    x_train, y_train = _blobs(600, generator)
    x_test, y_test = _blobs(600, generator)
    float_model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))
    q_model = convert_to_shift(copy.deepcopy(float_model), 3, shift_type="Q", weight_bits=5)
    ps_model = convert_to_shift(copy.deepcopy(float_model), 3, shift_type="PS", weight_bits=5)

    results = {}
    for name, model in (("float", float_model), ("Q", q_model), ("PS", ps_model)):
        first, last = _fit(model, x_train, y_train, 150)
        assert last < 0.5 * first, (name, first, last)
        results[name] = _accuracy(model, x_test, y_test)
    # Overlapping blobs (float reaches about 89 %): Q must stay within 3 points of its float twin.
    assert results["float"] > 0.85, results
    assert results["Q"] >= results["float"] - 0.03, results
    assert results["PS"] > 0.85, results
