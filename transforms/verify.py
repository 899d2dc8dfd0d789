"""Candidate verification: drop candidate edges whose similarity is below the threshold.

``--verify`` modes:
- ``exact`` (default): true Jaccard of the two shingle sets, so precision is exact;
- ``signature``: fraction of equal MinHash values over the full signature (an estimate);
- ``none``: keep every candidate edge (the plain LSH behaviour).

Candidate edges only touch a small part of the corpus, so their endpoints are fetched once (a
re-read of the input that parses only those documents and recomputes their shingles) into
:class:`NodeInfo` records keyed by a shuffle partition of the uid; the edges then meet the node
records of their centre and of their member in two small partition joins.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import apache_beam as beam
import numpy as np

from transforms.batches import (
    DocBatch,
    JoinByKey,
    NodeInfo,
    UidSetFn,
    partition_of,
    rows_by_part,
    sorted_runs,
    stage_counter,
    timed_process,
)
from transforms.combine import CombineGloballyInBundles
from transforms.minhash import document_shingles, minhash_signatures, permutation_params
from transforms.read import ReadParams, Selection
from transforms.records import is_generated
from transforms.reread import ReadSelected


def jaccard(left: np.ndarray, right: np.ndarray) -> float:
    """Jaccard similarity of two sorted unique hash arrays."""
    if len(left) == 0 and len(right) == 0:
        return 1.0
    common = len(np.intersect1d(left, right, assume_unique=True))
    return common / (len(left) + len(right) - common)


def signature_similarity(left: np.ndarray, right: np.ndarray) -> float:
    """Fraction of equal MinHash values: an unbiased estimate of the Jaccard similarity."""
    return float(np.count_nonzero(left == right)) / len(left)


def similarity(mode: str, left: NodeInfo, right: NodeInfo) -> float:
    """Similarity used by ``mode``; ``none`` still reports the signature estimate."""
    if mode == "exact":
        assert left.shingles is not None and right.shingles is not None
        return jaccard(left.shingles, right.shingles)
    return signature_similarity(left.signature, right.signature)


def endpoint_uids(edges: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The uids at either end of an edge array pair (unique, sorted)."""
    return np.unique(np.concatenate(edges))


def only(uids: np.ndarray) -> Selection:
    return Selection("only", uids)


class ExtractNodesFn(beam.DoFn):
    """A re-read batch of candidate documents → ``(partition, [NodeInfo])``.

    Shingles (and, outside exact mode, signatures) are recomputed from the text here, for the
    few documents that have candidate edges, rather than carried for every document: carrying
    shingle sets (or signatures) for the whole corpus through a shuffle takes more memory than
    the text itself.
    """

    timer = stage_counter("verify")

    def __init__(self, params: NodeParams, num_partitions: int) -> None:
        self.params = params
        self.num_partitions = num_partitions

    def setup(self) -> None:
        self.a, self.b = permutation_params(self.params.num_perm, self.params.seed)

    @timed_process
    def process(self, element: tuple[int, DocBatch]) -> Iterator[tuple[int, list[NodeInfo]]]:
        _, batch = element
        nodes = [node_info(int(uid), doc_id, record["text"], self.params, self.a, self.b,
                           is_generated(record))
                 for uid, doc_id, record in zip(batch.uids.tolist(), batch.ids, batch.records)]
        parts = partition_of(batch.uids, self.num_partitions, self.params.seed)
        for part, rows_of_part in rows_by_part(parts):
            yield part, [nodes[i] for i in rows_of_part.tolist()]


class NodeParams(NamedTuple):
    """What :func:`node_info` needs to recompute a document's features."""

    ngram: int
    num_perm: int
    seed: int
    tokenizer: str
    mode: str


def node_info(uid: int, doc_id: str, text: str, params: NodeParams, a: np.ndarray,
              b: np.ndarray, derived: bool = False) -> NodeInfo:
    norm_length, hashes = document_shingles(text, params.ngram, params.seed, params.tokenizer)
    signature = None
    if params.mode != "exact":
        signature = minhash_signatures(hashes, np.array([0, len(hashes)]), a, b)[0]
    return NodeInfo(uid=uid, id=doc_id, norm_length=norm_length, signature=signature,
                    shingles=np.unique(hashes) if params.mode == "exact" else None,
                    derived=derived)


class KeyEdgesFn(beam.DoFn):
    """Edge arrays → ``(partition of one endpoint, edge arrays)``."""

    timer = stage_counter("verify")

    def __init__(self, by_column: int, num_partitions: int, seed: int) -> None:
        self.by_column = by_column
        self.num_partitions = num_partitions
        self.seed = seed

    @timed_process
    def process(self, edges: tuple) -> Iterator[tuple[int, tuple]]:
        parts = partition_of(edges[self.by_column], self.num_partitions, self.seed)
        for part, rows in rows_by_part(parts):
            yield part, tuple(column[rows] if isinstance(column, np.ndarray)
                              else [column[r] for r in rows.tolist()]
                              for column in edges)


class AttachCentresFn(beam.DoFn):
    """Partition join of edges (keyed by centre) with node records → edges plus centre info."""

    timer = stage_counter("verify")

    @timed_process
    def process(self, element: tuple[int, dict]) -> Iterator[tuple]:
        _, grouped = element
        chunks = list(grouped["edges"])
        if not chunks:
            return
        nodes = {n.uid: n for group in grouped["nodes"] for n in group}
        members = np.concatenate([c[0] for c in chunks])
        centres = np.concatenate([c[1] for c in chunks])
        # The same pair can come from several band partitions; it meets itself here.
        order = np.lexsort((members, centres))
        members, centres = members[order], centres[order]
        starts, _, _ = sorted_runs(centres, members)
        members, centres = members[starts], centres[starts]
        yield members, centres, [nodes[int(c)] for c in centres.tolist()]


class VerifyEdgesFn(beam.DoFn):
    """Partition join of edges (keyed by member) with node records → verified edges."""

    timer = stage_counter("verify")

    STATS_TAG = "stats"

    def __init__(self, mode: str, threshold: float) -> None:
        self.mode = mode
        self.threshold = threshold

    @timed_process
    def process(self, element: tuple[int, dict]) -> Iterator[object]:
        _, grouped = element
        chunks = list(grouped["edges"])
        if not chunks:
            return
        nodes = {n.uid: n for group in grouped["nodes"] for n in group}
        kept_members, kept_centres, sims = [], [], []
        checked = 0
        for members, centres, centre_nodes in chunks:
            for member, centre, centre_node in zip(members.tolist(), centres.tolist(),
                                                   centre_nodes):
                checked += 1
                sim = similarity(self.mode, nodes[member], centre_node)
                if self.mode == "none" or sim >= self.threshold:
                    kept_members.append(member)
                    kept_centres.append(centre)
                    sims.append(sim)
        yield beam.pvalue.TaggedOutput(self.STATS_TAG, {
            "edges_checked": checked, "edges_verified": len(kept_members),
            "edges_rejected": checked - len(kept_members)})
        if kept_members:
            yield (np.array(kept_members, dtype=np.int64), np.array(kept_centres, dtype=np.int64),
                   np.array(sims, dtype=np.float64))


@dataclass(frozen=True)
class FetchParams:
    nodes: NodeParams  # what each endpoint's node holds
    read: ReadParams  # how the input is read again
    num_partitions: int


class FetchNodes(beam.PTransform):
    """``{"edges", "repeats"}`` (candidate edge arrays; ``repeats`` of
    ``transforms.read.ReadDocuments``) → ``(partition, [NodeInfo])`` for every endpoint.

    The endpoints' uids (8 bytes each, a few % of the corpus) select the documents that a
    re-read of the input parses, fused with the shingling: no text waits in the graph."""

    def __init__(self, params: FetchParams) -> None:
        super().__init__()
        self.params = params.nodes
        self.read = params.read
        self.num_partitions = params.num_partitions

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.PCollection:
        selection = (
            inputs["edges"]
            | "ListEndpoints" >> beam.Map(endpoint_uids)
            | "CollectEndpoints" >> CombineGloballyInBundles(UidSetFn())
            | "SelectEndpoints" >> beam.Map(only)
        )
        return (
            {"repeats": inputs["repeats"], "selection": selection}
            | "ReadCandidateDocuments" >> ReadSelected(self.read)
            | "ExtractNodeInfo" >> beam.ParDo(ExtractNodesFn(self.params, self.num_partitions))
        )


@dataclass(frozen=True)
class VerifyParams:
    mode: str  # "exact" | "signature" | "none"
    threshold: float
    num_partitions: int
    seed: int


class VerifiedEdges(NamedTuple):
    """``edges``: verified ``(members, centres, similarities)`` arrays; ``stats``: counts."""

    edges: beam.PCollection
    stats: beam.PCollection


class VerifyCandidates(beam.PTransform):
    """``{"edges": candidate edge arrays, "nodes": (partition, [NodeInfo])}`` (the nodes of
    :class:`FetchNodes`) → :class:`VerifiedEdges`."""

    def __init__(self, params: VerifyParams) -> None:
        super().__init__()
        self.params = params

    def expand(self, inputs: dict[str, beam.PCollection]) -> VerifiedEdges:
        p = self.params
        partition_to_edges_by_centre = inputs["edges"] | "KeyByCentre" >> beam.ParDo(
            KeyEdgesFn(1, p.num_partitions, p.seed))
        edges_with_centres = (
            {"edges": partition_to_edges_by_centre, "nodes": inputs["nodes"]}
            | "JoinCentreNodes" >> JoinByKey()
            | "AttachCentres" >> beam.ParDo(AttachCentresFn())
        )
        partition_to_edges_by_member = edges_with_centres | "KeyByMember" >> beam.ParDo(
            KeyEdgesFn(0, p.num_partitions, p.seed))
        checked = (
            {"edges": partition_to_edges_by_member, "nodes": inputs["nodes"]}
            | "JoinMemberNodes" >> JoinByKey()
            | "CheckSimilarity" >> beam.ParDo(VerifyEdgesFn(p.mode, p.threshold))
            .with_outputs(VerifyEdgesFn.STATS_TAG, main="edges")
        )
        return VerifiedEdges(checked.edges, checked[VerifyEdgesFn.STATS_TAG])
