"""``greenshift calibrate``: price the energy model's operations on this device and runtime.

The shipped table (:mod:`greenshift.objectives.energy_model`, Horowitz 45 nm) prices shift hardware.
A calibration instead times what the operations cost in the runtime that runs greenshift's models here
(PyTorch on the current device, the runtime whose energy the report's meter measures), and writes two
tables in the shipped table's JSON format, usable with ``--energy-table``:

- the *latency table*: nanoseconds where the shipped table has picojoules;
- the *energy table*: those times multiplied by the power drawn while they ran, measured with an energy
  meter where one works (RAPL, NVML, CodeCarbon), else a nominal ``watts`` figure. One power figure
  scales every entry, so without a meter the energy table ranks models exactly as the latency table.

What is timed (``threads`` torch threads, medians of interleaved rounds after warm-up):

- ``fp_mult_pj``/``fp_add_pj`` (32 bits): a float 3x3 convolution of a ResNet-sized layer, per
  multiply-accumulate; the two halves of a MAC are one fused instruction here and share its time evenly.
- ``shift_pj``/``int_add_pj`` (8, 16, 32 activation bits): the same convolution as a DeepShift-Q layer
  in eval mode, per MAC, with its fixed-point input rounding (how this runtime executes shifts: float
  multiplications by powers of two). Shift and add share the MAC's time evenly. Entries are made
  non-decreasing with the width (the table format's rule) by carrying the larger value to wider entries.
- ``int_mult_pj``: an elementwise integer multiplication per element, at 8, 16 and 32 bits.
- ``memory_read_pj_per_64_bits``: summing a cache-resident array (``cache``) and one larger than the
  last-level cache (``dram``), per 64 bits read. Those reads happen inside the timed convolutions on
  this runtime (activations stay float32 whatever the fixed-point format), so ``weight_memory`` and
  ``activation_memory`` point at ``in_kernel``, priced 0; the two reads are recorded for reference.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from greenshift.errors import ConfigError, MeasurementError
from greenshift.fileio import atomic_write_bytes
from greenshift.objectives.energy_model import energy_table_from_dict
from greenshift.shift import ShiftConv2d

ACTIVATION_WIDTHS = (8, 16, 32)
IN_KERNEL = "in_kernel"
# A ResNet20 stage-1 convolution (16 -> 16 channels, 3x3, 32x32) at a small batch: large enough that the
# per-call overhead is a few per cent, small enough for two seconds of calibration in all.
_CONV_SHAPE = (8, 16, 32, 32)
_CACHE_BYTES = 128 * 1024
_DRAM_BYTES = 64 * 1024 * 1024
_INT_DTYPES = {8: torch.int8, 16: torch.int16, 32: torch.int32}
_NS_TO_PJ_PER_WATT = 1000.0  # 1 ns at 1 W is 1 nJ = 1000 pJ


@dataclass(frozen=True)
class Calibration:
    """Nanoseconds per operation as timed here, the power figure and where it came from."""

    ns: dict[str, Any]
    watts: float
    power_source: str
    device: dict[str, Any] = field(default_factory=dict)

    def latency_table(self) -> dict[str, Any]:
        """The timings as a table in the energy-table format (values in ns, not pJ)."""
        return self._table(1.0, "latency, ns", "nanoseconds per operation (the *_pj keys hold ns)")

    def energy_table(self) -> dict[str, Any]:
        """The timings times the power: picojoules per operation."""
        scale = self.watts * _NS_TO_PJ_PER_WATT
        return self._table(scale, "energy, pJ", f"pJ = ns x {self.watts:g} W ({self.power_source})")

    def _table(self, scale: float, kind: str, unit: str) -> dict[str, Any]:
        def scaled(entry: dict[str, float]) -> dict[str, float]:
            return {str(k): v * scale for k, v in entry.items()}

        memories = scaled(self.ns["memory_read_per_64_bits"])
        table = {
            "name": f"calibrated-{self.device.get('runtime', 'torch')}-{kind.split(',')[0]}",
            "source": (
                f"greenshift calibrate on {self.device.get('cpu') or 'this machine'}, "
                f"{self.device.get('runtime_version', '')}, {self.device.get('threads')} thread(s), "
                f"{self.device.get('date', '')}"
            ),
            "notes": (
                f"{kind}: {unit}. MACs timed in a 3x3 convolution (float, and DeepShift-Q at each activation "
                "width with its input rounding), split evenly between the two operations of a MAC; memory reads "
                "happen inside those kernels, so weights and activations are priced 0 (in_kernel); cache and "
                "DRAM reads are recorded for reference. See greenshift.deploy.calibrate."
            ),
            "int_add_pj": scaled(self.ns["int_add"]),
            "int_mult_pj": scaled(self.ns["int_mult"]),
            "fp_add_pj": scaled(self.ns["fp_add"]),
            "fp_mult_pj": scaled(self.ns["fp_mult"]),
            "shift_pj": scaled(self.ns["shift"]),
            "memory_read_pj_per_64_bits": {**memories, IN_KERNEL: 0.0},
            "weight_memory": IN_KERNEL,
            "activation_memory": IN_KERNEL,
        }
        energy_table_from_dict(table, origin="calibrated table")  # the format's own checks
        return table

    def write(self, out: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write the energy table to ``out`` and the latency table next to it (``<stem>.latency.json``)."""
        path = Path(out)
        latency = path.with_name(path.name.removesuffix(".json") + ".latency.json")
        atomic_write_bytes(path, (json.dumps(self.energy_table(), indent=2) + "\n").encode())
        atomic_write_bytes(latency, (json.dumps(self.latency_table(), indent=2) + "\n").encode())
        return path, latency


def median_ns(
    fns: dict[str, Callable[[], Any]], work: dict[str, float], rounds: int, warmup: int = 2
) -> dict[str, float]:
    """Median ns per unit of work of each function, measured in interleaved rounds (order rotating)."""
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter_ns()
            fns[name]()
            samples[name].append((time.perf_counter_ns() - start) / work[name])
    return {n: statistics.median(v) for n, v in samples.items()}


def _conv_timers(generator: torch.Generator) -> tuple[dict[str, Callable[[], Any]], dict[str, float]]:
    n, c, h, w = _CONV_SHAPE
    x = torch.randn(_CONV_SHAPE, generator=generator)
    weight = torch.randn(c, c, 3, 3, generator=generator) * 0.1
    macs = float(n * c * c * 9 * h * w)
    fns: dict[str, Callable[[], Any]] = {"fp32": lambda: F.conv2d(x, weight, None, 1, 1)}
    work = {"fp32": macs}
    for bits in ACTIVATION_WIDTHS:
        layer = ShiftConv2d(
            c,
            c,
            3,
            padding=1,
            bias=False,
            shift_type="Q",
            weight_bits=5,
            act_integer_bits=bits // 2,
            act_fraction_bits=bits - bits // 2,
        ).eval()
        with torch.no_grad():
            layer.weight.copy_(weight)
        fns[f"shift{bits}"] = lambda layer=layer: layer(x)
        work[f"shift{bits}"] = macs
    return fns, work


def _elementwise_timers(generator: torch.Generator) -> tuple[dict[str, Callable[[], Any]], dict[str, float]]:
    count = 1 << 20
    fns: dict[str, Callable[[], Any]] = {}
    work: dict[str, float] = {}
    for bits, dtype in _INT_DTYPES.items():
        a = torch.randint(-8, 8, (count,), generator=generator).to(dtype)
        b = torch.randint(-8, 8, (count,), generator=generator).to(dtype)
        out = torch.empty_like(a)
        fns[f"mult{bits}"] = lambda a=a, b=b, out=out: torch.mul(a, b, out=out)
        work[f"mult{bits}"] = float(count)
    small = torch.ones(_CACHE_BYTES // 4)
    large = torch.ones(_DRAM_BYTES // 4)
    fns["cache"] = lambda: [small.sum() for _ in range(64)]
    work["cache"] = 64 * _CACHE_BYTES * 8 / 64.0
    fns["dram"] = large.sum
    work["dram"] = _DRAM_BYTES * 8 / 64.0
    return fns, work


def _power(meter: Any, run: Callable[[], None]) -> tuple[float, str]:
    """Average watts while ``run`` runs, from ``meter`` (an EnergyMeter)."""
    ok, reason = meter.available()
    if not ok:
        raise MeasurementError(f"energy meter {meter.name} is not available: {reason}")
    meter.start()
    run()
    reading = meter.stop()
    if reading.seconds <= 0 or not reading.joules > 0:
        raise MeasurementError(f"energy meter {meter.name} read {reading.joules} J in {reading.seconds} s")
    return reading.joules / reading.seconds, f"measured with {meter.describe()}"


def _non_decreasing(values: dict[int, float]) -> dict[int, float]:
    out: dict[int, float] = {}
    top = 0.0
    for bits in sorted(values):
        top = max(top, values[bits])
        out[bits] = top
    return out


# no_grad, not inference_mode: shift layers key their weight cache on version counters.
@torch.no_grad()
def calibrate(
    *,
    rounds: int = 15,
    threads: int | None = None,
    watts: float | None = None,
    meter: Any = None,
    seed: int = 0,
) -> Calibration:
    """Time the energy model's operations here (module docstring) and return the :class:`Calibration`.

    ``meter`` (an :class:`~greenshift.objectives.EnergyMeter`) measures the power while the convolutions
    are re-run for about a second; otherwise ``watts`` (default 1 W, which makes pJ = 1000 x ns) is used.
    ``threads`` sets torch's thread count for the calibration (restored afterwards).
    """
    if rounds < 3:
        raise ConfigError(f"calibration needs at least 3 rounds, got {rounds}")
    if watts is not None and not watts > 0:
        raise ConfigError(f"watts must be positive, got {watts}")
    previous = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(seed)
        conv_fns, conv_work = _conv_timers(generator)
        conv = median_ns(conv_fns, conv_work, rounds)
        elem_fns, elem_work = _elementwise_timers(generator)
        elem = median_ns(elem_fns, elem_work, max(3, rounds // 3))
        power, source = (watts if watts is not None else 1.0), "nominal figure, no meter"
        if meter is not None:

            def repeat() -> None:
                end = time.perf_counter() + 1.0
                while time.perf_counter() < end:
                    for fn in conv_fns.values():
                        fn()

            power, source = _power(meter, repeat)
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
    shift_mac = _non_decreasing({b: conv[f"shift{b}"] for b in ACTIVATION_WIDTHS})
    ns = {
        "fp_mult": {32: conv["fp32"] / 2},
        "fp_add": {32: conv["fp32"] / 2},
        "shift": {b: v / 2 for b, v in shift_mac.items()},
        "int_add": {b: v / 2 for b, v in shift_mac.items()},
        "int_mult": _non_decreasing({b: elem[f"mult{b}"] for b in _INT_DTYPES}),
        "memory_read_per_64_bits": {"cache": elem["cache"], "dram": elem["dram"]},
    }
    device = {
        "runtime": "torch",
        "runtime_version": f"torch {torch.__version__}",
        "cpu": platform.processor() or platform.machine(),
        "threads": used_threads,
        "date": time.strftime("%Y-%m-%d"),
    }
    return Calibration(ns=ns, watts=float(power), power_source=source, device=device)
