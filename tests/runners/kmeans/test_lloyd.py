"""``runners.kmeans.lloyd``: k-means++ seeding (through the ``jax_kmeans`` API)."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import make_blobs

from runners.kmeans.jax_kmeans import kmeans_plus_plus, prng_key
from tests.runners.kmeans.conftest import blobs

# -- k-means++ ---------------------------------------------------------------------------------


def test_kmeans_plus_plus_deterministic_distinct_and_seeded() -> None:
    x = blobs(2000, 16, 10, 5)
    first = np.asarray(kmeans_plus_plus(x, 10, prng_key(3)))
    again = np.asarray(kmeans_plus_plus(x, 10, prng_key(3)))
    other = np.asarray(kmeans_plus_plus(x, 10, prng_key(4)))

    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert len(np.unique(first, axis=0)) == 10
    # Every centre is a data point.
    assert all((x == row).all(axis=1).any() for row in first)
    # D² sampling spreads the centres: one per blob on well-separated blobs, for most seeds.
    _, blob = make_blobs(n_samples=2000, n_features=16, centers=10, random_state=5)
    rows = [int(np.flatnonzero((x == row).all(axis=1))[0]) for row in first]
    assert len(set(blob[rows])) >= 8


def test_kmeans_plus_plus_never_repeats_a_point() -> None:
    # Only 4 distinct points: D² sampling must pick each exactly once.
    base = np.eye(4, 3, dtype=np.float32) * 5
    x = np.repeat(base, 50, axis=0)
    centres = np.asarray(kmeans_plus_plus(x, 4, prng_key(0)))
    assert {tuple(r) for r in centres} == {tuple(r) for r in base}
