"""Accuracy of a run's near-duplicate clusters, and exact truth files to measure it against.

``ndcl evaluate RUN_ID_OR_OUT --truth FILE`` scores the duplicate clusters of a run (an output
directory, or a run id of the benchmark database) against a truth file;
``ndcl evaluate RUN_ID_OR_OUT --against RUN_ID_OR_OUT`` scores them against another run (e.g.
CL→ND against ND→CL). Both print a table, write ``OUT/evaluation.json`` and store one
``AccuracyMetric`` row per level (``pair`` and ``document``) for the evaluated run.
``ndcl truth INPUT ... --output FILE`` builds a truth file by exact Jaccard.

Clusters. A truth file is ``{"clusters": [[id, id, ...], ...]}`` (other top-level keys are kept
as metadata), with the pipeline's document ids (``id`` of ``OUT/kept`` and ``OUT/duplicates``).
It may also list scored pairs: ``"pairs": [[id_a, id_b, jaccard], ...]``, every verified pair of
exact Jaccard >= ``"pairs_min"`` (below the threshold too), and ``"identical": [[id, ...], ...]``,
documents with identical shingle sets: a pair's ids are the first members of their identical
groups and stand for every pair across the two groups, and each group for all its inner pairs
at Jaccard 1 (so a thousand copies of one post cost a thousand ids, not half a million pairs).
A run's predicted clusters are each kept document with the rows of ``OUT/duplicates`` whose
``duplicate_of`` is that document. Only clusters of two or more documents matter.

Pair level: a pair of documents is positive when both are in one cluster. TP = pairs in one
predicted *and* one truth cluster = Σ C(n_ij, 2) over the contingency counts n_ij = |P_i ∩ T_j|;
FP = Σ C(|P_i|, 2) − TP; FN = Σ C(|T_j|, 2) − TP. Linear in the clustered documents: no pair
is ever listed.

Document level: what deduplication is for, the documents removed. From a truth cluster T the
corpus should lose |T| − 1 documents (any of them); R is the set of documents the run removed.
TP = Σ_T min(|R ∩ T|, |T| − 1); FP = |R| − TP (a removed document outside every truth cluster,
or one removal too many from a cluster, which then lost all its members); FN =
Σ_T (|T| − 1) − TP (truth duplicates still kept: two or more members of one T survived). The
counts depend only on how *many* members of each truth cluster were removed, never on which,
so keep policies (``smallest_id``, ``longest``, ``first``) that agree on the clusters score alike.

Precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2·TP / (2·TP + FP + FN); a ratio with
a zero denominator is undefined (``null``/``n/a``) rather than a made-up 0 or 1.

Detection by similarity (``by_similarity``, when the truth file has pairs): the truth pairs are
binned by exact Jaccard (width 0.05 from ``pairs_min`` up to 1) and each bin counts its pairs and
those the run put in one duplicate cluster. That is the run's measured end-to-end detection rate
per similarity: LSH banding, then verification (``--verify exact`` rejects every edge below the
threshold, so below it only pairs joined through other documents count; ``--verify none``
keeps the raw LSH curve), then connected components (a pair is detected when a chain of edges
joins it). ``same_truth_cluster`` counts the pairs the truth's own components join, which is
what a perfect ``--verify exact`` run detects below the threshold.

``--against A``: run A's clusters are the truth for the evaluated run B (same two levels), and
A's duplicate rows (id → duplicate_of) that B did not put in one cluster are counted and
listed as ``missing_duplicates`` (``extra_duplicates`` the other way round).

``ndcl truth``: the same documents, ids and shingles as the pipeline (``transforms.read``'s
reader, ``transforms.minhash.document_shingles``): identical shingle sets are grouped first,
then candidate pairs come from a MinHash LSH with many bands of few rows (by default the
most rows per band whose miss probability at the threshold is at most 1e-6; the S-curve values
are written to the file's metadata) or, with ``--candidates index``, from a shingle inverted index
(every pair sharing a shingle, recall exactly 1, for small corpora). Every candidate is verified
by exact Jaccard, edges ≥ threshold are joined by a union-find, and clusters of two or more
documents are written in input order. Verified pairs ≥ ``--pairs-min`` (default 0.5) are written
as ``pairs`` with their Jaccard; the candidates' S-curve at that bound (in the metadata) says how
complete the low bins are. Corpora above ``--max-docs`` are refused (exit 2): all
shingle sets are held in memory.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import xxhash
from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems

LOG = logging.getLogger("ndcl.evaluate")

TRUTH_FORMAT = '{"clusters": [["id", "id", ...], ...]}'
LEVELS = ("pair", "document")
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
# Pair similarities are written with this many decimals, truncated rather than rounded so that a
# written value is at or above a bin edge (or the threshold) exactly when the Jaccard is.
JACCARD_DECIMALS = 4
# Bins of ``by_similarity``, in units of 10^-JACCARD_DECIMALS so that edges are exact integers.
BIN_WIDTH_UNITS = 500
SIGNATURE_CHUNK_DOCS = 4096


class EvaluationError(ValueError):
    """An input of the evaluation is unusable; the message says which one and why."""


class TruthFileError(EvaluationError):
    """A truth file that cannot be read as ``{"clusters": [[id, ...], ...]}``."""


class CorpusTooLargeError(EvaluationError):
    """``ndcl truth`` refuses a corpus above its document limit."""


# --------------------------------------------------------------------------- truth files


@dataclass(frozen=True)
class Truth:
    """Disjoint clusters of document ids, and the file's other top-level keys."""

    clusters: list[list[str]]
    metadata: dict[str, Any]
    source: str
    # ``(id_a, id_b, jaccard)`` of the file's "pairs"; None when it has none (older files).
    pairs: list[tuple[str, str, float]] | None = None
    # Documents with identical shingle sets, first member standing for the group in ``pairs``.
    identical: list[list[str]] = field(default_factory=list)

    @property
    def pairs_min(self) -> float | None:
        """The lower Jaccard bound of ``pairs``: as written, else the lowest pair listed."""
        value = self.metadata.get("pairs_min")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        return min((p[2] for p in self.pairs), default=None) if self.pairs else None


def parse_truth(obj: Any, source: str) -> Truth:
    """Validate a decoded truth file; ids may be strings or (decimal) integers."""
    if not isinstance(obj, dict) or "clusters" not in obj:
        raise TruthFileError(f"{source}: expected a JSON object with a \"clusters\" list, "
                             f"{TRUTH_FORMAT}; got {_describe(obj)}")
    clusters = obj["clusters"]
    if not isinstance(clusters, list):
        raise TruthFileError(f"{source}: \"clusters\" must be a list of lists of ids, got "
                             f"{_describe(clusters)}")
    where: dict[str, int] = {}
    parsed: list[list[str]] = []
    for c, cluster in enumerate(clusters):
        if not isinstance(cluster, list):
            raise TruthFileError(f"{source}: clusters[{c}] is {_describe(cluster)}, not a list "
                                 "of ids")
        ids = []
        for k, value in enumerate(cluster):
            # The pipeline writes integer ids in decimal, so 12345 and "12345" are one document.
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise TruthFileError(f"{source}: clusters[{c}][{k}] is {value!r}: ids are "
                                     "strings (or integers)")
            doc_id = str(value)
            if doc_id in where:
                other = where[doc_id]
                raise TruthFileError(
                    f"{source}: id {doc_id!r} is listed twice in clusters[{c}]" if other == c
                    else f"{source}: id {doc_id!r} is in clusters[{other}] and clusters[{c}]: "
                         "clusters must be disjoint (merge them if they are one cluster)")
            where[doc_id] = c
            ids.append(doc_id)
        parsed.append(ids)
    pairs = _parse_pairs(obj["pairs"], source) if "pairs" in obj else None
    identical = _parse_identical(obj.get("identical", []), source)
    # The pair lists can be long; they are data, not metadata to echo.
    metadata = {k: v for k, v in obj.items() if k not in ("clusters", "pairs", "identical")}
    return Truth(parsed, metadata, source, pairs, identical)


def _doc_id(value: Any, source: str, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TruthFileError(f"{source}: {where} is {value!r}: ids are strings (or integers)")
    return str(value)


def _parse_pairs(pairs: Any, source: str) -> list[tuple[str, str, float]]:
    """``"pairs": [[id_a, id_b, jaccard], ...]`` with 0 <= jaccard <= 1 and id_a != id_b."""
    if not isinstance(pairs, list):
        raise TruthFileError(f"{source}: \"pairs\" must be a list of [id, id, jaccard], got "
                             f"{_describe(pairs)}")
    parsed = []
    for k, item in enumerate(pairs):
        if not isinstance(item, list) or len(item) != 3:
            raise TruthFileError(f"{source}: pairs[{k}] is {_describe(item)}, not "
                                 "[id, id, jaccard]")
        a = _doc_id(item[0], source, f"pairs[{k}][0]")
        b = _doc_id(item[1], source, f"pairs[{k}][1]")
        score = item[2]
        if (isinstance(score, bool) or not isinstance(score, (int, float))
                or not 0.0 <= score <= 1.0):
            raise TruthFileError(f"{source}: pairs[{k}][2] is {score!r}: a Jaccard in [0, 1]")
        if a == b:
            raise TruthFileError(f"{source}: pairs[{k}] pairs {a!r} with itself")
        parsed.append((a, b, float(score)))
    return parsed


def _parse_identical(groups: Any, source: str) -> list[list[str]]:
    """``"identical": [[id, ...], ...]``: disjoint groups of documents with one shingle set."""
    if not isinstance(groups, list) or not all(isinstance(g, list) for g in groups):
        raise TruthFileError(f"{source}: \"identical\" must be a list of lists of ids, got "
                             f"{_describe(groups)}")
    seen: set[str] = set()
    parsed = []
    for c, group in enumerate(groups):
        ids = [_doc_id(v, source, f"identical[{c}][{k}]") for k, v in enumerate(group)]
        if seen.intersection(ids) or len(set(ids)) != len(ids):
            raise TruthFileError(f"{source}: identical[{c}] repeats an id of an earlier group "
                                 "or of itself: groups must be disjoint")
        seen.update(ids)
        parsed.append(ids)
    return parsed


def load_truth(path: str) -> Truth:
    """Read and validate a truth file (local path or any Beam filesystem)."""
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as handle:
            raw = handle.read()
    except (OSError, BeamIOError) as exc:
        raise TruthFileError(f"{path}: cannot read the truth file ({exc})") from None
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise TruthFileError(f"{path}: not UTF-8 text ({exc})") from None
    except json.JSONDecodeError as exc:
        raise TruthFileError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, "
                             f"column {exc.colno}); expected {TRUTH_FORMAT}") from None
    return parse_truth(obj, path)


def _describe(value: Any) -> str:
    text = json.dumps(value, default=str)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def cluster_labels(clusters: Iterable[Collection[str]]) -> dict[str, int]:
    """Document → cluster number, for the clusters of two or more documents."""
    return {doc_id: c for c, cluster in enumerate(clusters) if len(cluster) >= 2
            for doc_id in cluster}


# --------------------------------------------------------------------------- run outputs


@dataclass(frozen=True)
class RunOutput:
    """What the evaluation needs from an output directory."""

    path: str
    # Removed document → the kept document of its cluster (OUT/duplicates).
    duplicate_of: dict[str, str]
    # Every document of the run: kept and removed.
    doc_ids: frozenset[str]
    summary: dict[str, Any] = field(default_factory=dict)
    # Ids written more than once (the input repeats them); the evaluation keys by id.
    repeated_ids: int = 0


def _join(out: str, name: str) -> str:
    return f"{out.rstrip('/')}/{name}"


def _parts(out: str, sub: str) -> list[str]:
    try:
        result = FileSystems.match([_join(out, f"{sub}/*.parquet")])[0]
    except BeamIOError:
        return []
    return sorted(m.path for m in result.metadata_list)


def _read_columns(paths: list[str], columns: list[str]) -> dict[str, list[Any]]:
    data: dict[str, list[Any]] = {c: [] for c in columns}
    for path in paths:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
            table = pq.read_table(fh, columns=columns)
        for column in columns:
            data[column].extend(table.column(column).to_pylist())
    return data


def read_output(out: str) -> RunOutput:
    """The duplicate rows and document ids of a finished ``ndcl`` output directory."""
    if not FileSystems.exists(_join(out, "_SUCCESS")):
        what = "does not exist" if not FileSystems.exists(out) else "has no _SUCCESS marker"
        raise EvaluationError(f"{out} {what}: not the output directory of a finished ndcl run")
    summary: dict[str, Any] = {}
    if FileSystems.exists(_join(out, "summary.json")):
        with FileSystems.open(_join(out, "summary.json")) as handle:
            summary = json.loads(handle.read().decode("utf-8"))
    dups = _read_columns(_parts(out, "duplicates"), ["id", "duplicate_of"])
    kept = _read_columns(_parts(out, "kept"), ["id"])["id"]
    duplicate_of: dict[str, str] = {}
    for doc_id, target in zip(dups["id"], dups["duplicate_of"]):
        # A repeated input id can be its own duplicate; the id cannot tell the copies apart.
        if doc_id != target:
            duplicate_of[doc_id] = target
    all_ids = [*kept, *dups["id"]]
    doc_ids = frozenset(all_ids)
    chained = sorted(t for t in set(duplicate_of.values()) if t in duplicate_of)
    if chained:
        raise EvaluationError(f"{out}: duplicate_of {chained[0]!r} is itself a removed document "
                              f"({len(chained)} such); OUT/duplicates must point at kept "
                              "documents")
    return RunOutput(out, duplicate_of, doc_ids, summary, len(all_ids) - len(doc_ids))


def predicted_labels(duplicate_of: Mapping[str, str]) -> dict[str, str]:
    """Document → its cluster's kept document, for every document of a predicted cluster."""
    labels = {kept: kept for kept in duplicate_of.values()}
    labels.update(duplicate_of)
    return labels


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Counts:
    """True/false positives and false negatives, with the ratios derived from them."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def f1(self) -> float | None:
        # 2TP / (2TP + FP + FN) is the harmonic mean of P and R wherever both exist, and is
        # still defined (0) when one of them is not, e.g. nothing predicted but truth present.
        denominator = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denominator if denominator else None

    def as_dict(self) -> dict[str, Any]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": self.precision,
                "recall": self.recall, "f1": self.f1}


def _pairs(sizes: Iterable[int]) -> int:
    return sum(n * (n - 1) // 2 for n in sizes)


def pair_counts(predicted: Mapping[str, Hashable], reference: Mapping[str, Hashable]) -> Counts:
    """Pair-level counts from document → cluster labels (documents in no cluster omitted)."""
    small, large = (predicted, reference) if len(predicted) <= len(reference) else (
        reference, predicted)
    joint = Counter((predicted[d], reference[d]) for d in small if d in large)
    tp = _pairs(joint.values())
    return Counts(tp=tp, fp=_pairs(Counter(predicted.values()).values()) - tp,
                  fn=_pairs(Counter(reference.values()).values()) - tp)


def document_counts(removed: Collection[str], reference: Mapping[str, Hashable]) -> Counts:
    """Document-level counts of the ``removed`` documents against reference clusters."""
    sizes = Counter(reference.values())
    removed_from = Counter(reference[d] for d in removed if d in reference)
    tp = sum(min(n, sizes[c] - 1) for c, n in removed_from.items())
    return Counts(tp=tp, fp=len(removed) - tp, fn=sum(n - 1 for n in sizes.values()) - tp)


def _label(labels: Mapping[str, Hashable], doc_id: str) -> Hashable:
    # A document in no cluster is a cluster of its own, equal to no other label.
    return labels.get(doc_id, ("alone", doc_id))


def missing_duplicates(rows: Mapping[str, str], labels: Mapping[str, Hashable]
                       ) -> list[tuple[str, str]]:
    """Duplicate rows ``(id, duplicate_of)`` whose two documents ``labels`` keeps apart."""
    return sorted((d, k) for d, k in rows.items() if _label(labels, d) != _label(labels, k))


def split_clusters(labels: Mapping[str, Hashable], other: Mapping[str, Hashable]
                   ) -> list[tuple[str, str]]:
    """One example pair ``(a, b)`` per cluster of ``labels`` that ``other`` splits up."""
    members: dict[Hashable, list[str]] = defaultdict(list)
    for doc_id, label in labels.items():
        members[label].append(doc_id)
    examples = []
    for ids in members.values():
        ids.sort()
        first = _label(other, ids[0])
        apart = next((d for d in ids[1:] if _label(other, d) != first), None)
        if apart is not None:
            examples.append((ids[0], apart))
    return sorted(examples)


def evaluate(run: RunOutput, reference: Mapping[str, Hashable],
             reference_rows: Mapping[str, str] | None = None, examples: int = 5
             ) -> dict[str, Any]:
    """Both levels of ``run`` against ``reference`` clusters (document → label), with the
    disagreements counted and a few ``examples`` of each."""
    predicted = predicted_labels(run.duplicate_of)
    unknown = sorted(d for d in reference if d not in run.doc_ids)
    if reference and len(unknown) == len(reference):
        raise EvaluationError(f"none of the {len(reference)} reference documents is a document "
                              f"of {run.path} (e.g. {unknown[0]!r}): a reference for another "
                              "corpus?")
    sizes = Counter(reference.values())

    def listed(items: list[tuple[str, str]]) -> dict[str, Any]:
        return {"count": len(items), "examples": [list(item) for item in items[:examples]]}

    result: dict[str, Any] = {
        "pair": pair_counts(predicted, reference).as_dict(),
        "document": document_counts(run.duplicate_of.keys(), reference).as_dict(),
        "reference_clusters": len(sizes),
        "reference_documents": len(reference),
        "reference_duplicates": sum(n - 1 for n in sizes.values()),
        "predicted_clusters": len(set(predicted.values())),
        "predicted_duplicates": len(run.duplicate_of),
        "split_reference_clusters": listed(split_clusters(reference, predicted)),
        "impure_predicted_clusters": listed(split_clusters(predicted, reference)),
        "unknown_reference_ids": {"count": len(unknown), "examples": unknown[:examples]},
    }
    if reference_rows is not None:
        result["missing_duplicates"] = listed(missing_duplicates(reference_rows, predicted))
        result["extra_duplicates"] = listed(missing_duplicates(run.duplicate_of, reference))
    return result


def _pairs_between(left: list[str], right: list[str], labels: Mapping[str, Hashable]) -> int:
    """How many pairs (a in ``left``, b in ``right``) share a label: Σ_L |left_L|·|right_L|."""
    if len(left) == len(right) == 1:  # the common case: two single documents
        return int(_label(labels, left[0]) == _label(labels, right[0]))
    counts = Counter(_label(labels, d) for d in left)
    return sum(counts[_label(labels, d)] for d in right)


def _pairs_within(group: list[str], labels: Mapping[str, Hashable]) -> int:
    return _pairs(Counter(_label(labels, d) for d in group).values())


def _grid(similarity: float) -> int:
    """A Jaccard in units of 10^-JACCARD_DECIMALS, cut as truncate_jaccard cuts it."""
    return math.floor(similarity * 10**JACCARD_DECIMALS + 1e-9)


def truth_candidate_recall(truth: Truth, similarity: float) -> float | None:
    """P(the truth's candidate set holds a pair of this Jaccard), from its metadata."""
    meta = truth.metadata.get("metadata")
    candidates = meta.get("candidates") if isinstance(meta, dict) else None
    if not isinstance(candidates, dict):
        return None
    if candidates.get("method") == "shingle_index":
        return 1.0
    bands, rows = candidates.get("bands"), candidates.get("rows")
    if isinstance(bands, int) and isinstance(rows, int) and bands > 0 and rows > 0:
        return 1.0 - miss_probability(similarity, bands, rows)
    return None


def similarity_bins(truth: Truth, predicted: Mapping[str, Hashable]) -> list[dict[str, Any]]:
    """Per bin of exact Jaccard: the truth pairs, how many ``predicted`` puts in one cluster
    (``detected``, and its ``rate``), and how many one truth cluster holds.

    Bins are BIN_WIDTH_UNITS wide on the 10^-JACCARD_DECIMALS grid, from the one holding the
    truth's ``pairs_min`` up to 1 (the last bin holds 1 itself). Identical groups expand into
    every pair they stand for, so the counts are document pairs, as at the pair level.
    """
    if truth.pairs is None:
        return []
    scale = 10**JACCARD_DECIMALS
    reference = cluster_labels(truth.clusters)
    members = {group[0]: group for group in truth.identical if group}
    # (Jaccard in grid units, pairs, detected, in one truth cluster) per listed pair or group.
    scored: list[tuple[int, int, int, int]] = []
    for a, b, score in truth.pairs:
        left, right = members.get(a, [a]), members.get(b, [b])
        scored.append((_grid(score), len(left) * len(right),
                       _pairs_between(left, right, predicted),
                       _pairs_between(left, right, reference)))
    for group in truth.identical:
        if len(group) >= 2:
            scored.append((scale, len(group) * (len(group) - 1) // 2,
                           _pairs_within(group, predicted), _pairs_within(group, reference)))
    floor = truth.pairs_min
    lowest = min([s[0] for s in scored] + ([_grid(floor)] if floor is not None else []),
                 default=scale)
    start = lowest // BIN_WIDTH_UNITS * BIN_WIDTH_UNITS
    edges = list(range(start, scale, BIN_WIDTH_UNITS)) or [min(start, scale - BIN_WIDTH_UNITS)]
    totals = [[0, 0, 0] for _ in edges]
    for units, n, found, same in scored:
        k = min(max((units - start) // BIN_WIDTH_UNITS, 0), len(edges) - 1)
        totals[k][0] += n
        totals[k][1] += found
        totals[k][2] += same
    bins = []
    for edge, (n, found, same) in zip(edges, totals):
        # A first bin that starts below pairs_min holds only the pairs from pairs_min up.
        lo = max(edge, lowest) / scale
        bins.append({"lo": lo, "hi": min(edge + BIN_WIDTH_UNITS, scale) / scale, "pairs": n,
                     "detected": found, "rate": found / n if n else None,
                     "same_truth_cluster": same,
                     "truth_candidate_recall": truth_candidate_recall(truth, lo)})
    return bins


def parameter_notes(truth: Truth, summary: Mapping[str, Any]) -> list[str]:
    """Differences between the truth's definition and the run's that explain lower scores."""
    config = summary.get("config") or {}
    config = config.get("dedup", config) if isinstance(config, dict) else {}
    meta = truth.metadata.get("metadata") if isinstance(truth.metadata.get("metadata"),
                                                        dict) else {}
    notes = []
    for key in ("threshold", "ngram", "tokenizer"):
        theirs = truth.metadata.get(key, meta.get(key))
        ours = summary.get(key, config.get(key))
        if theirs is not None and ours is not None and theirs != ours:
            notes.append(f"the truth file has {key} {theirs}, the run {ours}")
    return notes


# --------------------------------------------------------------------------- truth building


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


def miss_probability(similarity: float, bands: int, rows: int) -> float:
    """Probability that LSH with ``bands`` x ``rows`` never pairs two documents of this
    Jaccard similarity: ``(1 - s^r)^b``, i.e. 1 minus the S-curve."""
    return (1.0 - similarity**rows) ** bands


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
    new = np.ones(len(keys), dtype=bool)
    new[1:] = keys[1:] != keys[:-1]
    starts = np.flatnonzero(new)
    return starts, np.diff(np.append(starts, len(keys)))


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


def union_find_clusters(n: int, edges: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Connected components (each sorted, ordered by their first member) of ``n`` nodes."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    for i, j in edges:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = defaultdict(list)
    for x in range(n):
        groups[find(x)].append(x)
    return sorted(groups.values())


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
    components = union_find_clusters(len(distinct), map(tuple, edges.tolist()))
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


def truncate_jaccard(value: float) -> float:
    """``value`` cut (not rounded) to JACCARD_DECIMALS decimals; the epsilon keeps a float such
    as 0.7 (stored as 0.69999...) at 0.7."""
    return _grid(value) / 10**JACCARD_DECIMALS


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


def format_truth(truth: Mapping[str, Any]) -> str:
    """The truth file's text: small keys indented, one cluster, group or pair per line, so
    the file stays compact and its diffs readable."""
    lines = ["{"]
    items = list(truth.items())
    for k, (key, value) in enumerate(items):
        comma = "," if k < len(items) - 1 else ""
        if key in ("clusters", "identical", "pairs") and isinstance(value, list) and value:
            rows = [f"  {json.dumps(row, ensure_ascii=False)}" for row in value]
            lines += [f" {json.dumps(key)}: [", ",\n".join(rows), f" ]{comma}"]
        else:
            text = json.dumps(value, indent=1, ensure_ascii=False).replace("\n", "\n ")
            lines.append(f" {json.dumps(key)}: {text}{comma}")
    return "\n".join([*lines, "}"]) + "\n"


# --------------------------------------------------------------------------- benchmark database


@dataclass(frozen=True)
class Target:
    """An evaluated or reference run: its output directory and, if known, its run id."""

    output: str
    run_id: int | None
    # Why the run id is unknown (so results cannot be stored), or how it was found.
    note: str = ""


def _same_path(a: str, b: str) -> bool:
    if "://" in a or "://" in b:
        return a.rstrip("/") == b.rstrip("/")
    return os.path.realpath(a) == os.path.realpath(b)


def _same_contents(row: Any, summary: Mapping[str, Any]) -> bool:
    """Whether a recorded run wrote this summary (its counts and wall time match)."""
    if not summary:
        return False
    if row.docs_read != summary.get("read") or row.duplicates != summary.get("duplicates"):
        return False
    wall = summary.get("wall_seconds")
    return row.total_seconds is None or wall is None or math.isclose(
        row.total_seconds, wall, abs_tol=1e-6)


def find_run(url: str, output: str, summary: Mapping[str, Any]) -> Target:
    """The newest recorded run that wrote the current contents of ``output``."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from beam_pipeline import db
    from beam_pipeline.db import BenchmarkRun

    engine = db.open_engine(url)
    try:
        with Session(engine) as session:
            rows = session.execute(
                select(BenchmarkRun.id, BenchmarkRun.output, BenchmarkRun.docs_read,
                       BenchmarkRun.duplicates, BenchmarkRun.total_seconds)
                .where(BenchmarkRun.output.is_not(None))
                .order_by(BenchmarkRun.id.desc())).all()
    finally:
        engine.dispose()
    same_path = [r for r in rows if _same_path(r.output, output)]
    match = next((r for r in same_path if _same_contents(r, summary)), None)
    if match is not None:
        return Target(output, match.id, f"run {match.id}")
    if same_path:
        ids = ", ".join(str(r.id) for r in same_path[:5])
        return Target(output, None, f"run(s) {ids} wrote to {output}, but its summary.json is "
                                    "from none of them (a later run that was not recorded?)")
    # No match by contents alone: a copied (and perhaps edited) output keeps its summary.json.
    return Target(output, None, f"no run recorded in the database wrote {output}")


def resolve_target(spec: str, url: str) -> tuple[Target, RunOutput]:
    """A run id of the benchmark database, or an output directory, with its output read."""
    from sqlalchemy.exc import SQLAlchemyError

    from beam_pipeline.db import get_run, redact, scrub_secrets

    if spec.isdigit():
        try:
            run = get_run(url, int(spec))
        except (SQLAlchemyError, ImportError, OSError) as exc:
            raise EvaluationError(f"cannot read run {spec} from {redact(url)}: "
                                  f"{scrub_secrets(str(exc), url)}") from None
        if run is None and not FileSystems.exists(spec):
            raise EvaluationError(f"no run {spec} in the benchmark database {redact(url)}")
        if run is not None:
            if not run.get("output"):
                raise EvaluationError(f"run {spec} has no recorded output directory")
            try:
                output = read_output(run["output"])
            except EvaluationError as exc:
                raise EvaluationError(f"run {spec}: {exc}") from None
            row = SimpleNamespace(docs_read=run["docs_read"], duplicates=run["duplicates"],
                                  total_seconds=run["total_seconds"])
            if not _same_contents(row, output.summary):
                return Target(run["output"], None, f"{run['output']} no longer holds run "
                              f"{spec}'s output (its summary.json differs)"), output
            return Target(run["output"], int(spec), f"run {spec}"), output
    output = read_output(spec)
    try:
        return find_run(url, spec, output.summary), output
    except (SQLAlchemyError, ImportError, OSError) as exc:
        why = f"{type(exc).__name__}: {scrub_secrets(str(exc), url)}"
        return Target(spec, None, f"the benchmark database {redact(url)} could not be read "
                                  f"({why})"), output


def store_accuracy(url: str, run_id: int, reference: str, result: Mapping[str, Any]) -> None:
    """One ``AccuracyMetric`` row per level, replacing earlier rows of this run and reference."""
    from sqlalchemy import delete
    from sqlalchemy.orm import Session

    from beam_pipeline import db
    from beam_pipeline.db import AccuracyMetric

    engine = db.open_engine(url)
    try:
        with Session(engine) as session, session.begin():
            session.execute(delete(AccuracyMetric).where(
                AccuracyMetric.run_id == run_id, AccuracyMetric.reference == reference))
            for level in LEVELS:
                counts = result[level]
                session.add(AccuracyMetric(
                    run_id=run_id, reference=reference, level=level, tp=counts["tp"],
                    fp=counts["fp"], fn=counts["fn"], precision=counts["precision"],
                    recall=counts["recall"], f1=counts["f1"]))
    finally:
        engine.dispose()


def write_evaluation(output: str, entry: dict[str, Any]) -> str:
    """Add ``entry`` to ``OUT/evaluation.json`` (replacing one with the same reference)."""
    path = _join(output, "evaluation.json")
    entries: list[dict[str, Any]] = []
    if FileSystems.exists(path):
        try:
            with FileSystems.open(path) as handle:
                entries = list(json.loads(handle.read().decode("utf-8"))["evaluations"])
        except (ValueError, KeyError, TypeError) as exc:
            LOG.warning("replacing unreadable %s (%s)", path, exc)
    entries = [e for e in entries if e.get("reference") != entry["reference"]] + [entry]
    body = {"output": output, "evaluations": sorted(entries, key=lambda e: e["reference"])}
    with FileSystems.create(path) as handle:
        handle.write((json.dumps(body, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return path


# --------------------------------------------------------------------------- command line


def add_evaluate_parsers(commands: argparse._SubParsersAction) -> None:
    """The ``evaluate`` and ``truth`` subcommands."""
    from beam_pipeline.config import DedupConfig
    from transforms.minhash import TOKENIZERS

    evaluate_cmd = commands.add_parser(
        "evaluate", help="precision/recall/F1 of a run's duplicates against a truth file or "
                         "another run")
    evaluate_cmd.add_argument("run", metavar="RUN_ID_OR_OUT",
                              help="a run id of the benchmark database, or an output directory")
    reference = evaluate_cmd.add_mutually_exclusive_group(required=True)
    reference.add_argument("--truth", metavar="FILE",
                           help=f"truth file {TRUTH_FORMAT}, e.g. from `ndcl truth` (it or "
                                "--against is required)")
    reference.add_argument("--against", metavar="RUN_ID_OR_OUT",
                           help="reference run: how well RUN agrees with it (it or --truth "
                                "is required)")
    evaluate_cmd.add_argument("--examples", type=int, default=5, metavar="N",
                              help="example ids shown per kind of disagreement "
                                   "(default: %(default)s)")
    truth = commands.add_parser(
        "truth", help="exact-Jaccard near-duplicate truth file of a (small) corpus")
    truth.add_argument("input", nargs="+", metavar="INPUT",
                       help="input files: paths, globs or gs:// patterns, as for `ndcl dedup`")
    truth.add_argument("--output", required=True, metavar="FILE",
                       help="truth file to write (required)")
    truth.add_argument("--threshold", type=float, default=DedupConfig.threshold, metavar="T",
                       help="Jaccard threshold of a duplicate pair (default: %(default)s)")
    truth.add_argument("--ngram", type=int, default=DedupConfig.ngram, metavar="N",
                       help="shingle length in tokens (default: %(default)s)")
    truth.add_argument("--tokenizer", choices=TOKENIZERS, default=DedupConfig.tokenizer,
                       help="as for `ndcl dedup` (default: %(default)s)")
    truth.add_argument("--max-docs", type=int, default=DEFAULT_MAX_DOCS, metavar="N",
                       help=f"refuse larger corpora (default: {DEFAULT_MAX_DOCS:,})")
    truth.add_argument("--candidates", choices=("lsh", "index"), default="lsh",
                       help="lsh: MinHash LSH of miss probability <= 1e-6 at the threshold; "
                            "index: every pair sharing a shingle, exact, for small corpora "
                            "(default: %(default)s)")
    truth.add_argument("--num-perm", type=int, default=DedupConfig.num_perm, metavar="N",
                       help="MinHash permutations of the lsh candidates (default: %(default)s)")
    truth.add_argument("--bands", type=int, metavar="B",
                       help="LSH bands (default: derived, see --rows)")
    truth.add_argument("--rows", type=int, metavar="R",
                       help="LSH rows per band (default: derived with --bands for a miss "
                            "probability <= 1e-6 at the threshold)")
    truth.add_argument("--seed", type=int, default=TRUTH_SEED, metavar="S",
                       help=f"shingle and MinHash seed (default: {TRUTH_SEED}, not the "
                            "pipeline's, so their LSH misses are independent)")
    truth.add_argument("--max-doc-bytes", type=int, default=DedupConfig.max_doc_bytes,
                       metavar="BYTES",
                       help="skip longer input lines, as `ndcl dedup` rejects them "
                            "(default: %(default)s)")
    pairs = truth.add_mutually_exclusive_group()
    pairs.add_argument("--pairs-min", type=float, default=DEFAULT_PAIRS_MIN,
                       help="also write every verified pair of Jaccard >= this (below the "
                            "threshold too), with its Jaccard, for `ndcl evaluate`'s detection "
                            f"rate per similarity (default: {DEFAULT_PAIRS_MIN})")
    pairs.add_argument("--no-pairs", action="store_true",
                       help="write the clusters only, the file format before pairs "
                            "(default: off)")


def _unexpected(command: str, extra: list[str] | None) -> int | None:
    if extra:
        print(f"ndcl {command}: error: unrecognised argument(s) {' '.join(extra)}",
              file=sys.stderr)
        return 2
    return None


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def format_table(result: Mapping[str, Any]) -> str:
    """The two levels as an aligned text table."""
    lines = [("level", "TP", "FP", "FN", "precision", "recall", "F1")]
    for level in LEVELS:
        c = result[level]
        lines.append((level, str(c["tp"]), str(c["fp"]), str(c["fn"]), _ratio(c["precision"]),
                      _ratio(c["recall"]), _ratio(c["f1"])))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  " + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                                      for i, (cell, w) in enumerate(zip(line, widths)))
                     for line in lines)


def format_bins(bins: list[dict[str, Any]]) -> str:
    """``by_similarity`` as an aligned text table."""
    lines = [("Jaccard", "pairs", "detected", "rate", "in 1 truth cluster", "truth recall")]
    for b in bins:
        found = b.get("truth_candidate_recall")
        lines.append((f"{b['lo']:.2f}-{b['hi']:.2f}", str(b["pairs"]), str(b["detected"]),
                      "–" if b["rate"] is None else f"{b['rate']:.3f}",
                      str(b["same_truth_cluster"]), "–" if found is None else f"≥{found:.4f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("    " + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                                        for i, (cell, w) in enumerate(zip(line, widths)))
                     for line in lines)


def _examples(item: Mapping[str, Any]) -> str:
    shown = ", ".join(" ~ ".join(e) if isinstance(e, list) else e for e in item["examples"])
    return f"{item['count']}" + (f" (e.g. {shown})" if shown else "")


def print_result(target: Target, reference: str, result: Mapping[str, Any],
                 notes: list[str]) -> None:
    name = (f"run {target.run_id} ({target.output})" if target.run_id is not None
            else target.output)
    print(f"\nNDCL evaluation of {name} against {reference}")
    print(format_table(result))
    print(f"  reference: {result['reference_clusters']} clusters, "
          f"{result['reference_documents']} documents, {result['reference_duplicates']} to "
          f"remove; run: {result['predicted_clusters']} clusters, "
          f"{result['predicted_duplicates']} removed")
    print(f"  reference clusters split by the run: {_examples(result['split_reference_clusters'])}")
    print(f"  run clusters not inside one reference cluster: "
          f"{_examples(result['impure_predicted_clusters'])}")
    if "missing_duplicates" in result:
        print(f"  reference duplicates (id ~ duplicate_of) not in one cluster of the run: "
              f"{_examples(result['missing_duplicates'])}")
        print(f"  run duplicates not in one cluster of the reference: "
              f"{_examples(result['extra_duplicates'])}")
    if result["unknown_reference_ids"]["count"]:
        print(f"  warning: reference ids that are not documents of the run (counted as missed): "
              f"{_examples(result['unknown_reference_ids'])}")
    if result.get("by_similarity"):
        print("  detection by exact Jaccard: truth pairs the run put in one cluster (after "
              "LSH, verification and connected components):")
        print(format_bins(result["by_similarity"]))
    for note in notes:
        print(f"  note: {note}")


def run_evaluate_command(args: argparse.Namespace, extra: list[str] | None = None) -> int:
    """``ndcl evaluate``: print, write ``OUT/evaluation.json`` and store the two levels."""
    from sqlalchemy.exc import SQLAlchemyError

    from beam_pipeline.db import database_url, redact, scrub_secrets

    failed = _unexpected("evaluate", extra)
    if failed is not None:
        return failed
    url = database_url(args.db_url)
    notes: list[str] = []
    try:
        target, run = resolve_target(args.run, url)
        if args.truth:
            truth = load_truth(args.truth)
            reference = os.path.normpath(args.truth) if "://" not in args.truth else args.truth
            kind = "truth"
            result = evaluate(run, cluster_labels(truth.clusters), examples=args.examples)
            if truth.pairs is not None:
                result["by_similarity"] = similarity_bins(
                    truth, predicted_labels(run.duplicate_of))
            else:
                notes.append("the truth file lists no scored pairs, so there is no detection "
                             "rate per similarity (`ndcl truth` writes them)")
            notes += parameter_notes(truth, run.summary)
        else:
            against, other = resolve_target(args.against, url)
            reference = (f"run:{against.run_id}" if against.run_id is not None
                         else f"output:{against.output}")
            kind = "run"
            result = evaluate(run, predicted_labels(other.duplicate_of), other.duplicate_of,
                              examples=args.examples)
            only_one = len(run.doc_ids ^ other.doc_ids)
            if only_one:
                notes.append(f"{only_one} documents are in only one of the two runs")
    except EvaluationError as exc:
        print(f"ndcl evaluate: error: {exc}", file=sys.stderr)
        return 2
    if run.repeated_ids:
        notes.append(f"{run.repeated_ids} ids occur more than once in the run's output; the "
                     "evaluation counts each id once")
    stored = False
    if target.run_id is None:
        why = f"not stored in the benchmark database: {target.note}"
    else:
        try:
            store_accuracy(url, target.run_id, reference, result)
            stored = True
            why = (f"stored as AccuracyMetric rows (pair, document) of run {target.run_id} "
                   f"in {redact(url)}")
        except (SQLAlchemyError, ImportError, OSError) as exc:
            why = (f"NOT stored in {redact(url)} ({type(exc).__name__}: "
                   f"{scrub_secrets(str(exc), url)})")
    entry = {"reference": reference, "kind": kind, "run_id": target.run_id, "stored": stored,
             "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             **result, "notes": notes}
    print_result(target, reference, result, notes)
    print(f"  {why}")
    try:
        print(f"  written to {write_evaluation(target.output, entry)}")
    except OSError as exc:
        print(f"ndcl evaluate: warning: {target.output}/evaluation.json not written ({exc})",
              file=sys.stderr)
    return 0


def run_truth_command(args: argparse.Namespace, extra: list[str] | None = None) -> int:
    """``ndcl truth``: build the truth file, print a one-line summary."""
    failed = _unexpected("truth", extra)
    if failed is not None:
        return failed
    from beam_pipeline.outputs import OutputError, check_replaceable_file

    try:
        check_replaceable_file(args.output, ("clusters", "metadata"))
    except OutputError as exc:
        print(f"ndcl truth: error: {exc}", file=sys.stderr)
        return 2
    try:
        truth = build_truth(args.input, threshold=args.threshold, ngram=args.ngram,
                            tokenizer=args.tokenizer, max_docs=args.max_docs,
                            candidates=args.candidates, num_perm=args.num_perm,
                            bands=args.bands, rows=args.rows, seed=args.seed,
                            max_doc_bytes=args.max_doc_bytes,
                            pairs_min=None if args.no_pairs else args.pairs_min)
    except (EvaluationError, FileNotFoundError) as exc:
        print(f"ndcl truth: error: {exc}", file=sys.stderr)
        return 2
    try:
        with FileSystems.create(args.output) as handle:
            handle.write(format_truth(truth).encode("utf-8"))
    except OSError as exc:
        print(f"ndcl truth: error: cannot write {args.output}: {exc}", file=sys.stderr)
        return 2
    meta = truth["metadata"]
    recall = meta["candidates"]["recall_at_threshold"]
    print(f"wrote {args.output}: {len(truth['clusters'])} clusters, "
          f"{meta['clustered_documents']} of {truth['docs']} documents (threshold "
          f"{truth['threshold']}, {truth['ngram']}-grams, {meta['tokenizer']} tokens; "
          f"{meta['candidate_pairs']} candidate pairs, {meta['verified_pairs']} verified; "
          f"candidate recall at the threshold {recall:.10f})")
    if "pairs" in truth:
        low = meta["candidates"]["recall_at_pairs_min"]
        print(f"  {len(truth['pairs'])} scored pairs of Jaccard >= {truth['pairs_min']} and "
              f"{len(truth['identical'])} identical groups listed (candidate recall at "
              f"{truth['pairs_min']}: {low:.6f})")
    return 0
