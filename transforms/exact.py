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
from dataclasses import dataclass
from typing import NamedTuple

import apache_beam as beam
import numpy as np

from transforms.batches import (
    FeatureBatch,
    UidSetFn,
    batch_keys_of,
    rows_by_part,
    sorted_runs,
    stage_counter,
    timed_process,
)
from transforms.combine import CombineGloballyInBundles


def id_order_key(doc_id: str, derived: bool) -> tuple[str, int]:
    """Sort key of a document id under ``smallest_id`` (smallest key first).

    A derived id ``<file>:<line>`` (the record had no ``id``, see ``transforms.read``) is
    ``(<file>, line)``: by file name in code-point order, then by line number as a number, so
    ``a.json:4`` comes before ``a.json:1072``. An explicit id is ``(id, 0)``: code-point order of
    the whole id (``"10" < "9"``, and ``foo:12`` before ``foo:9``, whatever it looks like).
    Mixed, the text part (file name, or whole explicit id) is compared first and then the
    number, an explicit id counting as line 0: a derived id sorts where the explicit id
    ``<file>`` would, just after it if that id exists. Derived and explicit keys never tie
    (lines start at 1), and explicit ids are unique, so this is a total order.

    Whether an id is derived must come from the record (``transforms.read.is_generated``),
    not from its shape: ``foo:12`` can be an explicit id. A ``derived`` id without the
    ``<text>:<digits>`` shape (only hand-built test data) is ranked as an explicit one.
    """
    if derived:
        name, colon, line = doc_id.rpartition(":")
        if colon and line.isascii() and line.isdigit():
            return name, int(line)
    return doc_id, 0


def rank_key(policy: str, doc_id: str, norm_length: int, uid: int, derived: bool = False
             ) -> tuple:
    """Sort key of a document under a keep policy: the smallest key is kept.

    ``smallest_id``: smallest id by :func:`id_order_key` (derived ids ``<file>:<line>`` by file
    name, then line number as a number; explicit ids in code-point order); ``longest``: longest
    normalised text, ties by smallest id (same order); ``first``: first in input order (file
    order, then line). ``derived`` says whether ``doc_id`` was derived from file and line
    (``transforms.read.is_generated``); callers carry it from the read. The uid ends every
    key, so ties between equal ids are still broken deterministically.
    """
    if policy == "smallest_id":
        return (*id_order_key(doc_id, derived), uid)
    if policy == "longest":
        return (-norm_length, *id_order_key(doc_id, derived), uid)
    if policy == "first":
        return (uid,)
    raise ValueError(f"unknown keep policy {policy!r}")


def exact_groups(
    hashes: np.ndarray, uids: np.ndarray, ids: list[str], norm_lengths: np.ndarray, policy: str,
    derived: np.ndarray | None = None,
) -> list[tuple[int, str, int, str]]:
    """``(member_uid, member_id, representative_uid, representative_id)`` for every document
    whose normalised text also occurs in a document that ranks before it.

    ``derived`` (bool per row, see :func:`rank_key`) marks ids derived from file and line;
    None means every id is explicit."""
    if len(uids) == 0:
        return []
    if derived is None:
        derived = np.zeros(len(uids), dtype=bool)
    order = np.lexsort((hashes[:, 1], hashes[:, 0]))
    starts, sizes, _ = sorted_runs(hashes[order])
    removed = []
    for start, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist()):
        rows = order[start : start + size].tolist()
        ranked = sorted(
            rows, key=lambda r: rank_key(policy, ids[r], int(norm_lengths[r]), int(uids[r]),
                                         bool(derived[r]))
        )
        keep = ranked[0]
        for row in ranked[1:]:
            removed.append((int(uids[row]), ids[row], int(uids[keep]), ids[keep]))
    return removed


class EmitExactKeysFn(beam.DoFn):
    """``(batch_key, FeatureBatch)`` → ``(partition, (hashes, uids, ids, norm_lengths,
    derived))``."""

    timer = stage_counter("exact")

    def __init__(self, num_partitions: int) -> None:
        self.num_partitions = num_partitions

    @timed_process
    def process(self, element: tuple[int, FeatureBatch]) -> Iterator[tuple[int, tuple]]:
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
                features.derived_flags()[rows],
            )


class ResolveExactGroupsFn(beam.DoFn):
    """Groups equal hashes of one partition; emits removed members, keyed by their batch."""

    timer = stage_counter("exact")

    def __init__(self, policy: str, batch_size: int) -> None:
        self.policy = policy
        self.batch_size = batch_size

    @timed_process
    def process(self, element: tuple[int, Iterable[tuple]]) -> Iterator[tuple[int, tuple]]:
        _, chunks = element
        chunks = list(chunks)
        hashes = np.concatenate([c[0] for c in chunks])
        uids = np.concatenate([c[1] for c in chunks])
        ids = [doc_id for c in chunks for doc_id in c[2]]
        lengths = np.concatenate([c[3] for c in chunks])
        derived = np.concatenate([c[4] for c in chunks])
        for member_uid, member_id, rep_uid, rep_id in exact_groups(
            hashes, uids, ids, lengths, self.policy, derived
        ):
            batch = int(batch_keys_of(np.array([member_uid]), self.batch_size)[0])
            yield batch, (member_uid, member_id, rep_uid, rep_id)


def removed_uid(member: tuple[int, tuple]) -> np.ndarray:
    """The uid of one exact member ``(batch_key, (member_uid, ...))``, as a uid array."""
    return np.array([member[1][0]], dtype=np.int64)


class ExactDuplicates(NamedTuple):
    """``members``: ``(batch_key, (member_uid, member_id, representative_uid,
    representative_id))`` for every exact duplicate left out; ``removed``: their uids, sorted
    (a singleton ``int64[n]``, for banding to skip them)."""

    members: beam.PCollection
    removed: beam.PCollection


@dataclass(frozen=True)
class ExactParams:
    policy: str  # which member of a group of exact duplicates is kept
    batch_size: int
    num_partitions: int


class RemoveExactDuplicates(beam.PTransform):
    """Feature batches → the exact duplicates each group leaves out (:class:`ExactDuplicates`).

    Only hashes, ids and lengths cross the shuffle; the feature batches themselves go on to
    banding without waiting for this decision (banding drops the ``removed`` uids)."""

    def __init__(self, params: ExactParams) -> None:
        super().__init__()
        self.policy = params.policy
        self.batch_size = params.batch_size
        self.num_partitions = params.num_partitions

    def expand(self, features: beam.PCollection) -> ExactDuplicates:
        batch_key_to_removed = (
            features
            | "EmitExactKeys" >> beam.ParDo(EmitExactKeysFn(self.num_partitions))
            | "GroupExactKeys" >> beam.GroupByKey()
            | "PickExactRepresentatives"
            >> beam.ParDo(ResolveExactGroupsFn(self.policy, self.batch_size))
        )
        removed_uids = (
            batch_key_to_removed
            | "ListRemovedUids" >> beam.Map(removed_uid)
            | "CollectRemovedUids" >> CombineGloballyInBundles(UidSetFn())
        )
        return ExactDuplicates(batch_key_to_removed, removed_uids)
