"""``ndcl truth``: an exact near-duplicate truth file of a (small) corpus.

The same documents, ids and shingles as the pipeline (``transforms.read``'s reader,
``transforms.minhash.document_shingles``): identical shingle sets are grouped first, then
candidate pairs come from a MinHash LSH with many bands of few rows (by default the most rows
per band whose miss probability at the threshold is at most 1e-6; the S-curve values are written
to the file's metadata) or, with ``--candidates index``, from a shingle inverted index (every
pair sharing a shingle, recall exactly 1, for small corpora). Every candidate is verified by
exact Jaccard, the connected components of the edges >= threshold (scipy's
``connected_components``) are the clusters, and clusters of two or more documents are written
in input order. Verified pairs >= ``--pairs-min`` (default 0.5) are written as ``pairs`` with
their Jaccard; the candidates' S-curve at that bound (in the metadata) says how complete the
low bins are. Corpora above ``--max-docs`` are refused (exit 2): all shingle sets are held in
memory. The file format is :mod:`beam_pipeline.truth`'s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import xxhash
from numpy.typing import ArrayLike

from beam_pipeline.metrics import miss_probability
from beam_pipeline.truth import JACCARD_DECIMALS, EvaluationError, truncate_jaccard
from transforms.batches import sorted_runs

# One logger for `ndcl evaluate` and `ndcl truth`, so their log lines read as before the split.
LOG = logging.getLogger("ndcl.evaluate")

# Candidate miss probability at the threshold that `ndcl truth` picks its LSH banding for.
TRUTH_MAX_MISS = 1e-6
# The truth's MinHash seed differs from the pipeline's default (1), so that the rare pairs the
# truth's LSH misses are not the same pairs an unlucky pipeline signature misses.
TRUTH_SEED = 97
DEFAULT_MAX_DOCS = 200_000
S_CURVE_POINTS = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
# Verified pairs down to this Jaccard are written to truth files: the candidate set of 64 bands
# of 4 rows still finds a pair of 0.5 with probability 0.984, so bins below the threshold are
# nearly complete and the measured S-curve has points on its rising side.
DEFAULT_PAIRS_MIN = 0.5
SIGNATURE_CHUNK_DOCS = 4096


class CorpusTooLargeError(EvaluationError):
    """``ndcl truth`` refuses a corpus above its document limit."""


# --------------------------------------------------------------------------- the corpus


@dataclass
class CorpusShingles:
    """The tokenised documents of a corpus, in input order, with their shingle-hash sets."""

    files: list[str]
    ids: list[str] = field(default_factory=list)
    shingles: list[np.ndarray] = field(default_factory=list)
    docs: int = 0
    untokenized: int = 0
    rejected: int = 0
    repeated_ids: int = 0


def read_shingles(patterns: list[str], ngram: int, seed: int, tokenizer: str, max_docs: int,
                  max_doc_bytes: int) -> CorpusShingles:
    """Read the corpus as ``ndcl dedup`` does (same files, ids, rejects, tokens, shingles);
    raise :class:`CorpusTooLargeError` as soon as it has more than ``max_docs`` documents."""
    from apache_beam.pvalue import TaggedOutput

    from transforms.minhash import document_shingles
    from transforms.read import (
        ReadFileFn,
        has_derived_form,
        id_names,
        is_generated,
        match_inputs,
    )

    corpus = CorpusShingles(files=match_inputs(patterns))
    # The pipeline's own reader, so ids and rejections cannot drift from the run's.
    names = id_names(corpus.files)
    derived_names = set(names.values())
    reader = ReadFileFn(max_doc_bytes, 4096, names)
    seen: set[str] = set()
    for file_index, path in enumerate(corpus.files):
        for item in reader.process((file_index, path)):
            if isinstance(item, TaggedOutput):
                corpus.rejected += 1
                continue
            _, batch = item
            for doc_id, record in zip(batch.ids, batch.records):
                if doc_id in seen or (not is_generated(record)
                                      and has_derived_form(doc_id, derived_names)):
                    # As in ReadDocuments: the first record in input order owns the id, and
                    # an explicit id that reads as a derived one is rejected.
                    corpus.repeated_ids += 1
                    continue
                seen.add(doc_id)
                corpus.docs += 1
                if corpus.docs > max_docs:
                    raise CorpusTooLargeError(
                        f"{' '.join(patterns)} holds more than {max_docs:,} documents "
                        "(--max-docs): an exact truth keeps every shingle set in memory; raise "
                        "--max-docs if this machine has the memory, or build it on a sample")
                _, hashes = document_shingles(record["text"], ngram, seed, tokenizer)
                if len(hashes) == 0:
                    corpus.untokenized += 1  # nothing to compare: never a duplicate
                    continue
                corpus.ids.append(doc_id)
                corpus.shingles.append(np.unique(hashes))
    return corpus


def identical_groups(shingles: list[np.ndarray]) -> list[list[int]]:
    """Documents grouped by identical shingle set (Jaccard 1), in input order."""
    groups: dict[bytes, list[int]] = {}
    for i, hashes in enumerate(shingles):
        groups.setdefault(xxhash.xxh3_128_digest(hashes.tobytes()), []).append(i)
    return sorted(groups.values())


# --------------------------------------------------------------------------- LSH candidates


def lsh_parameters(threshold: float, num_perm: int, max_miss: float = TRUTH_MAX_MISS
                   ) -> tuple[int, int]:
    """``(bands, rows)``: the most rows per band (fewest spurious candidates) whose miss
    probability at ``threshold`` is at most ``max_miss``; one row per band if none is."""
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if miss_probability(threshold, bands, rows) <= max_miss:
            return bands, rows
    return num_perm, 1


def _group_pairs(members: np.ndarray, starts: np.ndarray, sizes: np.ndarray, n: int
                 ) -> list[np.ndarray]:
    """Codes ``i * n + j`` (i < j) of every pair inside each group ``members[start:start+size]``
    (members sorted within groups); one vectorised block per distinct group size."""
    codes = []
    for size in np.unique(sizes[sizes > 1]).tolist():
        block = members[starts[sizes == size][:, None] + np.arange(size)[None, :]]
        left, right = np.triu_indices(size, 1)
        codes.append((block[:, left] * n + block[:, right]).ravel())
    return codes


def _runs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of the runs of equal values in a sorted array."""
    starts, sizes, _ = sorted_runs(keys)
    return starts, sizes


def lsh_candidates(shingles: list[np.ndarray], num_perm: int, bands: int, rows: int, seed: int
                   ) -> np.ndarray:
    """``int64[k, 2]`` pairs ``(i, j)``, i < j, sharing at least one LSH band: every pair of a
    bucket, not the pipeline's star, so no pair depends on a third document."""
    from transforms.lsh import band_hashes
    from transforms.minhash import minhash_signatures, permutation_params

    n = len(shingles)
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    a, b = permutation_params(num_perm, seed)
    signatures = np.empty((n, num_perm), dtype=np.uint32)
    for start in range(0, n, SIGNATURE_CHUNK_DOCS):
        chunk = shingles[start : start + SIGNATURE_CHUNK_DOCS]
        offsets = np.concatenate([[0], np.cumsum([len(s) for s in chunk])]).astype(np.int64)
        signatures[start : start + len(chunk)] = minhash_signatures(np.concatenate(chunk),
                                                                    offsets, a, b)
    keys = band_hashes(signatures, bands, rows, seed)
    found = np.zeros(0, dtype=np.int64)
    for band in range(bands):
        # Sorting by (key, document) keeps each bucket's members in ascending order.
        order = np.lexsort((np.arange(n), keys[:, band]))
        starts, sizes = _runs(keys[order, band])
        codes = _group_pairs(order.astype(np.int64), starts, sizes, n)
        if codes:
            # Merged band by band: similar documents share most bands, so the pairs of all
            # bands together would be many times the distinct ones.
            found = np.union1d(found, np.concatenate(codes))
    return np.stack([found // n, found % n], axis=1)


def index_candidates(shingles: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every pair ``(i, j)``, i < j, sharing a shingle, with its exact intersection size.

    Cost is Σ C(documents per shingle, 2): fine for small corpora, quadratic for a shingle
    shared by thousands of documents (boilerplate), which is what ``lsh`` is for.
    """
    n = len(shingles)
    flat = np.concatenate(shingles) if shingles else np.zeros(0, dtype=np.uint64)
    docs = np.repeat(np.arange(n, dtype=np.int64), [len(s) for s in shingles])
    order = np.lexsort((docs, flat))
    starts, sizes = _runs(flat[order])
    codes = _group_pairs(docs[order], starts, sizes, n)
    if not codes:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64)
    # Each document's set holds a shingle once, so the count of a pair is |A ∩ B|.
    unique, counts = np.unique(np.concatenate(codes), return_counts=True)
    return np.stack([unique // n, unique % n], axis=1), counts


# --------------------------------------------------------------------------- the Jaccard graph


def pair_jaccards(pairs: np.ndarray, shingles: list[np.ndarray], floor: float,
                  intersections: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The candidate pairs whose exact Jaccard is at least ``floor``, and those Jaccards (the
    pipeline's ``--verify exact`` comparison: ``|A ∩ B| / (|A| + |B| - |A ∩ B|)``)."""
    from transforms.verify import jaccard

    if len(pairs) == 0:
        return pairs, np.zeros(0, dtype=np.float64)
    if intersections is not None:
        sizes = np.array([len(s) for s in shingles], dtype=np.int64)
        scores = intersections / (sizes[pairs[:, 0]] + sizes[pairs[:, 1]] - intersections)
        keep = scores >= floor
        return pairs[keep], scores[keep]
    kept, scores = [], []
    for k, (i, j) in enumerate(pairs.tolist()):
        small, large = sorted((len(shingles[i]), len(shingles[j])))
        # Jaccard is at most |small| / |large|: skip the intersection when that is too low.
        if small >= floor * large:
            score = jaccard(shingles[i], shingles[j])
            if score >= floor:
                kept.append(k)
                scores.append(score)
    return pairs[np.array(kept, dtype=np.int64)], np.array(scores, dtype=np.float64)


def verify_pairs(pairs: np.ndarray, shingles: list[np.ndarray], threshold: float,
                 intersections: np.ndarray | None = None) -> np.ndarray:
    """The candidate pairs whose exact Jaccard is at least ``threshold``."""
    return pair_jaccards(pairs, shingles, threshold, intersections)[0]


def connected_clusters(n: int, edges: ArrayLike) -> list[list[int]]:
    """Connected components (each sorted, ordered by their first member) of ``n`` nodes joined
    by ``edges``, pairs ``(i, j)`` (an ``int[k, 2]`` array or a list of pairs)."""
    # Imported here: the CLI imports this module for its defaults when it builds any parser.
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if n == 0:
        return []
    pairs = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int32), (pairs[:, 0], pairs[:, 1])),
                       shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    # A stable sort by component keeps each component's members in ascending order.
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    return sorted(part.tolist() for part in np.split(order, bounds))


@dataclass(frozen=True)
class TruthGraph:
    """The exact-Jaccard graph of a corpus over its distinct shingle sets."""

    # Clusters (document indices, ≥ 2 members, input order) of the edges ≥ threshold.
    clusters: list[list[int]]
    stats: dict[str, int]
    # Document indices with one shingle set, in input order; distinct set k is ``groups[k]``.
    groups: list[list[int]]
    # ``int64[k, 2]`` pairs of distinct sets (i < j) of Jaccard ≥ the pairs floor, and Jaccards.
    pairs: np.ndarray
    jaccards: np.ndarray


def truth_graph(shingles: list[np.ndarray], threshold: float, candidates: str, num_perm: int,
                bands: int, rows: int, seed: int, pairs_min: float | None = None
                ) -> TruthGraph:
    """Verify the candidates of ``shingles`` down to ``pairs_min`` (default: the threshold)
    and cluster the pairs at or above the threshold."""
    floor = threshold if pairs_min is None else min(pairs_min, threshold)
    groups = identical_groups(shingles)
    distinct = [shingles[g[0]] for g in groups]
    if candidates == "index":
        candidate_pairs, intersections = index_candidates(distinct)
        scored, scores = pair_jaccards(candidate_pairs, distinct, floor, intersections)
    else:
        candidate_pairs = lsh_candidates(distinct, num_perm, bands, rows, seed)
        scored, scores = pair_jaccards(candidate_pairs, distinct, floor)
    # Edges from the unrounded Jaccards: the clusters are those of the threshold alone,
    # whatever pairs_min is.
    edges = scored[scores >= threshold]
    components = connected_clusters(len(distinct), edges)
    clusters = sorted(sorted(i for g in comp for i in groups[g]) for comp in components)
    stats = {"distinct_shingle_sets": len(distinct),
             "identical_groups": sum(len(g) > 1 for g in groups),
             "candidate_pairs": len(candidate_pairs), "verified_pairs": len(edges)}
    return TruthGraph([c for c in clusters if len(c) >= 2], stats, groups, scored, scores)


def truth_clusters(shingles: list[np.ndarray], threshold: float, candidates: str,
                   num_perm: int, bands: int, rows: int, seed: int
                   ) -> tuple[list[list[int]], dict[str, int]]:
    """Clusters (document indices, ≥ 2 members, input order) of the exact-Jaccard graph."""
    graph = truth_graph(shingles, threshold, candidates, num_perm, bands, rows, seed)
    return graph.clusters, graph.stats


# --------------------------------------------------------------------------- the truth file


def candidate_metadata(candidates: str, threshold: float, num_perm: int, bands: int, rows: int,
                       seed: int, verified_pairs: int, pairs_min: float | None = None
                       ) -> dict[str, Any]:
    """How sensitive the candidate set is, for the truth file's metadata."""
    if candidates == "index":
        found = {"method": "shingle_index", "recall_at_threshold": 1.0,
                 "note": "every pair of documents sharing a shingle is verified"}
        return found if pairs_min is None else {**found, "recall_at_pairs_min": 1.0}
    miss = miss_probability(threshold, bands, rows)
    low = {} if pairs_min is None else {
        # The share of the pairs at the lowest listed Jaccard that the candidates found (more
        # above it): how complete the lowest bins of a per-similarity evaluation are.
        "recall_at_pairs_min": 1.0 - miss_probability(pairs_min, bands, rows)}
    points = {*S_CURVE_POINTS, threshold} | ({pairs_min} if pairs_min is not None else set())
    return {
        "method": "minhash_lsh", "num_perm": num_perm, "bands": bands, "rows": rows,
        "seed": seed,
        "recall_at_threshold": 1.0 - miss,
        "miss_probability_at_threshold": miss,
        **low,
        "s_curve": {f"{s:.2f}": 1.0 - miss_probability(s, bands, rows) for s in sorted(points)},
        # Pairs above the threshold are found with probability >= recall_at_threshold, so the
        # expected number of missed edges is at most this (clusters often survive a miss).
        "expected_missed_pairs_at_most": verified_pairs * miss / (1.0 - miss) if miss < 1 else None,
        "note": "1 - (1 - s^rows)^bands: the probability that a pair of Jaccard s is a "
                "candidate; it rises with s, and every candidate is verified exactly",
    }


def build_truth(patterns: list[str], threshold: float = 0.7, ngram: int = 5,
                tokenizer: str = "unicode", max_docs: int = DEFAULT_MAX_DOCS,
                candidates: str = "lsh", num_perm: int = 256, bands: int | None = None,
                rows: int | None = None, seed: int = TRUTH_SEED,
                max_doc_bytes: int = 10_000_000, pairs_min: float | None = DEFAULT_PAIRS_MIN
                ) -> dict[str, Any]:
    """The truth file (as a JSON-ready dict) of the documents matched by ``patterns``; with
    ``pairs_min`` (None: none) also its scored pairs and identical groups."""
    if not 0.0 < threshold <= 1.0:
        raise EvaluationError(f"threshold must be in (0, 1], got {threshold}")
    if pairs_min is not None and not 0.0 < pairs_min <= 1.0:
        raise EvaluationError(f"--pairs-min must be in (0, 1], got {pairs_min}")
    if ngram < 1 or num_perm < 1 or max_docs < 1:
        raise EvaluationError("ngram, num-perm and max-docs must be >= 1")
    if (bands is None) != (rows is None):
        raise EvaluationError("give both --bands and --rows, or neither")
    if bands is None or rows is None:
        bands, rows = lsh_parameters(threshold, num_perm)
    elif bands < 1 or rows < 1 or bands * rows > num_perm:
        raise EvaluationError(f"--bands {bands} x --rows {rows} must be >= 1 and fit in "
                              f"--num-perm {num_perm}")
    corpus = read_shingles(patterns, ngram, seed, tokenizer, max_docs, max_doc_bytes)
    graph = truth_graph(corpus.shingles, threshold, candidates, num_perm, bands, rows, seed,
                        pairs_min)
    clusters, stats = graph.clusters, graph.stats
    from beam_pipeline.db import code_version

    if corpus.repeated_ids:
        LOG.warning("%d records repeat the id of an earlier record and are left out, as "
                    "ndcl dedup rejects them (duplicate_id)", corpus.repeated_ids)
    metadata = {
        "created_by": "ndcl truth", "code_version": code_version(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": corpus.files, "tokenizer": tokenizer, "shingle_seed": seed,
        "documents_read": corpus.docs, "untokenized": corpus.untokenized,
        "rejected_lines": corpus.rejected, "repeated_ids": corpus.repeated_ids,
        "clustered_documents": sum(len(c) for c in clusters), **stats,
        "candidates": candidate_metadata(candidates, threshold, num_perm, bands, rows, seed,
                                         stats["verified_pairs"], pairs_min),
        "definition": f"connected components of the graph of document pairs whose exact "
                      f"Jaccard of word {ngram}-gram shingle sets is >= {threshold} "
                      f"({tokenizer} tokens, a document of fewer than {ngram} tokens is one "
                      "shingle, documents without tokens left out); clusters of >= 2 "
                      "documents, ids in input order",
    }
    truth: dict[str, Any] = {"threshold": threshold, "ngram": ngram, "docs": corpus.docs}
    if pairs_min is not None:
        truth["pairs_min"] = pairs_min
        metadata["scored_pairs"] = int((graph.jaccards >= pairs_min).sum())
        metadata["pairs_definition"] = (
            f"pairs: every verified candidate pair of exact Jaccard >= {pairs_min} (below the "
            f"threshold too) as [id_a, id_b, Jaccard truncated to {JACCARD_DECIMALS} decimals]; "
            "identical: documents with identical shingle sets, whose first member stands for "
            "the group in pairs (a pair stands for every pair across its two groups, a group "
            "for its inner pairs at Jaccard 1); candidates.recall_at_pairs_min is how likely a "
            "pair at the lower bound was a candidate")
    truth["metadata"] = metadata
    truth["clusters"] = [[corpus.ids[i] for i in c] for c in clusters]
    if pairs_min is not None:
        rep_id = [corpus.ids[g[0]] for g in graph.groups]
        truth["identical"] = [[corpus.ids[i] for i in g] for g in graph.groups if len(g) > 1]
        # Verified down to min(pairs_min, threshold); listed from pairs_min up.
        listed = graph.jaccards >= pairs_min
        truth["pairs"] = [[rep_id[i], rep_id[j], truncate_jaccard(score)] for (i, j), score in
                          zip(graph.pairs[listed].tolist(), graph.jaccards[listed].tolist())]
    return truth


