"""Pareto maths on objective vectors: dominance, hypervolume, normalisation, knee, reference points.

Every function takes a 2-D array-like of *points*: one row per configuration, one column per
objective, and **all objectives are minimised**. The heavy lifting is done by ``moocore``; the
functions here add input checks, the empty and single-objective cases, and the conventions greenshift
relies on:

* **Duplicates.** Identical points are *all* kept as non-dominated (two configurations with the same
  objective values are equally good, and the report must list both trials).
* **Reference point.** :func:`reference_point_for` fixes one reference point per problem so that
  hypervolumes of different optimisers on the same data set and backbone are comparable:
  ``loss`` (the top-1 error, in [0, 1]) uses 1.0, its worst possible value; every other objective
  (``energy_model_j``, ``latency_ms``, ``size_bits``, ...) uses ``margin`` (default 1.1) times the
  value of the baseline model given by the caller, normally the default DSNN configuration. The
  modelled energy of a configuration does not depend on training, so this baseline is the same for
  every run on the same problem.
* **Knee.** :func:`knee_point` normalises the front to [0, 1] per objective and returns the point with
  the smallest sum of normalised objectives. In two dimensions that is exactly the point farthest
  (on the convex side) from the line through the two extreme points of the front.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from greenshift.errors import ConfigError

# Objectives that are error rates in [0, 1]: their worst possible value is a problem-independent bound.
BOUNDED_OBJECTIVES: dict[str, float] = {"loss": 1.0}
DEFAULT_REFERENCE_MARGIN = 1.1


def as_points(points: npt.ArrayLike, *, n_objectives: int | None = None) -> np.ndarray:
    """Return ``points`` as a finite float array of shape ``(n, m)``; an empty input gives ``(0, m)``.

    A 1-D input is read as a single point. Raises :class:`ConfigError` for NaN/inf values or a
    column count other than ``n_objectives`` (when given).
    """
    array = np.asarray(points, dtype=float)
    if array.ndim == 1:
        # A bare vector is one point; an empty vector is no points at all.
        array = array.reshape(0, n_objectives or 0) if array.size == 0 else array.reshape(1, -1)
    if array.ndim != 2:
        raise ConfigError(
            f"points must be a 2-D array (rows = points, columns = objectives), got {array.ndim}-D"
        )
    if array.shape[0] == 0 and n_objectives is not None:
        array = array.reshape(0, n_objectives)
    if n_objectives is not None and array.shape[1] != n_objectives:
        raise ConfigError(f"points have {array.shape[1]} objectives, expected {n_objectives}")
    if not np.all(np.isfinite(array)):
        raise ConfigError("points contain NaN or infinite objective values")
    return array


def non_dominated_mask(points: npt.ArrayLike) -> np.ndarray:
    """Boolean mask of the points no other point dominates (all objectives minimised).

    ``a`` dominates ``b`` when ``a <= b`` in every objective and ``a < b`` in at least one. Duplicates
    of a non-dominated point are all ``True``.
    """
    array = as_points(points)
    if array.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    if array.shape[1] == 1:
        # moocore's single-objective path drops duplicates; with one objective the minimum is the front.
        return array[:, 0] == array[:, 0].min()
    import moocore

    return np.asarray(moocore.is_nondominated(array, keep_weakly=True), dtype=bool)


def pareto_front_indices(points: npt.ArrayLike) -> np.ndarray:
    """Indices of the non-dominated points, sorted by the first objective, then the next ones, then index."""
    array = as_points(points)
    indices = np.flatnonzero(non_dominated_mask(array))
    if indices.size == 0:
        return indices
    # np.lexsort sorts by its last key first: index is the last tie-breaker.
    keys = (indices, *(array[indices, j] for j in reversed(range(array.shape[1]))))
    return indices[np.lexsort(keys)]


def hypervolume(points: npt.ArrayLike, reference_point: npt.ArrayLike) -> float:
    """Volume dominated by ``points`` and bounded by ``reference_point`` (minimisation).

    Points that do not strictly dominate the reference point in every objective contribute nothing
    and are ignored; no points (or none inside) gives 0.0.
    """
    ref = np.asarray(reference_point, dtype=float).reshape(-1)
    if not np.all(np.isfinite(ref)):
        raise ConfigError("the reference point must be finite")
    array = as_points(points, n_objectives=ref.size)
    inside = array[np.all(array < ref, axis=1)]
    if inside.shape[0] == 0:
        return 0.0
    if ref.size == 1:
        return float(ref[0] - inside[:, 0].min())
    import moocore

    return float(moocore.hypervolume(inside, ref=ref))


def normalize(
    points: npt.ArrayLike, lower: npt.ArrayLike | None = None, upper: npt.ArrayLike | None = None
) -> np.ndarray:
    """Map each objective linearly so that ``lower`` becomes 0 and ``upper`` becomes 1.

    ``lower``/``upper`` default to the column minimum/maximum of ``points``. Points outside the bounds
    map outside [0, 1] (no clipping, so dominance is preserved). An objective with ``upper == lower``
    maps to 0.
    """
    array = as_points(points)
    if array.shape[0] == 0:
        return array.copy()
    low = (
        array.min(axis=0)
        if lower is None
        else np.broadcast_to(np.asarray(lower, dtype=float), array.shape[1:])
    )
    high = (
        array.max(axis=0)
        if upper is None
        else np.broadcast_to(np.asarray(upper, dtype=float), array.shape[1:])
    )
    if np.any(high < low):
        raise ConfigError("normalize: upper bound below lower bound")
    span = high - low
    # A constant objective carries no information: send it to 0 instead of dividing by zero.
    safe = np.where(span > 0, span, 1.0)
    return np.where(span > 0, (array - low) / safe, 0.0)


def reference_point_for(
    objective_names: Sequence[str],
    baseline: Mapping[str, float] | None = None,
    *,
    margin: float = DEFAULT_REFERENCE_MARGIN,
) -> np.ndarray:
    """The fixed hypervolume reference point of a problem, in the order of ``objective_names``.

    ``loss`` gets 1.0 (the worst possible error). Every other objective gets ``margin`` times its value
    in ``baseline`` — the objectives of the default (or all-float) configuration on the same data set
    and backbone. Raises :class:`ConfigError` when a needed baseline value is missing or not positive.
    """
    if not objective_names:
        raise ConfigError("reference_point_for needs at least one objective name")
    if not (math.isfinite(margin) and margin >= 1.0):
        raise ConfigError(f"reference point margin must be a finite number >= 1, got {margin!r}")
    values = []
    for name in objective_names:
        if name in BOUNDED_OBJECTIVES:
            values.append(BOUNDED_OBJECTIVES[name])
            continue
        base = None if baseline is None else baseline.get(name)
        if base is None or not math.isfinite(float(base)) or float(base) <= 0:
            raise ConfigError(
                f"no usable baseline value of {name!r} for the reference point (got {base!r}); "
                "give the objectives of the default configuration or an explicit reference point"
            )
        values.append(margin * float(base))
    return np.asarray(values, dtype=float)


def knee_point(points: npt.ArrayLike) -> int:
    """Index (into ``points``) of the knee of the Pareto front of ``points``.

    The front is normalised to [0, 1] per objective (its own minimum and maximum) and the knee is
    the front point with the smallest sum of normalised objectives; ties go to the lower first
    objective, then the lower index. Raises :class:`ConfigError` for no points.
    """
    array = as_points(points)
    if array.shape[0] == 0:
        raise ConfigError("knee_point needs at least one point")
    front = pareto_front_indices(array)
    scores = normalize(array[front]).sum(axis=1)
    # Rounding keeps floating-point noise from breaking exact ties.
    order = np.lexsort((front, array[front, 0], np.round(scores, 12)))
    return int(front[order[0]])
