"""Pure JAX K-Means: k-means++ seeding, Lloyd, mini-batch and balanced modes.

What it computes
----------------
K-Means partitions n points of dimension d into k clusters so as to minimise the *inertia*, the
sum over points of the squared Euclidean distance to the centre of their cluster. :func:`fit`
(and :func:`fit_predict`, which also returns the training labels) runs:

1. Seeding. ``init="k-means++"``: standard k-means++ (:func:`kmeans_plus_plus`): the first
   centre uniformly at random, each next one drawn with probability proportional to D², the
   squared distance to the nearest centre chosen so far (one draw per centre; scikit-learn's
   "greedy" variant draws 2 + log k candidates and keeps the best, this one does not).
   ``init="given"``: the centres passed to :func:`fit`.
2. ``mode="full"``: Lloyd iterations (:func:`lloyd`): assign every point to its nearest centre,
   move every centre to the mean of its points, until the labels stop changing, the summed
   squared centre shift is at most the tolerance, or ``max_iter``. The stopping rules, the final
   E-step and the re-seeding of empty clusters follow scikit-learn's
   ``KMeans(algorithm="lloyd")``, so from the same initial centres both give the same labels.
   ``mode="minibatch"``: Sculley (2010) mini-batch K-Means (:func:`minibatch`), as scikit-learn's
   ``MiniBatchKMeans``: each step draws ``batch_size`` points (with replacement), assigns them,
   and moves each centre towards the mean of its batch points with learning rate
   (batch count / total count seen by that centre); centres that have seen under 1% of the
   largest count are moved to batch points; it stops after ``max_iter`` epochs
   (``max_iter · n / batch_size`` steps) or when the smoothed batch inertia has not improved for
   10 steps. Seeding runs on a sample of ``3 · batch_size`` points. For samples too large for
   full passes.
3. ``balanced=True`` (either mode): starting from the centres of step 2, Lloyd iterations whose
   assignment is capacity constrained (:func:`balanced_assign`), the role the old system's
   auction assignment played: per-cluster prices added to the distances (found by Sinkhorn
   iterations on the dual of the constrained assignment) make the nearest-centre assignment
   nearly balanced, then a greedy placement in order of regret enforces the bounds. Within a
   few percent of the optimal assignment (see :func:`balanced_assign`).
   **Achieved tolerance**: every cluster size lies in
   ``[floor(n/k · (1 - t)), ceil(n/k · (1 + t))]``, ``t = balance_tolerance`` (default 0.1,
   i.e. within ±10% of n/k, up to rounding to whole points). This holds *exactly*, by
   construction, for every result, not approximately. ``t = 0`` gives sizes floor or ceil of n/k.

:func:`predict` returns, for new points, the nearest centre and the squared distance to it
(with ``balanced=True``: the capacity-constrained assignment of the whole batch instead).

Tolerance: ``KMeansConfig.tol`` is relative, as scikit-learn's: the absolute threshold on the
sum of squared centre shifts is ``tol · mean_j Var(x[:, j])`` (the mean per-feature variance of
the data, as scikit-learn's ``_tolerance``); ``tol=0`` stops only on unchanged labels or
``max_iter``.

How to run
----------
::

    import numpy as np
    from runners.kmeans import KMeansConfig, fit, fit_predict, predict

    x = np.random.default_rng(0).normal(size=(10_000, 64)).astype(np.float32)
    model = fit(x, KMeansConfig(k=100, seed=1))             # pickles; send it through Ray/Beam
    labels, sq_dist = predict(model, x[:10])
    model, labels, sq_dist = fit_predict(x, KMeansConfig(k=8, balanced=True))

Tests: ``.venv/bin/python -m pytest tests/runners/kmeans/`` (``test_jax_kmeans.py``,
``test_lloyd.py`` and ``test_balanced.py`` compare with scikit-learn).
Speed against scikit-learn: ``.venv/bin/python benchmarks/kmeans_speed.py``.

Layout
------
This module is the numpy-facing API (config, model, :func:`fit`, :func:`predict`) and
re-exports the JAX maths behind it: :mod:`runners.kmeans.lloyd` (scoring, k-means++, Lloyd,
mini-batch) and :mod:`runners.kmeans.balanced` (the capacity-constrained assignment).
``KMeansConfig`` and ``KMeansModel`` stay defined here because pickles name their module:
models persisted by the service (``model_dir``) and the local backend load by this path.

Numerics
--------
Everything is float32 (JAX's default; this module does not turn on ``jax_enable_x64``, which is
process-wide and would change every other JAX user in the process). float32 suffices because:
the data are centred (their mean subtracted) before fitting, as scikit-learn does, so
``||x||² - 2x·c + ||c||²`` does not cancel large terms; the argmin uses ``||c||² - 2x·c`` (the
row constant ``||x||²`` dropped); reported distances are computed directly as
``sum((x - c)²)``; matrix products request ``Precision.HIGHEST`` (on GPUs JAX would otherwise
use TF32 for float32 products); the inertia is summed in float64 by numpy. Against scikit-learn
on the same float32 data and initial centres the labels, iteration counts and inertia (to
1e-6) agree on separated blobs (the tests). A label can differ only for a point whose two
nearest centres are equidistant to within float32 rounding (the two libraries sum in different
orders); on data with many such boundary points, tens of iterations amplify it: on the
benchmark's overlapping unit-norm blobs (100,000 x 128, 30 iterations) 0.6% of the labels
differed at k = 10 and none at k = 100, with inertias within 1e-5. float64 would narrow this
but not remove it, at twice the memory and time.

Memory and cost: the Lloyd pass works through the data in blocks of at most 4096 rows (a
``lax.scan``), so it holds the data plus O(block · k). A balanced assignment holds the full
(n, k) score matrix and costs ~120 softmax passes over it plus a sequential O(n · k) scan:
~2 s at n = 100,000, k = 100 on 2 cores, per balanced iteration. Use it on samples.

Determinism: same data and config give the bit-identical model on every call and process (for
a given JAX version and machine type): the seed makes a threefry PRNG key, batches and k-means++
draws come from ``fold_in``/``split`` of it, and no step has a run-dependent summation order
(cluster sums: a sequential scatter-add on CPU, one-hot matrix products on accelerators, where
scatter-adds use atomics).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from runners.kmeans.balanced import (
    BALANCE_OVERRELAX,
    BALANCE_PRICE_ITERS,
    BALANCE_PRICE_STAGES,
    balance_bounds,
    balance_prices,
    balanced_assign,
    balanced_block,
    balanced_lloyd,
    capacity_greedy,
)
from runners.kmeans.lloyd import (
    MAX_NO_IMPROVEMENT,
    MIN_BLOCK_ROWS,
    REASSIGNMENT_RATIO,
    Array,
    LloydResult,
    MiniBatchResult,
    assign_chunk,
    block_rows,
    cluster_sums,
    kmeans_plus_plus,
    lloyd,
    lloyd_blocked,
    minibatch,
    nearest,
    nearest_in_columns,
    pow2_floor,
    scores,
    sq_distances_to,
)

__all__ = [
    "BALANCE_OVERRELAX",
    "BALANCE_PRICE_ITERS",
    "BALANCE_PRICE_STAGES",
    "INITS",
    "MAX_NO_IMPROVEMENT",
    "MODES",
    "REASSIGNMENT_RATIO",
    "Array",
    "KMeansConfig",
    "KMeansModel",
    "LloydResult",
    "MiniBatchResult",
    "absolute_tol",
    "balance_bounds",
    "balance_prices",
    "balanced_assign",
    "balanced_lloyd",
    "block_rows",
    "capacity_greedy",
    "cluster_sums",
    "fit",
    "fit_predict",
    "kmeans_plus_plus",
    "lloyd",
    "minibatch",
    "nearest",
    "nearest_in_columns",
    "padded_rows",
    "predict",
    "prng_key",
    "scores",
    "sq_distances_to",
]

# predict() copies rows into one reused, aligned buffer of ~8 MiB (2**21 floats) per chunk:
# fresh memory for every chunk cost more in page faults than the arithmetic.
_PREDICT_CHUNK_ELEMENTS = 1 << 21
# fit_predict pads small fits to at least _BUCKET_MIN_ROWS rows and fits up to _BUCKET_MAX_ROWS
# points to a power of two (see padded_rows).
_BUCKET_MIN_ROWS = 4096
_BUCKET_MAX_ROWS = 1 << 16

INITS = ("k-means++", "given")
MODES = ("full", "minibatch")

# On first use JAX probes every platform and logs "Unable to initialize backend 'tpu'" (INFO)
# on an ordinary CPU machine. Only that probe's INFO lines are hidden: a failure of the
# platform actually chosen still raises, and warnings still show.
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)


@dataclass(frozen=True)
class KMeansConfig:
    """What to fit. Hashable and picklable.

    - ``k``: number of clusters (at most the number of points).
    - ``max_iter``: Lloyd iterations (``mode="full"``, and the balanced refinement); epochs
      (passes' worth of sampled points) in ``mode="minibatch"``.
    - ``tol``: relative tolerance on the summed squared centre shift, scaled by the mean
      per-feature variance of the data, as scikit-learn (0: stop on unchanged labels only).
    - ``seed``: the PRNG seed (k-means++ draws, mini-batches).
    - ``init``: ``"k-means++"`` or ``"given"`` (centres passed to :func:`fit`).
    - ``mode``: ``"full"`` (Lloyd) or ``"minibatch"``; ``batch_size``: points per mini-batch.
    - ``balanced``: cluster sizes within ``[floor(n/k·(1-t)), ceil(n/k·(1+t))]``,
      ``t = balance_tolerance`` (guaranteed exactly).
    """

    k: int
    max_iter: int = 100
    tol: float = 1e-4
    seed: int = 0
    init: Literal["k-means++", "given"] = "k-means++"
    mode: Literal["full", "minibatch"] = "full"
    batch_size: int = 4096
    balanced: bool = False
    balance_tolerance: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be a positive integer, got {self.k!r}")
        if self.max_iter < 0:
            raise ValueError(f"max_iter must be >= 0, got {self.max_iter}")
        if not self.tol >= 0:
            raise ValueError(f"tol must be >= 0, got {self.tol}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.balance_tolerance >= 0:
            raise ValueError(f"balance_tolerance must be >= 0, got {self.balance_tolerance}")


@dataclass(frozen=True, eq=False)
class KMeansModel:
    """A fitted model: plain numpy and Python values, so it pickles cleanly (Ray, Beam).

    ``centres`` (k, d) float32 in the data's coordinates; ``inertia``: sum over the training
    points of the squared distance to their assigned centre (balanced assignment if
    ``config.balanced``); ``n_iter``: Lloyd iterations or mini-batch steps, plus balanced
    iterations.
    """

    centres: np.ndarray
    inertia: float
    n_iter: int
    config: KMeansConfig

    @property
    def k(self) -> int:
        return int(self.centres.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.centres.shape[1])

    @property
    def centers(self) -> np.ndarray:
        """``centres`` under the American spelling (scikit-learn's, which callers may look for)."""
        return self.centres


def _as_matrix(x: np.ndarray | Array, name: str = "x") -> np.ndarray:
    data = np.ascontiguousarray(np.asarray(x), dtype=np.float32)
    if data.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {data.shape}")
    if not np.isfinite(data).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return data


def _aligned_empty(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised float32 array whose data start on a 64-byte boundary.

    XLA:CPU can use such memory in place (:func:`_to_device`) rather than copying it; numpy's
    own large arrays are only 16-byte aligned. Copying 50 MB into a fresh JAX buffer took about
    as long as a Lloyd iteration at k = 10.
    """
    nbytes = int(np.prod(shape)) * 4
    raw = np.empty(nbytes + 64, np.uint8)
    offset = -raw.ctypes.data % 64
    return raw[offset : offset + nbytes].view(np.float32).reshape(shape)


def _to_device(a: np.ndarray) -> Array:
    """``a`` on JAX's default device; without a copy on CPU when ``a`` is 64-byte aligned.

    Only for this module's own buffers, which nothing writes to while a computation that reads
    them is running.
    """
    try:
        return jax.device_put(a, may_alias=True)
    except TypeError:  # a JAX without may_alias: copy
        return jnp.asarray(a)


def absolute_tol(x: np.ndarray, tol: float) -> float:
    """scikit-learn's ``_tolerance``: ``tol`` times the mean per-feature variance of ``x``."""
    if tol == 0:
        return 0.0
    return float(np.mean(np.var(x, axis=0)) * tol)


def prng_key(seed: int) -> Array:
    """The key for a seed; threefry named explicitly so a changed JAX default cannot move it."""
    return jax.random.key(seed, impl="threefry2x32")


def _initial_centres(
    padded: np.ndarray,
    n: int,
    config: KMeansConfig,
    key: Array,
    given: np.ndarray | None,
    mean: np.ndarray,
) -> Array:
    """Starting centres (centred coordinates) from the centred points ``padded[:n]``."""
    d = padded.shape[1]
    if config.init == "given":
        if given is None:
            raise ValueError('init="given" needs the initial centres (centres=...)')
        start = _as_matrix(given, "centres")
        if start.shape != (config.k, d):
            raise ValueError(f"centres must have shape {(config.k, d)}, got {start.shape}")
        return jnp.asarray(start - mean)
    if given is not None:
        raise ValueError('centres were given but init is not "given"')
    if config.mode == "minibatch":
        # As scikit-learn: seed on 3 batches' worth of points (3k if that is fewer than k).
        batch = min(config.batch_size, n)
        size = min(3 * batch if 3 * batch >= config.k else 3 * config.k, n)
        if size < n:
            idx = jax.random.randint(jax.random.fold_in(key, 1), (size,), 0, n)
            sample = jnp.asarray(padded[np.asarray(idx)])
            return kmeans_plus_plus(sample, config.k, jax.random.fold_in(key, 0))
    # The padded buffer, so that fits padded to one shape share the compilation.
    return kmeans_plus_plus(_to_device(padded), config.k, jax.random.fold_in(key, 0), n)


def padded_rows(n: int, k: int) -> int:
    """Rows that :func:`fit_predict` pads n points to: whole Lloyd blocks, few distinct shapes.

    Up to ``_BUCKET_MAX_ROWS`` points the next power of two, and at least 4,096 rows: the
    second-level fits, one per first-level cluster with a sample of its own size (a few
    hundred points each by default), then share one compilation (each new shape cost 1-2 s of
    compiling, far more than such a fit; the padding rows cost microseconds). Above it,
    whole blocks only: a large fit is worth its own compilation, and padding 100,000 points
    to 131,072 would cost a third more work in every iteration.
    """
    if n <= _BUCKET_MAX_ROWS:
        return max(_pow2_ceil(n), _BUCKET_MIN_ROWS)
    rows = block_rows(n, k)
    return -(-n // rows) * rows


def fit_predict(
    x: np.ndarray | Array, config: KMeansConfig, centres: np.ndarray | None = None
) -> tuple[KMeansModel, np.ndarray, np.ndarray]:
    """Fit and return ``(model, labels, sq_distances)`` for the training points.

    Labels are int32, distances float32 squared Euclidean distances to the assigned centre.
    Without ``balanced``: the final E-step of the fit (on the centred data, as scikit-learn's
    ``labels_``), which :func:`predict` on ``x`` reproduces except for a point whose two
    nearest centres are equidistant to within float32 rounding; with it, the balanced training
    assignment (``predict(model, x, balanced=True)`` gives the same size bounds).
    """
    data = _as_matrix(x)
    n, d = data.shape
    if n < config.k:
        raise ValueError(f"n_samples={n} must be >= k={config.k}")
    # Centre the data (as scikit-learn): distances computed as ||x||² - 2x·c + ||c||² lose
    # less to cancellation when the points are near the origin.
    # float32 mean (numpy sums pairwise, so the error stays ~1e-7 relative), as scikit-learn.
    mean = data.mean(axis=0)
    # One aligned copy, zero-padded (see padded_rows): JAX uses it in place, both as the (n, d)
    # points and as the (blocks, rows, d) view of the Lloyd loop.
    total = padded_rows(n, config.k)
    rows = block_rows(total, config.k)
    padded = _aligned_empty((total, d))
    xc_np = padded[:n]
    np.subtract(data, mean, out=xc_np)
    padded[n:] = 0.0
    tol = absolute_tol(data, config.tol)
    key_init, key_batches = jax.random.split(prng_key(config.seed))
    start = _initial_centres(padded, n, config, key_init, centres, mean)

    labels: np.ndarray | None = None
    dist: np.ndarray | None = None
    if config.mode == "full":
        blocks = _to_device(padded.reshape(total // rows, rows, d))
        fitted, n_iter_array, labels_all, dist_all = lloyd_blocked(
            blocks, jnp.int32(n), start, jnp.int32(config.max_iter), jnp.float32(tol)
        )
        n_iter = int(n_iter_array)
        labels, dist = np.asarray(labels_all)[:n], np.asarray(dist_all)[:n]
    else:
        batch = min(config.batch_size, n)
        n_steps = max(1, config.max_iter * n // batch)
        mb = minibatch(_to_device(xc_np), start, key_batches, batch, n_steps, tol)
        fitted, n_iter = mb.centres, int(mb.n_steps)

    if config.balanced:
        lower, upper = balance_bounds(n, config.k, config.balance_tolerance)
        result = balanced_lloyd(_to_device(xc_np), fitted, config.max_iter, tol, lower, upper)
        fitted, labels = result.centres, np.asarray(result.labels)
        n_iter += int(result.n_iter)
        dist = None

    centres_out = (np.asarray(fitted, np.float64) + mean).astype(np.float32)
    model = KMeansModel(centres=centres_out, inertia=0.0, n_iter=n_iter, config=config)
    if labels is None:
        labels, dist = predict(model, data)
    elif dist is None:
        dist = np.asarray(sq_distances_to(jnp.asarray(data), jnp.asarray(centres_out), labels))
    inertia = float(np.sum(dist, dtype=np.float64))
    return dataclasses.replace(model, inertia=inertia), labels, dist


def fit(
    x: np.ndarray | Array, config: KMeansConfig, centres: np.ndarray | None = None
) -> KMeansModel:
    """Fit K-Means to ``x`` (n, d); ``centres`` (k, d) only with ``init="given"``."""
    return fit_predict(x, config, centres)[0]


def _pow2_ceil(value: int) -> int:
    return 1 << max(int(value) - 1, 0).bit_length()


def predict(
    model: KMeansModel, x: np.ndarray | Array, *, balanced: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre (int32) and squared Euclidean distance to it (float32) for each point.

    Rows go through in chunks of ~8 MiB copied into one reused aligned buffer (see
    :func:`_aligned_empty`), each padded to a power of two of rows (at least 256), so batches of
    any size reuse a handful of compiled shapes. ``balanced=True``: the
    capacity-constrained assignment of the whole of ``x`` with
    ``model.config.balance_tolerance`` (sizes within the bounds of :func:`balance_bounds`), in
    one piece.
    """
    data = _as_matrix(x)
    n, d = data.shape
    if d != model.n_features:
        raise ValueError(f"x has {d} features, the model {model.n_features}")
    # Shift by the centres' mean: same distances, less cancellation (see fit_predict).
    shift_np = model.centres.mean(axis=0, dtype=np.float64).astype(np.float32)
    shift = jnp.asarray(shift_np)
    centres = jnp.asarray(model.centres - shift_np)
    if balanced:
        if n < model.k:
            raise ValueError(f"balanced predict needs at least k={model.k} points, got {n}")
        lower, upper = balance_bounds(n, model.k, model.config.balance_tolerance)
        labels, dist = balanced_block(
            jnp.asarray(data), centres, shift, jnp.int32(lower), jnp.int32(upper)
        )
        return np.asarray(labels), np.asarray(dist)

    labels_out = np.empty(n, np.int32)
    dist_out = np.empty(n, np.float32)
    rows = max(pow2_floor(_PREDICT_CHUNK_ELEMENTS // d), MIN_BLOCK_ROWS)
    buffer = _aligned_empty((min(rows, max(_pow2_ceil(n), MIN_BLOCK_ROWS)), d))
    for begin in range(0, n, rows):
        part = data[begin : begin + rows]
        m = part.shape[0]
        chunk = buffer[: min(rows, max(_pow2_ceil(m), MIN_BLOCK_ROWS))]
        chunk[:m] = part
        chunk[m:] = 0.0
        labels, dist = assign_chunk(_to_device(chunk), centres, shift)
        # Reading the results waits for this chunk, so the buffer is free for the next one.
        labels_out[begin : begin + m] = np.asarray(labels)[:m]
        dist_out[begin : begin + m] = np.asarray(dist)[:m]
    return labels_out, dist_out
