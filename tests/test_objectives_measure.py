"""The measurement protocol (with a fake clock and FakeMeter) and the latency objective."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from greenshift.errors import ConfigError, MeasurementError
from greenshift.objectives import FakeMeter, MeasureOptions, measure_energy, measure_latency
from greenshift.objectives.measure import relative_standard_error

SECONDS_PER_IMAGE = 0.01
WATTS = 10.0


class FakeClock:
    """Time that only moves when the model runs or the protocol sleeps."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class Clocked(nn.Module):
    """A linear model whose forward pass takes SECONDS_PER_IMAGE of fake time per image."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.fc = nn.Linear(4, 2)
        self.bn = nn.BatchNorm1d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clock.t += SECONDS_PER_IMAGE * x.shape[0]
        return self.bn(self.fc(x))


def run(jitter=(), **options):
    clock = FakeClock()
    model = Clocked(clock)
    # The protocol's first meter reading is its excluded warm-up: give it a dummy jitter entry.
    meter = FakeMeter(WATTS, clock=clock, jitter=(0.0, *jitter) if jitter else ())
    settings = {"min_window_s": 1.0, "min_repeats": 3, "max_repeats": 10, "measure_idle": False, **options}
    result = measure_energy(
        model, [torch.zeros(8, 4)], meter, MeasureOptions(**settings), clock=clock, sleep=clock.sleep
    )
    return result, model, meter


def test_constant_readings_stop_at_min_repeats_with_exact_joules() -> None:
    result, _, _ = run()
    assert result.n == 3 and result.converged
    assert result.joules_per_image == pytest.approx(WATTS * SECONDS_PER_IMAGE)
    assert result.std_j_per_image == pytest.approx(0.0, abs=1e-12)
    # Every reading spans the window: 13 passes of 8 images (0.08 s each) >= 1 s.
    assert result.images_per_reading == [104, 104, 104]
    assert all(s >= 1.0 for s in result.seconds_per_reading)
    assert result.meter == "fake" and "10 W" in result.method
    assert result.time_overhead_fraction == pytest.approx(0.0, abs=1e-9)


def test_stops_once_the_relative_standard_error_is_below_the_threshold() -> None:
    jitter = (0.2, -0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    result, _, _ = run(jitter, rse_threshold=0.1)
    # n=3: [1.2, 0.8, 1.0] has RSE 0.115; n=4 adds 1.0 and drops it to 0.082 < 0.1.
    assert result.n == 4 and result.converged
    assert relative_standard_error(result.readings_j_per_image[:3]) > 0.1
    assert (
        result.rse == pytest.approx(relative_standard_error(result.readings_j_per_image)) and result.rse < 0.1
    )


def test_stops_at_the_cap_when_readings_stay_noisy() -> None:
    result, _, _ = run((0.5, -0.5) * 5, max_repeats=5)
    assert result.n == 5 and not result.converged and result.rse >= 0.05
    assert result.readings_j_per_image[0] == pytest.approx(1.5 * WATTS * SECONDS_PER_IMAGE)


def test_window_adapts_to_the_meters_sampling_period() -> None:
    options = MeasureOptions(min_window_s=1.0, window_periods=3)
    assert options.window_s(FakeMeter(sampling_period_s=0.01)) == 1.0
    assert options.window_s(FakeMeter(sampling_period_s=2.0)) == 6.0


def test_idle_reading_and_emissions_are_recorded() -> None:
    clock = FakeClock()
    meter = FakeMeter(WATTS, clock=clock, kg_per_joule=1e-7)
    result = measure_energy(
        Clocked(clock),
        [torch.zeros(8, 4)],
        meter,
        {"min_window_s": 1.0, "measure_idle": True},
        clock=clock,
        sleep=clock.sleep,
    )
    assert result.idle_power_w == pytest.approx(WATTS)
    assert result.idle_share == pytest.approx(1.0)
    assert result.kg_co2_per_image == pytest.approx(1e-7 * WATTS * SECONDS_PER_IMAGE)
    assert result.emissions_method == "reported by the fake meter"


@pytest.mark.parametrize("jitter", [(-1.0,), (-2.0,), (math.nan,)])
def test_zero_negative_or_nan_readings_raise(jitter) -> None:
    with pytest.raises(MeasurementError, match="implausible"):
        run(jitter * 10)


def test_unavailable_meter_raises_with_its_reason() -> None:
    meter = FakeMeter(unavailable_reason="no counters on this box")
    with pytest.raises(MeasurementError, match="no counters on this box"):
        measure_energy(nn.Linear(4, 2), [torch.zeros(2, 4)], meter)


def test_measuring_leaves_parameters_and_modes_alone() -> None:
    clock = FakeClock()
    model = Clocked(clock).train()
    model.bn.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    measure_energy(
        model,
        [torch.randn(8, 4)],
        FakeMeter(clock=clock),
        {"min_window_s": 0.2},
        clock=clock,
        sleep=clock.sleep,
    )
    assert model.training and model.fc.training and not model.bn.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_measure_options_validation() -> None:
    with pytest.raises(ConfigError, match="unknown measure option"):
        MeasureOptions.from_mapping({"window": 3})
    with pytest.raises(ConfigError, match="min_repeats"):
        MeasureOptions(min_repeats=1)
    with pytest.raises(ConfigError, match="max_repeats"):
        MeasureOptions(min_repeats=4, max_repeats=3)
    with pytest.raises(ConfigError, match="rse_threshold"):
        MeasureOptions(rse_threshold=0)


def test_latency_is_the_median_of_timed_batches() -> None:
    clock = FakeClock()
    model = Clocked(clock).train()
    result = measure_latency(model, torch.zeros(64, 4), warmup=2, repeats=5, clock=clock)
    assert result.median_ms == pytest.approx(64 * SECONDS_PER_IMAGE * 1000)
    assert result.iqr_ms == pytest.approx(0.0, abs=1e-9)
    assert (result.batch_size, result.repeats, result.warmup) == (64, 5, 2)
    assert clock.t == pytest.approx(7 * 64 * SECONDS_PER_IMAGE)  # warm-up calls ran but were not timed
    assert model.training


def test_latency_real_clock_is_positive() -> None:
    result = measure_latency(nn.Linear(16, 4), torch.zeros(64, 16), warmup=1, repeats=3)
    assert result.median_ms > 0 and result.min_ms <= result.median_ms <= result.max_ms
