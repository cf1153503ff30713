"""Where the modelled energy goes: one row per layer with its operations, energy and share."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from greenshift.objectives.energy_model import (
    PICO,
    EnergyTable,
    count_ops,
    layer_energy,
    resolve_energy_table,
)


@dataclass(frozen=True)
class LayerProfile:
    """Modelled cost of one layer for one image.

    ``kind`` is ``"shift"`` or ``"float"``; ``weight_bits``/``act_bits`` are ``None`` for operations
    without weights or without modelled activation traffic (elementwise operations).
    """

    name: str
    op: str
    kind: str
    macs: int
    elementwise_ops: int
    weight_bits: int | None
    act_bits: int | None
    compute_j: float
    weight_memory_j: float
    activation_memory_j: float
    energy_j: float
    share: float


@dataclass(frozen=True)
class ModelProfile:
    """All layer profiles plus totals; iterating yields the :class:`LayerProfile` rows."""

    layers: list[LayerProfile]
    input_shape: tuple[int, ...]
    table_name: str

    def __iter__(self) -> Iterator[LayerProfile]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> LayerProfile:
        return self.layers[index]

    @property
    def total_energy_j(self) -> float:
        """Modelled energy per image (equals ``energy_model_j``)."""
        return sum(layer.energy_j for layer in self.layers)

    @property
    def total_macs(self) -> int:
        """All multiply-accumulates per image."""
        return sum(layer.macs for layer in self.layers)

    @property
    def shift_macs(self) -> int:
        """Multiply-accumulates per image done by shift layers."""
        return sum(layer.macs for layer in self.layers if layer.kind == "shift")

    def totals(self) -> dict[str, Any]:
        """Totals as a plain dict (energy split by cause, MACs, shares)."""
        total = self.total_energy_j
        return {
            "energy_j": total,
            "compute_j": sum(layer.compute_j for layer in self.layers),
            "weight_memory_j": sum(layer.weight_memory_j for layer in self.layers),
            "activation_memory_j": sum(layer.activation_memory_j for layer in self.layers),
            "macs": self.total_macs,
            "shift_macs": self.shift_macs,
            "shift_energy_share": (
                sum(layer.energy_j for layer in self.layers if layer.kind == "shift") / total
                if total
                else 0.0
            ),
            "layers": len(self.layers),
            "input_shape": list(self.input_shape),
            "energy_table": self.table_name,
        }


def profile_model(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    energy_table: EnergyTable | str | Path | None = None,
) -> ModelProfile:
    """Per-layer modelled energy of ``model`` for one input of ``input_shape`` (no batch dimension).

    Rows follow the order in which the forward pass first reaches each layer.
    """
    table = resolve_energy_table(energy_table)
    counted = count_ops(model, input_shape)
    parts = [(ops, layer_energy(ops, table)) for ops in counted]
    total_pj = sum(energy.total_pj for _, energy in parts)
    layers = [
        LayerProfile(
            name=ops.name,
            op=ops.op,
            kind=ops.kind,
            macs=ops.macs,
            elementwise_ops=ops.elementwise_adds + ops.elementwise_mults,
            weight_bits=ops.weight_bits if ops.weights else None,
            act_bits=ops.act_bits if ops.in_activations or ops.out_activations else None,
            compute_j=energy.compute_pj * PICO,
            weight_memory_j=energy.weight_memory_pj * PICO,
            activation_memory_j=energy.activation_memory_pj * PICO,
            energy_j=energy.total_j,
            share=energy.total_pj / total_pj if total_pj else 0.0,
        )
        for ops, energy in parts
    ]
    return ModelProfile(layers=layers, input_shape=tuple(int(s) for s in input_shape), table_name=table.name)


def profile_rows(profile: ModelProfile) -> list[dict[str, Any]]:
    """The profile as plain dicts (one per layer), ready for a table or JSON."""
    return [asdict(layer) for layer in profile.layers]


@dataclass(frozen=True)
class ConfigurationProfile:
    """The profile of one configuration of a backbone: what it was profiled on, and its layers."""

    backbone: str
    source: str  # the data set's name, or "input CxHxW"
    input_shape: tuple[int, int, int]
    config: Any  # DSNNConfig
    profile: ModelProfile

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (``greenshift profile --json``)."""
        return {
            "backbone": self.backbone,
            "dataset": self.source,
            "config": self.config.to_dict(),
            "layers": profile_rows(self.profile),
            "totals": self.profile.totals(),
        }


def profile_configuration(
    config: Any,
    backbone: str,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    image_size: int | None = None,
    input_shape: Sequence[int] | str | None = None,
    classes: int | None = None,
    energy_table: EnergyTable | str | Path | None = None,
) -> ConfigurationProfile:
    """Per-layer modelled energy of ``config`` (a DSNNConfig) on an untrained ``backbone``.

    Only the input shape and the number of classes matter: give ``dataset`` (its files are read for
    data sets that need them) or ``input_shape`` (``(C, H, W)`` or ``"C,H,W"``) with ``classes``
    (default 10). Backbone and ``shift_depth`` are checked before any data is loaded.
    """
    from greenshift.train import build_model, check_shift_depth

    check_shift_depth(config, backbone)
    table = resolve_energy_table(energy_table)
    shape, num_classes, source = _profile_input(dataset, data_dir, image_size, input_shape, classes)
    model = build_model(config, backbone, num_classes, shape[0])
    profile = profile_model(model, shape, energy_table=table)
    return ConfigurationProfile(backbone, source, shape, config, profile)


def _profile_input(
    dataset: str | None,
    data_dir: str | None,
    image_size: int | None,
    input_shape: Sequence[int] | str | None,
    classes: int | None,
) -> tuple[tuple[int, int, int], int, str]:
    """``(input shape, classes, what they came from)``: ``input_shape`` needs no files, ``dataset`` does."""
    from greenshift.config import coerce_int, coerce_names
    from greenshift.errors import ConfigError

    if (dataset is None) == (input_shape is None):
        raise ConfigError(
            "give either dataset or input_shape C,H,W (the shape needs no data files)",
            fields=("dataset", "input_shape"),
        )
    if input_shape is not None:
        if image_size is not None or data_dir is not None:
            raise ConfigError(
                "image_size and data_dir go with dataset, not with input_shape",
                fields=("image_size", "data_dir", "dataset", "input_shape"),
            )
        items = coerce_names("input_shape", input_shape) if isinstance(input_shape, str) else input_shape
        parts = [coerce_int("input_shape", value) for value in items]
        if len(parts) != 3 or min(parts) < 1:
            raise ConfigError(
                f"input_shape expects three positive integers C,H,W, got {input_shape!r}",
                fields=("input_shape",),
            )
        num_classes = 10 if classes is None else classes
        if num_classes < 2:
            raise ConfigError(f"classes must be at least 2, got {num_classes}", fields=("classes",))
        return (parts[0], parts[1], parts[2]), num_classes, "input " + "x".join(map(str, parts))
    if classes is not None:
        raise ConfigError(
            "classes goes with input_shape; a data set knows its classes", fields=("classes", "input_shape")
        )
    from greenshift.data import load_dataset

    data = load_dataset(dataset, data_dir=data_dir, image_size=image_size)
    return (data.in_channels, data.image_size, data.image_size), data.num_classes, data.name
