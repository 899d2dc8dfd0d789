"""``runners.kmeans.balanced``: the balanced assignment against the exact optimum, and its size
bounds (through the ``jax_kmeans`` API)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from runners.kmeans.jax_kmeans import (
    KMeansConfig,
    balance_bounds,
    balanced_assign,
    capacity_greedy,
    fit,
    scores,
)
from tests.runners.kmeans.conftest import blobs


def exact_balanced_cost(sq_dist: np.ndarray, lower: int, upper: int) -> float:
    """Optimal total over assignments with sizes in [lower, upper] (scipy, exact).

    Each cluster becomes ``upper`` slots; its first ``lower`` slots carry a large bonus, so an
    optimal matching fills them all (possible since k · lower <= n).
    """
    k = sq_dist.shape[1]
    slots = np.concatenate([np.repeat(np.arange(k), lower), np.repeat(np.arange(k), upper - lower)])
    bonus = np.concatenate([np.full(k * lower, -1e9), np.zeros(k * (upper - lower))])
    rows, cols = linear_sum_assignment(sq_dist[:, slots] + bonus)
    return float(sq_dist[rows, slots[cols]].sum())


@pytest.mark.parametrize(("seed", "k"), [(9, 3), (9, 5), (10, 5), (11, 8)])
def test_balanced_assign_close_to_exact_optimum(seed: int, k: int) -> None:
    # The assignment step alone, for the unconstrained centres (the hardest start).
    x = blobs([420, 120, 60], 8, None, seed)
    centres = fit(x, KMeansConfig(k=k, seed=1)).centres
    lower, upper = balance_bounds(len(x), k, 0.1)
    sq_dist = ((x[:, None, :].astype(np.float64) - centres[None].astype(np.float64)) ** 2).sum(-1)
    point_scores = scores(jnp.asarray(x), jnp.asarray(centres))

    labels = np.asarray(balanced_assign(point_scores, lower, upper))
    sizes = np.bincount(labels, minlength=k)
    assert lower <= sizes.min() and sizes.max() <= upper
    optimum = exact_balanced_cost(sq_dist, lower, upper)
    ours = sq_dist[np.arange(len(x)), labels].sum()
    greedy = sq_dist[np.arange(len(x)), np.asarray(capacity_greedy(point_scores, lower, upper))]
    assert optimum <= ours <= 1.05 * optimum
    assert ours < greedy.sum()  # the prices earn their keep


def test_balance_bounds_exact_decimal() -> None:
    assert balance_bounds(1000, 5, 0.1) == (180, 220)
    assert balance_bounds(1001, 4, 0.0) == (250, 251)
    assert balance_bounds(10, 3, 2.0) == (0, 10)
