"""K-Means without size constraints, in JAX: scoring points against centres, k-means++
seeding, Lloyd iterations and mini-batch steps (JAX arrays in, JAX arrays out).

The what and why (stopping rules, numerics, memory, determinism) are in
:mod:`runners.kmeans.jax_kmeans`, whose ``fit`` drives these functions; the
capacity-constrained assignment is in :mod:`runners.kmeans.balanced`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array

# Full float32 precision in matrix products: on GPUs JAX's default for float32 dots is TF32
# (10-bit mantissa), which would move labels near cluster boundaries. No effect on CPU.
_PRECISION = lax.Precision.HIGHEST

# Points are scored in blocks of rows (a lax.scan), so that the (rows, k) score matrix stays in
# a core's L2 cache (~2 MiB: 4096 rows at k = 100 measured fastest on the 2-core CPU) and memory
# is O(rows · k) rather than O(n · k).
_BLOCK_ELEMENTS = 1 << 19
MIN_BLOCK_ROWS = 256
_MAX_BLOCK_ROWS = 4096
# Up to this k, argmin; above, min then first index attaining it (see nearest()).
_ARGMIN_MAX_K = 16

# Mini-batch constants: scikit-learn's MiniBatchKMeans defaults.
MAX_NO_IMPROVEMENT = 10  # steps without a smaller smoothed batch inertia before stopping
REASSIGNMENT_RATIO = 0.01  # centres with a count under this share of the largest are moved


class LloydResult(NamedTuple):
    """Output of :func:`lloyd` and ``balanced.balanced_lloyd`` (JAX arrays)."""

    centres: Array  # (k, d)
    labels: Array  # (n,) int32, consistent with ``centres`` (a final E-step)
    inertia: Array  # () float32 sum of squared distances to the assigned centres
    n_iter: Array  # () int32 centre updates run


class MiniBatchResult(NamedTuple):
    """Output of :func:`minibatch` (JAX arrays)."""

    centres: Array  # (k, d)
    counts: Array  # (k,) float32 points seen per centre (the learning-rate denominators)
    n_steps: Array  # () int32 mini-batch steps run


def pow2_floor(value: int) -> int:
    return 1 << (max(int(value), 1).bit_length() - 1)


def block_rows(n: int, k: int) -> int:
    """Rows per block of the Lloyd pass for n points and k centres (a power of two, or n)."""
    rows = pow2_floor(_BLOCK_ELEMENTS // max(k, 1))
    return min(max(rows, MIN_BLOCK_ROWS), _MAX_BLOCK_ROWS, n)


def scores(x: Array, centres: Array, centre_sq: Array | None = None) -> Array:
    """``||c||² - 2·x·c`` for every point and centre, shape (n, k).

    This is the squared distance minus ``||x||²``, a constant per row: argmin and differences
    between centres are unchanged, and leaving it out avoids adding a large term that only costs
    precision (scikit-learn does the same).
    """
    if centre_sq is None:
        centre_sq = jnp.sum(centres * centres, axis=1)
    return centre_sq[None, :] - 2.0 * jnp.dot(x, centres.T, precision=_PRECISION)


def nearest(point_scores: Array) -> Array:
    """Index (int32) of the smallest score in each row of (n, k); the first one on ties.

    For k > 16 this is a plain min, then the smallest index attaining it (a float min over
    indices, exact below 2**24): the same result as argmin, but XLA:CPU runs argmin as a
    scalar variadic reduction, which made it the largest cost of a Lloyd iteration at k = 100.
    Used where a batch is scored once (mini-batch steps, balanced assignment); the Lloyd pass
    scores in the transposed layout of :func:`nearest_in_columns`.
    """
    k = point_scores.shape[1]
    if k <= _ARGMIN_MAX_K:
        return jnp.argmin(point_scores, axis=1).astype(jnp.int32)
    best = jnp.min(point_scores, axis=1, keepdims=True)
    index = jnp.arange(k, dtype=jnp.float32)
    first = jnp.min(jnp.where(point_scores == best, index, float(k)), axis=1)
    return jnp.minimum(first, k - 1).astype(jnp.int32)  # k only if a score were NaN


def nearest_in_columns(column_scores: Array) -> Array:
    """:func:`nearest` for transposed scores (k, rows): the first smallest score per column.

    The Lloyd pass scores a block as ``(k, d) @ (d, rows)``: the reductions then run over the
    leading axis, i.e. element-wise over contiguous rows of ``rows`` lanes, which XLA:CPU
    vectorises fully, where a reduction over the minor axis of (rows, k) is a horizontal
    reduction per row. At k = 100 this made a Lloyd iteration about twice as fast.
    """
    k = column_scores.shape[0]
    if k <= _ARGMIN_MAX_K:
        return jnp.argmin(column_scores, axis=0).astype(jnp.int32)
    best = jnp.min(column_scores, axis=0, keepdims=True)
    index = jnp.arange(k, dtype=jnp.float32)[:, None]
    first = jnp.min(jnp.where(column_scores == best, index, float(k)), axis=0)
    return jnp.minimum(first, k - 1).astype(jnp.int32)  # k only if a score were NaN


def sq_distances_to(x: Array, centres: Array, labels: Array) -> Array:
    """Squared Euclidean distance of each point to its assigned centre, computed directly."""
    diff = x - centres[labels]
    return jnp.sum(diff * diff, axis=1)


def cluster_sums(x: Array, labels: Array, k: int) -> tuple[Array, Array]:
    """Per-cluster sums of the points (k, d) and counts (k,) int32.

    Labels outside ``[0, k)`` (padding rows) count nowhere. On CPU a scatter-add
    (``segment_sum``): XLA:CPU runs it as one sequential loop (so the summation order, and the
    result, is fixed) and it costs O(n · d) rather than the O(n · k · d) of a one-hot product.
    On accelerators a one-hot matrix product: it runs on the matrix units and is deterministic,
    where scatter-adds use atomics whose order varies. Chosen when the function is traced, by
    JAX's default backend.
    """
    if jax.default_backend() == "cpu":
        sums = jax.ops.segment_sum(x, labels, num_segments=k)  # out-of-range ids are dropped
        counts = jax.ops.segment_sum(jnp.ones_like(labels), labels, num_segments=k)
        return sums, counts
    onehot = labels[:, None] == jnp.arange(k, dtype=labels.dtype)[None, :]
    sums = jnp.dot(onehot.T.astype(x.dtype), x, precision=_PRECISION)
    counts = jnp.sum(onehot, axis=0, dtype=jnp.int32)
    return sums, counts


def _to_blocks(x: Array, rows: int) -> Array:
    """(n, d) to (n_blocks, rows, d), zero-padded; done once per fit, outside the loop."""
    n, d = x.shape
    n_blocks = -(-n // rows)
    return jnp.pad(x, ((0, n_blocks * rows - n), (0, 0))).reshape(n_blocks, rows, d)


def _column_scorer(centres: Array):
    """``xb -> (k, rows)`` scores ``||c||² - 2·c·x`` of a block ``xb`` (rows, d), transposed.

    The product contracts the last axes of ``-2·c`` (k, d) and ``xb`` (rows, d): the matrix
    unit reads ``xb`` transposed in place, so no transposed copy of the data is made (one cost
    19 ms per fit at 100,000 × 128, and the product was no faster for it). ``-2·c`` is formed
    once per pass (the scaling by a power of two is exact, so the scores are bit-identical to
    ``||c||² - 2·(c·x)``, which is how scikit-learn forms them).
    """
    centre_sq = jnp.sum(centres * centres, axis=1)
    neg2 = -2.0 * centres

    def score(xb: Array) -> Array:
        product = lax.dot_general(neg2, xb, (((1,), (1,)), ((), ())), precision=_PRECISION)
        return centre_sq[:, None] + product

    return score


def _assign_pass(
    blocks: Array, n: Array, centres: Array, with_sums: bool = True
) -> tuple[Array, Array, Array]:
    """Labels (n_blocks · rows,), cluster sums (k, d) and counts (k,), block by block.

    Scores are formed as (k, rows) (see :func:`nearest_in_columns`). Rows from ``n`` on are
    padding: they get label k, which counts in no cluster. ``n`` is traced, so fits of
    different sizes that pad to the same shape share one compilation.
    """
    n_blocks, rows, d = blocks.shape
    k = centres.shape[0]
    offsets = jnp.arange(n_blocks, dtype=jnp.int32) * rows
    score = _column_scorer(centres)

    def block(carry: tuple[Array, Array], inputs: tuple[Array, Array]):
        sums, counts = carry
        xb, offset = inputs
        labels = nearest_in_columns(score(xb))
        labels = jnp.where(offset + jnp.arange(rows, dtype=jnp.int32) < n, labels, k)
        if not with_sums:
            return carry, labels
        block_sums, block_counts = cluster_sums(xb, labels, k)
        return (sums + block_sums, counts + block_counts), labels

    init = (jnp.zeros((k, d), blocks.dtype), jnp.zeros((k,), jnp.int32))
    (sums, counts), labels = lax.scan(block, init, (blocks, offsets))
    return labels.reshape(-1), sums, counts


def _reseed_empty(
    x: Array, centres: Array, labels: Array, sums: Array, counts: Array, empty: Array
) -> tuple[Array, Array]:
    """Give each empty cluster one of the points farthest from their (old) centres.

    As scikit-learn's ``_relocate_empty_clusters_dense``: the j-th empty cluster (by index)
    takes the j-th farthest point (ties: lower index first, so deterministic), and that point is
    taken out of its old cluster's sum and count. A cluster left with no point keeps its old
    centre (see :func:`_means`), so no centre is ever NaN. Padding rows (label k) are never
    taken.
    """
    k = centres.shape[0]
    dist = jnp.where(labels < k, sq_distances_to(x, centres, labels), -1.0)
    _, far = lax.top_k(dist, k)  # the k farthest points, farthest first
    rank = jnp.clip(jnp.cumsum(empty) - 1, 0, k - 1)
    point = far[rank]  # (k,): the point for each cluster, used where empty
    # Take the moved points out of their old clusters with a (k, k) one-hot product rather
    # than a scatter-add, so the order of the subtractions is fixed on every backend.
    leaving = (labels[point][:, None] == jnp.arange(k)[None, :]) & empty[:, None]
    sums = sums - jnp.dot(leaving.T.astype(x.dtype), x[point], precision=_PRECISION)
    counts = counts - jnp.sum(leaving, axis=0, dtype=counts.dtype)
    sums = jnp.where(empty[:, None], x[point], sums)
    counts = jnp.where(empty, 1, counts)
    return sums, counts


def _means(sums: Array, counts: Array, fallback: Array) -> Array:
    """Cluster means; clusters without points keep ``fallback``.

    Multiplies by the reciprocal count, as scikit-learn does, so that the float32 centres round
    the same way as its centres.
    """
    inv = 1.0 / jnp.maximum(counts, 1).astype(sums.dtype)
    return jnp.where((counts > 0)[:, None], sums * inv[:, None], fallback)


def lloyd_loop(
    step: Callable[[Array], tuple[Array, Array, Array]],
    centres: Array,
    n_rows: int,
    max_iter: int | Array,
    tol: float | Array,
) -> tuple[Array, Array]:
    """Lloyd's loop around an E-step: final centres and the number of centre updates.

    ``step(centres)`` returns labels (n_rows,), cluster sums (k, d) and counts (k,): the plain
    nearest-centre pass or the balanced assignment. Stops when ``max_iter`` updates ran, the
    labels did not change, or the summed squared centre shift is ``<= tol``.
    """

    def not_done(state: tuple[Array, Array, Array, Array]) -> Array:
        i, _, _, done = state
        return (i < max_iter) & ~done

    def iterate(state: tuple[Array, Array, Array, Array]):
        i, current, labels_old, _ = state
        labels, sums, counts = step(current)
        new = _means(sums, counts, current)
        unchanged = jnp.all(labels == labels_old)
        shift = jnp.sum((new - current) ** 2)
        return i + 1, new, labels, unchanged | (shift <= tol)

    state = (jnp.int32(0), centres, jnp.full((n_rows,), -1, jnp.int32), jnp.bool_(False))
    n_iter, centres, _, _ = lax.while_loop(not_done, iterate, state)
    return centres, n_iter


def _lloyd_iterations(
    blocks: Array, n: int | Array, centres: Array, max_iter: int | Array, tol: float | Array
) -> tuple[Array, Array]:
    """The Lloyd loop on blocked points (see :func:`lloyd`): final centres and iterations run.

    ``blocks`` (n_blocks, rows, d) hold the n points, then zero padding (label k in every
    pass, so it never changes and never counts).
    """
    n = jnp.asarray(n, jnp.int32)
    flat = blocks.reshape(-1, blocks.shape[2])

    def step(current: Array) -> tuple[Array, Array, Array]:
        labels, sums, counts = _assign_pass(blocks, n, current)
        sums, counts = lax.cond(
            jnp.any(counts == 0),
            partial(_reseed_empty, flat, current, labels),
            lambda s, c, e: (s, c),
            sums,
            counts,
            counts == 0,
        )
        return labels, sums, counts

    return lloyd_loop(step, centres, flat.shape[0], max_iter, tol)


@jax.jit
def lloyd_blocked(
    blocks: Array, n: Array, centres: Array, max_iter: Array, tol: Array
) -> tuple[Array, Array, Array, Array]:
    """:func:`lloyd` on data that ``jax_kmeans.fit_predict`` has already blocked and padded.

    Returns the centres, iterations, and the final E-step: labels and squared distances
    (computed directly, ``sum((x - c)²)``) for every row, padding included (the caller drops
    it: its labels are meaningless). ``n`` is traced: one compilation per padded shape (see
    ``jax_kmeans.padded_rows``).
    """
    centres, n_iter = _lloyd_iterations(blocks, n, centres, max_iter, tol)
    score = _column_scorer(centres)

    def block(carry: None, xb: Array) -> tuple[None, tuple[Array, Array]]:
        # Distances while the block is in cache, rather than in a second pass over the data.
        labels = nearest_in_columns(score(xb))
        return carry, (labels, sq_distances_to(xb, centres, labels))

    _, (labels, dist) = lax.scan(block, None, blocks)
    return centres, n_iter, labels.reshape(-1), dist.reshape(-1)


@jax.jit
def lloyd(x: Array, centres: Array, max_iter: int | Array, tol: float | Array) -> LloydResult:
    """Lloyd iterations from ``centres`` until convergence or ``max_iter`` updates.

    Converged when the labels are unchanged from the previous iteration or the sum over centres
    of the squared shift is ``<= tol`` (absolute; ``jax_kmeans.fit`` scales the relative config
    tolerance). Afterwards the labels are recomputed from the final centres, so labels and
    centres are consistent. ``max_iter`` and ``tol`` are traced: changing them does not
    recompile. Empty clusters are re-seeded with far points (:func:`_reseed_empty`).
    """
    x = jnp.asarray(x)
    centres = jnp.asarray(centres, x.dtype)
    n = x.shape[0]
    blocks = _to_blocks(x, block_rows(n, centres.shape[0]))
    centres, n_iter = _lloyd_iterations(blocks, n, centres, max_iter, tol)
    labels, _, _ = _assign_pass(blocks, jnp.int32(n), centres, with_sums=False)
    labels = labels[:n]
    inertia = jnp.sum(sq_distances_to(x, centres, labels))
    return LloydResult(centres, labels, inertia, n_iter)


def kmeans_plus_plus(x: Array, k: int, key: Array, n: int | None = None) -> Array:
    """k centres by standard k-means++ (D² sampling), deterministic for a given key.

    The first centre is a uniformly drawn point; each next one is drawn with probability
    proportional to its squared distance to the nearest centre so far, so a point already
    chosen (distance 0) is never drawn again and the centres are distinct whenever the data
    have k distinct points. Draw j uses ``fold_in(key, j)``. Only the first ``n`` rows of ``x``
    are points (default: all); the rest is padding, never drawn, so that samples of different
    sizes padded to one shape share a compilation (see ``jax_kmeans.padded_rows``).
    """
    x = jnp.asarray(x)
    return _kmeans_plus_plus(x, k, key, jnp.int32(x.shape[0] if n is None else n))


@partial(jax.jit, static_argnames=("k",))
def _kmeans_plus_plus(x: Array, k: int, key: Array, n: Array) -> Array:
    rows, d = x.shape
    valid = jnp.arange(rows) < n
    first = x[jax.random.randint(jax.random.fold_in(key, 0), (), 0, n)]
    centres = jnp.zeros((k, d), x.dtype).at[0].set(first)
    nearest = jnp.where(valid, jnp.sum((x - first) ** 2, axis=1), 0.0)

    def draw(j: Array, state: tuple[Array, Array]) -> tuple[Array, Array]:
        centres, nearest = state
        logits = jnp.where(nearest > 0, jnp.log(nearest), -jnp.inf)
        # Fewer than k distinct points: every distance is 0; draw uniformly instead of index 0.
        logits = jnp.where(jnp.any(nearest > 0), logits, jnp.where(valid, 0.0, -jnp.inf))
        chosen = x[jax.random.categorical(jax.random.fold_in(key, j), logits)]
        nearest = jnp.minimum(nearest, jnp.where(valid, jnp.sum((x - chosen) ** 2, axis=1), 0.0))
        return centres.at[j].set(chosen), nearest

    centres, _ = lax.fori_loop(1, k, draw, (centres, nearest))
    return centres


def _reassign_small(
    key: Array, batch: Array, n_new: int, centres: Array, counts: Array
) -> tuple[Array, Array]:
    """Move centres with under ``REASSIGNMENT_RATIO`` of the largest count to batch points.

    As scikit-learn's mini-batch reassignment: new positions are distinct batch points drawn
    uniformly, at most ``n_new`` (half a batch) per step, and the moved centres' counts are set
    to the smallest remaining count so that they are not moved again at once.
    """
    small = counts < REASSIGNMENT_RATIO * jnp.max(counts)
    rank = jnp.cumsum(small) - 1
    small = small & (rank < n_new)
    picks = jax.random.choice(key, batch.shape[0], (n_new,), replace=False)
    new_positions = batch[picks[jnp.clip(rank, 0, n_new - 1)]]
    centres = jnp.where(small[:, None], new_positions, centres)
    counts = jnp.where(small, jnp.min(jnp.where(small, jnp.inf, counts)), counts)
    return centres, counts


@partial(jax.jit, static_argnames=("batch_size",))
def minibatch(
    x: Array,
    centres: Array,
    key: Array,
    batch_size: int,
    n_steps: int | Array,
    tol: float | Array = 0.0,
) -> MiniBatchResult:
    """Mini-batch K-Means (Sculley 2010), as scikit-learn's ``MiniBatchKMeans``.

    Step s draws ``batch_size`` indices with replacement from ``fold_in(key, s)``, assigns them
    to the nearest centre and sets each centre with batch points to
    ``(c · count + batch_sum) / (count + batch_count)``: a per-centre learning rate that decays
    as the centre sees more points. Every ``10 · k`` sampled points (or when a centre has seen
    no point) centres under 1% of the largest count move to random batch points. Stops after
    ``n_steps``, when the step's summed squared centre shift is ``<= tol`` (if ``tol > 0``), or
    when the exponentially smoothed batch inertia has not decreased for 10 steps.
    """
    x = jnp.asarray(x)
    centres = jnp.asarray(centres, x.dtype)
    n = x.shape[0]
    k = centres.shape[0]
    alpha = min(1.0, 2.0 * batch_size / (n + 1))  # smoothing weight, as scikit-learn
    reassign_every = 10 * k
    n_new = max(1, min(k, batch_size // 2))

    def not_done(state: tuple[Array, ...]) -> Array:
        return (state[0] < n_steps) & ~state[-1]

    def step(state: tuple[Array, ...]) -> tuple[Array, ...]:
        s, current, counts, ewa, ewa_min, stall, since, _ = state
        key_batch, key_new = jax.random.split(jax.random.fold_in(key, s))
        batch = x[jax.random.randint(key_batch, (batch_size,), 0, n)]
        labels = nearest(scores(batch, current))
        batch_inertia = jnp.sum(sq_distances_to(batch, current, labels)) / batch_size
        sums, batch_counts = cluster_sums(batch, labels, k)
        new_counts = counts + batch_counts.astype(counts.dtype)
        moved = (current * counts[:, None] + sums) / jnp.maximum(new_counts, 1.0)[:, None]
        new = jnp.where((batch_counts > 0)[:, None], moved, current)

        since = since + batch_size
        reassign = jnp.any(new_counts == 0) | (since >= reassign_every)
        since = jnp.where(reassign, 0, since)
        new, new_counts = lax.cond(
            reassign,
            partial(_reassign_small, key_new, batch, n_new),
            lambda c, w: (c, w),
            new,
            new_counts,
        )

        # Convergence as scikit-learn's _mini_batch_convergence: nothing on the first step;
        # the smoothed inertia starts at step 2.
        s = s + 1
        shift = jnp.sum((new - current) ** 2)
        ewa = jnp.where(s <= 2, batch_inertia, ewa * (1.0 - alpha) + batch_inertia * alpha)
        monitored = s >= 2
        improved = ewa < ewa_min
        ewa_min = jnp.where(monitored & improved, ewa, ewa_min)
        stall = jnp.where(monitored, jnp.where(improved, 0, stall + 1), stall)
        done = monitored & (((tol > 0) & (shift <= tol)) | (stall >= MAX_NO_IMPROVEMENT))
        return s, new, new_counts, ewa, ewa_min, stall, since, done

    inf = jnp.array(jnp.inf, x.dtype)
    state = (
        jnp.int32(0),
        centres,
        jnp.zeros((k,), x.dtype),
        inf,
        inf,
        jnp.int32(0),
        jnp.int32(0),
        jnp.bool_(False),
    )
    s, centres, counts, *_ = lax.while_loop(not_done, step, state)
    return MiniBatchResult(centres, counts, s)


@jax.jit
def assign_chunk(x: Array, centres: Array, shift: Array) -> tuple[Array, Array]:
    """Nearest centre and squared distance for a chunk of rows, block by block.

    ``centres`` are already shifted; each block of ``x`` is shifted inside the loop, so no
    chunk-sized temporary is written (fresh memory costs page faults on CPU). Scores are
    formed as in the Lloyd pass (:func:`_column_scorer`).
    """
    n = x.shape[0]
    score = _column_scorer(centres)

    def block(carry: None, xb: Array) -> tuple[None, tuple[Array, Array]]:
        xb = xb - shift
        labels = nearest_in_columns(score(xb))
        return carry, (labels, sq_distances_to(xb, centres, labels))

    blocks = _to_blocks(x, block_rows(n, centres.shape[0]))
    _, (labels, dist) = lax.scan(block, None, blocks)
    return labels.reshape(-1)[:n], dist.reshape(-1)[:n]
