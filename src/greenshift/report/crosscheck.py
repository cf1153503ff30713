"""Modelled next to measured energy as plain data, and the verdict on how far to trust the model.

:class:`EnergyCrosscheck` holds one :class:`CrosscheckRow` per configuration of the front (plus the
default); :func:`trust_statistics` judges the model against the meter where at least
:data:`MIN_PAIRS` rows have both values: the Spearman rank correlation, and the median relative error
after fitting one scale factor ``k`` (measured ≈ k x modelled; ``log k`` is the mean of
``log measured - log modelled``, the least-squares fit in log space). The model counts arithmetic and
memory reads of shift hardware at 45 nm; today's CPUs and GPUs run simulated shifts as float
multiplications, so disagreement is expected (docs/energy.md).

Nothing here reads a run or measures: :mod:`greenshift.report.energy` fills these rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from greenshift.errors import ConfigError

#: Fewest rows with both values for which the model is judged.
MIN_PAIRS = 3
SIMULATED_SHIFTS = (
    "On today's CPUs and GPUs shift layers are simulated: they still run float multiplications with "
    "power-of-two weights, so the measured energy does not fall when layers are shifted while the "
    "modelled energy does. Disagreement between the two is therefore expected: the model estimates what "
    "shift hardware would spend, the meter what this machine spends (see docs/energy.md)."
)


@dataclass(frozen=True)
class CrosscheckRow:
    """Modelled and measured energy per image of one configuration (``None`` where unknown, see ``note``).

    ``model_source`` is ``"run"`` or ``"computed from the configuration"``; ``measured_source`` is
    ``"run"``, ``"re-measured"`` or ``"re-measured (cached)"``. ``measured_spread`` holds the protocol's
    ``std_j`` (between readings), ``rse``, ``n`` (readings) and ``converged``.
    """

    trial_id: int
    is_default: bool
    on_front: bool
    energy_model_j: float | None
    model_source: str | None
    energy_measured_j: float | None
    measured_source: str | None
    meter: str | None
    measured_method: str | None
    measured_spread: dict[str, Any] | None
    checkpoint: str | None
    note: str | None

    @property
    def paired(self) -> bool:
        """Whether both energies are known positive numbers (only such rows judge the model)."""
        return all(
            v is not None and math.isfinite(v) and v > 0
            for v in (self.energy_model_j, self.energy_measured_j)
        )

    def to_json(self) -> dict[str, Any]:
        """The row as plain JSON values."""
        return asdict(self)


@dataclass(frozen=True)
class TrustStats:
    """How well the modelled energy predicts the measured one (``None`` where it cannot be judged)."""

    n: int
    spearman_rho: float | None
    spearman_p: float | None
    scale_k: float | None
    median_relative_error: float | None
    statement: str

    def to_json(self) -> dict[str, Any]:
        """The statistics as plain JSON values."""
        return asdict(self)


@dataclass(frozen=True)
class EnergyCrosscheck:
    """The rows (front first, then the default when it is not on the front) and the verdict on the model.

    ``measured_now`` and ``reused`` count the rows re-measured in this call and taken from the cache.
    """

    rows: tuple[CrosscheckRow, ...]
    trust: TrustStats
    device: str | None
    measured_now: int = 0
    reused: int = 0
    caveat: str = SIMULATED_SHIFTS

    def to_json(self) -> dict[str, Any]:
        """The crosscheck as plain JSON values (the ``energy_crosscheck`` key of ``report.json``)."""
        return {
            "rows": [row.to_json() for row in self.rows],
            "trust": self.trust.to_json(),
            "device": self.device,
            "measured_now": self.measured_now,
            "reused": self.reused,
            "caveat": self.caveat,
        }


# ------------------------------------------------------------------------------------------- the maths


def trust_statistics(
    modelled: Sequence[float], measured: Sequence[float], *, meter: str | None = None
) -> TrustStats:
    """Spearman ρ, scale factor ``k`` and median relative error of ``measured`` against ``k x modelled``.

    Pairs where either value is not a positive finite number are ignored; with fewer than
    :data:`MIN_PAIRS` left nothing is judged and the statement says so. ``meter`` names the meter(s)
    in the statement.
    """
    if len(modelled) != len(measured):
        raise ConfigError(f"{len(modelled)} modelled but {len(measured)} measured values")
    x = np.asarray(modelled, dtype=float).reshape(-1)
    y = np.asarray(measured, dtype=float).reshape(-1)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    x, y = x[keep], y[keep]
    n = int(x.size)
    if n < MIN_PAIRS:
        statement = (
            f"Cannot be judged: only {n} configuration{'' if n == 1 else 's'} of the front and the "
            f"default {'has' if n == 1 else 'have'} both a modelled and a measured energy; at least "
            f"{MIN_PAIRS} are needed."
        )
        return TrustStats(n, None, None, None, None, statement)
    # Least squares of log y = log k + log x with slope fixed at 1: log k is the mean log ratio.
    log_k = float(np.mean(np.log(y) - np.log(x)))
    k = math.exp(log_k)
    median_error = float(np.median(np.abs(k * x - y) / y))
    rho = p_value = None
    if np.ptp(x) > 0 and np.ptp(y) > 0:
        from scipy.stats import spearmanr

        result = spearmanr(x, y)
        rho, p_value = float(result.statistic), float(result.pvalue)
        if not math.isfinite(rho):
            rho = p_value = None
        elif not math.isfinite(p_value):
            p_value = None
    return TrustStats(n, rho, p_value, k, median_error, _statement(n, rho, k, median_error, meter))


def _statement(n: int, rho: float | None, k: float, median_error: float, meter: str | None) -> str:
    """Plain words for the statistics: what the ranking and the scaled error mean for this run."""
    by = f"the {meter} meter" if meter else "the meter"
    if rho is None:
        ranking = (
            f"The ranking cannot be compared with {by}: all {n} modelled or all measured values are "
            "equal (e.g. configurations that differ only in training hyperparameters)."
        )
    else:
        if rho >= 0.8:
            verdict = "in nearly the same order as the meter"
        elif rho >= 0.4:
            verdict = "in roughly the same order as the meter"
        elif rho > -0.4:
            verdict = "in an order unrelated to the meter's"
        else:
            verdict = "in roughly the opposite order to the meter's"
        ranking = (
            f"Spearman ρ = {rho:.2f} between modelled and measured energy ({by}) over these {n} "
            f"configurations: the model ranks them {verdict} (ρ = 1: same order, 0: unrelated, "
            "−1: reversed)."
        )
        if n < 6:
            ranking += f" With only {n} configurations ρ is a rough indication."
    scale = (
        f"Up to one constant factor k = {k:.3g} (measured ≈ k × modelled, fitted in log space), its "
        f"median error is {100 * median_error:.0f} %."
    )
    hardware = (
        "Disagreement is expected: on CPUs and GPUs today shifts run as float multiplications, so the "
        "meter does not see the savings the model counts for shift hardware."
    )
    return " ".join((ranking, scale, hardware))
