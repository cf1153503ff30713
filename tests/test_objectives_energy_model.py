"""Energy model: interpolation, table files, hand-computed operation counts, monotonicity properties."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from greenshift.errors import ConfigError
from greenshift.models import get_model
from greenshift.objectives import load_energy_table, model_energy_j, profile_model, profile_rows
from greenshift.objectives.energy_model import (
    LayerOps,
    activation_memory_energy_pj,
    compute_energy_pj,
    count_ops,
    default_energy_table,
    energy_table_from_dict,
    interpolate_energy,
    layer_energy,
    weight_memory_energy_pj,
)
from greenshift.shift import ShiftConv2d, convert_to_shift, count_shiftable_layers

TABLE = default_energy_table()
SRAM_PER_BIT = 10.0 / 64


def by_name(ops: list[LayerOps]) -> dict[str, LayerOps]:
    return {o.name: o for o in ops}


# ---------------------------------------------------------------- interpolation and the shipped table


def test_shipped_table_holds_the_horowitz_figures() -> None:
    assert TABLE.op_pj("fp_mult", 32) == 3.7
    assert TABLE.op_pj("fp_add", 32) == 0.9
    assert TABLE.op_pj("int_add", 8) == 0.03
    assert TABLE.op_pj("int_add", 32) == 0.1
    assert TABLE.op_pj("int_mult", 32) == 3.1
    assert TABLE.op_pj("fp_mult", 16) == 1.1
    assert TABLE.read_pj_per_bit("sram") == pytest.approx(10 / 64)
    assert TABLE.read_pj_per_bit("dram") == pytest.approx(1950 / 64)
    assert TABLE.weight_memory == "sram"
    # A shift costs an integer addition of the same width.
    assert TABLE.op_pj("shift", 12) == TABLE.op_pj("int_add", 12)


def test_interpolation_is_linear_for_adders_and_quadratic_for_multipliers() -> None:
    assert TABLE.op_pj("int_add", 16) == pytest.approx(0.03 + 0.07 * 8 / 24)
    assert TABLE.op_pj("fp_mult", 24) == pytest.approx(1.1 + 2.6 * (24**2 - 16**2) / (32**2 - 16**2))
    assert TABLE.op_pj("int_mult", 20) == pytest.approx(0.2 + 2.9 * (400 - 64) / (1024 - 64))


def test_extrapolation_scales_the_nearest_entry() -> None:
    assert TABLE.op_pj("int_add", 64) == pytest.approx(0.2)
    assert TABLE.op_pj("int_add", 4) == pytest.approx(0.015)
    assert TABLE.op_pj("int_mult", 4) == pytest.approx(0.05)
    assert TABLE.op_pj("int_mult", 64) == pytest.approx(12.4)


@st.composite
def width_tables(draw: st.DrawFn) -> dict[int, float]:
    widths = draw(st.lists(st.integers(1, 64), min_size=1, max_size=5, unique=True))
    energies = sorted(draw(st.lists(st.floats(0, 100), min_size=len(widths), max_size=len(widths))))
    return dict(zip(sorted(widths), energies, strict=True))


@given(width_tables(), st.integers(1, 2), st.floats(0.5, 80), st.floats(0.5, 80))
def test_interpolation_never_decreases_with_bits(
    points: dict[int, float], exponent: int, a: float, b: float
) -> None:
    low, high = sorted((a, b))
    assert interpolate_energy(points, low, exponent) <= interpolate_energy(points, high, exponent) + 1e-9


@given(width_tables(), st.integers(1, 2))
def test_interpolation_hits_every_table_entry(points: dict[int, float], exponent: int) -> None:
    for bits, energy in points.items():
        assert interpolate_energy(points, bits, exponent) == pytest.approx(energy)


# ---------------------------------------------------------------- table files


def _write(tmp_path, data) -> str:
    path = tmp_path / "table.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_custom_table_round_trips_and_changes_the_energy(tmp_path) -> None:
    data = {**TABLE.to_dict(), "weight_memory": "dram", "name": "mine"}
    table = load_energy_table(_write(tmp_path, data))
    assert table.name == "mine"
    assert table.read_pj_per_bit(table.weight_memory) == pytest.approx(1950 / 64)
    model = get_model("tiny_cnn", num_classes=3, in_channels=1)
    assert model_energy_j(model, (1, 8, 8), table) > model_energy_j(model, (1, 8, 8), TABLE)


def test_explicit_shift_entry_is_used(tmp_path) -> None:
    data = {**TABLE.to_dict(), "shift_pj": {"32": 0.05}}
    table = load_energy_table(_write(tmp_path, data))
    assert table.op_pj("shift", 16) == pytest.approx(0.025)
    assert "shift_pj" in table.shift_rule


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fp_add_pj": None}, "lacks key(s) fp_add_pj"),
        ({"int_add_pj": {"8": -0.03, "32": 0.1}}, "must not be negative"),
        ({"int_add_pj": {"8": "cheap"}}, "finite number"),
        ({"int_add_pj": {}}, "non-empty"),
        ({"int_add_pj": {"eight": 0.03}}, "positive integers"),
        ({"int_add_pj": {"8": 0.2, "32": 0.1}}, "must not decrease"),
        ({"weight_memory": "flash"}, "weight_memory='flash'"),
        ({"colour": "green"}, "unknown key(s) colour"),
        ({"memory_read_pj_per_64_bits": {"sram": -1}}, "must not be negative"),
    ],
)
def test_bad_table_files_are_config_errors(tmp_path, change, message) -> None:
    data = {**TABLE.to_dict(), **change}
    data = {k: v for k, v in data.items() if v is not None}
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        load_energy_table(path)
    assert path in str(info.value)


def test_not_json_missing_file_and_not_an_object(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_energy_table(_write(tmp_path, "{not json"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_energy_table(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="JSON object"):
        energy_table_from_dict([1, 2, 3])


# ---------------------------------------------------------------- operation counts


def test_grouped_strided_padded_conv_counts() -> None:
    conv = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2, bias=True)
    (ops,) = count_ops(conv, (4, 9, 9))
    # Output 8 x 5 x 5 = 200 elements, each from 4/2 channels x 3x3 taps.
    assert ops.macs == 200 * 2 * 9 == 3600
    assert ops.weights == 8 * 2 * 9
    assert (ops.bias_adds, ops.other_params) == (200, 8)
    assert (ops.in_activations, ops.out_activations) == (4 * 81, 200)
    assert ops.kind == "float"
    energy = layer_energy(ops, TABLE)
    assert energy.compute_pj == pytest.approx(3600 * (3.7 + 0.9) + 200 * 0.9)
    assert energy.weight_memory_pj == pytest.approx((144 * 32 + 8 * 32) * SRAM_PER_BIT)
    assert energy.activation_memory_pj == pytest.approx((324 + 200) * 32 * SRAM_PER_BIT)


def test_linear_counts_without_bias() -> None:
    (ops,) = count_ops(nn.Linear(12, 5, bias=False), (12,))
    assert (ops.macs, ops.weights, ops.bias_adds, ops.other_params) == (60, 60, 0, 0)
    assert (ops.in_activations, ops.out_activations) == (12, 5)


def test_shift_conv_is_costed_as_shift_plus_add_at_the_activation_width() -> None:
    conv = ShiftConv2d(
        2,
        4,
        3,
        padding=1,
        bias=False,
        shift_type="PS",
        weight_bits=4,
        act_integer_bits=8,
        act_fraction_bits=8,
    )
    (ops,) = count_ops(conv, (2, 5, 5))
    assert (ops.kind, ops.weight_bits, ops.act_bits) == ("shift", 4, 16)
    assert ops.macs == 4 * 25 * 2 * 9
    add16 = 0.03 + 0.07 * 8 / 24
    energy = layer_energy(ops, TABLE)
    assert energy.compute_pj == pytest.approx(ops.macs * 2 * add16)
    assert energy.weight_memory_pj == pytest.approx(4 * 2 * 9 * 4 * SRAM_PER_BIT)
    assert energy.activation_memory_pj == pytest.approx((50 + 100) * 16 * SRAM_PER_BIT)


class _Block(nn.Module):
    """conv -> BN -> functional ReLU, residual add, max pool and global average pool."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(2)
        self.pool = nn.MaxPool2d(2)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.conv(x)))
        out = out + x
        out = self.act(self.pool(out))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


def test_elementwise_and_functional_operations_are_counted_once() -> None:
    ops = by_name(count_ops(_Block(), (2, 4, 4)))
    assert set(ops) == {"conv", "bn", "relu()", "add()", "pool", "act", "adaptive_avg_pool2d()"}
    assert (ops["bn"].elementwise_adds, ops["bn"].elementwise_mults, ops["bn"].other_params) == (32, 32, 4)
    assert ops["relu()"].elementwise_adds == 32
    assert ops["add()"].elementwise_adds == 32
    assert ops["pool"].elementwise_adds == 8 * 3  # 8 outputs, 3 comparisons per 2x2 window
    assert ops["act"].elementwise_adds == 8
    assert (
        ops["adaptive_avg_pool2d()"].elementwise_adds,
        ops["adaptive_avg_pool2d()"].elementwise_mults,
    ) == (6, 2)
    assert ops["conv"].macs == 32 * 2 * 9


def test_a_module_called_twice_is_merged_and_modes_restored() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.drop = nn.Dropout(0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.drop(self.fc(x)))

    model = Twice().train()
    model.drop.eval()
    (ops,) = count_ops(model, (3,))
    assert ops.macs == 18 and ops.weights == 9
    assert model.training and not model.drop.training and model.fc.training


def test_count_ops_rejects_a_bad_shape() -> None:
    with pytest.raises(ConfigError, match="input_shape"):
        count_ops(nn.Linear(2, 2), (0, 2))


def test_resnet20_counts_residual_additions_and_all_convolutions() -> None:
    model = get_model("resnet20", num_classes=10, in_channels=3)
    ops = count_ops(model, (3, 32, 32))
    convs = [o for o in ops if o.op == "Conv2d"]
    assert len(convs) == 19
    assert sum(1 for o in ops if o.name.endswith("add()")) == 9
    # The well-known ~40.6 M MACs of ResNet20 on CIFAR-10 (convolutions plus the final linear layer).
    assert sum(o.macs for o in ops) == pytest.approx(40.55e6, rel=0.01)


# ---------------------------------------------------------------- monotonicity properties


@given(st.integers(0, 10**6), st.integers(1, 32), st.integers(1, 32), st.integers(0, 1000))
def test_fewer_weight_bits_never_cost_more(weights: int, a: int, b: int, others: int) -> None:
    low, high = sorted((a, b))
    assert weight_memory_energy_pj(TABLE, weights=weights, weight_bits=low, other_params=others) <= (
        weight_memory_energy_pj(TABLE, weights=weights, weight_bits=high, other_params=others)
    )


@st.composite
def random_tables(draw: st.DrawFn):
    def entry() -> dict[str, float]:
        return {str(k): v for k, v in draw(width_tables()).items()}

    return energy_table_from_dict(
        {
            "int_add_pj": entry(),
            "fp_add_pj": entry(),
            "fp_mult_pj": entry(),
            "memory_read_pj_per_64_bits": {"m": draw(st.floats(0, 1000))},
            "weight_memory": "m",
            "activation_memory": "m",
        }
    )


@st.composite
def layer_ops(draw: st.DrawFn) -> LayerOps:
    kind = draw(st.sampled_from(["float", "shift"]))
    return LayerOps(
        name="l",
        op="x",
        kind=kind,
        macs=draw(st.integers(0, 10**6)),
        bias_adds=draw(st.integers(0, 10**4)),
        weights=draw(st.integers(0, 10**5)),
        weight_bits=draw(st.integers(2, 8)) if kind == "shift" else 32,
        other_params=draw(st.integers(0, 100)),
        act_bits=draw(st.integers(2, 64)) if kind == "shift" else 32,
        in_activations=draw(st.integers(0, 10**4)),
        out_activations=draw(st.integers(0, 10**4)),
    )


@given(random_tables(), layer_ops(), st.integers(1, 64), st.integers(1, 8))
def test_fewer_activation_or_weight_bits_never_cost_more_for_any_valid_table(
    table, ops, act_bits, weight_bits
) -> None:
    if ops.kind != "shift":
        ops = LayerOps(**{**ops.__dict__, "kind": "shift"})
    less_act = LayerOps(**{**ops.__dict__, "act_bits": min(act_bits, ops.act_bits)})
    less_weight = LayerOps(**{**ops.__dict__, "weight_bits": min(weight_bits, ops.weight_bits)})
    full = layer_energy(ops, table).total_pj
    assert layer_energy(less_act, table).total_pj <= full * (1 + 1e-12) + 1e-9
    assert layer_energy(less_weight, table).total_pj <= full * (1 + 1e-12) + 1e-9


@given(st.integers(1, 10**6), st.integers(1, 64), st.integers(0, 10**4))
def test_shifting_a_layer_lowers_its_compute_energy(macs: int, act_bits: int, bias_adds: int) -> None:
    shift = compute_energy_pj(TABLE, kind="shift", macs=macs, act_bits=act_bits, bias_adds=bias_adds)
    float_ = compute_energy_pj(TABLE, kind="float", macs=macs, act_bits=32, bias_adds=bias_adds)
    assert shift < float_


@given(st.integers(0, 10**5), st.integers(0, 10**5), st.integers(1, 64), st.integers(1, 64))
def test_activation_traffic_grows_with_bits(n_in: int, n_out: int, a: int, b: int) -> None:
    low, high = sorted((a, b))
    kwargs = {"in_activations": n_in, "out_activations": n_out}
    assert activation_memory_energy_pj(TABLE, act_bits=low, **kwargs) <= activation_memory_energy_pj(
        TABLE, act_bits=high, **kwargs
    )


def _tiny(depth: int, **settings) -> nn.Module:
    torch.manual_seed(0)
    return convert_to_shift(get_model("tiny_cnn", num_classes=4, in_channels=1), depth, **settings)


def test_whole_model_energy_is_monotone_in_bits_and_shift_depth() -> None:
    shape = (1, 8, 8)
    by_weight_bits = [model_energy_j(_tiny(3, weight_bits=b), shape) for b in range(2, 9)]
    assert by_weight_bits == sorted(by_weight_bits) and by_weight_bits[0] < by_weight_bits[-1]
    by_act_bits = [
        model_energy_j(_tiny(3, act_integer_bits=4, act_fraction_bits=f), shape) for f in (0, 4, 8, 16)
    ]
    assert by_act_bits == sorted(by_act_bits) and by_act_bits[0] < by_act_bits[-1]
    n = count_shiftable_layers(get_model("tiny_cnn", num_classes=4, in_channels=1))
    by_depth = [model_energy_j(_tiny(d, convert_all_linear=False), shape) for d in range(n + 1)]
    assert by_depth == sorted(by_depth, reverse=True) and by_depth[-1] < by_depth[0]


def test_profile_rows_share_and_totals() -> None:
    model = _tiny(2)
    profile = profile_model(model, (1, 8, 8))
    rows = profile_rows(profile)
    assert len(rows) == len(profile) and rows[0]["name"] == profile[0].name
    assert math.fsum(r["share"] for r in rows) == pytest.approx(1.0)
    assert profile.total_energy_j == pytest.approx(model_energy_j(model, (1, 8, 8)))
    kinds = {r["name"]: r["kind"] for r in rows}
    assert kinds["fc"] == "shift" and kinds["features.0"] == "float"
    totals = profile.totals()
    assert totals["energy_j"] == pytest.approx(
        totals["compute_j"] + totals["weight_memory_j"] + totals["activation_memory_j"]
    )
    assert 0 < totals["shift_energy_share"] < 1
    for row in rows:
        assert (row["weight_bits"] is None) == (row["macs"] == 0)
