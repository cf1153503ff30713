"""How much better than the default configuration the Pareto configurations are.

Sign convention: a percent change is ``100 * (value - default) / default``. All objectives are
minimised, so **negative means better** (``-20.0`` = 20 % less loss or energy than the default).
A change relative to a default value of 0 is undefined and reported as ``None``.

"Energy objectives" here are all objectives other than ``loss`` (energy, latency, size ...): each is a
cost traded against the loss. The two headline figures are

* the largest loss reduction among front configurations no worse than the default in *every*
  energy objective, and
* per energy objective, the largest reduction among front configurations no worse in loss.

Each is ``None`` when no configuration qualifies or none of those that do improves on the default.
Only the front needs searching: any configuration meeting a constraint is weakly dominated by a front
configuration that meets it too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from greenshift.store.front import FrontEntry

LOSS = "loss"


@dataclass(frozen=True)
class ConfigImprovement:
    """Percent change of every objective of one front configuration against the default."""

    trial_id: int
    percent_change: dict[str, float | None]


@dataclass(frozen=True)
class Headline:
    """One headline figure: which configuration, which objective, by how much (negative = better)."""

    trial_id: int
    objective: str
    percent_change: float
    value: float
    default_value: float


@dataclass(frozen=True)
class Improvement:
    """Per-configuration changes and the headline figures; empty when there is no default to compare with."""

    per_config: tuple[ConfigImprovement, ...] = ()
    best_loss_reduction: Headline | None = None
    best_energy_reduction: dict[str, Headline | None] = field(default_factory=dict)

    @property
    def beat_default(self) -> int:
        """How many front configurations are better than the default in every objective."""
        return sum(
            all(change is not None and change < 0 for change in config.percent_change.values())
            for config in self.per_config
        )


def percent_change(value: float, baseline: float) -> float | None:
    """``100 * (value - baseline) / baseline``; ``None`` when the baseline is 0 or a value is not finite."""
    if not (math.isfinite(value) and math.isfinite(baseline)) or baseline == 0:
        return None
    return 100.0 * (value - baseline) / abs(baseline)


def _best(
    candidates: Sequence[FrontEntry], default: FrontEntry, objective: str, constraints: Sequence[str]
) -> Headline | None:
    """The candidate with the largest reduction of ``objective`` among those no worse in ``constraints``."""
    best: Headline | None = None
    base = float(default.objectives[objective])
    for entry in candidates:
        if any(float(entry.objectives[c]) > float(default.objectives[c]) for c in constraints):
            continue
        change = percent_change(float(entry.objectives[objective]), base)
        if change is None or change >= 0:
            continue
        # Strictly better only, so ties keep the earlier (front-ordered) configuration.
        if best is None or change < best.percent_change:
            best = Headline(entry.trial_id, objective, change, float(entry.objectives[objective]), base)
    return best


def compute_improvement(
    front: Sequence[FrontEntry], default: FrontEntry | None, objective_names: Sequence[str]
) -> Improvement:
    """Compare every front configuration and the headline figures with ``default`` (see module docstring)."""
    if default is None:
        return Improvement()
    names = list(objective_names)
    energy = [n for n in names if n != LOSS]
    per_config = tuple(
        ConfigImprovement(
            e.trial_id,
            {n: percent_change(float(e.objectives[n]), float(default.objectives[n])) for n in names},
        )
        for e in front
    )
    best_loss = _best(front, default, LOSS, energy) if LOSS in names else None
    loss_constraint = [LOSS] if LOSS in names else []
    best_energy = {n: _best(front, default, n, loss_constraint) for n in energy}
    return Improvement(per_config, best_loss, best_energy)
