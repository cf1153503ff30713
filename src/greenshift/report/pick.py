"""Choose one configuration from the Pareto front by a bound or the knee.

Exactly one of three questions is asked:

* ``max_loss=x`` — the lowest energy among configurations with ``loss <= x``;
* ``max_energy=y`` — the lowest loss among configurations with ``energy <= y``;
* ``knee=True`` — the knee of the front (:func:`greenshift.objectives.pareto.knee_point`).

"Energy" is ``energy_objective``, which may be omitted when the front has exactly one objective
besides ``loss``. Ties go to the better other objective, then the lower trial id. Answers come only
from the front: for these questions a front configuration is always at least as good as any other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from greenshift.errors import ConfigError
from greenshift.objectives.pareto import knee_point
from greenshift.report.data import LOSS, ReportData
from greenshift.store.front import FrontEntry, front_of


@dataclass(frozen=True)
class Pick:
    """The chosen configuration and why it was chosen."""

    trial_id: int
    config: dict[str, Any]
    objectives: dict[str, float]
    reason: str


def _as_candidates(source: ReportData | Sequence[Any]) -> list[tuple[int, dict[str, Any], dict[str, float]]]:
    """(trial_id, config, objectives) of the front of ``source`` (report, entries or mappings)."""
    if isinstance(source, ReportData):
        entries = list(source.front)
    else:
        entries = [
            FrontEntry(int(item["trial_id"]), dict(item.get("config", {})), dict(item["objectives"]), 0.0, "")
            if isinstance(item, Mapping)
            else FrontEntry(int(item.trial_id), dict(item.config), dict(item.objectives), 0.0, "")
            for item in source
        ]
    if not entries:
        raise ConfigError("there is no configuration to pick from (no trial finished at the full budget)")
    names = list(entries[0].objectives)
    if any(set(e.objectives) != set(names) for e in entries):
        raise ConfigError("the configurations to pick from do not all have the same objectives")
    if not isinstance(source, ReportData):
        # Plain lists may hold dominated points: reduce them to their front by the rule of every front.
        entries = list(front_of(entries, names))
    return [(e.trial_id, dict(e.config), dict(e.objectives)) for e in entries]


def _energy_name(names: Sequence[str], energy_objective: str | None) -> str:
    others = [n for n in names if n != LOSS]
    if energy_objective is not None:
        if energy_objective not in others:
            raise ConfigError(
                f"energy objective {energy_objective!r} is not one of {', '.join(others) or 'none'}"
            )
        return energy_objective
    if len(others) != 1:
        raise ConfigError(f"several energy objectives ({', '.join(others)}): say which with energy_objective")
    return others[0]


def pick(
    report_or_points: ReportData | Sequence[Any],
    *,
    max_loss: float | None = None,
    max_energy: float | None = None,
    energy_objective: str | None = None,
    knee: bool = False,
) -> Pick:
    """Pick one configuration by exactly one of ``max_loss``, ``max_energy`` or ``knee`` (module docstring).

    ``report_or_points`` is a :class:`ReportData` (its front is used) or a sequence of entries or
    mappings with ``trial_id``, ``config`` and ``objectives``. Raises :class:`ConfigError` when not
    exactly one option is given or no configuration meets the bound (naming the best value available).
    """
    given = [
        name
        for name, on in (
            ("max_loss", max_loss is not None),
            ("max_energy", max_energy is not None),
            ("knee", knee),
        )
        if on
    ]
    if len(given) != 1:
        raise ConfigError(
            "pick needs exactly one of max_loss, max_energy or knee"
            + (f" (got {', '.join(given)})" if given else "")
        )
    candidates = _as_candidates(report_or_points)
    names = list(candidates[0][2])

    if knee:
        if isinstance(report_or_points, ReportData) and report_or_points.knee is not None:
            chosen_id = report_or_points.knee.trial_id
            chosen = next(c for c in candidates if c[0] == chosen_id)
        else:
            points = np.asarray([[float(o[n]) for n in names] for _, _, o in candidates], dtype=float)
            chosen = candidates[knee_point(points)]
        return Pick(*chosen, reason="knee of the Pareto front")

    if LOSS not in names:
        raise ConfigError(f"the objectives ({', '.join(names)}) include no loss to bound or minimise")
    energy = _energy_name(names, energy_objective)
    if max_loss is not None:
        bound, bounded, minimised = float(max_loss), LOSS, energy
    else:
        bound, bounded, minimised = float(max_energy or 0.0), energy, LOSS
    feasible = [c for c in candidates if c[2][bounded] <= bound]
    if not feasible:
        best = min(c[2][bounded] for c in candidates)
        raise ConfigError(
            f"no configuration has {bounded} <= {bound:g}; the lowest {bounded} available is {best:g}"
        )
    chosen = min(feasible, key=lambda c: (c[2][minimised], c[2][bounded], c[0]))
    return Pick(*chosen, reason=f"lowest {minimised} with {bounded} <= {bound:g}")
