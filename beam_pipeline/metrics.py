"""The accuracy metrics of ``ndcl evaluate``: pure functions of document → cluster labels.

A run's predicted clusters are each kept document with the rows of ``OUT/duplicates`` whose
``duplicate_of`` is that document (:func:`predicted_labels`); a truth file's are its clusters
(:func:`cluster_labels`). Only clusters of two or more documents matter.

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
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from beam_pipeline.truth import JACCARD_DECIMALS, Truth, jaccard_units

LEVELS = ("pair", "document")
# Bins of ``by_similarity``, in units of 10^-JACCARD_DECIMALS so that edges are exact integers.
BIN_WIDTH_UNITS = 500


# --------------------------------------------------------------------------- labels


def cluster_labels(clusters: Iterable[Collection[str]]) -> dict[str, int]:
    """Document → cluster number, for the clusters of two or more documents."""
    return {doc_id: c for c, cluster in enumerate(clusters) if len(cluster) >= 2
            for doc_id in cluster}


def predicted_labels(duplicate_of: Mapping[str, str]) -> dict[str, str]:
    """Document → its cluster's kept document, for every document of a predicted cluster."""
    labels = {kept: kept for kept in duplicate_of.values()}
    labels.update(duplicate_of)
    return labels


# --------------------------------------------------------------------------- counts


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


# --------------------------------------------------------------------------- by similarity


def _pairs_between(left: list[str], right: list[str], labels: Mapping[str, Hashable]) -> int:
    """How many pairs (a in ``left``, b in ``right``) share a label: Σ_L |left_L|·|right_L|."""
    if len(left) == len(right) == 1:  # the common case: two single documents
        return int(_label(labels, left[0]) == _label(labels, right[0]))
    counts = Counter(_label(labels, d) for d in left)
    return sum(counts[_label(labels, d)] for d in right)


def _pairs_within(group: list[str], labels: Mapping[str, Hashable]) -> int:
    return _pairs(Counter(_label(labels, d) for d in group).values())


def miss_probability(similarity: float, bands: int, rows: int) -> float:
    """Probability that LSH with ``bands`` x ``rows`` never pairs two documents of this
    Jaccard similarity: ``(1 - s^r)^b``, i.e. 1 minus the S-curve."""
    return (1.0 - similarity**rows) ** bands


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
        scored.append((jaccard_units(score), len(left) * len(right),
                       _pairs_between(left, right, predicted),
                       _pairs_between(left, right, reference)))
    for group in truth.identical:
        if len(group) >= 2:
            scored.append((scale, len(group) * (len(group) - 1) // 2,
                           _pairs_within(group, predicted), _pairs_within(group, reference)))
    floor = truth.pairs_min
    lowest = min([s[0] for s in scored] + ([jaccard_units(floor)] if floor is not None else []),
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


