"""Exact-duplicate prefilter: the cheap first stage of the cascade.

Documents with the same normalised text (same xxh3-128 of the lowercased tokens joined by
spaces) are exact duplicates. Each group keeps one representative, chosen by the keep policy;
the others leave the cascade here, so banding, verification and connected components only see
distinct texts. The representative may still turn out to be a near-duplicate of another
document later; the removed members then point at that component's kept document.

The grouping is a GroupByKey on the exact hash, batched like the band buckets: each feature
batch emits one array of hashes per shuffle partition.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import apache_beam as beam
import numpy as np

from transforms.batches import (
    FeatureBatch,
    JoinByKey,
    batch_keys_of,
    rows_by_part,
    stage_counter,
    timed,
)

EXACT_DUPLICATES_TAG = "exact_duplicates"


def rank_key(policy: str, doc_id: str, norm_length: int, uid: int) -> tuple:
    """Sort key of a document under a keep policy: the smallest key is kept.

    ``smallest_id``: smallest id (code-point order); ``longest``: longest normalised text, ties
    by smallest id; ``first``: first in input order (file order, then line). The uid ends every
    key, so ties between equal ids are still broken deterministically.
    """
    if policy == "smallest_id":
        return (doc_id, uid)
    if policy == "longest":
        return (-norm_length, doc_id, uid)
    if policy == "first":
        return (uid,)
    raise ValueError(f"unknown keep policy {policy!r}")


def exact_groups(
    hashes: np.ndarray, uids: np.ndarray, ids: list[str], norm_lengths: np.ndarray, policy: str
) -> list[tuple[int, str, int, str]]:
    """``(member_uid, member_id, representative_uid, representative_id)`` for every document
    whose normalised text also occurs in a document that ranks before it."""
    if len(uids) == 0:
        return []
    order = np.lexsort((hashes[:, 1], hashes[:, 0]))
    sorted_hashes = hashes[order]
    same_as_next = np.all(sorted_hashes[1:] == sorted_hashes[:-1], axis=1)
    new_group = np.ones(len(order), dtype=bool)
    new_group[1:] = ~same_as_next
    starts = np.flatnonzero(new_group)
    sizes = np.diff(np.append(starts, len(order)))
    removed = []
    for start, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist()):
        rows = order[start : start + size].tolist()
        ranked = sorted(
            rows, key=lambda r: rank_key(policy, ids[r], int(norm_lengths[r]), int(uids[r]))
        )
        keep = ranked[0]
        for row in ranked[1:]:
            removed.append((int(uids[row]), ids[row], int(uids[keep]), ids[keep]))
    return removed


class EmitExactKeysFn(beam.DoFn):
    """``(batch_key, FeatureBatch)`` → ``(partition, (hashes, uids, ids, norm_lengths))``."""

    timer = stage_counter("exact")

    def __init__(self, num_partitions: int) -> None:
        self.num_partitions = num_partitions

    def process(self, element: tuple[int, FeatureBatch]) -> Iterator[tuple[int, tuple]]:
        return timed(self._process(element), self.timer)

    def _process(self, element: tuple[int, FeatureBatch]) -> Iterator[tuple[int, tuple]]:
        _, features = element
        if len(features) == 0:
            return
        parts = (features.exact_hashes[:, 1] % np.uint64(self.num_partitions)).astype(np.int64)
        for part, rows in rows_by_part(parts):
            yield part, (
                features.exact_hashes[rows],
                features.uids[rows],
                [features.ids[r] for r in rows.tolist()],
                features.norm_lengths[rows],
            )


class ResolveExactGroupsFn(beam.DoFn):
    """Groups equal hashes of one partition; emits removed members, keyed by their batch."""

    timer = stage_counter("exact")

    def __init__(self, policy: str, batch_size: int) -> None:
        self.policy = policy
        self.batch_size = batch_size

    def process(self, element: tuple[int, Iterable[tuple]]) -> Iterator[tuple[int, tuple]]:
        return timed(self._process(element), self.timer)

    def _process(self, element: tuple[int, Iterable[tuple]]) -> Iterator[tuple[int, tuple]]:
        _, chunks = element
        chunks = list(chunks)
        hashes = np.concatenate([c[0] for c in chunks])
        uids = np.concatenate([c[1] for c in chunks])
        ids = [doc_id for c in chunks for doc_id in c[2]]
        lengths = np.concatenate([c[3] for c in chunks])
        for member_uid, member_id, rep_uid, rep_id in exact_groups(
            hashes, uids, ids, lengths, self.policy
        ):
            batch = int(batch_keys_of(np.array([member_uid]), self.batch_size)[0])
            yield batch, (member_uid, member_id, rep_uid, rep_id)


def drop_members(features: FeatureBatch, removed_uids: Iterable[int]) -> FeatureBatch:
    """``features`` without the rows whose uid is in ``removed_uids``."""
    removed = np.fromiter(removed_uids, dtype=np.int64)
    if len(removed) == 0:
        return features
    keep_rows = np.flatnonzero(~np.isin(features.uids, removed))
    return features.select(keep_rows)


class FilterBatchFn(beam.DoFn):
    """CoGroupByKey result → the distinct feature batch (exact duplicates dropped)."""

    timer = stage_counter("exact")

    def process(self, element: tuple[int, dict]) -> Iterator[tuple[int, FeatureBatch]]:
        return timed(self._process(element), self.timer)

    def _process(self, element: tuple[int, dict]) -> Iterator[tuple[int, FeatureBatch]]:
        key, grouped = element
        removed = [member[0] for member in grouped["removed"]]
        for features in grouped["features"]:
            yield key, drop_members(features, removed)


class RemoveExactDuplicates(beam.PTransform):
    """Feature batches → distinct signature batches, plus an ``exact_duplicates`` output of
    ``(batch_key, (member_uid, member_id, representative_uid, representative_id))``."""

    def __init__(self, policy: str, batch_size: int, num_partitions: int) -> None:
        super().__init__()
        self.policy = policy
        self.batch_size = batch_size
        self.num_partitions = num_partitions

    def expand(self, features: beam.PCollection) -> dict[str, beam.PCollection]:
        batch_key_to_removed = (
            features
            | "EmitExactKeys" >> beam.ParDo(EmitExactKeysFn(self.num_partitions))
            | "GroupExactKeys" >> beam.GroupByKey()
            | "PickExactRepresentatives"
            >> beam.ParDo(ResolveExactGroupsFn(self.policy, self.batch_size))
        )
        # Banding needs only uids and signatures: shuffle nothing more.
        signature_batches = features | "KeepSignatures" >> beam.Map(
            lambda kv: (kv[0], kv[1].signatures_only())
        ).with_output_types(tuple[int, FeatureBatch])
        distinct = (
            {"features": signature_batches, "removed": batch_key_to_removed}
            | "JoinExactDecisions" >> JoinByKey()
            | "DropExactDuplicates" >> beam.ParDo(FilterBatchFn()).with_output_types(
                tuple[int, FeatureBatch])
        )
        return {"distinct": distinct, EXACT_DUPLICATES_TAG: batch_key_to_removed}
