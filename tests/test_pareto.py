"""Pareto maths against hand-made point sets and brute-force references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from greenshift.errors import ConfigError
from greenshift.objectives.pareto import (
    hypervolume,
    knee_point,
    non_dominated_mask,
    normalize,
    pareto_front_indices,
    reference_point_for,
)

# ---------------------------------------------------------------- brute-force references


def brute_mask(points: np.ndarray) -> np.ndarray:
    """O(n²) dominance check: a point is kept unless another is <= everywhere and < somewhere."""
    keep = np.ones(len(points), dtype=bool)
    for i, p in enumerate(points):
        for j, q in enumerate(points):
            if i != j and np.all(q <= p) and np.any(q < p):
                keep[i] = False
    return keep


def brute_hv_2d(points: np.ndarray, ref: np.ndarray) -> float:
    """Sweep along the first objective, adding one rectangle per improvement of the second."""
    inside = sorted(tuple(p) for p in points if np.all(p < ref))
    total, best_y = 0.0, ref[1]
    for x, y in inside:
        if y < best_y:
            total += (ref[0] - x) * (best_y - y)
            best_y = y
    return total


def brute_hv_inclusion_exclusion(points: np.ndarray, ref: np.ndarray) -> float:
    """Union of boxes [p, ref] by inclusion-exclusion (any dimension, small sets only)."""
    inside = [p for p in points if np.all(p < ref)]
    total = 0.0
    for k in range(1, len(inside) + 1):
        for subset in itertools.combinations(inside, k):
            corner = np.max(subset, axis=0)
            total += (-1) ** (k + 1) * float(np.prod(ref - corner))
    return total


def int_points(dims: int, max_size: int) -> st.SearchStrategy[np.ndarray]:
    """Small integer grids make ties and duplicates common, the cases implementations get wrong."""
    return st.lists(
        st.lists(st.integers(0, 6), min_size=dims, max_size=dims), min_size=0, max_size=max_size
    ).map(lambda rows: np.asarray(rows, dtype=float).reshape(-1, dims))


# ---------------------------------------------------------------- dominance


def test_mask_on_hand_made_set() -> None:
    points = [[1, 5], [2, 2], [5, 1], [3, 3], [2, 6], [6, 6]]
    assert non_dominated_mask(points).tolist() == [True, True, True, False, False, False]


def test_duplicates_are_all_kept() -> None:
    points = [[1, 2], [1, 2], [2, 1], [3, 3]]
    assert non_dominated_mask(points).tolist() == [True, True, True, False]
    assert pareto_front_indices(points).tolist() == [0, 1, 2]


def test_weakly_dominated_point_is_dropped() -> None:
    # Equal in one objective and worse in the other is dominated.
    assert non_dominated_mask([[1, 1], [1, 2]]).tolist() == [True, False]


def test_single_objective_keeps_all_minima() -> None:
    assert non_dominated_mask([[0.5], [0.2], [0.2]]).tolist() == [False, True, True]


def test_empty_and_invalid_inputs() -> None:
    assert non_dominated_mask(np.empty((0, 2))).shape == (0,)
    assert pareto_front_indices(np.empty((0, 3))).shape == (0,)
    with pytest.raises(ConfigError, match="NaN"):
        non_dominated_mask([[1.0, float("nan")]])
    with pytest.raises(ConfigError, match="2-D"):
        non_dominated_mask(np.zeros((2, 2, 2)))


def test_front_indices_sorted_by_first_objective() -> None:
    points = [[5, 1], [1, 5], [9, 9], [2, 2]]
    assert pareto_front_indices(points).tolist() == [1, 3, 0]


@given(int_points(2, 25))
def test_mask_matches_brute_force_2d(points: np.ndarray) -> None:
    assert non_dominated_mask(points).tolist() == brute_mask(points).tolist()


@given(int_points(3, 25))
def test_mask_matches_brute_force_3d(points: np.ndarray) -> None:
    assert non_dominated_mask(points).tolist() == brute_mask(points).tolist()


# ---------------------------------------------------------------- hypervolume


def test_hypervolume_hand_made_2d() -> None:
    # Staircase (1,3), (2,2), (3,1) under ref (4,4): rows of width 3, 2, 1 and height 1.
    assert hypervolume([[1, 3], [2, 2], [3, 1]], [4, 4]) == pytest.approx(6.0)


def test_hypervolume_hand_made_3d() -> None:
    # Boxes of volume 4 each (2x2x1 and 2x1x2) overlapping in a 2x1x1 box: 4 + 4 - 2.
    points = [[0, 0, 1], [0, 1, 0]]
    assert hypervolume(points, [2, 2, 2]) == pytest.approx(6.0)
    assert hypervolume(points, [2, 2, 2]) == pytest.approx(
        brute_hv_inclusion_exclusion(np.array(points), np.full(3, 2.0))
    )


def test_hypervolume_ignores_points_outside_reference() -> None:
    ref = [1.0, 1.0]
    assert hypervolume([[0.5, 0.5], [2.0, 0.0], [1.0, 0.1]], ref) == pytest.approx(0.25)
    assert hypervolume([[2.0, 2.0]], ref) == 0.0
    assert hypervolume(np.empty((0, 2)), ref) == 0.0
    assert hypervolume([], ref) == 0.0


def test_hypervolume_one_objective() -> None:
    assert hypervolume([[0.3], [0.6]], [1.0]) == pytest.approx(0.7)


def test_hypervolume_shape_mismatch() -> None:
    with pytest.raises(ConfigError, match="expected 3"):
        hypervolume([[0.1, 0.2]], [1, 1, 1])


@given(int_points(2, 30))
def test_hypervolume_matches_sweep_2d(points: np.ndarray) -> None:
    ref = np.array([5.0, 5.5])
    assert hypervolume(points, ref) == pytest.approx(brute_hv_2d(points, ref), abs=1e-9)


@given(int_points(2, 8))
def test_hypervolume_matches_inclusion_exclusion_2d(points: np.ndarray) -> None:
    ref = np.array([6.0, 5.0])
    assert hypervolume(points, ref) == pytest.approx(brute_hv_inclusion_exclusion(points, ref), abs=1e-9)


@given(int_points(3, 8))
def test_hypervolume_matches_inclusion_exclusion_3d(points: np.ndarray) -> None:
    ref = np.array([6.0, 5.0, 7.0])
    assert hypervolume(points, ref) == pytest.approx(brute_hv_inclusion_exclusion(points, ref), abs=1e-9)


@given(int_points(3, 12))
def test_hypervolume_matches_grid_3d(points: np.ndarray) -> None:
    # On an integer grid the volume is the number of dominated unit cells.
    ref = np.array([6.0, 6.0, 6.0])
    cells = np.stack(np.meshgrid(*[np.arange(6.0)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    dominated = np.zeros(len(cells), dtype=bool)
    for p in points:
        dominated |= np.all(cells >= p, axis=1)
    assert hypervolume(points, ref) == pytest.approx(float(dominated.sum()))


# ---------------------------------------------------------------- normalise, reference point, knee


def test_normalize_explicit_and_default_bounds() -> None:
    points = np.array([[1.0, 10.0], [3.0, 30.0]])
    np.testing.assert_allclose(normalize(points, [1, 10], [5, 50]), [[0, 0], [0.5, 0.5]])
    np.testing.assert_allclose(normalize(points), [[0, 0], [1, 1]])
    # A constant objective maps to 0 instead of NaN.
    np.testing.assert_allclose(normalize([[1.0, 2.0], [3.0, 2.0]]), [[0, 0], [1, 0]])
    with pytest.raises(ConfigError, match="upper bound"):
        normalize(points, [1, 1], [0, 0])


def test_reference_point_rule() -> None:
    ref = reference_point_for(["loss", "energy_model_j"], {"loss": 0.08, "energy_model_j": 2.0})
    np.testing.assert_allclose(ref, [1.0, 2.2])
    ref = reference_point_for(
        ["energy_model_j", "loss", "size_bits"], {"energy_model_j": 1.0, "size_bits": 100}, margin=1.5
    )
    np.testing.assert_allclose(ref, [1.5, 1.0, 150.0])
    assert reference_point_for(["loss"]).tolist() == [1.0]


def test_reference_point_errors() -> None:
    with pytest.raises(ConfigError, match="energy_model_j"):
        reference_point_for(["loss", "energy_model_j"])
    with pytest.raises(ConfigError, match="energy_model_j"):
        reference_point_for(["loss", "energy_model_j"], {"energy_model_j": 0.0})
    with pytest.raises(ConfigError, match="margin"):
        reference_point_for(["loss"], margin=0.5)
    with pytest.raises(ConfigError):
        reference_point_for([])


def test_knee_on_hand_made_front() -> None:
    # A sharp elbow at (0.1, 0.1); the extremes and the dominated point must not win.
    points = [[0.0, 1.0], [0.1, 0.1], [0.5, 0.05], [1.0, 0.0], [0.6, 0.6]]
    assert knee_point(points) == 1


def test_knee_is_farthest_from_line_through_extremes_2d() -> None:
    rng = np.random.default_rng(3)
    x = np.sort(rng.uniform(0, 1, 12))
    points = np.column_stack([x, (1 - x) ** 3])  # convex front
    knee = knee_point(points)
    norm = normalize(points)
    # Distance to the line x + y = 1 through the normalised extremes (0, 1) and (1, 0).
    distance = (1 - norm.sum(axis=1)) / np.sqrt(2)
    assert knee == int(np.argmax(distance))


def test_knee_edge_cases() -> None:
    assert knee_point([[3.0, 4.0]]) == 0
    assert knee_point([[5.0, 5.0], [1.0, 1.0]]) == 1  # single front point
    # Symmetric tie: the lower first objective wins.
    assert knee_point([[1.0, 0.0], [0.0, 1.0]]) == 1
    with pytest.raises(ConfigError):
        knee_point(np.empty((0, 2)))


@given(int_points(3, 15).filter(lambda p: len(p) > 0))
def test_knee_is_on_the_front(points: np.ndarray) -> None:
    assert brute_mask(points)[knee_point(points)]
