"""ParEGO with a preference: how greenshift scalarises several objectives for SMAC."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from smac import Scenario
from smac.multi_objective.parego import ParEGO


class PreferenceParEGO(ParEGO):
    """ParEGO whose random weights are drawn around a user's preference.

    SMAC normalises every objective to [0, 1] over the observed successful trials before ParEGO
    scalarises them, so weights compare like with like. Without a preference the weights are uniform
    on the simplex (plain ParEGO); with one they come from a Dirichlet distribution centred on it, so
    the search still explores the front but spends more effort where the user cares.
    """

    def __init__(
        self, scenario: Scenario, weights: Sequence[float] | None = None, *, concentration: float = 20.0
    ):
        super().__init__(scenario=scenario)
        self._preference = (
            None if weights is None else np.asarray(weights, dtype=float) / float(np.sum(weights))
        )
        self._concentration = concentration

    @property
    def meta(self) -> dict[str, Any]:
        meta = super().meta
        meta["preference"] = None if self._preference is None else self._preference.tolist()
        return meta

    @property
    def weights(self) -> np.ndarray | None:
        """The weights of the current iteration (None before SMAC's first iteration)."""
        return self._theta

    @property
    def rho(self) -> float:
        """Weight of the augmentation term ``rho * sum_i(w_i f_i)`` of the scalarisation."""
        return float(self._rho)

    def update_on_iteration_start(self) -> None:
        if self._preference is None:
            super().update_on_iteration_start()
            return
        self._theta = self._rng.dirichlet(self._preference * self._concentration + 1e-3)
