"""``evaluate``: the objective values of one trained model, all minimised, units in their names."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from greenshift.errors import ConfigError, GreenshiftError, MeasurementError
from greenshift.objectives._runtime import (
    fixed_size_batch,
    inference_context,
    model_device,
    sample_shape,
    validation_inputs,
)
from greenshift.objectives.energy_model import EnergyTable, resolve_energy_table
from greenshift.objectives.latency import measure_latency
from greenshift.objectives.measure import (
    MeasureOptions,
    intensity_for,
    joules_to_kg_co2,
    measure_energy,
)
from greenshift.objectives.meters import EnergyMeter, choose_meter
from greenshift.objectives.profile import profile_model

logger = logging.getLogger("greenshift.objectives")


@dataclass(frozen=True)
class Objective:
    """A registered objective: its name (with unit), unit, meaning and whether it is deterministic."""

    name: str
    unit: str
    description: str
    deterministic: bool


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective("loss", "1", "1 - top-1 accuracy on the validation split", True),
        Objective(
            "energy_model_j",
            "J",
            "modelled inference energy per image from operation counts and an energy table",
            True,
        ),
        Objective("energy_measured_j", "J", "measured inference energy per image (meter protocol)", False),
        Objective("emissions_measured_kg", "kg CO2", "measured inference emissions per image", False),
        Objective("latency_ms", "ms", "median latency of one inference batch of fixed size", False),
        Objective(
            "latency_ort_ms",
            "ms",
            "median onnxruntime latency of one batch of fixed size, the deployed model exported to ONNX",
            False,
        ),
        Objective(
            "size_bits", "bit", "model size: shift weights at weight_bits, other parameters at 32 bits", True
        ),
    )
}
_MEASURED = ("energy_measured_j", "emissions_measured_kg")


class EvaluationResult(dict[str, float]):
    """Objective name -> value (a plain dict) plus ``details``: accuracy, methods, spreads, fallbacks."""

    def __init__(self, values: Mapping[str, float], details: dict[str, Any]) -> None:
        super().__init__(values)
        self.details = details

    def __repr__(self) -> str:
        return f"EvaluationResult({dict(self)!r}, details={self.details!r})"


def check_objectives(objectives: Sequence[str]) -> list[str]:
    """The names as a list; unknown or repeated names (or none) are a ConfigError listing the valid ones."""
    if isinstance(objectives, str):
        objectives = [objectives]
    names = list(objectives)
    valid = ", ".join(OBJECTIVES)
    if not names:
        raise ConfigError(f"no objectives given; valid: {valid}")
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        raise ConfigError(f"unknown objective(s) {', '.join(map(repr, unknown))}; valid: {valid}")
    if len(set(names)) != len(names):
        raise ConfigError(f"objectives repeat a name: {', '.join(names)}")
    if "latency_ort_ms" in names:
        from greenshift.deploy.onnx import require_onnx

        try:
            require_onnx()
        except GreenshiftError as exc:
            raise ConfigError(f"objective latency_ort_ms: {exc}") from None
    return names


_METER_CACHE: dict[tuple[Any, ...], tuple[EnergyMeter, str]] = {}


def _meter_for(
    meter: str | EnergyMeter, device: torch.device, options: MeasureOptions
) -> tuple[EnergyMeter, str]:
    """Resolve a meter name once per process (CodeCarbon probes hardware on first use)."""
    if not isinstance(meter, str):
        return meter, "meter passed by the caller"
    key = (meter, str(device), options.country_iso_code, options.measure_power_secs)
    if key not in _METER_CACHE:
        _METER_CACHE[key] = choose_meter(
            meter,
            device,
            country_iso_code=options.country_iso_code,
            measure_power_secs=options.measure_power_secs,
        )
    return _METER_CACHE[key]


def evaluate(
    model: nn.Module,
    dataset: Any,
    objectives: Sequence[str],
    device: str | torch.device | None = None,
    *,
    energy_table: EnergyTable | str | Path | None = None,
    meter: str | EnergyMeter = "auto",
    measure_options: MeasureOptions | Mapping[str, Any] | None = None,
) -> EvaluationResult:
    """Compute ``objectives`` for ``model`` on ``dataset``'s validation split.

    ``device=None`` uses the model's device; another device moves the model there for the
    evaluation and back afterwards. Parameters and train/eval flags are left as they were. A failed
    energy measurement falls back to ``energy_model_j`` and records ``energy_measured_fallback``.
    """
    names = check_objectives(objectives)
    options = MeasureOptions.from_mapping(measure_options)
    table = resolve_energy_table(energy_table)
    home = model_device(model)
    target = torch.device(device) if device is not None else home
    if target.type == "cuda" and target.index is None:
        target = torch.device("cuda", torch.cuda.current_device())
    data = dataset
    if getattr(dataset, "device", target) != target and hasattr(dataset, "to"):
        data = dataset.to(target)
    if target != home:
        model.to(target)
    values: dict[str, float] = {}
    details: dict[str, Any] = {"device": str(target)}
    try:
        if "loss" in names:
            from greenshift.train import validate

            with inference_context(model):
                cross_entropy, accuracy = validate(model, data, split="val")
            values["loss"] = 1.0 - accuracy
            details["accuracy"] = accuracy
            details["validation_cross_entropy"] = cross_entropy
        model_energy: float | None = None
        if "energy_model_j" in names or any(n in names for n in _MEASURED):
            profile = profile_model(model, sample_shape(data), energy_table=table)
            model_energy = profile.total_energy_j
            if "energy_model_j" in names:
                values["energy_model_j"] = model_energy
                details["energy_model_j"] = {"method": table.describe(), **profile.totals()}
        if "size_bits" in names:
            from greenshift.shift import shift_size_bits

            values["size_bits"] = float(shift_size_bits(model))
            details["size_bits"] = {"method": "shift weights at weight_bits, other parameters at 32 bits"}
        if "latency_ms" in names:
            batch = fixed_size_batch(data, options.latency_batch_size, target)
            latency = measure_latency(
                model, batch, warmup=options.latency_warmup, repeats=options.latency_repeats
            )
            values["latency_ms"] = latency.median_ms
            details["latency_ms"] = {
                "method": "median per-batch wall-clock time after warm-up",
                **latency.to_dict(),
            }
        if "latency_ort_ms" in names:
            values["latency_ort_ms"], details["latency_ort_ms"] = _onnx_latency(model, data, options)
        if any(n in names for n in _MEASURED):
            assert model_energy is not None
            _measured(model, data, names, target, meter, options, model_energy, values, details)
    finally:
        if target != home:
            model.to(home)
    return EvaluationResult({n: values[n] for n in names}, details)


def _measured(
    model: nn.Module,
    data: Any,
    names: list[str],
    device: torch.device,
    meter: str | EnergyMeter,
    options: MeasureOptions,
    model_energy: float,
    values: dict[str, float],
    details: dict[str, Any],
) -> None:
    """Fill the measured objectives, falling back to the modelled energy when measuring fails."""
    try:
        chosen, note = _meter_for(meter, device, options)
        batches = validation_inputs(data, options.batch_size, options.num_batches, device)
        measurement = measure_energy(model, batches, chosen, options)
    except MeasurementError as exc:
        reason = str(exc)
        logger.warning("energy measurement failed (%s); using the modelled energy instead", reason)
        g_per_kwh, source = intensity_for(options)
        values["energy_measured_j"] = model_energy
        values["emissions_measured_kg"] = joules_to_kg_co2(model_energy, g_per_kwh)
        details["energy_measured_fallback"] = reason
        details["energy_measured_j"] = {"method": "fallback: energy_model_j", "fallback": reason}
        details["emissions_measured_kg"] = {
            "method": f"fallback: energy_model_j x {g_per_kwh:g} g CO2/kWh ({source})",
            "fallback": reason,
        }
        return
    values["energy_measured_j"] = measurement.joules_per_image
    values["emissions_measured_kg"] = measurement.kg_co2_per_image
    details["energy_measured_j"] = {"selection": note, **measurement.to_dict()}
    details["emissions_measured_kg"] = {"method": measurement.emissions_method, "meter": measurement.meter}


def _onnx_latency(model: nn.Module, data: Any, options: MeasureOptions) -> tuple[float, dict[str, Any]]:
    """``latency_ort_ms``: export the deployed model to ONNX and time one batch in onnxruntime.

    The batch is the first ``latency_batch_size`` validation images (repeated if the split is smaller)
    as ``uint8``, the ONNX model's input. Export time is recorded in the details, not in the objective.
    """
    import time

    from greenshift.deploy.onnx import median, session, timed_runs_ms, to_onnx_bytes

    images = data.split("val").images.cpu()
    if images.shape[0] == 0:
        raise MeasurementError("latency_ort_ms needs validation images; the split is empty")
    reps = -(-options.latency_batch_size // images.shape[0])
    batch = images.repeat(reps, 1, 1, 1)[: options.latency_batch_size].contiguous().numpy()
    started = time.perf_counter()
    exported = to_onnx_bytes(model, tuple(images.shape[1:]), mean=data.mean, std=data.std)
    sess = session(exported.model_bytes, threads=torch.get_num_threads())
    export_s = time.perf_counter() - started
    times = timed_runs_ms(sess, batch, warmup=options.latency_warmup, repeats=options.latency_repeats)
    return median(times), {
        "method": "median onnxruntime (CPU) wall-clock time per batch after warm-up",
        "batch_size": int(batch.shape[0]),
        "repeats": len(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "export_s": export_s,
        "weight_types": exported.summary(),
    }
