"""The export file: packed codes, exact round trip, sizes, and refusal of damaged or foreign files."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save, save_file

from greenshift.config import DSNNConfig
from greenshift.data import Dataset
from greenshift.data.core import AugmentSpec, ImageSplit, channel_stats
from greenshift.errors import ExportError
from greenshift.export import export_model, load_exported
from greenshift.export.format import (
    FORMAT_VERSION,
    _checksum,
    decode_codes,
    encode_codes,
    pack_codes,
    packed_size_bytes,
    read_exported,
    unpack_codes,
)
from greenshift.models import get_model
from greenshift.shift import ShiftLayer
from greenshift.shift.quantize import shift_range
from greenshift.train import build_model, train, validate


def _split(n: int, generator: torch.Generator) -> ImageSplit:
    labels = torch.arange(n) % 3
    images = torch.randint(0, 80, (n, 1, 8, 8), generator=generator)
    images[labels == 0, :, ::2, :] += 150
    images[labels == 1, :, :, ::2] += 150
    return ImageSplit(images.to(torch.uint8), labels.to(torch.int64))


@pytest.fixture(scope="module")
def toy() -> Dataset:
    generator = torch.Generator().manual_seed(7)
    train_split, val_split = _split(96, generator), _split(60, generator)
    mean, std = channel_stats(train_split.images)
    return Dataset("toy", ["a", "b", "c"], train_split, val_split, None, mean, std, AugmentSpec())


def _export(model, config, path, toy: Dataset, **overrides):
    values = {
        "backbone": "tiny_cnn",
        "config": config,
        "num_classes": toy.num_classes,
        "in_channels": toy.in_channels,
        "image_size": toy.image_size,
        "mean": toy.mean,
        "std": toy.std,
        "dataset": toy.name,
        "objectives": {"loss": 0.5, "energy_model_j": 1e-4},
        "out": path,
    }
    values.update(overrides)
    return export_model(model, **values)


# --- codes and packing -------------------------------------------------------------------------


@given(
    shift_type=st.sampled_from(["Q", "PS"]),
    weight_bits=st.integers(2, 8),
    count=st.integers(0, 70),
    seed=st.integers(0, 2**16),
)
def test_codes_round_trip_for_every_width_and_shift_type(shift_type, weight_bits, count, seed):
    generator = torch.Generator().manual_seed(seed)
    p_min, _ = shift_range(weight_bits, shift_type)
    sign = torch.randint(-1, 2, (count,), generator=generator, dtype=torch.int8)
    shift = torch.randint(p_min, 1, (count,), generator=generator, dtype=torch.int8)
    codes, zeros = encode_codes(sign, shift, weight_bits, shift_type)
    assert codes.dtype == torch.uint8 and all(0 <= c < 2**weight_bits for c in codes.tolist())
    packed = pack_codes(codes, weight_bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(count * weight_bits / 8)
    assert torch.equal(unpack_codes(packed, weight_bits, count), codes)
    sign_back, shift_back = decode_codes(codes, weight_bits, shift_type, zeros)
    assert torch.equal(sign_back, sign)
    # A zero weight has no exponent; it decodes with p_min and every other weight exactly.
    assert torch.equal(shift_back, torch.where(sign == 0, torch.tensor(p_min, dtype=torch.int8), shift))
    assert (zeros.numel() == int((sign == 0).sum())) if shift_type == "Q" else zeros.numel() == 0


def test_code_layout_is_the_documented_one():
    # Q, 3 bits: +1, -1, +0.5, -0.25 -> 000, 100, 001, 110 -> stream 000 001 100 011 (LSB first).
    codes, _ = encode_codes(torch.tensor([1, -1, 1, -1]), torch.tensor([0, 0, -1, -2]), 3, "Q")
    assert codes.tolist() == [0b000, 0b100, 0b001, 0b110]
    assert pack_codes(codes, 3).tolist() == [0b01100000, 0b00001100]
    # PS, 2 bits (ternary): +1, -1, 0 -> 00, 10, 01 (all-ones magnitude = zero).
    codes, _ = encode_codes(torch.tensor([1, -1, 0]), torch.tensor([0, 0, 0]), 2, "PS")
    assert codes.tolist() == [0b00, 0b10, 0b01]
    assert pack_codes(codes, 2).tolist() == [0b00011000]


def test_invalid_codes_and_ranges_are_export_errors():
    with pytest.raises(ExportError, match="out of range"):
        encode_codes(torch.tensor([1]), torch.tensor([-8]), 4, "Q")  # Q 4 bits: p_min is -7
    with pytest.raises(ExportError, match="negative zero"):
        decode_codes(torch.tensor([0b111], dtype=torch.uint8), 3, "PS")
    with pytest.raises(ExportError, match="bytes"):
        unpack_codes(torch.zeros(3, dtype=torch.uint8), 5, 3)  # 3 codes of 5 bits need 2 bytes


# --- export -> load round trip -------------------------------------------------------------------


@pytest.mark.parametrize("shift_type", ["Q", "PS"])
def test_export_load_reproduces_the_model_exactly(tmp_path, toy, shift_type):
    config = DSNNConfig(
        shift_type=shift_type, weight_bits=4, lr=0.05, batch_size=32, test_batch_size=64, shift_depth=2
    )
    result = train(config, toy, 1, backbone="tiny_cnn", seed=1)
    model = result.model
    info = _export(model, config, tmp_path / "m.safetensors", toy)
    loaded, meta = load_exported(info.path)
    assert not loaded.training
    assert validate(loaded, toy) == validate(model, toy)
    images, _ = next(toy.batches("val", 60, shuffle=False))
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))
    # The trained (rounded) state dict comes back unchanged, batch-norm statistics included.
    theirs = loaded.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(theirs[key], value), key
    assert meta.backbone == "tiny_cnn" and meta.config == config.to_dict() and meta.dataset == "toy"
    assert meta.mean == tuple(toy.mean) and meta.std == tuple(toy.std) and meta.image_size == 8
    assert meta.objectives == {"loss": 0.5, "energy_model_j": 1e-4}
    assert meta.fixed_point == {"integer_bits": 16, "fraction_bits": 16}
    assert meta.format_version == FORMAT_VERSION and meta.greenshift_version
    assert info.source == "model" and info.meta == meta


@pytest.mark.parametrize("weight_bits", [2, 3, 5, 7, 8])
def test_packed_size_is_weight_bits_per_weight(tmp_path, toy, weight_bits):
    config = DSNNConfig(shift_type="PS", weight_bits=weight_bits)
    model = build_model(config, "tiny_cnn", 3, 1)
    info = _export(model, config, tmp_path / "m.safetensors", toy)
    meta, tensors = read_exported(info.path)
    shift_layers = [(n, m) for n, m in model.named_modules() if isinstance(m, ShiftLayer)]
    assert sorted(meta.shift_layers) == sorted(n for n, _ in shift_layers) and len(shift_layers) == 3
    expected_total = 0
    for name, layer in shift_layers:
        expected = packed_size_bytes(math.prod(layer.weight_shape), weight_bits)
        assert expected == math.ceil(math.prod(layer.weight_shape) * weight_bits / 8)
        assert tensors[f"shift.{name}.codes"].numel() == expected == meta.shift_layers[name]["packed_bytes"]
        expected_total += expected
        # No float copy of a shift weight is stored.
        assert not any(
            k.startswith(f"tensor.{name}.") and k.split(".")[-1] in ("weight", "sign", "shift")
            for k in tensors
        )
    assert info.packed_shift_bytes == expected_total
    assert info.size_bytes == info.path.stat().st_size
    float_params = sum(p.numel() for p in get_model("tiny_cnn", 3, 1).parameters())
    assert info.float_size_bytes == 4 * float_params


def test_resnet20_file_is_a_fraction_of_the_float_size(tmp_path):
    config = DSNNConfig(shift_type="Q", weight_bits=5)
    model = build_model(config, "resnet20", 10, 3)
    info = export_model(
        model,
        backbone="resnet20",
        config=config,
        num_classes=10,
        in_channels=3,
        image_size=32,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        dataset="cifar10",
        objectives={},
        out=tmp_path / "r.st",
    )
    float_params = sum(p.numel() for p in get_model("resnet20", 10, 3).parameters())
    assert info.float_size_bytes == 4 * float_params
    assert info.packed_shift_bytes == sum(
        packed_size_bytes(m.weight.numel(), 5) for m in model.modules() if isinstance(m, ShiftLayer)
    )
    assert info.size_bytes < info.float_size_bytes / 5  # 5-bit weights: about 6x smaller than float32
    assert info.compression > 5


def test_exact_zero_q_weights_survive(tmp_path, toy):
    config = DSNNConfig(shift_type="Q", weight_bits=3)
    model = build_model(config, "tiny_cnn", 3, 1).eval()
    with torch.no_grad():
        model.fc.weight[0, :3] = 0.0
    info = _export(model, config, tmp_path / "m.safetensors", toy)
    loaded, meta = load_exported(info.path)
    assert meta.shift_layers["fc"]["zeros"] == 3
    assert torch.equal(loaded.fc.weight[0, :3], torch.zeros(3))
    images = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))


def test_a_model_that_does_not_match_its_config_is_refused(tmp_path, toy):
    model = build_model(DSNNConfig(weight_bits=5), "tiny_cnn", 3, 1)
    with pytest.raises(ExportError, match="does not match"):
        _export(model, DSNNConfig(weight_bits=4), tmp_path / "a", toy)
    with pytest.raises(ExportError, match="does not match"):
        _export(model, DSNNConfig(weight_bits=5), tmp_path / "b", toy, backbone="small_cnn")
    with pytest.raises(ExportError, match="does not match"):
        _export(model, DSNNConfig(weight_bits=5, shift_depth=1), tmp_path / "c", toy)
    assert not any(tmp_path.iterdir())


# --- damaged and foreign files --------------------------------------------------------------------


@pytest.fixture
def exported(tmp_path, toy):
    config = DSNNConfig(shift_type="PS", weight_bits=4)
    return _export(build_model(config, "tiny_cnn", 3, 1), config, tmp_path / "model.pt", toy).path


def _header_length(data: bytes) -> int:
    return 8 + int.from_bytes(data[:8], "little")


def test_intact_file_loads(exported):
    load_exported(exported)


@pytest.mark.parametrize("where", ["first data byte", "middle data byte", "last data byte", "metadata"])
def test_a_damaged_byte_is_detected(exported, where):
    data = bytearray(exported.read_bytes())
    header = _header_length(data)
    if where == "metadata":
        index = data.index(b"tiny_cnn") + 1  # an ASCII letter inside the JSON metadata
        data[index] = ord("u")
    else:
        index = {
            "first data byte": header,
            "middle data byte": (header + len(data)) // 2,
            "last data byte": len(data) - 1,
        }[where]
        data[index] ^= 0x10
    exported.write_bytes(bytes(data))
    with pytest.raises(ExportError, match="checksum"):
        load_exported(exported)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_a_truncated_file_is_an_export_error(exported, keep):
    data = exported.read_bytes()
    exported.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ExportError, match="not a readable greenshift export"):
        load_exported(exported)


def test_another_format_version_is_refused(exported):
    _, tensors = read_exported(exported)
    from safetensors import safe_open

    with safe_open(str(exported), framework="pt") as handle:
        metadata = dict(handle.metadata())
    metadata["format_version"] = str(FORMAT_VERSION + 1)
    metadata["sha256"] = _checksum(metadata, tensors)  # a genuine file of a later version
    exported.write_bytes(save(tensors, metadata=metadata))
    with pytest.raises(ExportError, match=f"version '{FORMAT_VERSION + 1}'.*reads version {FORMAT_VERSION}"):
        load_exported(exported)


@pytest.mark.parametrize(
    ("field", "value"), [("num_classes", 10**12), ("in_channels", 10**9), ("num_classes", 0)]
)
def test_absurd_architecture_sizes_are_refused_before_anything_is_allocated(exported, field, value):
    from safetensors import safe_open

    _, tensors = read_exported(exported)
    with safe_open(str(exported), framework="pt") as handle:
        metadata = dict(handle.metadata())
    meta = json.loads(metadata["meta"])
    meta["architecture"][field] = value
    metadata["meta"] = json.dumps(meta, sort_keys=True)
    metadata["sha256"] = _checksum(metadata, tensors)  # the checksum is unkeyed: anyone can recompute it
    exported.write_bytes(save(tensors, metadata=metadata))
    with pytest.raises(ExportError, match=f"{field} {value} is outside 1"):
        load_exported(exported)


def test_foreign_files_are_export_errors(tmp_path):
    random_file = tmp_path / "random.bin"
    random_file.write_bytes(
        torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
        .numpy()
        .tobytes()
    )
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(3)}, plain)
    pickle_file = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": {}}, pickle_file)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    cases = [
        (random_file, "not a readable greenshift export"),
        (plain, "not a greenshift export"),
        (pickle_file, "torch checkpoint"),
        (empty, "not a readable greenshift export"),
        (tmp_path / "missing.safetensors", "does not exist"),
    ]
    for path, message in cases:
        with pytest.raises(ExportError, match=message):
            load_exported(path)


def test_metadata_is_plain_json(exported):
    from safetensors import safe_open

    with safe_open(str(exported), framework="pt") as handle:
        metadata = handle.metadata()
    parsed = json.loads(metadata["meta"])
    assert parsed["architecture"] == {
        "backbone": "tiny_cnn",
        "num_classes": 3,
        "in_channels": 1,
        "image_size": 8,
    }
    assert (
        parsed["shift_layers"]["fc"]["shift_type"] == "PS"
        and parsed["shift_layers"]["fc"]["weight_bits"] == 4
    )
    assert len(metadata["sha256"]) == 64


def test_a_q_model_converted_at_another_depth_is_refused(tmp_path, toy):
    # Q keeps the float parameter names, so only the set of shifted layers tells the depths apart.
    model = build_model(DSNNConfig(shift_type="Q", shift_depth=1), "tiny_cnn", 3, 1)
    with pytest.raises(ExportError, match="shifts other layers"):
        _export(model, DSNNConfig(shift_type="Q", shift_depth=2), tmp_path / "a", toy)
