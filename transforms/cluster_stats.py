"""Cluster quality of the final kept documents: sizes per cluster and, when the input records
carry a label, NMI and ARI of both K-Means levels against it.

Everything needed is one small contingency aggregate: the number of kept documents per
``(cluster_A, cluster_B, label)``. The writer (``transforms.write.WriteBatchFn``) already holds
each batch's kept records and their cluster labels, so it emits one partial count per batch
(no extra shuffle, no document moves); :class:`SummariseClusters` merges them with a
CombineGlobally and turns the merged table into the summary. Its size is bounded by
``k1 * k2 * labels`` whatever the corpus size, so the driver never sees a document.

- The label of a document is its input field ``label_field`` (``ClusterConfig.label_field``):
  a non-empty string, or a number or boolean as JSON text. A missing, null or empty value is
  *unlabelled*: counted in the sizes, left out of NMI/ARI (the summary says how many were
  labelled). More than ``max_labels`` distinct labels (a field that is not a class, e.g. a URL)
  drops the label counts, so that the aggregate stays small; NMI/ARI are then absent.
- Level 1 compares ``cluster_A`` with the labels; level 2 compares the sub-clusters, i.e. the
  pairs ``(cluster_A, cluster_B)``, keyed ``"A/B"`` in the sizes.
- NMI is scikit-learn's ``normalized_mutual_info_score`` (arithmetic normalisation, natural
  logarithm, the same limit cases), ARI its ``adjusted_rand_score``, both from the contingency
  table alone; they are None when no kept document is labelled.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import numpy as np

# (cluster_A, cluster_B, label or None) → documents.
Cell = tuple[int, int, str | None]
CONTINGENCY_TAG = "contingency"
MAX_LABELS = 1000


# --------------------------------------------------------------------------- pure maths


def label_value(value: Any) -> str | None:
    """A record's label: strings as they are, numbers and booleans as JSON text, nested values
    as sorted JSON; None when missing, null or empty (the document counts as unlabelled)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def batch_contingency(clusters_a: Sequence[int], clusters_b: Sequence[int],
                      labels: Sequence[str | None]) -> dict[Cell, int]:
    """Documents per ``(cluster_A, cluster_B, label)`` of one batch's kept documents."""
    return dict(Counter(zip(map(int, clusters_a), map(int, clusters_b), labels)))


def contingency_matrix(counts: Mapping[tuple[Any, Any], int]) -> np.ndarray:
    """Rows: clusters, columns: classes, from ``{(cluster, class): n}`` (no empty row or
    column, since only present pairs are listed)."""
    rows = {key: i for i, key in enumerate(sorted({r for r, _ in counts}, key=str))}
    cols = {key: j for j, key in enumerate(sorted({c for _, c in counts}, key=str))}
    table = np.zeros((len(rows), len(cols)), dtype=np.int64)
    for (r, c), n in counts.items():
        table[rows[r], cols[c]] += n
    return table


# scikit-learn's mutual_info_score multiplies the marginals a_i·b_j of each cell in int64.
INT64_MAX = np.iinfo(np.int64).max


def entropy(sizes: np.ndarray) -> float:
    """Shannon entropy (natural log) of a labelling given its class sizes, in scikit-learn's
    own arrangement (``log n_i - log N``). It has no public entropy of counts, and scipy's
    (``log(n_i / N)``) rounds differently: a perfect clustering would score 1.0000000000000002."""
    sizes = sizes[sizes > 0].astype(np.float64)
    if sizes.size <= 1:
        return 0.0
    total = sizes.sum()
    return float(-np.sum((sizes / total) * (np.log(sizes) - math.log(total))))


def mutual_information(table: np.ndarray) -> float:
    """Mutual information (natural log) of a contingency table without empty rows or columns:
    scikit-learn's ``mutual_info_score``. Its int64 marginal products would overflow past
    2^63 (beyond ~3·10^9 documents), so there it is H(rows) + H(columns) - H(cells), in floats
    (equal to ~1e-15)."""
    from sklearn.metrics import mutual_info_score

    rows, cols = table.sum(axis=1), table.sum(axis=0)
    if int(rows.max(initial=0)) * int(cols.max(initial=0)) <= INT64_MAX:
        return float(mutual_info_score(None, None, contingency=table))
    return float(max(entropy(rows) + entropy(cols) - entropy(table.ravel()), 0.0))


def nmi_from_table(table: np.ndarray) -> float | None:
    """``normalized_mutual_info_score`` (arithmetic mean of the entropies) of the labellings
    whose contingency table this is; None for an empty table."""
    # scikit-learn's NMI wants the labels themselves (a document each); the table is all we keep.
    if table.sum() == 0:
        return None
    rows, cols = table.sum(axis=1), table.sum(axis=0)
    # An empty row or column is no cluster or class; scikit-learn would count it as one.
    table = table[rows > 0][:, cols > 0]
    rows, cols = rows[rows > 0], cols[cols > 0]
    if rows.size == cols.size == 1:
        return 1.0  # neither labelling splits the data: a perfect match (scikit-learn's case)
    mi = mutual_information(table)
    if mi == 0:
        return 0.0
    return float(mi / ((entropy(rows) + entropy(cols)) / 2))


def ari_from_table(table: np.ndarray) -> float | None:
    """``adjusted_rand_score`` from the pair counts of a contingency table (Python integers:
    squared counts of a C4-sized corpus overflow int64 products); None for an empty table."""
    n = int(table.sum())
    if n == 0:
        return None
    sum_squares = sum(int(v) ** 2 for v in table.ravel() if v)
    rows = sum(int(v) ** 2 for v in table.sum(axis=1))
    cols = sum(int(v) ** 2 for v in table.sum(axis=0))
    tp = sum_squares - n
    fp = cols - sum_squares
    fn = rows - sum_squares
    tn = n * n - fp - fn - sum_squares
    if fn == 0 and fp == 0:
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def size_distribution(sizes: Mapping[str, int]) -> dict[str, Any]:
    """``count`` (non-empty clusters), ``min``, ``median``, ``max`` and every size by id."""
    values = sorted(sizes.values())
    return {"count": len(values), "min": values[0] if values else None,
            "median": statistics.median(values) if values else None,
            "max": values[-1] if values else None, "sizes": dict(sizes)}


@dataclass
class Contingency:
    """The merged aggregate: documents per cell, the distinct labels, and ``overflow`` once
    there were too many labels and they were dropped."""

    counts: dict[Cell, int] = field(default_factory=dict)
    labels: set[str] = field(default_factory=set)
    overflow: bool = False


def drop_labels(acc: Contingency) -> Contingency:
    """``acc`` with every cell folded into unlabelled: ``k1 * k2`` cells at most."""
    folded: dict[Cell, int] = {}
    for (a, b, _), n in acc.counts.items():
        folded[(a, b, None)] = folded.get((a, b, None), 0) + n
    return Contingency(folded, set(), True)


def add_counts(acc: Contingency, counts: Mapping[Cell, int], overflow: bool,
               max_labels: int) -> Contingency:
    """Add ``counts`` (from an aggregate that overflowed if ``overflow``) into ``acc``; past
    ``max_labels`` distinct labels the labels are dropped, so the aggregate stays small."""
    if overflow and not acc.overflow:
        acc = drop_labels(acc)
    for (a, b, label), n in counts.items():
        if acc.overflow:
            label = None
        elif label is not None:
            acc.labels.add(label)
        acc.counts[(a, b, label)] = acc.counts.get((a, b, label), 0) + n
    if len(acc.labels) > max_labels:
        acc = drop_labels(acc)
    return acc


def level_quality(counts: Mapping[tuple[str, str | None], int]) -> dict[str, Any]:
    """NMI, ARI and sizes of one level from ``{(cluster id, label or None): documents}``."""
    sizes: dict[str, int] = {}
    labelled: dict[tuple[str, str], int] = {}
    for (cluster, label), n in counts.items():
        sizes[cluster] = sizes.get(cluster, 0) + n
        if label is not None:
            labelled[(cluster, label)] = labelled.get((cluster, label), 0) + n
    table = contingency_matrix(labelled)
    return {"nmi": nmi_from_table(table), "ari": ari_from_table(table),
            "sizes": size_distribution(dict(sorted(sizes.items(), key=_cluster_order)))}


def _cluster_order(item: tuple[str, int]) -> tuple[int, ...]:
    return tuple(int(part) for part in item[0].split("/"))


def summarise_contingency(acc: Contingency, label_field: str | None) -> dict[str, Any]:
    """The cluster-quality summary of the merged aggregate (JSON-ready)."""
    level_1: dict[tuple[str, str | None], int] = {}
    level_2: dict[tuple[str, str | None], int] = {}
    for (a, b, label), n in acc.counts.items():
        level_1[(str(a), label)] = level_1.get((str(a), label), 0) + n
        level_2[(f"{a}/{b}", label)] = level_2.get((f"{a}/{b}", label), 0) + n
    return {
        "label_field": label_field or None,
        "documents": sum(acc.counts.values()),
        "labelled_docs": None if acc.overflow else sum(
            n for (_, _, label), n in acc.counts.items() if label is not None),
        "labels": None if acc.overflow else len(acc.labels),
        "labels_dropped": acc.overflow,
        "level_1": level_quality(level_1),
        "level_2": level_quality(level_2),
    }


# --------------------------------------------------------------------------- Beam


class ContingencyFn(beam.CombineFn):
    """Per-batch ``{(cluster_A, cluster_B, label): n}`` → one :class:`Contingency`."""

    def __init__(self, max_labels: int = MAX_LABELS) -> None:
        self.max_labels = max_labels

    def create_accumulator(self) -> Contingency:
        return Contingency()

    def add_input(self, acc: Contingency, counts: dict[Cell, int]) -> Contingency:
        return add_counts(acc, counts, False, self.max_labels)

    def merge_accumulators(self, accs: Iterable[Contingency]) -> Contingency:
        merged = Contingency()
        for acc in accs:
            merged = add_counts(merged, acc.counts, acc.overflow, self.max_labels)
        return merged

    def extract_output(self, acc: Contingency) -> Contingency:
        return acc


class SummariseClusters(beam.PTransform):
    """Per-batch contingency counts of the kept documents → one cluster-quality summary
    (:func:`summarise_contingency`), also when no document was kept."""

    def __init__(self, label_field: str | None, max_labels: int = MAX_LABELS) -> None:
        super().__init__()
        self.label_field = label_field
        self.max_labels = max_labels

    def expand(self, partials: beam.PCollection) -> beam.PCollection:
        return (
            partials
            | "MergeContingency" >> beam.CombineGlobally(ContingencyFn(self.max_labels))
            | "ScoreClusters" >> beam.Map(summarise_contingency, self.label_field)
        )
