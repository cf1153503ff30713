"""The exported-model file: packed integer shift weights plus everything needed to rebuild the model.

File format (``FORMAT_VERSION`` 1)
----------------------------------
A `safetensors <https://huggingface.co/docs/safetensors>`_ file, so loading it never unpickles
anything. Its header metadata (``str -> str``) holds:

- ``format``: ``"greenshift-dsnn-export"``; ``format_version``: ``"1"``;
- ``meta``: canonical JSON (sorted keys) with the architecture (backbone, num_classes, in_channels,
  image_size), the DSNNConfig hyperparameters, the fixed-point activation format, normalisation
  (mean/std), the data set and split seed, the objectives measured, provenance, the greenshift
  version and a description of every shift layer (kind, shift type, weight bits, shape, ``p_min``);
- ``sha256``: the SHA-256 over ``format``, ``format_version``, ``meta`` and every tensor's name, dtype,
  shape and bytes (sorted by name). Any changed byte of tensor data or metadata fails the check. It is
  unkeyed, so it detects damage, not a deliberate change (which can recompute it).

Tensors:

- ``shift.<layer>.codes``: ``uint8``, the layer's weight codes bit-packed at ``weight_bits`` per weight,
  exactly ``ceil(n * weight_bits / 8)`` bytes for ``n`` weights (row-major order of the weight);
- ``shift.<layer>.zeros``: ``int64`` flat indices of exactly-zero DeepShift-Q weights (present only
  when there are any; Q has no code for zero, see below);
- ``tensor.<key>``: every other entry of the model's state dict (float tensors as ``float32``, integer
  buffers such as ``num_batches_tracked`` unchanged); shift-layer biases are stored on the fixed-point grid.

Code layout of one shift weight ``sign * 2**p`` with ``b = weight_bits``
-------------------------------------------------------------------------
Bit ``b-1`` is the sign (1 = negative); bits ``0..b-2`` hold the magnitude field ``m``.

- DeepShift-Q: ``m = -p`` in ``[0, 2**(b-1) - 1]``; every code is a weight. A float weight of exactly 0
  keeps sign 0 in Q; it is written as code 0 and listed in ``shift.<layer>.zeros``.
- DeepShift-PS: ``m = -p`` in ``[0, 2**(b-1) - 2]``; ``m = 2**(b-1) - 1`` with sign bit 0 is the zero weight
  (its ternary sign is 0); with sign bit 1 it is invalid.

Packing: code ``i`` occupies bits ``i*b .. i*b + b - 1`` of a little-endian bit stream (code bit ``j`` at
stream bit ``i*b + j``; stream bit ``t`` is bit ``t % 8`` of byte ``t // 8``); unused bits of the last
byte are zero.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from greenshift.config import WEIGHT_BITS_RANGE, DSNNConfig
from greenshift.errors import ConfigError, ExportError, GreenshiftError
from greenshift.fileio import atomic_write_bytes
from greenshift.shift import ShiftConv2d, ShiftLayer
from greenshift.shift.quantize import round_fixed_point, shift_range
from greenshift.train import build_model, resolve_device

FORMAT_NAME = "greenshift-dsnn-export"
FORMAT_VERSION = 1
CODE_LAYOUT = (
    "bit weight_bits-1 = sign (1 negative), bits 0..weight_bits-2 = m = -p; "
    "PS: m = 2**(weight_bits-1)-1 with sign bit 0 is zero; Q: zero weights listed in .zeros; "
    "codes packed little-endian, code i at stream bits i*weight_bits.."
)
_SHIFT_PREFIX = "shift."
_TENSOR_PREFIX = "tensor."
_FLOAT_BYTES = 4
# Bounds on what a file may ask the rebuilt model to allocate: a damaged or hostile file could name
# 10**12 classes. Generous for image classification (ImageNet-21k has 21841 classes; multispectral
# images have tens of channels).
MAX_NUM_CLASSES = 100_000
MAX_IN_CHANNELS = 256


# --- codes and packing -------------------------------------------------------------------------


def _check_code_settings(weight_bits: int, shift_type: str) -> None:
    low, high = WEIGHT_BITS_RANGE
    if isinstance(weight_bits, bool) or not isinstance(weight_bits, int) or not low <= weight_bits <= high:
        raise ExportError(f"weight_bits={weight_bits!r} is not an integer in [{low}, {high}]")
    if shift_type not in ("Q", "PS"):
        raise ExportError(f"shift_type={shift_type!r} is not Q or PS")


def packed_size_bytes(count: int, weight_bits: int) -> int:
    """Bytes of ``count`` codes packed at ``weight_bits`` each: ``ceil(count * weight_bits / 8)``."""
    return (count * weight_bits + 7) // 8


def encode_codes(sign: Tensor, shift: Tensor, weight_bits: int, shift_type: str) -> tuple[Tensor, Tensor]:
    """The ``uint8`` codes of weights ``sign * 2**shift`` (flattened), and the flat indices of Q zeros.

    ``sign`` in {-1, 0, 1}; ``shift`` in ``[p_min, 0]`` of :func:`greenshift.shift.quantize.shift_range`. The
    second result is empty for PS (which has a code for zero) and for Q layers without exact zeros.
    """
    _check_code_settings(weight_bits, shift_type)
    p_min, p_max = shift_range(weight_bits, shift_type)
    sign = sign.reshape(-1).to(torch.int64)
    shift = shift.reshape(-1).to(torch.int64)
    if sign.numel() and (int(sign.abs().max()) > 1 or int(shift.min()) < p_min or int(shift.max()) > p_max):
        raise ExportError(
            f"shift weights out of range for {shift_type} with {weight_bits} bits "
            f"(signs must be in -1..1 and shifts in {p_min}..{p_max})"
        )
    sign_bit = 1 << (weight_bits - 1)
    codes = -shift + torch.where(sign < 0, sign_bit, 0)
    zeros = torch.nonzero(sign == 0).reshape(-1)
    if shift_type == "PS":
        codes = torch.where(sign == 0, sign_bit - 1, codes)
        zeros = zeros[:0]
    else:
        codes = torch.where(sign == 0, 0, codes)
    return codes.to(torch.uint8), zeros


def decode_codes(
    codes: Tensor, weight_bits: int, shift_type: str, zeros: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`encode_codes`: flat ``int8`` signs and shifts (a zero weight gets ``p_min``)."""
    _check_code_settings(weight_bits, shift_type)
    p_min, _ = shift_range(weight_bits, shift_type)
    codes = codes.reshape(-1).to(torch.int64)
    sign_bit = 1 << (weight_bits - 1)
    if codes.numel() and int(codes.max()) >= 2 * sign_bit:
        raise ExportError(f"a weight code exceeds {weight_bits} bits")
    negative = codes >= sign_bit
    magnitude = codes - torch.where(negative, sign_bit, 0)
    sign = torch.where(negative, -1, 1)
    shift = -magnitude
    if shift_type == "PS":
        is_zero = magnitude == sign_bit - 1
        if bool((is_zero & negative).any()):
            raise ExportError("the file holds an invalid DeepShift-PS weight code (negative zero)")
        sign = torch.where(is_zero, 0, sign)
        shift = torch.where(is_zero, p_min, shift)
    elif zeros is not None and zeros.numel():
        if int(zeros.min()) < 0 or int(zeros.max()) >= codes.numel():
            raise ExportError("the file lists a zero weight outside its layer")
        sign[zeros] = 0
        shift[zeros] = p_min
    return sign.to(torch.int8), shift.to(torch.int8)


def pack_codes(codes: Tensor, weight_bits: int) -> Tensor:
    """Pack ``uint8`` codes of ``weight_bits`` bits into a ``uint8`` byte tensor (module docstring)."""
    codes = codes.reshape(-1).to(torch.int64)
    count = codes.numel()
    positions = torch.arange(weight_bits, dtype=torch.int64)
    bits = torch.bitwise_and(torch.bitwise_right_shift(codes.unsqueeze(1), positions), 1).reshape(-1)
    padded = torch.zeros(packed_size_bytes(count, weight_bits) * 8, dtype=torch.int64)
    padded[: bits.numel()] = bits
    # Each byte is the sum of its eight bits shifted to their places.
    return torch.bitwise_left_shift(padded.reshape(-1, 8), torch.arange(8)).sum(dim=1).to(torch.uint8)


def unpack_codes(packed: Tensor, weight_bits: int, count: int) -> Tensor:
    """Inverse of :func:`pack_codes`: the first ``count`` codes as ``uint8``."""
    if (
        packed.dtype != torch.uint8
        or packed.dim() != 1
        or packed.numel() != packed_size_bytes(count, weight_bits)
    ):
        raise ExportError(
            f"packed weights have {packed.numel()} bytes, expected {packed_size_bytes(count, weight_bits)}"
        )
    stream = torch.bitwise_and(
        torch.bitwise_right_shift(packed.to(torch.int64).unsqueeze(1), torch.arange(8)), 1
    ).reshape(-1)
    bits = stream[: count * weight_bits].reshape(count, weight_bits)
    values = torch.bitwise_left_shift(bits, torch.arange(weight_bits)).sum(dim=1)
    return values.to(torch.uint8)


# --- metadata and results ----------------------------------------------------------------------


@dataclass(frozen=True)
class ExportMeta:
    """What an exported file says about its model (the ``meta`` JSON, parsed)."""

    format_version: int
    greenshift_version: str
    backbone: str
    num_classes: int
    in_channels: int
    image_size: int | None
    config: dict[str, Any]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dataset: str
    split_seed: int
    objectives: dict[str, float]
    fixed_point: dict[str, int]
    shift_layers: dict[str, dict[str, Any]]
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def dsnn_config(self) -> DSNNConfig:
        """The hyperparameters as a :class:`DSNNConfig`."""
        return DSNNConfig.from_dict(self.config)

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored in the file's ``meta`` entry."""
        return {
            "architecture": {
                "backbone": self.backbone,
                "num_classes": self.num_classes,
                "in_channels": self.in_channels,
                "image_size": self.image_size,
            },
            "config": self.config,
            "fixed_point": self.fixed_point,
            "normalisation": {"mean": list(self.mean), "std": list(self.std)},
            "data": {"dataset": self.dataset, "split_seed": self.split_seed},
            "objectives": self.objectives,
            "shift_layers": self.shift_layers,
            "code_layout": CODE_LAYOUT,
            "provenance": self.provenance,
            "greenshift_version": self.greenshift_version,
            "format_version": self.format_version,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExportMeta:
        """Parse the ``meta`` JSON; a missing or malformed entry is an :class:`ExportError`."""
        try:
            arch = data["architecture"]
            norm = data["normalisation"]
            return cls(
                format_version=int(data["format_version"]),
                greenshift_version=str(data["greenshift_version"]),
                backbone=str(arch["backbone"]),
                num_classes=int(arch["num_classes"]),
                in_channels=int(arch["in_channels"]),
                image_size=None if arch["image_size"] is None else int(arch["image_size"]),
                config=dict(data["config"]),
                mean=tuple(float(v) for v in norm["mean"]),
                std=tuple(float(v) for v in norm["std"]),
                dataset=str(data["data"]["dataset"]),
                split_seed=int(data["data"]["split_seed"]),
                objectives={str(k): float(v) for k, v in data["objectives"].items()},
                fixed_point={str(k): int(v) for k, v in data["fixed_point"].items()},
                shift_layers={str(k): dict(v) for k, v in data["shift_layers"].items()},
                provenance=dict(data.get("provenance") or {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ExportError(f"the file's metadata is incomplete: {type(exc).__name__} {exc}") from None

    def __post_init__(self) -> None:
        # Checked before any model is built from the metadata, so a bad file cannot allocate without bound.
        for name, value, bound in (
            ("num_classes", self.num_classes, MAX_NUM_CLASSES),
            ("in_channels", self.in_channels, MAX_IN_CHANNELS),
        ):
            if not 1 <= value <= bound:
                raise ExportError(f"the file's {name} {value} is outside 1..{bound}; the file is damaged")


@dataclass(frozen=True)
class ExportInfo:
    """The result of an export: where, how big (bytes) next to the float model, and from what.

    ``size_bytes`` is the true file size; ``float_size_bytes`` the float32 size of the same network's
    parameters (each shift weight counted once at 32 bits); ``packed_shift_bytes`` the packed shift
    weight codes. ``source`` is ``"model"`` (export_model), ``"checkpoint"`` or ``"retrained"``.
    """

    path: Path
    size_bytes: int
    float_size_bytes: int
    packed_shift_bytes: int
    source: str
    meta: ExportMeta
    trial_id: int | None = None

    @property
    def compression(self) -> float:
        """``float_size_bytes / size_bytes``: how many times smaller the file is than float32 weights."""
        return self.float_size_bytes / self.size_bytes if self.size_bytes else math.nan


# --- writing -----------------------------------------------------------------------------------


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _checksum(metadata: Mapping[str, str], tensors: Mapping[str, Tensor]) -> str:
    digest = hashlib.sha256()
    for key in ("format", "format_version", "meta"):
        digest.update(f"{key}\0{metadata.get(key, '')}\0".encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype!s}\0{list(tensor.shape)}\0".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def _shift_weight_keys(name: str, layer: ShiftLayer) -> tuple[str, ...]:
    prefix = f"{name}." if name else ""
    return (f"{prefix}weight",) if layer.shift_type == "Q" else (f"{prefix}sign", f"{prefix}shift")


def _shift_layers(model: nn.Module) -> list[tuple[str, ShiftLayer]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, ShiftLayer)]


def _check_matches_build(
    model: nn.Module, config: DSNNConfig, backbone: str, num_classes: int, in_channels: int
) -> None:
    """Refuse a model that :func:`load_exported` could not rebuild from backbone and config."""
    try:
        reference = build_model(config, backbone, num_classes, in_channels)
    except GreenshiftError as exc:
        raise ExportError(f"cannot rebuild {backbone} for this configuration: {exc}") from None
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    if ours != theirs:
        missing = sorted(set(theirs) - set(ours))
        extra = sorted(set(ours) - set(theirs))
        shapes = sorted(k for k in set(ours) & set(theirs) if ours[k] != theirs[k])
        detail = (
            (missing and f"missing {missing[0]}")
            or (extra and f"unexpected {extra[0]}")
            or f"shape of {shapes[0]}"
        )
        raise ExportError(
            f"the model does not match {backbone} built with this configuration ({detail}); "
            "pass the backbone and config it was built from"
        )
    expected = dict(_shift_layers(reference))
    ours_shift = dict(_shift_layers(model))
    if sorted(ours_shift) != sorted(expected):
        differing = sorted(set(ours_shift) ^ set(expected))
        raise ExportError(
            f"the model shifts other layers than {backbone} with this configuration "
            f"(shift_depth={config.shift_depth}); first difference: {differing[0]!r}"
        )
    settings = ("shift_type", "weight_bits", "act_integer_bits", "act_fraction_bits")
    for name, layer in ours_shift.items():
        theirs_values = tuple(getattr(expected[name], s) for s in settings)
        our_values = tuple(getattr(layer, s) for s in settings)
        if our_values != theirs_values:
            raise ExportError(
                f"shift layer {name!r} (type, weight bits, activation bits {our_values}) does not match "
                f"the configuration's {theirs_values}"
            )


def float_size_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters as a float32 network (a PS weight's sign/shift counted once)."""
    shift_ids: set[int] = set()
    total = 0
    for _, layer in _shift_layers(model):
        params = (layer.weight,) if layer.shift_type == "Q" else (layer.sign, layer.shift)
        shift_ids.update(id(p) for p in params)
        total += math.prod(layer.weight_shape)
    total += sum(p.numel() for p in model.parameters() if id(p) not in shift_ids)
    return total * _FLOAT_BYTES


def _greenshift_version() -> str:
    import greenshift

    return greenshift.__version__


@torch.no_grad()
def export_model(
    model: nn.Module,
    *,
    backbone: str,
    config: DSNNConfig | Mapping[str, Any],
    num_classes: int,
    in_channels: int,
    image_size: int | None,
    mean: Sequence[float],
    std: Sequence[float],
    dataset: str,
    objectives: Mapping[str, float],
    out: str | os.PathLike[str],
    split_seed: int = 0,
    provenance: Mapping[str, Any] | None = None,
    source: str = "model",
) -> ExportInfo:
    """Write ``model`` (built by ``build_model(config, backbone, ...)``) as a packed export file at ``out``.

    Shift weights are stored as their deployed (deterministically rounded) integer codes; every other
    tensor as float32. The model is not modified. Returns sizes and the metadata written.
    """
    if isinstance(config, DSNNConfig):
        dsnn = config
    else:
        try:
            dsnn = DSNNConfig.from_dict(dict(config))
        except ConfigError as exc:
            raise ExportError(f"the configuration to export is invalid: {exc}") from None
    _check_matches_build(model, dsnn, backbone, num_classes, in_channels)
    if len(mean) != in_channels or len(std) != in_channels:
        raise ExportError(
            f"mean and std need {in_channels} values (one per channel), got {len(mean)} and {len(std)}"
        )

    tensors: dict[str, Tensor] = {}
    layers_meta: dict[str, dict[str, Any]] = {}
    skip: set[str] = set()
    biases: dict[str, tuple[int, int]] = {}
    packed_bytes = 0
    for name, layer in _shift_layers(model):
        encoding = layer.encode()
        source_params = (layer.weight,) if layer.shift_type == "Q" else (layer.sign, layer.shift)
        if not all(bool(torch.isfinite(p).all()) for p in source_params):
            raise ExportError(
                f"shift layer {name!r} has non-finite weights (a diverged model cannot be exported)"
            )
        codes, zeros = encode_codes(
            encoding.sign.cpu(), encoding.shift.cpu(), layer.weight_bits, layer.shift_type
        )
        packed = pack_codes(codes, layer.weight_bits)
        tensors[f"{_SHIFT_PREFIX}{name}.codes"] = packed
        if zeros.numel():
            tensors[f"{_SHIFT_PREFIX}{name}.zeros"] = zeros
        packed_bytes += packed.numel()
        skip.update(_shift_weight_keys(name, layer))
        if layer.bias is not None:
            biases[f"{name}.bias" if name else "bias"] = (layer.act_integer_bits, layer.act_fraction_bits)
        layers_meta[name] = {
            "kind": "conv2d" if isinstance(layer, ShiftConv2d) else "linear",
            "shift_type": layer.shift_type,
            "weight_bits": layer.weight_bits,
            "shape": list(encoding.shape),
            "p_min": layer.shift_bounds[0],
            "zeros": int(zeros.numel()),
            "packed_bytes": int(packed.numel()),
        }
    for key, value in model.state_dict().items():
        if key in skip:
            continue
        value = value.detach().cpu()
        if key in biases:
            # The deployed bias is the one on the fixed-point grid.
            value = round_fixed_point(value.to(torch.float32), *biases[key])
        elif value.is_floating_point():
            value = value.to(torch.float32)
        tensors[f"{_TENSOR_PREFIX}{key}"] = value.contiguous()

    meta = ExportMeta(
        format_version=FORMAT_VERSION,
        greenshift_version=_greenshift_version(),
        backbone=backbone,
        num_classes=int(num_classes),
        in_channels=int(in_channels),
        image_size=None if image_size is None else int(image_size),
        config=dsnn.to_dict(),
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        dataset=str(dataset),
        split_seed=int(split_seed),
        objectives={str(k): float(v) for k, v in objectives.items()},
        fixed_point={
            "integer_bits": dsnn.activation_integer_bits,
            "fraction_bits": dsnn.activation_fraction_bits,
        },
        shift_layers=layers_meta,
        provenance=dict(provenance or {}),
    )
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "meta": _canonical(meta.to_json()),
    }
    metadata["sha256"] = _checksum(metadata, tensors)

    from safetensors.torch import save

    path = Path(out)
    atomic_write_bytes(path, save(tensors, metadata=metadata))
    return ExportInfo(
        path=path,
        size_bytes=path.stat().st_size,
        float_size_bytes=float_size_bytes(model),
        packed_shift_bytes=packed_bytes,
        source=source,
        meta=meta,
        trial_id=(provenance or {}).get("trial_id"),
    )


# --- reading -----------------------------------------------------------------------------------


def _read_file(path: Path) -> tuple[dict[str, str], dict[str, Tensor]]:
    """Metadata and tensors of a safetensors file; anything unreadable is one ExportError."""
    if not path.is_file():
        raise ExportError(f"exported model {path} does not exist")
    with path.open("rb") as handle:
        head = handle.read(4)
    if head.startswith(b"PK"):
        raise ExportError(
            f"{path} is a torch checkpoint, not a greenshift export; export it with `greenshift export`"
        )
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    except Exception as exc:  # safetensors raises its own error type and OSError for bad files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ExportError(
            f"{path} is not a readable greenshift export (truncated or not safetensors: {reason})"
        ) from None
    return metadata, tensors


def read_exported(path: str | os.PathLike[str]) -> tuple[ExportMeta, dict[str, Tensor]]:
    """Read and verify an export file: format, version and checksum; returns metadata and raw tensors."""
    path = Path(path)
    metadata, tensors = _read_file(path)
    if metadata.get("format") != FORMAT_NAME:
        raise ExportError(f"{path} is a safetensors file but not a greenshift export")
    version = metadata.get("format_version")
    if version != str(FORMAT_VERSION):
        raise ExportError(
            f"{path} has export format version {version!r}; this greenshift reads version {FORMAT_VERSION}"
        )
    if metadata.get("sha256") != _checksum(metadata, tensors):
        # The checksum is unkeyed: it detects damage, and anyone can recompute it after a deliberate change.
        raise ExportError(f"{path} fails its checksum: the file was damaged after export")
    try:
        data = json.loads(metadata["meta"])
    except (KeyError, json.JSONDecodeError):
        raise ExportError(f"{path} has no readable metadata") from None
    return ExportMeta.from_json(data), tensors


def _state_dict_from_file(
    model: nn.Module, meta: ExportMeta, tensors: dict[str, Tensor]
) -> dict[str, Tensor]:
    state = {k[len(_TENSOR_PREFIX) :]: v for k, v in tensors.items() if k.startswith(_TENSOR_PREFIX)}
    layers = _shift_layers(model)
    if sorted(n for n, _ in layers) != sorted(meta.shift_layers):
        raise ExportError(f"the file's shift layers do not match {meta.backbone} with its configuration")
    for name, layer in layers:
        info = meta.shift_layers[name]
        shape = tuple(info["shape"])
        if (info["shift_type"], info["weight_bits"], shape) != (
            layer.shift_type,
            layer.weight_bits,
            layer.weight_shape,
        ):
            raise ExportError(f"shift layer {name!r} in the file does not match the rebuilt model")
        codes_key = f"{_SHIFT_PREFIX}{name}.codes"
        if codes_key not in tensors:
            raise ExportError(f"the file has no weights for shift layer {name!r}")
        codes = unpack_codes(tensors[codes_key], layer.weight_bits, math.prod(shape))
        sign, shift = decode_codes(
            codes, layer.weight_bits, layer.shift_type, tensors.get(f"{_SHIFT_PREFIX}{name}.zeros")
        )
        keys = _shift_weight_keys(name, layer)
        if layer.shift_type == "Q":
            state[keys[0]] = torch.exp2(shift.to(torch.float32)).mul_(sign.to(torch.float32)).reshape(shape)
        else:
            state[keys[0]] = sign.to(torch.float32).reshape(shape)
            state[keys[1]] = shift.to(torch.float32).reshape(shape)
    return state


def load_exported(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[nn.Module, ExportMeta]:
    """Rebuild the model of an export file (in eval mode, on ``device``) and return it with its metadata.

    The model is ``greenshift.train.build_model(config, backbone, ...)`` with the unpacked weights loaded,
    so its forward is the one that was exported. A missing, damaged, truncated, foreign or
    other-version file is an :class:`ExportError`. The checksum is not a signature: load only files
    from a source you trust.
    """
    meta, tensors = read_exported(path)
    try:
        model = build_model(meta.dsnn_config, meta.backbone, meta.num_classes, meta.in_channels)
    except GreenshiftError as exc:
        raise ExportError(f"cannot rebuild the exported {meta.backbone}: {exc}") from None
    state = _state_dict_from_file(model, meta, tensors)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ExportError(f"{path} does not fit {meta.backbone}: {str(exc).splitlines()[0]}") from None
    return model.to(resolve_device(device)).eval(), meta
