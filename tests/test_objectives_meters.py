"""Energy meters: NVML arithmetic on recorded counters, RAPL on a fake sysfs, CodeCarbon for real."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from greenshift.errors import ConfigError, MeasurementError
from greenshift.objectives import (
    CodeCarbonMeter,
    EnergyMeter,
    FakeMeter,
    MeasureOptions,
    NvmlMeter,
    RaplMeter,
    measure_energy,
    metered,
    select_meter,
)
from greenshift.objectives.meters import choose_meter, foreign_gpu_processes, rapl_delta_uj


class FakeNvml:
    """pynvml-like object replaying recorded energy counter values (mJ)."""

    class NVMLError_NotSupported(Exception):
        pass

    def __init__(self, counters, pids=(), *, supported=True) -> None:
        self.counters = list(counters)
        self.pids = list(pids)
        self.supported = supported
        self.reads = 0

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"handle{index}"

    def nvmlDeviceGetName(self, handle: str) -> bytes:
        return b"Fake GPU"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:
        if not self.supported:
            raise self.NVMLError_NotSupported("Not Supported")
        value = self.counters[min(self.reads, len(self.counters) - 1)]
        self.reads += 1
        return value

    def nvmlDeviceGetComputeRunningProcesses(self, handle: str) -> list[SimpleNamespace]:
        return [SimpleNamespace(pid=p, usedGpuMemory=0) for p in self.pids]


def nvml_meter(lib: FakeNvml, **kwargs) -> NvmlMeter:
    return NvmlMeter(0, nvml=lib, pid=kwargs.pop("pid", 100), owns_context=kwargs.pop("owns_context", True))


def test_meters_satisfy_the_protocol() -> None:
    for meter in (CodeCarbonMeter(), NvmlMeter(0, nvml=FakeNvml([1])), RaplMeter(), FakeMeter()):
        assert isinstance(meter, EnergyMeter)


# ---------------------------------------------------------------- NVML


def test_nvml_counter_delta_in_millijoules_becomes_joules() -> None:
    lib = FakeNvml([1_000_000, 1_000_000, 1_012_500], pids=[100])
    meter = nvml_meter(lib)
    ok, reason = meter.available()
    assert ok, reason
    assert "Fake GPU" in reason
    meter.start()
    reading = meter.stop()
    assert reading.joules == pytest.approx(12.5)
    assert reading.kg_co2 is None


def test_nvml_per_image_joules_through_the_protocol() -> None:
    clock = [0.0]

    class Clocked(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            clock[0] += 0.002 * x.shape[0]  # 2 ms per image
            return x

    class Counter(FakeNvml):
        def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:
            return 10_000 + round(clock[0] * 50 * 1000)  # a 50 W GPU, counter in mJ

    options = MeasureOptions(
        min_window_s=0.5, min_repeats=2, max_repeats=3, measure_idle=False, warmup_passes=1
    )
    result = measure_energy(
        Clocked(), [torch.zeros(10, 3)], nvml_meter(Counter([0])), options, clock=lambda: clock[0]
    )
    assert result.joules_per_image == pytest.approx(50 * 0.002, rel=1e-3)
    assert result.meter == "nvml"
    assert "g CO2/kWh" in result.emissions_method and result.kg_co2_per_image > 0


def test_nvml_zero_energy_is_unavailable_and_a_stuck_counter_an_error() -> None:
    ok, reason = nvml_meter(FakeNvml([0])).available()
    assert not ok and "0 mJ" in reason
    meter = nvml_meter(FakeNvml([5_000, 5_000, 5_000]))
    assert meter.available()[0]
    meter.start()
    with pytest.raises(MeasurementError, match="did not advance"):
        meter.stop()


def test_nvml_not_supported_is_unavailable() -> None:
    ok, reason = nvml_meter(FakeNvml([1], supported=False)).available()
    assert not ok and "NotSupported" in reason


def test_nvml_refuses_a_gpu_shared_with_other_processes() -> None:
    lib = FakeNvml([1_000, 2_000, 3_000], pids=[100, 4242])
    meter = nvml_meter(lib)
    ok, reason = meter.available()
    assert not ok and "4242" in reason and "shared" in reason
    with pytest.raises(MeasurementError, match="4242"):
        meter.start()
    # Another process appearing during a reading is caught at stop().
    lib.pids = [100]
    meter.start()
    lib.pids = [100, 777]
    with pytest.raises(MeasurementError, match="777"):
        meter.stop()


def test_foreign_process_detection_allows_for_container_pids() -> None:
    assert foreign_gpu_processes([1, 2], own_pid=1, own_context=True) == [2]
    # In a container our own process shows with its host PID: one unknown entry is us.
    assert foreign_gpu_processes([9001], own_pid=1, own_context=True) == []
    assert foreign_gpu_processes([9001, 9002], own_pid=1, own_context=True) == [9001, 9002]
    # Without a CUDA context of our own, any listed process is someone else.
    assert foreign_gpu_processes([9001], own_pid=1, own_context=False) == [9001]


@pytest.mark.gpu
def test_real_nvml_meter_on_this_gpu() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    meter = NvmlMeter(torch.device("cuda", 0))
    ok, reason = meter.available()
    if not ok:
        pytest.skip(f"NVML not usable here: {reason}")
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1)).cuda()
    options = MeasureOptions(min_window_s=0.5, min_repeats=2, max_repeats=3, measure_idle=True)
    result = measure_energy(model, [torch.randn(256, 3, 32, 32, device="cuda")], meter, options)
    assert result.joules_per_image > 0 and result.mean_power_w > 0
    assert "NVML" in result.method


# ---------------------------------------------------------------- RAPL


def make_zone(root: Path, name: str, energy: int, max_range: int = 1_000_000) -> Path:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "energy_uj").write_text(f"{energy}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_range}\n")
    return zone


def test_rapl_delta_handles_wrap_around() -> None:
    assert rapl_delta_uj(100, 350, 1000) == 250
    assert rapl_delta_uj(900, 50, 1000) == 150


def test_rapl_sums_packages_ignores_subzones_and_wraps(tmp_path: Path) -> None:
    pkg0 = make_zone(tmp_path, "intel-rapl:0", 999_000)
    pkg1 = make_zone(tmp_path, "intel-rapl:1", 10_000)
    sub = make_zone(tmp_path, "intel-rapl:0:0", 0)
    meter = RaplMeter(tmp_path)
    assert [z.name for z in meter.zones()] == ["intel-rapl:0", "intel-rapl:1"]
    assert meter.available()[0]
    meter.start()
    (pkg0 / "energy_uj").write_text("1000\n")  # wrapped: 1_000 + 1_000_000 - 999_000 = 2_000 uJ
    (pkg1 / "energy_uj").write_text("3010000\n")  # 3_000_000 uJ
    (sub / "energy_uj").write_text("99999\n")
    reading = meter.stop()
    assert reading.joules == pytest.approx(3.002)
    assert "intel-rapl:0" in meter.describe()


def test_rapl_missing_or_unreadable_gives_the_reason(tmp_path: Path, monkeypatch) -> None:
    ok, reason = RaplMeter(tmp_path / "nothing").available()
    assert not ok and "no RAPL package domains" in reason
    zone = make_zone(tmp_path, "intel-rapl:0", 5)
    original = Path.read_text

    def deny(self: Path, *args, **kwargs) -> str:
        if self == zone / "energy_uj":
            raise PermissionError(13, "Permission denied")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", deny)
    ok, reason = RaplMeter(tmp_path).available()
    assert not ok and "not readable" in reason and "root" in reason


def test_rapl_counter_that_does_not_move_is_an_error(tmp_path: Path) -> None:
    make_zone(tmp_path, "intel-rapl:0", 5)
    meter = RaplMeter(tmp_path)
    meter.start()
    with pytest.raises(MeasurementError, match="did not advance"):
        meter.stop()


# ---------------------------------------------------------------- selection and the context manager


def test_select_meter_names_and_auto_fallback_on_cpu() -> None:
    assert select_meter("codecarbon").name == "codecarbon"
    assert select_meter("rapl").name == "rapl"
    assert select_meter("nvml").name == "nvml"
    meter, note = choose_meter("auto", "cpu")
    expected = "rapl" if RaplMeter().available()[0] else "codecarbon"
    assert meter.name == expected
    if expected == "codecarbon":
        assert "rapl:" in note
    with pytest.raises(ConfigError, match="valid: auto, codecarbon, nvml, rapl"):
        select_meter("zeus")


def test_metered_context_manager_and_stop_on_error() -> None:
    now = [0.0]
    meter = FakeMeter(watts=4.0, clock=lambda: now[0])
    with metered(meter) as session:
        now[0] += 2.5
    assert session.reading is not None and session.reading.joules == pytest.approx(10.0)
    with pytest.raises(RuntimeError), metered(meter):
        raise RuntimeError("boom")
    assert meter.readings == 2  # the failed block still stopped the meter


# ---------------------------------------------------------------- CodeCarbon for real


@pytest.mark.slow
def test_codecarbon_measures_real_positive_joules_on_cpu(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    meter = CodeCarbonMeter(measure_power_secs=1, country_iso_code="DEU")
    assert meter.available()[0]
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    options = MeasureOptions(
        min_window_s=2.0, window_periods=2, min_repeats=2, max_repeats=2, measure_idle=False
    )
    result = measure_energy(model, [torch.randn(256, 64)], meter, options)
    assert result.n == 2
    assert result.joules_per_image > 0 and result.kg_co2_per_image > 0
    assert all(r > 0 for r in result.readings_j_per_image)
    assert result.window_s == 2.0 and all(s >= 2.0 for s in result.seconds_per_reading)
    assert "codecarbon" in result.method and "CPU" in result.method
    assert result.emissions_method == "reported by the codecarbon meter"
    assert list(tmp_path.iterdir()) == []  # save_to_file=False: no emissions.csv


def test_nvml_errors_during_a_reading_become_measurement_errors() -> None:
    class Broken(FakeNvml):
        def nvmlDeviceGetComputeRunningProcesses(self, handle: str) -> list[SimpleNamespace]:
            raise RuntimeError("driver gone")

    meter = nvml_meter(Broken([1_000]))
    ok, reason = meter.available()
    assert not ok and "driver gone" in reason
    with pytest.raises(MeasurementError, match="driver gone"):
        meter.start()
