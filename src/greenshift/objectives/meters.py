"""Energy meters behind one small interface, so another backend plugs in without touching the search.

A meter is anything with ``name``, ``sampling_period_s``, ``available() -> (ok, reason)``,
``describe() -> str`` (the measurement method in words), ``start()`` and ``stop() -> MeterReading``.
Meters raise :class:`~greenshift.errors.MeasurementError` when a reading cannot be trusted; they never
return a silent zero.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from greenshift.errors import ConfigError, MeasurementError

METER_NAMES = ("auto", "codecarbon", "nvml", "rapl")
JOULES_PER_KWH = 3.6e6


@dataclass(frozen=True)
class MeterReading:
    """Energy between ``start()`` and ``stop()``: joules, wall-clock seconds, kg CO2 where known."""

    joules: float
    seconds: float
    kg_co2: float | None = None


@runtime_checkable
class EnergyMeter(Protocol):
    """What the measurement protocol needs from an energy meter."""

    name: str
    sampling_period_s: float

    def available(self) -> tuple[bool, str]:
        """Whether the meter can measure here, and why (not)."""
        ...

    def describe(self) -> str:
        """How the meter arrives at its joules (recorded with every measurement)."""
        ...

    def start(self) -> None:
        """Begin a reading."""
        ...

    def stop(self) -> MeterReading:
        """End the reading begun by :meth:`start`."""
        ...


class MeterSession:
    """Holder filled by :func:`metered` when its block ends."""

    reading: MeterReading | None = None


@contextmanager
def metered(meter: EnergyMeter) -> Iterator[MeterSession]:
    """``with metered(meter) as session: ...`` then ``session.reading`` holds the joules."""
    session = MeterSession()
    meter.start()
    try:
        yield session
    except BaseException:
        # Stop the meter (e.g. background sampling threads) but report the original error.
        with suppress(Exception):
            meter.stop()
        raise
    session.reading = meter.stop()


# --------------------------------------------------------------------------------------------------
# CodeCarbon
# --------------------------------------------------------------------------------------------------


class CodeCarbonMeter:
    """CodeCarbon's ``OfflineEmissionsTracker`` in task mode (one task per reading).

    ``tracking_mode="process"`` attributes CPU and RAM power to this process. Without power counters
    (no RAPL, no NVML) CodeCarbon *estimates* CPU power from the CPU's TDP times this process's CPU
    load; :meth:`describe` says which method it used. ``measure_power_secs`` is set explicitly
    because it is the sampling period the protocol's minimum window is derived from.
    """

    name = "codecarbon"

    def __init__(
        self,
        *,
        measure_power_secs: float = 1.0,
        country_iso_code: str = "DEU",
        tracking_mode: str = "process",
        gpu_ids: Sequence[int] | None = None,
    ) -> None:
        if not measure_power_secs > 0:
            raise ConfigError(f"measure_power_secs must be positive, got {measure_power_secs}")
        if tracking_mode not in ("process", "machine"):
            raise ConfigError(f"tracking_mode={tracking_mode!r} is not one of process, machine")
        self.sampling_period_s = float(measure_power_secs)
        self.country_iso_code = country_iso_code
        self.tracking_mode = tracking_mode
        self.gpu_ids = list(gpu_ids) if gpu_ids is not None else None
        self._tracker: Any = None
        self._started_at: float | None = None

    def available(self) -> tuple[bool, str]:
        """CodeCarbon works wherever it is installed (it falls back to estimates)."""
        try:
            import codecarbon  # noqa: F401
        except ImportError as exc:
            return False, f"codecarbon is not installed ({exc})"
        return True, "codecarbon is installed"

    def _make_tracker(self) -> Any:
        from codecarbon import OfflineEmissionsTracker

        # CodeCarbon logs its start-up banner before applying log_level; quieten its logger first.
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        kwargs: dict[str, Any] = {
            "measure_power_secs": self.sampling_period_s,
            "tracking_mode": self.tracking_mode,
            "country_iso_code": self.country_iso_code,
            "save_to_file": False,
            "log_level": "error",
            # Several trials (Dask workers) may measure at once; CodeCarbon's lock file would refuse.
            "allow_multiple_runs": True,
        }
        if self.gpu_ids is not None:
            kwargs["gpu_ids"] = self.gpu_ids
        try:
            return OfflineEmissionsTracker(**kwargs)
        except Exception as exc:
            raise MeasurementError(f"codecarbon tracker could not be created: {exc}") from exc

    def start(self) -> None:
        """Start a CodeCarbon task (the first call also probes the hardware)."""
        if self._tracker is None:
            self._tracker = self._make_tracker()
        self._started_at = time.perf_counter()
        try:
            self._tracker.start_task()
        except Exception as exc:
            raise MeasurementError(f"codecarbon failed to start a task: {exc}") from exc

    def stop(self) -> MeterReading:
        """Stop the task; joules from its ``energy_consumed`` (kWh), kg CO2 from its ``emissions``."""
        if self._tracker is None or self._started_at is None:
            raise MeasurementError("codecarbon meter stopped without being started")
        seconds = time.perf_counter() - self._started_at
        self._started_at = None
        try:
            data = self._tracker.stop_task()
        except Exception as exc:
            raise MeasurementError(f"codecarbon failed to stop its task: {exc}") from exc
        if data is None:
            raise MeasurementError("codecarbon returned no data for the measured task")
        return MeterReading(
            joules=float(data.energy_consumed) * JOULES_PER_KWH, seconds=seconds, kg_co2=float(data.emissions)
        )

    def describe(self) -> str:
        """CodeCarbon's settings and, once probed, how it measures each piece of hardware."""
        try:
            from codecarbon import __version__ as version
        except ImportError:
            version = "?"
        head = (
            f"codecarbon {version} OfflineEmissionsTracker task mode, tracking_mode={self.tracking_mode}, "
            f"measure_power_secs={self.sampling_period_s:g}, country {self.country_iso_code}"
        )
        if self._tracker is None:
            return f"{head}; hardware not probed yet"
        return f"{head}; {codecarbon_hardware_methods(self._tracker)}"


def codecarbon_hardware_methods(tracker: Any) -> str:
    """How a CodeCarbon tracker measures its hardware, from its (private) hardware objects."""
    parts = []
    for hardware in getattr(tracker, "_hardware", []) or []:
        kind = type(hardware).__name__
        if kind == "CPU":
            mode = getattr(hardware, "_mode", "?")
            tdp = getattr(hardware, "_tdp", "?")
            model = getattr(hardware, "_model", "?")
            if mode == "cpu_load":
                parts.append(f"CPU {model}: estimated as TDP {tdp} W x CPU load (no power counters)")
            elif mode == "constant":
                parts.append(f"CPU {model}: constant power from TDP {tdp} W (no power counters)")
            else:
                parts.append(f"CPU {model}: {mode} counters")
        elif kind == "RAM":
            parts.append("RAM: power estimated from memory size")
        elif kind == "GPU":
            parts.append("GPU: NVML energy counters")
        else:
            parts.append(kind)
    return "; ".join(parts) if parts else "hardware methods unknown"


# --------------------------------------------------------------------------------------------------
# NVML
# --------------------------------------------------------------------------------------------------


def foreign_gpu_processes(pids: Sequence[int], own_pid: int, own_context: bool) -> list[int]:
    """PIDs on the GPU that are not this process.

    In a container NVML reports host PIDs, so this process may appear under a PID it does not know.
    When this process holds a CUDA context but its own PID is not listed, one listed process is
    assumed to be itself: a single entry is then not foreign, several are all reported.
    """
    others = [pid for pid in pids if pid != own_pid]
    if own_context and own_pid not in pids and len(others) == 1:
        return []
    return others


class NvmlMeter:
    """The GPU's cumulative energy counter (``nvmlDeviceGetTotalEnergyConsumption``, millijoules).

    It covers the whole GPU, so the meter refuses to measure while other processes use it. ``nvml``
    lets tests pass a fake pynvml-like object; ``device`` is the trial's CUDA device (index or
    ``torch.device``), mapped to NVML through the GPU's UUID where torch knows it.
    """

    name = "nvml"
    sampling_period_s = 0.1  # the counter advances about every 100 ms on current drivers

    def __init__(
        self,
        device: int | str | torch.device | None = None,
        *,
        nvml: Any = None,
        pid: int | None = None,
        owns_context: bool | None = None,
    ) -> None:
        self._device = device
        self._nvml = nvml
        self._pid = pid
        self._owns_context = owns_context
        self._initialised = False
        self._handle: Any = None
        self._label = "GPU"
        self._start: tuple[int, float] | None = None

    @property
    def index(self) -> int:
        """The CUDA device index this meter watches."""
        device = self._device
        if device is None:
            return torch.cuda.current_device() if torch.cuda.is_available() else 0
        if isinstance(device, int):
            return device
        device = torch.device(device)
        return device.index if device.index is not None else 0

    def _lib(self) -> Any:
        if self._nvml is None:
            import pynvml

            self._nvml = pynvml
        if not self._initialised:
            self._nvml.nvmlInit()
            self._initialised = True
        return self._nvml

    def _get_handle(self) -> Any:
        if self._handle is not None:
            return self._handle
        lib = self._lib()
        index = self.index
        handle = None
        if torch.cuda.is_available():
            # CUDA and NVML may number GPUs differently (CUDA_VISIBLE_DEVICES); the UUID is unambiguous.
            with suppress(Exception):
                uuid = str(torch.cuda.get_device_properties(index).uuid)
                handle = lib.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
        if handle is None:
            handle = lib.nvmlDeviceGetHandleByIndex(index)
        self._handle = handle
        self._label = f"GPU {index}"
        with suppress(Exception):
            name = lib.nvmlDeviceGetName(handle)
            self._label = f"GPU {index} ({name.decode() if isinstance(name, bytes) else name})"
        return handle

    def _read_mj(self) -> int:
        try:
            return int(self._lib().nvmlDeviceGetTotalEnergyConsumption(self._get_handle()))
        except Exception as exc:
            raise MeasurementError(f"NVML energy counter of {self._label} unreadable: {exc}") from exc

    def _foreign(self) -> list[int]:
        try:
            processes = self._lib().nvmlDeviceGetComputeRunningProcesses(self._get_handle())
        except Exception as exc:
            raise MeasurementError(f"cannot list the processes on {self._label}: {exc}") from exc
        pids = [int(p.pid) for p in processes]
        own_pid = os.getpid() if self._pid is None else self._pid
        owns = self._owns_context
        if owns is None:
            owns = torch.cuda.is_available() and torch.cuda.is_initialized()
        return foreign_gpu_processes(pids, own_pid, owns)

    def _shared_message(self, others: list[int]) -> str:
        return (
            f"{self._label} is shared with other process(es) {', '.join(map(str, others))}: its energy "
            "counter would include their work, so NVML cannot attribute energy to this model"
        )

    def available(self) -> tuple[bool, str]:
        """Usable when NVML loads, the GPU reports total energy and no other process uses the GPU."""
        try:
            lib = self._lib()
            handle = self._get_handle()
        except ImportError:
            return False, "nvidia-ml-py (pynvml) is not installed"
        except Exception as exc:
            return False, f"NVML is not usable here: {exc}"
        not_supported = getattr(lib, "NVMLError_NotSupported", ())
        try:
            first = int(lib.nvmlDeviceGetTotalEnergyConsumption(handle))
        except not_supported:
            return (
                False,
                f"{self._label} does not report total energy (NVML NotSupported; needs Volta or newer)",
            )
        except Exception as exc:
            return False, f"{self._label} energy counter unreadable: {exc}"
        if first == 0:
            return (
                False,
                f"{self._label} reports its total energy as 0 mJ (counter not supported by this driver)",
            )
        try:
            others = self._foreign()
        except MeasurementError as exc:
            return False, str(exc)
        if others:
            return False, self._shared_message(others)
        return True, f"NVML total energy counter of {self._label}"

    def start(self) -> None:
        """Record the counter; refuses when other processes use the GPU."""
        others = self._foreign()
        if others:
            raise MeasurementError(self._shared_message(others))
        self._start = (self._read_mj(), time.perf_counter())

    def stop(self) -> MeterReading:
        """Counter difference in joules; a counter that did not advance is an error, not a zero."""
        if self._start is None:
            raise MeasurementError("NVML meter stopped without being started")
        end_mj, end_t = self._read_mj(), time.perf_counter()
        start_mj, start_t = self._start
        self._start = None
        others = self._foreign()
        if others:
            raise MeasurementError(self._shared_message(others))
        delta_mj = end_mj - start_mj
        if delta_mj <= 0:
            raise MeasurementError(
                f"{self._label} energy counter did not advance ({delta_mj} mJ over {end_t - start_t:.2f} s); "
                "the driver reports no energy for this GPU or the window is too short"
            )
        return MeterReading(joules=delta_mj / 1000.0, seconds=end_t - start_t)

    def describe(self) -> str:
        """The counter used."""
        return f"NVML nvmlDeviceGetTotalEnergyConsumption of {self._label} (whole GPU, mJ counter)"


# --------------------------------------------------------------------------------------------------
# RAPL
# --------------------------------------------------------------------------------------------------


def rapl_delta_uj(start: int, end: int, max_range: int) -> int:
    """Counter difference in microjoules, allowing one wrap-around at ``max_energy_range_uj``."""
    if end >= start:
        return end - start
    return end + max_range - start


class RaplMeter:
    """Linux powercap RAPL package counters (``intel-rapl:N/energy_uj``; AMD uses the same names).

    Sums all CPU packages; the counters cover the whole socket, so other processes' work is included.
    Sub-domains (``intel-rapl:N:M``, cores/DRAM) are not added to avoid double counting.
    """

    name = "rapl"
    sampling_period_s = 0.01  # counters update about every millisecond; 10 ms is a safe bound

    def __init__(self, root: str | Path = "/sys/class/powercap") -> None:
        self.root = Path(root)
        self._start: dict[Path, int] | None = None
        self._started_at = 0.0

    def zones(self) -> list[Path]:
        """Top-level package domains, e.g. ``intel-rapl:0``."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.glob("intel-rapl:*") if p.name.count(":") == 1)

    def _read(self, zone: Path) -> int:
        return int((zone / "energy_uj").read_text().strip())

    def _max_range(self, zone: Path) -> int:
        return int((zone / "max_energy_range_uj").read_text().strip())

    def available(self) -> tuple[bool, str]:
        """Usable when at least one package counter and its range are readable."""
        zones = self.zones()
        if not zones:
            return False, (
                f"no RAPL package domains under {self.root} (not Linux, no RAPL driver, or a VM/container "
                "without powercap)"
            )
        for zone in zones:
            for file in ("energy_uj", "max_energy_range_uj"):
                try:
                    int((zone / file).read_text().strip())
                except PermissionError:
                    return False, (
                        f"{zone / file} is not readable: RAPL counters are root-only since Linux 5.10; "
                        "run as root or make them readable (chmod a+r)"
                    )
                except (OSError, ValueError) as exc:
                    return False, f"cannot read {zone / file}: {exc}"
        return True, f"RAPL package counters ({', '.join(z.name for z in zones)})"

    def start(self) -> None:
        """Record every package counter."""
        try:
            self._start = {zone: self._read(zone) for zone in self.zones()}
        except (OSError, ValueError) as exc:
            raise MeasurementError(f"RAPL counters unreadable: {exc}") from exc
        if not self._start:
            raise MeasurementError(f"no RAPL package domains under {self.root}")
        self._started_at = time.perf_counter()

    def stop(self) -> MeterReading:
        """Sum of the package counter differences (wrap-around handled) in joules."""
        if self._start is None:
            raise MeasurementError("RAPL meter stopped without being started")
        start, self._start = self._start, None
        try:
            total_uj = sum(rapl_delta_uj(v, self._read(z), self._max_range(z)) for z, v in start.items())
        except (OSError, ValueError) as exc:
            raise MeasurementError(f"RAPL counters unreadable: {exc}") from exc
        seconds = time.perf_counter() - self._started_at
        if total_uj <= 0:
            raise MeasurementError(f"RAPL counters did not advance over {seconds:.2f} s")
        return MeterReading(joules=total_uj / 1e6, seconds=seconds)

    def describe(self) -> str:
        """The counters used."""
        names = ", ".join(z.name for z in self.zones()) or "none"
        return f"RAPL powercap package energy counters ({names}; whole socket, includes other processes)"


# --------------------------------------------------------------------------------------------------
# Fake (tests)
# --------------------------------------------------------------------------------------------------


class FakeMeter:
    """Deterministic meter for tests: joules = elapsed seconds x ``watts`` x (1 + jitter[i]).

    ``clock`` is the time source (inject a fake clock for exact results); ``jitter`` cycles through
    relative deviations per reading; ``unavailable_reason`` makes :meth:`available` say no.
    """

    def __init__(
        self,
        watts: float = 10.0,
        *,
        clock: Callable[[], float] = time.perf_counter,
        jitter: Sequence[float] = (),
        kg_per_joule: float | None = None,
        unavailable_reason: str | None = None,
        sampling_period_s: float = 0.01,
        name: str = "fake",
    ) -> None:
        self.watts = watts
        self.clock = clock
        self.jitter = tuple(jitter)
        self.kg_per_joule = kg_per_joule
        self.unavailable_reason = unavailable_reason
        self.sampling_period_s = sampling_period_s
        self.name = name
        self.readings = 0
        self._t0: float | None = None

    def available(self) -> tuple[bool, str]:
        """As configured."""
        if self.unavailable_reason:
            return False, self.unavailable_reason
        return True, "fake meter"

    def describe(self) -> str:
        """The formula."""
        return f"fake: elapsed time x {self.watts:g} W"

    def start(self) -> None:
        """Remember the clock."""
        self._t0 = self.clock()

    def stop(self) -> MeterReading:
        """Elapsed time times watts, with this reading's jitter."""
        if self._t0 is None:
            raise MeasurementError("fake meter stopped without being started")
        seconds = self.clock() - self._t0
        self._t0 = None
        factor = 1.0 + (self.jitter[self.readings % len(self.jitter)] if self.jitter else 0.0)
        self.readings += 1
        joules = seconds * self.watts * factor
        kg = joules * self.kg_per_joule if self.kg_per_joule is not None else None
        return MeterReading(joules=joules, seconds=seconds, kg_co2=kg)


# --------------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------------


def choose_meter(
    name: str = "auto",
    device: str | torch.device | None = None,
    *,
    country_iso_code: str = "DEU",
    measure_power_secs: float = 1.0,
) -> tuple[EnergyMeter, str]:
    """The meter for ``name`` plus a note on how it was chosen.

    ``auto``: NVML when ``device`` is CUDA and NVML is usable, else RAPL when readable, else
    CodeCarbon. A named meter is returned even if unavailable; measuring with it then fails with
    the reason (and :func:`~greenshift.objectives.evaluate` falls back to the model).
    """
    if name not in METER_NAMES:
        raise ConfigError(f"unknown energy meter {name!r}; valid: {', '.join(METER_NAMES)}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    codecarbon = CodeCarbonMeter(country_iso_code=country_iso_code, measure_power_secs=measure_power_secs)
    if name == "codecarbon":
        return codecarbon, "codecarbon requested"
    if name == "nvml":
        return NvmlMeter(device if device.type == "cuda" else None), "nvml requested"
    if name == "rapl":
        return RaplMeter(), "rapl requested"
    skipped = []
    if device.type == "cuda":
        nvml = NvmlMeter(device)
        ok, reason = nvml.available()
        if ok:
            return nvml, f"auto: {reason}"
        skipped.append(f"nvml: {reason}")
    rapl = RaplMeter()
    ok, reason = rapl.available()
    if ok:
        return rapl, "auto: " + "; ".join([*skipped, reason])
    skipped.append(f"rapl: {reason}")
    return codecarbon, "auto: codecarbon (" + "; ".join(skipped) + ")"


def select_meter(
    name: str = "auto",
    device: str | torch.device | None = None,
    *,
    country_iso_code: str = "DEU",
    measure_power_secs: float = 1.0,
) -> EnergyMeter:
    """The energy meter for ``"auto" | "codecarbon" | "nvml" | "rapl"`` (see :func:`choose_meter`)."""
    return choose_meter(
        name, device, country_iso_code=country_iso_code, measure_power_secs=measure_power_secs
    )[0]
