"""``latency_ms``: median wall-clock time of one inference batch of fixed size after warm-up."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from torch import Tensor, nn

from greenshift.errors import ConfigError
from greenshift.objectives._runtime import inference_context, synchronize


@dataclass(frozen=True)
class LatencyMeasurement:
    """Per-batch latencies in milliseconds; ``median_ms`` is the objective's value."""

    median_ms: float
    q25_ms: float
    q75_ms: float
    min_ms: float
    max_ms: float
    batch_size: int
    warmup: int
    repeats: int
    device: str

    @property
    def iqr_ms(self) -> float:
        """Interquartile range, the spread reported with the median."""
        return self.q75_ms - self.q25_ms

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (with ``iqr_ms``)."""
        return {**asdict(self), "iqr_ms": self.iqr_ms}


def measure_latency(
    model: nn.Module,
    batch: Tensor,
    *,
    warmup: int = 3,
    repeats: int = 20,
    clock: Callable[[], float] = time.perf_counter,
) -> LatencyMeasurement:
    """Median latency of ``model(batch)`` over ``repeats`` timed calls after ``warmup`` untimed ones.

    On CUDA the device is synchronised before and after every timed call, so queued kernels count.
    The model's train/eval flags are restored afterwards.
    """
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"latency needs repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    device = batch.device
    times_ms: list[float] = []
    with inference_context(model):
        for _ in range(warmup):
            model(batch)
        for _ in range(repeats):
            synchronize(device)
            start = clock()
            model(batch)
            synchronize(device)
            times_ms.append((clock() - start) * 1000.0)
    if len(times_ms) >= 2:
        q25, _, q75 = statistics.quantiles(times_ms, n=4, method="inclusive")
    else:
        q25 = q75 = times_ms[0]
    return LatencyMeasurement(
        median_ms=statistics.median(times_ms),
        q25_ms=q25,
        q75_ms=q75,
        min_ms=min(times_ms),
        max_ms=max(times_ms),
        batch_size=int(batch.shape[0]),
        warmup=warmup,
        repeats=repeats,
        device=str(device),
    )
