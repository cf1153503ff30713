"""The measurement protocol for ``energy_measured_j`` and ``emissions_measured_kg``.

1. Warm-up (excluded): ``warmup_passes`` inference passes and one throwaway meter reading (CodeCarbon
   probes the hardware on its first start).
2. Plain inference time per image without a meter, before and after the readings (their mean is the
   reference for the meter's time overhead).
3. Readings: each spans at least ``max(min_window_s, window_periods x meter.sampling_period_s)`` of
   repeated inference passes over the same fixed validation batches; joules / images = one value.
4. Repeat until the relative standard error of the mean is below ``rse_threshold`` (after at least
   ``min_repeats``) or ``max_repeats`` readings are taken.
5. Optionally an idle reading over the same window (the meter's baseline when no inference runs).

A reading that is zero, negative, not finite or from an unavailable meter raises
:class:`~greenshift.errors.MeasurementError`; there is never a silent zero.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field, fields
from functools import cache
from importlib import resources
from typing import Any

from torch import Tensor, nn

from greenshift.errors import ConfigError, MeasurementError
from greenshift.objectives._runtime import inference_context, synchronize
from greenshift.objectives.meters import JOULES_PER_KWH, EnergyMeter, MeterReading

# Used when neither the meter nor CodeCarbon's country data give a carbon intensity (world average
# of CodeCarbon's own fallback).
WORLD_CARBON_INTENSITY_G_PER_KWH = 475.0


@dataclass(frozen=True)
class MeasureOptions:
    """Settings of the measured objectives (energy protocol and latency).

    ``carbon_intensity_g_per_kwh=None`` converts joules to CO2 with CodeCarbon's figure for
    ``country_iso_code`` when a meter (NVML, RAPL) reports no emissions itself.
    """

    batch_size: int = 128
    num_batches: int = 2
    warmup_passes: int = 1
    min_window_s: float = 1.0
    window_periods: float = 3.0
    rse_threshold: float = 0.05
    min_repeats: int = 3
    max_repeats: int = 10
    measure_idle: bool = True
    country_iso_code: str = "DEU"
    measure_power_secs: float = 1.0
    carbon_intensity_g_per_kwh: float | None = None
    latency_batch_size: int = 64
    latency_warmup: int = 3
    latency_repeats: int = 20

    def __post_init__(self) -> None:
        for name in (
            "batch_size",
            "num_batches",
            "min_repeats",
            "max_repeats",
            "latency_batch_size",
            "latency_repeats",
        ):
            _check_int(name, getattr(self, name), 1)
        for name in ("warmup_passes", "latency_warmup"):
            _check_int(name, getattr(self, name), 0)
        if self.min_repeats < 2:
            raise ConfigError("min_repeats must be at least 2 (a spread needs two readings)")
        if self.max_repeats < self.min_repeats:
            raise ConfigError(f"max_repeats={self.max_repeats} must be >= min_repeats={self.min_repeats}")
        for name in ("min_window_s", "window_periods", "rse_threshold", "measure_power_secs"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not value > 0
                or not math.isfinite(value)
            ):
                raise ConfigError(f"{name}={value!r} must be a positive number")
        intensity = self.carbon_intensity_g_per_kwh
        if intensity is not None and (
            not isinstance(intensity, (int, float)) or not 0 <= intensity < math.inf
        ):
            raise ConfigError(f"carbon_intensity_g_per_kwh={intensity!r} must be a non-negative number")
        if not isinstance(self.measure_idle, bool):
            raise ConfigError(f"measure_idle must be true or false, got {self.measure_idle!r}")

    @classmethod
    def from_mapping(cls, values: MeasureOptions | Mapping[str, Any] | None) -> MeasureOptions:
        """Options from a mapping (unknown keys are a ConfigError), an instance, or ``None``."""
        if values is None:
            return cls()
        if isinstance(values, MeasureOptions):
            return values
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown measure option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
            )
        return cls(**values)

    def window_s(self, meter: EnergyMeter) -> float:
        """Minimum length of one reading for ``meter``: several of its sampling periods."""
        return max(self.min_window_s, self.window_periods * float(meter.sampling_period_s))


@dataclass(frozen=True)
class EnergyMeasurement:
    """Result of the protocol: mean joules (and kg CO2) per image with its spread and overheads."""

    joules_per_image: float
    std_j_per_image: float
    rse: float
    n: int
    converged: bool
    kg_co2_per_image: float
    emissions_method: str
    meter: str
    method: str
    window_s: float
    readings_j_per_image: list[float] = field(default_factory=list)
    images_per_reading: list[int] = field(default_factory=list)
    seconds_per_reading: list[float] = field(default_factory=list)
    mean_power_w: float = 0.0
    idle_power_w: float | None = None
    idle_share: float | None = None
    plain_s_per_image: float = 0.0
    metered_s_per_image: float = 0.0
    time_overhead_fraction: float = 0.0
    start_stop_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return asdict(self)


def relative_standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean divided by the mean (``inf`` for fewer than two values)."""
    if len(values) < 2:
        return math.inf
    mean = statistics.fmean(values)
    if mean == 0:
        return math.inf
    return statistics.stdev(values) / math.sqrt(len(values)) / abs(mean)


@cache
def country_carbon_intensity(country_iso_code: str) -> float:
    """Grid carbon intensity in g CO2/kWh from CodeCarbon's country data (world average if unknown)."""
    try:
        text = resources.files("codecarbon").joinpath("data/private_infra/global_energy_mix.json").read_text()
        return float(json.loads(text)[country_iso_code]["carbon_intensity"])
    except Exception:
        return WORLD_CARBON_INTENSITY_G_PER_KWH


def joules_to_kg_co2(joules: float, g_per_kwh: float) -> float:
    """Emissions in kg CO2 of ``joules`` at a grid intensity of ``g_per_kwh``."""
    return joules / JOULES_PER_KWH * g_per_kwh / 1000.0


def intensity_for(options: MeasureOptions) -> tuple[float, str]:
    """The carbon intensity used when a meter reports no CO2, and where it comes from."""
    if options.carbon_intensity_g_per_kwh is not None:
        return float(options.carbon_intensity_g_per_kwh), "carbon_intensity_g_per_kwh option"
    value = country_carbon_intensity(options.country_iso_code)
    return value, f"codecarbon country data for {options.country_iso_code}"


def _check_reading(reading: MeterReading, meter: EnergyMeter) -> None:
    joules = reading.joules
    if joules is None or not math.isfinite(joules) or joules <= 0:
        raise MeasurementError(f"{meter.name} meter returned an implausible reading of {joules!r} J")
    kg = reading.kg_co2
    if kg is not None and (not math.isfinite(kg) or kg < 0):
        raise MeasurementError(f"{meter.name} meter returned an implausible emission of {kg!r} kg")


def measure_energy(
    model: nn.Module,
    batches: Sequence[Tensor],
    meter: EnergyMeter,
    options: MeasureOptions | Mapping[str, Any] | None = None,
    *,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
) -> EnergyMeasurement:
    """Measured inference energy per image of ``model`` over the fixed input ``batches``.

    The model's parameters and train/eval flags are unchanged afterwards. ``clock`` and ``sleep``
    exist for deterministic tests. Raises :class:`MeasurementError` for an unavailable meter or an
    implausible reading.
    """
    options = MeasureOptions.from_mapping(options)
    ok, reason = meter.available()
    if not ok:
        raise MeasurementError(f"{meter.name} meter unavailable: {reason}")
    if not batches:
        raise MeasurementError("no input batches to measure")
    device = batches[0].device
    images_per_pass = sum(int(b.shape[0]) for b in batches)
    window = options.window_s(meter)

    def run_pass() -> None:
        for batch in batches:
            model(batch)
        synchronize(device)

    values: list[float] = []
    kgs: list[float | None] = []
    images: list[int] = []
    seconds: list[float] = []
    metered_s: list[float] = []
    overhead_s: list[float] = []
    powers: list[float] = []
    with inference_context(model):
        for _ in range(options.warmup_passes):
            run_pass()
        _throwaway_reading(meter)
        plain_before = _plain_seconds_per_image(run_pass, images_per_pass, min(window, 1.0), clock)
        while len(values) < options.max_repeats:
            t0 = clock()
            meter.start()
            t1 = clock()
            passes = 0
            while passes == 0 or clock() - t1 < window:
                run_pass()
                passes += 1
            t2 = clock()
            reading = meter.stop()
            t3 = clock()
            _check_reading(reading, meter)
            n_images = passes * images_per_pass
            values.append(reading.joules / n_images)
            kgs.append(None if reading.kg_co2 is None else reading.kg_co2 / n_images)
            images.append(n_images)
            seconds.append(t2 - t1)
            metered_s.append((t3 - t0) / n_images)
            overhead_s.append((t1 - t0) + (t3 - t2))
            powers.append(reading.joules / reading.seconds if reading.seconds > 0 else 0.0)
            if len(values) >= options.min_repeats and relative_standard_error(values) < options.rse_threshold:
                break
        # Plain time before and after the readings brackets load drift from other processes.
        plain_after = _plain_seconds_per_image(run_pass, images_per_pass, min(window, 1.0), clock)
    plain = (plain_before + plain_after) / 2

    mean = statistics.fmean(values)
    rse = relative_standard_error(values)
    mean_power = statistics.fmean(powers)
    if all(kg is not None for kg in kgs):
        kg_mean = statistics.fmean(kg for kg in kgs if kg is not None)
        emissions_method = f"reported by the {meter.name} meter"
    else:
        g_per_kwh, source = intensity_for(options)
        kg_mean = joules_to_kg_co2(mean, g_per_kwh)
        emissions_method = f"energy x {g_per_kwh:g} g CO2/kWh ({source})"
    idle_power = idle_share = None
    if options.measure_idle:
        idle_power = _idle_power_w(meter, window, clock, sleep)
        idle_share = idle_power / mean_power if mean_power > 0 else None
    metered = statistics.fmean(metered_s)
    return EnergyMeasurement(
        joules_per_image=mean,
        std_j_per_image=statistics.stdev(values) if len(values) > 1 else 0.0,
        rse=rse,
        n=len(values),
        converged=rse < options.rse_threshold,
        kg_co2_per_image=kg_mean,
        emissions_method=emissions_method,
        meter=meter.name,
        method=meter.describe(),
        window_s=window,
        readings_j_per_image=values,
        images_per_reading=images,
        seconds_per_reading=seconds,
        mean_power_w=mean_power,
        idle_power_w=idle_power,
        idle_share=idle_share,
        plain_s_per_image=plain,
        metered_s_per_image=metered,
        time_overhead_fraction=metered / plain - 1.0 if plain > 0 else 0.0,
        start_stop_s=statistics.fmean(overhead_s),
    )


def _throwaway_reading(meter: EnergyMeter) -> None:
    """One excluded start/stop: first starts may probe hardware; an empty window may read 0 J."""
    meter.start()
    with suppress(MeasurementError):
        meter.stop()


def _plain_seconds_per_image(
    run_pass: Callable[[], None], images_per_pass: int, duration: float, clock: Callable[[], float]
) -> float:
    """Inference time per image without any meter running (the overhead reference)."""
    passes = 0
    t0 = clock()
    while passes == 0 or clock() - t0 < duration:
        run_pass()
        passes += 1
    return (clock() - t0) / (passes * images_per_pass)


def _idle_power_w(
    meter: EnergyMeter, window: float, clock: Callable[[], float], sleep: Callable[[float], None]
) -> float:
    """Mean power the meter reports over a window without inference (0 when it reads nothing)."""
    meter.start()
    t0 = clock()
    sleep(window)
    elapsed = clock() - t0
    try:
        reading = meter.stop()
    except MeasurementError:
        # An idle window may legitimately read as no energy (e.g. process-level attribution).
        return 0.0
    return max(reading.joules, 0.0) / elapsed if elapsed > 0 else 0.0


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name}={value!r} must be an integer >= {low}")
