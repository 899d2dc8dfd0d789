"""LSH banding of MinHash signatures and candidate edges from band buckets.

Choosing b and r: for a signature of ``num_perm`` values split into ``b`` bands of ``r`` rows,
two documents of Jaccard similarity ``s`` share at least one band with probability
``P(s) = 1 - (1 - s**r)**b`` (the S-curve). Two rules pick ``(b, r)`` with ``b * r <= num_perm``
for the threshold ``t``:

* :func:`recall_floor_param` (the default when candidates are verified): among the ``(b, r)``
  with ``P(t) >= floor`` (0.995), the one with the smallest false-positive area
  ``∫_0^t P(s) ds``. Verification rejects every candidate below ``t``, so a false positive only
  costs one check, while a pair missed by the banding is lost for good; the floor bounds the
  miss rate of every pair at or above ``t`` (``P`` rises with ``s``), which a weighted area
  does not (0.1 / 0.9 gave b = 32, r = 8 at t = 0.7: P(0.7) = 0.85).
* :func:`optimal_param`: the ``(b, r)`` minimising
  ``w_fp * ∫_0^t P(s) ds + w_fn * ∫_t^1 (1 - P(s)) ds``, the weighted false-positive and
  false-negative areas (the classic ``optimal_param`` integration). Used without verification,
  where every candidate is reported as it is and a lower curve keeps precision up.

Grouping: a band key is ``(band index, hash of the band's r values)``. Rather than one shuffle
element per (document, band), each feature batch emits one numpy array of band keys per shuffle
partition; a partition sorts its arrays and finds the buckets (runs of equal keys) in numpy.
It is still a GroupByKey on the band hashes, with the per-element cost paid per array.

Edges: every bucket member is linked to the bucket's smallest uid (a star), never all pairs.
A bucket larger than ``max_bucket_size`` keeps only its first ``max_bucket_size`` members (by
uid); such buckets and the members left out are counted as ``buckets_capped`` and
``bucket_members_dropped`` (those members may still be linked through their other bands).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import apache_beam as beam
import numpy as np

from transforms.batches import (
    FeatureBatch,
    rows_by_part,
    scope_mix,
    sorted_runs,
    splitmix64,
    stage_counter,
    timed_process,
)

LOG = logging.getLogger(__name__)


def detection_probability(similarity: float | np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Probability that two documents of this Jaccard similarity share a band."""
    s = np.asarray(similarity, dtype=np.float64)
    return 1.0 - (1.0 - s**rows) ** bands


def _area(f_values: np.ndarray, grid: np.ndarray) -> float:
    return float(np.trapezoid(f_values, grid)) if len(grid) > 1 else 0.0


def optimal_param(
    threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5
) -> tuple[int, int]:
    """``(bands, rows)`` minimising the weighted false-positive and false-negative areas."""
    lower = np.linspace(0.0, threshold, 1001)
    upper = np.linspace(threshold, 1.0, 1001)
    best: tuple[float, int, int] | None = None
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = _area(detection_probability(lower, bands, rows), lower)
            fn = _area(1.0 - detection_probability(upper, bands, rows), upper)
            error = fp * fp_weight + fn * fn_weight
            if best is None or error < best[0] - 1e-15:
                best = (error, bands, rows)
    assert best is not None
    return best[1], best[2]


# Least P(threshold) of the banding derived with verification on (DedupConfig.recall_floor).
RECALL_FLOOR = 0.995


def recall_floor_param(threshold: float, num_perm: int,
                       floor: float = RECALL_FLOOR) -> tuple[int, int]:
    """``(bands, rows)`` with ``P(threshold) >= floor`` and the smallest false-positive area.

    Ties go to fewer permutations used (``b * r``). When no banding reaches the floor (few
    permutations, a threshold near 1), the one with the highest ``P(threshold)``.
    """
    lower = np.linspace(0.0, threshold, 1001)
    best: tuple[tuple[bool, float, int], int, int] | None = None
    for rows in range(1, num_perm + 1):
        for bands in range(1, num_perm // rows + 1):
            p_t = float(detection_probability(threshold, bands, rows))
            reached = p_t >= floor
            # Reaching the floor first; then the smaller area (computed only there: a third
            # of the bandings at 0.7 and 256), or below the floor the higher P(t).
            score = _area(detection_probability(lower, bands, rows), lower) if reached else -p_t
            key = (not reached, score, bands * rows)
            if best is None or key < best[0]:
                best = (key, bands, rows)
    assert best is not None
    return best[1], best[2]


def band_hashes(signatures: np.ndarray, bands: int, rows: int, seed: int) -> np.ndarray:
    """``uint64[docs, bands]``: a seeded hash of each band's ``rows`` signature values."""
    docs = signatures.shape[0]
    out = np.empty((docs, bands), dtype=np.uint64)
    for band in range(bands):
        band_seed = (seed * 1_000_003 + band) & 0xFFFFFFFFFFFFFFFF
        acc = np.full(docs, splitmix64(np.array([band_seed], dtype=np.uint64))[0],
                      dtype=np.uint64)
        for col in range(band * rows, (band + 1) * rows):
            acc = splitmix64(acc ^ signatures[:, col].astype(np.uint64))
        out[:, band] = acc
    return out


def bucket_partitions(hashes: np.ndarray, num_partitions: int) -> np.ndarray:
    """Shuffle partition of each band hash (the hashes are already well mixed)."""
    return (hashes % np.uint64(num_partitions)).astype(np.int64)


def star_edges(
    band_ids: np.ndarray, hashes: np.ndarray, uids: np.ndarray, max_bucket_size: int
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Star edges ``(member, centre)`` of the buckets in these band keys, deduplicated.

    ``centre`` is the bucket's smallest uid; members beyond ``max_bucket_size`` are left out.
    """
    stats = {"buckets_capped": 0, "bucket_members_dropped": 0, "buckets_multi": 0}
    if len(uids) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), stats
    order = np.lexsort((uids, hashes, band_ids))
    band_ids, hashes, uids = band_ids[order], hashes[order], uids[order]
    starts, sizes, bucket_of = sorted_runs(band_ids, hashes)
    position = np.arange(len(uids)) - starts[bucket_of]
    stats["buckets_multi"] = int((sizes > 1).sum())
    capped = sizes > max_bucket_size
    stats["buckets_capped"] = int(capped.sum())
    stats["bucket_members_dropped"] = int((sizes[capped] - max_bucket_size).sum())
    take = (position > 0) & (position < max_bucket_size)
    members = uids[take]
    centres = uids[starts[bucket_of[take]]]
    members, centres = unique_pairs(members, centres)
    return members, centres, stats


def unique_pairs(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ``(left, right)`` pairs, sorted by ``(left, right)``."""
    if len(left) == 0:
        return left.astype(np.int64), right.astype(np.int64)
    order = np.lexsort((right, left))
    left, right = left[order], right[order]
    starts, _, _ = sorted_runs(left, right)
    return left[starts], right[starts]


BAND_GROUPS = 4


def band_groups(bands: int) -> list[np.ndarray]:
    """The bands of each band-key shuffle, contiguous and as equal as possible."""
    return [g for g in np.array_split(np.arange(bands), min(BAND_GROUPS, bands)) if len(g)]


def group_tag(group: int) -> str:
    return f"bands{group}"


class EmitBandKeysFn(beam.DoFn):
    """``(batch_key, FeatureBatch)`` → ``(partition, (band_ids, hashes, uid offsets, base
    uid))`` arrays, on one tagged output per band group (:func:`band_groups`)."""

    timer = stage_counter("lsh")

    def __init__(self, bands: int, rows: int, seed: int, num_partitions: int) -> None:
        self.bands = bands
        self.rows = rows
        self.seed = seed
        self.num_partitions = num_partitions

    @timed_process
    def process(self, element: tuple[int, FeatureBatch]) -> Iterator[object]:
        _, features = element
        if len(features) == 0:
            return
        hashes = features.band_hashes
        if hashes is None:
            hashes = band_hashes(features.signatures, self.bands, self.rows, self.seed)
        if features.scopes is not None:
            # CL→ND: band keys are scoped by cluster, so nothing is compared across clusters.
            hashes = splitmix64(hashes ^ scope_mix(features.scopes, self.seed)[:, None])
        # The narrowest type that holds a band number, and uids as offsets from the batch's
        # smallest (a batch spans batch_size lines of one file): 11 bytes a key instead of 20
        # in the shuffle, which holds every document's band keys at once.
        band_type = np.uint8 if self.bands <= 256 else np.uint16
        base, offsets = uid_offsets(features.uids)
        for group, bands in enumerate(band_groups(self.bands)):
            group_hashes = hashes[:, bands]
            flat_hashes = group_hashes.ravel()
            flat_bands = np.broadcast_to(bands.astype(band_type), group_hashes.shape).ravel()
            flat_offsets = np.broadcast_to(offsets[:, None], group_hashes.shape).ravel()
            parts = bucket_partitions(flat_hashes, self.num_partitions)
            for part, sel in rows_by_part(parts):
                yield beam.pvalue.TaggedOutput(group_tag(group), (
                    part, (flat_bands[sel], flat_hashes[sel], flat_offsets[sel], base)))


def uid_offsets(uids: np.ndarray) -> tuple[int, np.ndarray]:
    """``(base, offsets)`` with ``uids == base + offsets`` in the narrowest unsigned type."""
    base = int(uids.min()) if len(uids) else 0
    offsets = uids - base
    span = int(offsets.max()) if len(offsets) else 0
    kind = np.uint16 if span < 2**16 else np.uint32 if span < 2**32 else np.int64
    return base, offsets.astype(kind)


def uids_of_chunk(chunk: tuple) -> np.ndarray:
    """The uids of one band-key chunk: ``(bands, hashes, uids)`` or ``(bands, hashes,
    offsets, base)``."""
    if len(chunk) == 3:
        return chunk[2].astype(np.int64, copy=False)
    return chunk[2].astype(np.int64) + np.int64(chunk[3])


class FindStarsFn(beam.DoFn):
    """``(partition, [band key arrays])`` → ``(members, centres)`` edge arrays + stats."""

    timer = stage_counter("lsh")

    STATS_TAG = "stats"

    def __init__(self, max_bucket_size: int) -> None:
        self.max_bucket_size = max_bucket_size

    @timed_process
    def process(self, element: tuple[int, Iterable[tuple]],
                removed: np.ndarray | None = None) -> Iterator[object]:
        _, chunks = element
        chunks = list(chunks)
        band_ids = np.concatenate([c[0] for c in chunks])
        hashes = np.concatenate([c[1] for c in chunks])
        uids = np.concatenate([uids_of_chunk(c) for c in chunks])
        if removed is not None and len(removed):
            # Exact duplicates band with the rest (so the features need not wait for the
            # exact grouping) and leave here: only one document per text reaches a bucket.
            keep = ~np.isin(uids, removed, assume_unique=False)
            band_ids, hashes, uids = band_ids[keep], hashes[keep], uids[keep]
        members, centres, stats = star_edges(band_ids, hashes, uids, self.max_bucket_size)
        if stats["buckets_capped"]:
            LOG.warning("capped %d giant bucket(s), %d member(s) left out",
                        stats["buckets_capped"], stats["bucket_members_dropped"])
        yield beam.pvalue.TaggedOutput(self.STATS_TAG, stats)
        if len(members):
            yield members, centres


def key_edges_by_member(edges: tuple[np.ndarray, np.ndarray], num_partitions: int
                        ) -> Iterator[tuple[int, tuple[np.ndarray, np.ndarray]]]:
    """Edge arrays → ``(partition of the member, (members, centres))``, so that the copies of
    one edge found by several band groups meet."""
    members, centres = edges
    parts = (members.astype(np.uint64) % np.uint64(num_partitions)).astype(np.int64)
    for part, rows in rows_by_part(parts):
        yield part, (members[rows], centres[rows])


class MergeEdgesFn(beam.DoFn):
    """One partition's edges from every band group → distinct ``(members, centres)`` + the
    ``candidate_edges`` count."""

    timer = stage_counter("lsh")

    STATS_TAG = "stats"

    @timed_process
    def process(self, element: tuple[int, Iterable[tuple]]) -> Iterator[object]:
        _, chunks = element
        chunks = list(chunks)
        members, centres = unique_pairs(np.concatenate([c[0] for c in chunks]),
                                        np.concatenate([c[1] for c in chunks]))
        yield beam.pvalue.TaggedOutput(self.STATS_TAG, {"candidate_edges": len(members)})
        if len(members):
            yield members, centres


class CandidatePairs(NamedTuple):
    """``edges``: distinct candidate star edges ``(member_uids, centre_uids)`` (arrays);
    ``stats``: bucket and edge counts."""

    edges: beam.PCollection
    stats: beam.PCollection


@dataclass(frozen=True)
class LshParams:
    bands: int
    rows: int
    seed: int
    num_partitions: int
    max_bucket_size: int


class FindCandidatePairs(beam.PTransform):
    """``{"features": (batch_key, FeatureBatch), "removed": uids of exact duplicates
    (singleton)}`` → :class:`CandidatePairs`.

    The band keys go through one GroupByKey per band group (:data:`BAND_GROUPS`) rather than
    one: a runner that holds a shuffle in memory (Beam's local FnApiRunner) then re-encodes a
    quarter of them at a time instead of all, which took the peak memory of a 900,000-document
    run from 2.3 to about 1.4 GiB. Buckets are per band, so no bucket spans two groups; an
    edge found in several groups is kept once (``MergeCandidateEdges``)."""

    def __init__(self, params: LshParams) -> None:
        super().__init__()
        self.emit = EmitBandKeysFn(params.bands, params.rows, params.seed,
                                   params.num_partitions)
        self.find = FindStarsFn(params.max_bucket_size)
        self.groups = len(band_groups(params.bands))
        self.num_partitions = params.num_partitions

    def expand(self, inputs: dict[str, beam.PCollection]) -> CandidatePairs:
        tags = [group_tag(g) for g in range(self.groups)]
        # per group: (partition, (band_ids, band_hashes, uid offsets, base uid))
        band_keys = inputs["features"] | "EmitBandKeys" >> beam.ParDo(self.emit).with_outputs(
            *tags)
        removed = beam.pvalue.AsSingleton(inputs["removed"])
        stars = [
            band_keys[tag]
            | f"GroupBandKeys{g}" >> beam.GroupByKey()
            | f"LinkBucketStars{g}" >> beam.ParDo(self.find, removed).with_outputs(
                FindStarsFn.STATS_TAG, main="edges")
            for g, tag in enumerate(tags)
        ]
        merged = (
            [found.edges for found in stars]
            | "FlattenGroupEdges" >> beam.Flatten()
            | "KeyEdgesByMember" >> beam.FlatMap(key_edges_by_member, self.num_partitions)
            | "GroupCandidateEdges" >> beam.GroupByKey()
            | "MergeCandidateEdges" >> beam.ParDo(MergeEdgesFn()).with_outputs(
                MergeEdgesFn.STATS_TAG, main="edges")
        )
        stats = ([found[FindStarsFn.STATS_TAG] for found in stars]
                 + [merged[MergeEdgesFn.STATS_TAG]]) | "FlattenLshStats" >> beam.Flatten()
        return CandidatePairs(merged.edges, stats)
