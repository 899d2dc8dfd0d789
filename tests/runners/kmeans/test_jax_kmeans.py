"""JAX K-Means (runners/kmeans/jax_kmeans.py): agreement with scikit-learn and its contracts.

Float32 data throughout (the module computes in float32); scikit-learn runs on the same float32
array, so both sides see identical inputs.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from runners.kmeans.jax_kmeans import (
    KMeansConfig,
    KMeansModel,
    absolute_tol,
    balance_bounds,
    fit,
    fit_predict,
    lloyd,
    predict,
)
from tests.conftest import REPO
from tests.runners.kmeans.conftest import blobs


def given_centres(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return x[rng.choice(x.shape[0], k, replace=False)].copy()


def sklearn_lloyd(x: np.ndarray, init: np.ndarray, max_iter: int, tol: float) -> KMeans:
    k = init.shape[0]
    return KMeans(
        n_clusters=k, init=init, n_init=1, algorithm="lloyd", max_iter=max_iter, tol=tol
    ).fit(x)


# -- full Lloyd against scikit-learn -----------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "n_blobs", "seed", "tol"),
    [
        (5, 5, 0, 1e-4),  # one centre per blob
        (20, 20, 1, 1e-4),
        (5, 8, 2, 0.0),  # fewer centres than blobs: boundaries inside blobs, tol 0
        (20, 5, 3, 1e-4),  # more centres than blobs: many points near boundaries
    ],
)
def test_lloyd_matches_sklearn(k: int, n_blobs: int, seed: int, tol: float) -> None:
    x = blobs(2000, 16, n_blobs, seed)
    init = given_centres(x, k, seed)
    sk = sklearn_lloyd(x, init, max_iter=300, tol=tol)
    config = KMeansConfig(k=k, init="given", max_iter=300, tol=tol)
    model, labels, _ = fit_predict(x, config, centres=init)

    assert np.array_equal(labels, sk.labels_)
    assert abs(model.inertia - sk.inertia_) <= 1e-4 * sk.inertia_
    assert model.n_iter == sk.n_iter_
    np.testing.assert_allclose(model.centres, sk.cluster_centers_, rtol=0, atol=1e-4)

    # The jitted lloyd() on its own (uncentred data, absolute tolerance) agrees too.
    result = lloyd(jnp.asarray(x), jnp.asarray(init), 300, absolute_tol(x, tol))
    assert int(result.n_iter) == sk.n_iter_
    assert np.array_equal(np.asarray(result.labels), sk.labels_)
    assert abs(float(result.inertia) - sk.inertia_) <= 1e-4 * sk.inertia_


def test_max_iter_limit_matches_sklearn() -> None:
    # Stopped by the iteration limit, not convergence: the final E-step still matches.
    x = blobs(2000, 16, 8, 4, std=3.0)
    init = given_centres(x, 12, 4)
    sk = sklearn_lloyd(x, init, max_iter=3, tol=0.0)
    model, labels, _ = fit_predict(
        x, KMeansConfig(k=12, init="given", max_iter=3, tol=0.0), centres=init
    )
    assert model.n_iter == sk.n_iter_ == 3
    assert np.array_equal(labels, sk.labels_)
    assert abs(model.inertia - sk.inertia_) <= 1e-4 * sk.inertia_


# -- empty clusters ----------------------------------------------------------------------------


def test_single_empty_cluster_reseeded_like_sklearn() -> None:
    x = blobs(2000, 16, 5, 6)
    init = given_centres(x, 5, 6)
    init[2] = 1000.0  # far from every point: empty on the first iteration
    sk = sklearn_lloyd(x, init, max_iter=300, tol=1e-4)
    model, labels, _ = fit_predict(x, KMeansConfig(k=5, init="given"), centres=init)

    assert np.isfinite(model.centres).all()
    assert np.bincount(labels, minlength=5).min() > 0
    # One empty cluster takes the single farthest point, exactly as scikit-learn does.
    assert np.array_equal(labels, sk.labels_)
    assert abs(model.inertia - sk.inertia_) <= 1e-4 * sk.inertia_


def test_several_empty_clusters_end_non_empty_and_finite() -> None:
    x = blobs(2000, 16, 6, 7)
    init = given_centres(x, 6, 7)
    init[1] = init[0]  # duplicates: argmin gives their points to the first copy
    init[2] = init[0]
    init[5] = -500.0
    # One iteration: the three empty clusters are re-seeded at once, with no NaN.
    one = lloyd(jnp.asarray(x), jnp.asarray(init), 1, 0.0)
    assert int(one.n_iter) == 1
    assert np.isfinite(np.asarray(one.centres)).all()
    assert not np.allclose(np.asarray(one.centres)[5], -500.0)

    model, labels, _ = fit_predict(x, KMeansConfig(k=6, init="given"), centres=init)
    assert np.isfinite(model.centres).all()
    assert len(np.unique(model.centres, axis=0)) == 6
    assert np.bincount(labels, minlength=6).min() > 0


# -- mini-batch --------------------------------------------------------------------------------


def test_minibatch_close_to_full_lloyd() -> None:
    x = blobs(20_000, 16, 8, 8)
    full = fit(x, KMeansConfig(k=8, seed=0))
    mini = fit(x, KMeansConfig(k=8, seed=0, mode="minibatch", batch_size=256))
    assert mini.inertia <= 1.03 * full.inertia
    assert np.isfinite(mini.centres).all()
    # It stopped on the smoothed-inertia rule well before max_iter epochs of steps.
    assert mini.n_iter < 100 * 20_000 // 256
    again = fit(x, KMeansConfig(k=8, seed=0, mode="minibatch", batch_size=256))
    assert np.array_equal(again.centres, mini.centres)


# -- balanced ----------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [3, 5])
def test_balanced_sizes_within_tolerance_on_skewed_blobs(k: int) -> None:
    x = blobs([2100, 600, 300], 8, None, 9)  # 70% / 20% / 10%
    n = x.shape[0]
    plain = fit(x, KMeansConfig(k=k, seed=1))
    model, labels, dist = fit_predict(x, KMeansConfig(k=k, seed=1, balanced=True))

    sizes = np.bincount(labels, minlength=k)
    lower, upper = balance_bounds(n, k, 0.1)
    assert lower <= sizes.min() and sizes.max() <= upper
    assert np.all(np.abs(sizes - n / k) <= 0.1 * n / k + 1)
    # Inertia: worse than unconstrained (the constraint costs), far better than chance.
    parts = np.array_split(np.random.default_rng(0).permutation(n), k)
    random_balanced = sum(((x[p] - x[p].mean(axis=0)) ** 2).sum() for p in parts)
    assert plain.inertia <= model.inertia < 0.5 * random_balanced
    np.testing.assert_allclose(
        dist, ((x - model.centres[labels]) ** 2).sum(axis=1), rtol=1e-4, atol=1e-3
    )

    # Balanced predict on new points honours the same bounds.
    new = blobs([700, 200, 100], 8, None, 9)
    new_labels, _ = predict(model, new, balanced=True)
    new_sizes = np.bincount(new_labels, minlength=k)
    lo, hi = balance_bounds(len(new), k, 0.1)
    assert lo <= new_sizes.min() and new_sizes.max() <= hi


def test_balanced_zero_tolerance_gives_equal_sizes() -> None:
    x = blobs([700, 200, 101], 4, None, 10)
    _, labels, _ = fit_predict(x, KMeansConfig(k=4, seed=0, balanced=True, balance_tolerance=0))
    assert sorted(np.bincount(labels, minlength=4)) == [250, 250, 250, 251]


# -- predict, determinism, pickling, validation -------------------------------------------------


def test_predict_matches_fit_labels_and_distances() -> None:
    x = blobs(3000, 16, 6, 11)
    model, labels, dist = fit_predict(x, KMeansConfig(k=6, seed=2))
    pred_labels, pred_dist = predict(model, x)

    assert pred_labels.dtype == np.int32 and pred_dist.dtype == np.float32
    assert np.array_equal(pred_labels, labels)
    # fit's final E-step works on the centred data, predict shifts by the centres' mean: the
    # same distances up to float32 rounding.
    np.testing.assert_allclose(pred_dist, dist, rtol=2e-6, atol=1e-6)
    x64, c64 = x.astype(np.float64), model.centres.astype(np.float64)
    all_dist = ((x64[:, None, :] - c64[None, :, :]) ** 2).sum(axis=2)
    assert np.array_equal(pred_labels, all_dist.argmin(axis=1))
    np.testing.assert_allclose(pred_dist, all_dist.min(axis=1), rtol=1e-5, atol=1e-4)
    assert abs(model.inertia - all_dist.min(axis=1).sum()) <= 1e-5 * model.inertia
    # Any batch size (padded blocks) gives the same answers.
    for lo, hi in [(0, 1), (5, 300), (100, 3000)]:
        part_labels, part_dist = predict(model, x[lo:hi])
        assert np.array_equal(part_labels, pred_labels[lo:hi])
        assert np.array_equal(part_dist, pred_dist[lo:hi])


def test_model_pickles_and_predicts_the_same() -> None:
    x = blobs(1000, 8, 4, 12)
    model = fit(x, KMeansConfig(k=4, seed=3))
    back = pickle.loads(pickle.dumps(model))
    assert isinstance(back, KMeansModel)
    assert back.config == model.config and back.inertia == model.inertia
    assert back.centres.dtype == np.float32 and np.array_equal(back.centres, model.centres)
    assert np.array_equal(predict(back, x)[0], predict(model, x)[0])


DETERMINISM_SCRIPT = """
import hashlib
import numpy as np
from sklearn.datasets import make_blobs
from runners.kmeans.jax_kmeans import KMeansConfig, fit
x = make_blobs(n_samples=3000, n_features=16, centers=7, random_state=13)[0].astype(np.float32)
for mode in ("full", "minibatch"):
    model = fit(x, KMeansConfig(k=7, seed=5, mode=mode, batch_size=512))
    print(mode, hashlib.sha256(model.centres.tobytes()).hexdigest(), model.n_iter)
"""


def test_same_model_on_every_call_and_process() -> None:
    x = make_blobs(n_samples=3000, n_features=16, centers=7, random_state=13)[0]
    x = x.astype(np.float32)
    lines = []
    for mode in ("full", "minibatch"):
        config = KMeansConfig(k=7, seed=5, mode=mode, batch_size=512)
        model = fit(x, config)
        again = fit(x, config)
        assert np.array_equal(model.centres, again.centres) and model.n_iter == again.n_iter
        digest = hashlib.sha256(model.centres.tobytes()).hexdigest()
        lines.append(f"{mode} {digest} {model.n_iter}")
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": jax.default_backend()}
    out = subprocess.run(
        [sys.executable, "-c", DETERMINISM_SCRIPT],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split("\n")
    assert [line for line in out if line] == lines


def test_config_and_input_validation() -> None:
    x = blobs(100, 4, 3, 14)
    for bad in [
        {"k": 0},
        {"k": 3, "mode": "elkan"},
        {"k": 3, "init": "random"},
        {"k": 3, "tol": -1.0},
        {"k": 3, "balance_tolerance": -0.1},
    ]:
        with pytest.raises(ValueError):
            KMeansConfig(**bad)
    with pytest.raises(ValueError, match="needs the initial centres"):
        fit(x, KMeansConfig(k=3, init="given"))
    with pytest.raises(ValueError, match="shape"):
        fit(x, KMeansConfig(k=3, init="given"), centres=x[:2])
    with pytest.raises(ValueError, match=">= k"):
        fit(x[:2], KMeansConfig(k=3))
    bad_x = x.copy()
    bad_x[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit(bad_x, KMeansConfig(k=3))
    model = fit(x, KMeansConfig(k=3))
    with pytest.raises(ValueError, match="features"):
        predict(model, x[:, :3])
