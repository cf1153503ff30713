"""Objectives of a DSNN, all minimised, units in their names.

- ``loss`` (1 - validation accuracy), ``energy_model_j`` (modelled energy per image),
  ``energy_measured_j`` / ``emissions_measured_kg`` (meter protocol), ``latency_ms``, ``size_bits``:
  :func:`evaluate` and the :data:`OBJECTIVES` registry.
- The energy model: :func:`load_energy_table`, :func:`count_ops`, :func:`profile_model`.
- Meters: :class:`EnergyMeter` and its implementations, :func:`select_meter`, :func:`measure_energy`.
- Pareto maths live in :mod:`greenshift.objectives.pareto`.

See ``docs/energy.md``.
"""

from __future__ import annotations

from greenshift.objectives.energy_model import (
    EnergyBreakdown,
    EnergyTable,
    LayerOps,
    count_ops,
    default_energy_table,
    energy_table_from_dict,
    energy_with_shift_settings_j,
    interpolate_energy,
    layer_energy,
    load_energy_table,
    model_energy_j,
)
from greenshift.objectives.evaluate import OBJECTIVES, EvaluationResult, Objective, check_objectives, evaluate
from greenshift.objectives.latency import LatencyMeasurement, measure_latency
from greenshift.objectives.measure import EnergyMeasurement, MeasureOptions, measure_energy
from greenshift.objectives.meters import (
    METER_NAMES,
    CodeCarbonMeter,
    EnergyMeter,
    FakeMeter,
    MeterReading,
    NvmlMeter,
    RaplMeter,
    choose_meter,
    metered,
    select_meter,
)
from greenshift.objectives.profile import (
    LayerProfile,
    ModelProfile,
    profile_configuration,
    profile_model,
    profile_rows,
)

__all__ = [
    "METER_NAMES",
    "OBJECTIVES",
    "CodeCarbonMeter",
    "EnergyBreakdown",
    "EnergyMeasurement",
    "EnergyMeter",
    "EnergyTable",
    "EvaluationResult",
    "FakeMeter",
    "LatencyMeasurement",
    "LayerOps",
    "LayerProfile",
    "MeasureOptions",
    "MeterReading",
    "ModelProfile",
    "NvmlMeter",
    "Objective",
    "RaplMeter",
    "check_objectives",
    "choose_meter",
    "count_ops",
    "default_energy_table",
    "energy_table_from_dict",
    "energy_with_shift_settings_j",
    "evaluate",
    "interpolate_energy",
    "layer_energy",
    "load_energy_table",
    "measure_energy",
    "measure_latency",
    "metered",
    "model_energy_j",
    "profile_configuration",
    "profile_model",
    "profile_rows",
    "select_meter",
]
