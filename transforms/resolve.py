"""Decide which document each duplicate component keeps, and what every other one points at.

Input: component labels of the distinct documents that have at least one verified edge, the
node records fetched for verification, and the exact-duplicate members removed earlier.
Each component keeps the document that ranks first under the keep policy
(``transforms.exact.rank_key``); every other member becomes a ``near`` duplicate of it.
An exact duplicate points at the kept document of its representative's component (or at the
representative itself when that one has no near-duplicate), with reason ``exact``.

Output: ``(batch_key, DuplicateRow)`` tuples, so the rows can meet their document batch.
``similarity`` is the similarity of the removed document to the kept one, measured as the
verification mode measures it (exact Jaccard, or the signature estimate). ``component_size``
counts the distinct texts of the near-duplicate component (1 when an exact group had no near
duplicate).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import apache_beam as beam
import numpy as np

from transforms.batches import (
    JoinByKey,
    NodeInfo,
    batch_key_of,
    partition_of,
    rows_by_part,
    stage_counter,
    timed_process,
)
from transforms.exact import rank_key
from transforms.read import Selection
from transforms.verify import similarity


class Decision(NamedTuple):
    """Where one document of a component ends up."""

    uid: int
    id: str
    kept_uid: int
    kept_id: str
    similarity: float
    component_size: int


class DuplicateRow(NamedTuple):
    uid: int
    id: str
    duplicate_of: str
    reason: str
    similarity: float
    component_size: int


def choose_kept(members: list[NodeInfo], policy: str) -> NodeInfo:
    return min(members, key=lambda n: rank_key(policy, n.id, n.norm_length, n.uid, n.derived))


def resolve_component(members: list[NodeInfo], policy: str, mode: str) -> list[Decision]:
    """One :class:`Decision` per member (the kept one included, with similarity 1)."""
    kept = choose_kept(members, policy)
    size = len(members)
    return [
        Decision(n.uid, n.id, kept.uid, kept.id,
                 1.0 if n.uid == kept.uid else similarity(mode, n, kept), size)
        for n in members
    ]


class KeyLabelsFn(beam.DoFn):
    """``(nodes, labels)`` arrays → ``(partition(node), (nodes, labels))``."""

    timer = stage_counter("resolve")

    def __init__(self, num_partitions: int, seed: int) -> None:
        self.num_partitions = num_partitions
        self.seed = seed

    @timed_process
    def process(self, labels: tuple[np.ndarray, np.ndarray]) -> Iterator[tuple[int, tuple]]:
        nodes, comps = labels
        parts = partition_of(nodes, self.num_partitions, self.seed)
        for part, rows in rows_by_part(parts):
            yield part, (nodes[rows], comps[rows])


class LabelNodesFn(beam.DoFn):
    """Partition join of labels with node records → ``(component label, NodeInfo)``."""

    timer = stage_counter("resolve")

    @timed_process
    def process(self, element: tuple[int, dict]) -> Iterator[tuple[int, NodeInfo]]:
        _, grouped = element
        nodes = {n.uid: n for group in grouped["nodes"] for n in group}
        # A star centre arrives once per partition holding one of its leaves.
        labels: dict[int, int] = {}
        for uids, comps in grouped["labels"]:
            labels.update(zip(uids.tolist(), comps.tolist()))
        for uid in sorted(labels):
            yield labels[uid], nodes[uid]


class ResolveComponentFn(beam.DoFn):
    timer = stage_counter("resolve")
    def __init__(self, policy: str, mode: str) -> None:
        self.policy = policy
        self.mode = mode

    @timed_process
    def process(self, element: tuple[int, Iterable[NodeInfo]]) -> Iterator[Decision]:
        _, members = element
        members = sorted(members, key=lambda n: n.uid)
        yield from resolve_component(members, self.policy, self.mode)


class RemapExactFn(beam.DoFn):
    """Per representative uid: exact members + (optional) the representative's decision."""

    timer = stage_counter("resolve")

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size

    @timed_process
    def process(self, element: tuple[int, dict]) -> Iterator[tuple[int, DuplicateRow]]:
        _, grouped = element
        decisions = list(grouped["decision"])
        members = sorted(grouped["members"])
        if not members:
            return
        if decisions:
            final = decisions[0]
            kept_id, sim, size = final.kept_id, final.similarity, final.component_size
        else:
            kept_id, sim, size = members[0][3], 1.0, 1
        for member_uid, member_id, _, _ in members:
            row = DuplicateRow(member_uid, member_id, kept_id, "exact", sim, size)
            yield batch_key_of(member_uid, self.batch_size), row


def near_rows(decision: Decision, batch_size: int) -> Iterator[tuple[int, DuplicateRow]]:
    if decision.uid != decision.kept_uid:
        yield batch_key_of(decision.uid, batch_size), DuplicateRow(
            decision.uid, decision.id, decision.kept_id, "near", decision.similarity,
            decision.component_size)


@dataclass(frozen=True)
class ResolveParams:
    policy: str  # which member of a component is kept (``keep``)
    mode: str  # the verification mode (how similarities to the kept document are computed)
    batch_size: int
    num_partitions: int
    seed: int


class ResolveDuplicates(beam.PTransform):
    """``{"labels": (nodes, labels) arrays, "nodes": (partition, [NodeInfo]), "exact_members":
    the exact duplicates' members}`` → ``(batch_key, DuplicateRow)`` for every removed
    document."""

    def __init__(self, params: ResolveParams) -> None:
        super().__init__()
        self.params = params

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.PCollection:
        p = self.params
        decisions = (
            {"labels": inputs["labels"] | "KeyLabels" >> beam.ParDo(
                KeyLabelsFn(p.num_partitions, p.seed)), "nodes": inputs["nodes"]}
            | "JoinLabelNodes" >> JoinByKey()
            | "LabelNodes" >> beam.ParDo(LabelNodesFn())
            | "GroupComponents" >> beam.GroupByKey()
            | "ChooseKept" >> beam.ParDo(ResolveComponentFn(p.policy, p.mode))
        )
        near = decisions | "EmitNearRows" >> beam.FlatMap(near_rows, p.batch_size)
        exact = (
            {"decision": decisions | "KeyDecisions" >> beam.Map(lambda d: (d.uid, d)),
             "members": inputs["exact_members"] | "KeyByRepresentative" >> beam.Map(
                 lambda kv: (kv[1][2], kv[1]))}
            | "JoinExactToComponents" >> JoinByKey()
            | "EmitExactRows" >> beam.ParDo(RemapExactFn(p.batch_size))
        )
        return (near, exact) | "FlattenDuplicateRows" >> beam.Flatten()


def removed_uids(row: tuple[int, DuplicateRow]) -> np.ndarray:
    """The uid of one ``(batch_key, DuplicateRow)`` as a uid array (for a ``UidSetFn``)."""
    return np.array([row[1].uid], dtype=np.int64)


def all_except(uids: np.ndarray) -> Selection:
    """ND→CL: every document but the removed duplicates (a re-read selection)."""
    return Selection("except", uids)
