"""SMAC's random forest as greenshift's search uses it: one thread, no joblib, the depth-first builder."""

from __future__ import annotations

import numpy as np
from smac import Scenario
from smac.model.random_forest import RandomForest


class SerialRandomForest(RandomForest):
    """SMAC's random forest, predicting tree by tree in a plain loop.

    SMAC's forest predicts through a joblib ``Parallel`` call even with ``n_jobs=1``, and
    scikit-learn's task wrapper resets the warning filters for every tree: with 10 trees and the few
    hundred candidates of one local-search step, that bookkeeping cost more than the tree lookups
    (about 15 % of ``ask()`` in bench/search_overhead.py's profile). The loop gives the same numbers
    (tests compare it with SMAC's path). It reads the fitted scikit-learn forest that SMAC keeps in
    ``_rf``; if a SMAC version lays that out differently, SMAC's own prediction is used.
    """

    def _predict(
        self, X: np.ndarray, covariance_type: str | None = "diagonal"
    ) -> tuple[np.ndarray, np.ndarray | None]:
        forest = getattr(self, "_rf", None)
        trees = getattr(forest, "estimators_", None)
        if not trees or covariance_type != "diagonal" or X.ndim != 2 or X.shape[1] != len(self._types):
            return super()._predict(X, covariance_type)
        # The same conversion as SMAC's validation: trees compare float32 features.
        features = np.ascontiguousarray(self._impute_inactive(X), dtype=np.float32)
        if not np.isfinite(features).all():
            return super()._predict(X, covariance_type)  # SMAC's path raises its own error
        per_tree = np.empty((features.shape[0], len(trees)), dtype=np.float64)
        for index, tree in enumerate(trees):
            per_tree[:, index] = tree.predict(features, check_input=False)
        return per_tree.mean(axis=1).reshape(-1, 1), per_tree.var(axis=1).reshape(-1, 1)


def single_thread_forest(scenario: Scenario, *, log_y: bool = True) -> RandomForest:
    """SMAC's default random forest, fitted and queried in one thread.

    Settings that differ from SMAC's, all for speed (bench/search_overhead.py measures it):
    ``n_jobs=1``: SMAC's forest uses all cores through joblib, and with a few trees and a few hundred
    trials the thread start-up and joblib's polling cost more than the work, while the cores train DSNNs;
    ``max_leaf_nodes=None`` instead of 2**20: that limit never binds for a search's few hundred points,
    but it switches scikit-learn to its best-first tree builder, which took 0.9 s per forest fit here
    against 15 ms for the depth-first builder (same trees in distribution); and predictions without
    joblib (:class:`SerialRandomForest`). ``log_y`` says whether the encoder hands it log-scaled costs
    (SMAC's facades for ``smac`` and ``smac-bo``).
    """
    return SerialRandomForest(
        log_y=log_y,
        n_trees=10,
        bootstrapping=True,
        ratio_features=1.0,
        min_samples_split=2,
        min_samples_leaf=1,
        max_depth=2**20,
        max_leaf_nodes=None,
        configspace=scenario.configspace,
        instance_features=scenario.instance_features,
        seed=scenario.seed,
        n_jobs=1,
    )
