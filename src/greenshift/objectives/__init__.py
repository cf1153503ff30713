"""Objectives of a DSNN, all minimised, units in their names.

- ``loss`` (1 - validation accuracy), ``energy_model_j`` (modelled energy per image),
  ``energy_measured_j`` / ``emissions_measured_kg`` (meter protocol), ``latency_ms``, ``size_bits``:
  :func:`evaluate` and the :data:`OBJECTIVES` registry.
- The energy model: :func:`load_energy_table`, :func:`~greenshift.objectives.energy_model.count_ops`, :func:`profile_model`.
- Meters: :class:`EnergyMeter` and its implementations, :func:`select_meter`, :func:`measure_energy`.
- Pareto maths live in :mod:`greenshift.objectives.pareto`.

See ``docs/energy.md``.
"""

from __future__ import annotations

from greenshift.objectives.energy_model import load_energy_table, model_energy_j
from greenshift.objectives.evaluate import OBJECTIVES, evaluate
from greenshift.objectives.latency import measure_latency
from greenshift.objectives.measure import MeasureOptions, measure_energy
from greenshift.objectives.meters import (
    CodeCarbonMeter,
    EnergyMeter,
    FakeMeter,
    MeterReading,
    NvmlMeter,
    RaplMeter,
    metered,
    select_meter,
)
from greenshift.objectives.profile import profile_configuration, profile_model, profile_rows

# What users need (docs/api.md); everything else is imported from its module.
__all__ = [
    "OBJECTIVES",
    "CodeCarbonMeter",
    "EnergyMeter",
    "FakeMeter",
    "MeasureOptions",
    "MeterReading",
    "NvmlMeter",
    "RaplMeter",
    "evaluate",
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
