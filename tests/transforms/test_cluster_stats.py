"""Cluster quality (``transforms.cluster_stats``): NMI/ARI from contingency counts against
scikit-learn, and the combine in a TestPipeline. The measures of ``ndcl cluster`` / ``ndcl run``
end to end: ``tests/end_to_end/test_cluster_quality.py``."""

from __future__ import annotations

import random
from math import comb, log

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from transforms.cluster_stats import (
    Contingency,
    ContingencyFn,
    SummariseClusters,
    add_counts,
    ari_from_table,
    batch_contingency,
    contingency_matrix,
    label_value,
    mutual_information,
    nmi_from_table,
    size_distribution,
    summarise_contingency,
)


def _table(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    counts: dict[tuple[int, int], int] = {}
    for pair in zip(predicted.tolist(), truth.tolist()):
        counts[pair] = counts.get(pair, 0) + 1
    return contingency_matrix(counts)


def test_nmi_and_ari_equal_scikit_learn_on_random_labelings() -> None:
    rng = np.random.default_rng(3)
    for trial in range(300):
        n = int(rng.integers(1, 400))
        truth = rng.integers(0, int(rng.integers(1, 9)), n)
        predicted = rng.integers(0, int(rng.integers(1, 9)), n)
        if trial % 4 == 0:  # a perfect or relabelled clustering now and then
            predicted = (truth * 7 + 3) % 11
        elif trial % 4 == 1:  # a noisy copy of the truth
            predicted = np.where(rng.random(n) < 0.2, predicted, truth)
        table = _table(truth, predicted)
        assert nmi_from_table(table) == pytest.approx(
            normalized_mutual_info_score(truth, predicted), abs=1e-12)
        assert ari_from_table(table) == pytest.approx(
            adjusted_rand_score(truth, predicted), abs=1e-12)
        # Both are symmetric: rows and columns may be swapped.
        assert nmi_from_table(table.T) == pytest.approx(nmi_from_table(table), abs=1e-12)
        assert ari_from_table(table.T) == pytest.approx(ari_from_table(table), abs=1e-12)


def test_limit_cases_follow_scikit_learn() -> None:
    one = np.zeros(5, dtype=int)
    spread = np.arange(5)
    for truth, predicted in ((one, one), (one, spread), (spread, one), (spread, spread)):
        table = _table(truth, predicted)
        assert nmi_from_table(table) == normalized_mutual_info_score(truth, predicted)
        assert ari_from_table(table) == adjusted_rand_score(truth, predicted)
    empty = np.zeros((0, 0), dtype=np.int64)
    assert nmi_from_table(empty) is None and ari_from_table(empty) is None


def test_ari_of_a_corpus_sized_table_does_not_overflow() -> None:
    # ~4·10^9 documents: int64 products of pair counts would overflow; compare with the
    # textbook formula in exact integers.
    table = np.array([[9 * 10**8, 10**8, 0], [2 * 10**8, 10**9, 3 * 10**8],
                      [0, 5 * 10**7, 1_450_000_000]], dtype=np.int64)
    n = int(table.sum())
    index = sum(comb(int(v), 2) for v in table.ravel())
    rows = sum(comb(int(v), 2) for v in table.sum(axis=1))
    cols = sum(comb(int(v), 2) for v in table.sum(axis=0))
    expected = (index - rows * cols / comb(n, 2)) / ((rows + cols) / 2 - rows * cols / comb(n, 2))
    assert ari_from_table(table) == pytest.approx(expected, rel=1e-9)
    assert 0 < nmi_from_table(table) < 1


def test_mutual_information_past_int64_marginal_products() -> None:
    # ~1.2·10^10 documents: row x column sums exceed 2^63, where scikit-learn's int64 products
    # would overflow; compare with the definition in exact integers and float logs.
    table = np.array([[6 * 10**9, 10**9], [5 * 10**8, 4 * 10**9]], dtype=np.int64)
    n = int(table.sum())
    rows = [int(v) for v in table.sum(axis=1)]
    cols = [int(v) for v in table.sum(axis=0)]
    assert max(rows) * max(cols) > np.iinfo(np.int64).max
    mi = sum(int(v) / n * log(int(v) * n / (rows[i] * cols[j]))
             for (i, j), v in np.ndenumerate(table) if v)

    def entropy(sizes: list[int]) -> float:
        return -sum(s / n * log(s / n) for s in sizes)

    assert mutual_information(table) == pytest.approx(mi, rel=1e-9)
    assert nmi_from_table(table) == pytest.approx(mi / ((entropy(rows) + entropy(cols)) / 2),
                                                  rel=1e-9)


def test_label_values_and_size_distribution() -> None:
    assert [label_value(v) for v in ("sport", "", None, 3, 2.5, True, ["a"])] == [
        "sport", None, None, "3", "2.5", "true", '["a"]']
    assert size_distribution({"0": 5, "1": 2, "2": 9, "3": 4}) == {
        "count": 4, "min": 2, "median": 4.5, "max": 9,
        "sizes": {"0": 5, "1": 2, "2": 9, "3": 4}}
    assert size_distribution({}) == {"count": 0, "min": None, "median": None, "max": None,
                                     "sizes": {}}


def _documents(seed: int = 1, n: int = 500) -> tuple[list[int], list[int], list[str | None]]:
    rng = random.Random(seed)
    a = [rng.randrange(4) for _ in range(n)]
    b = [rng.randrange(3) for _ in range(n)]
    # Labels follow cluster_A with some noise; every 7th document is unlabelled.
    labels = [None if i % 7 == 0 else f"t{x if rng.random() < 0.8 else rng.randrange(5)}"
              for i, x in enumerate(a)]
    return a, b, labels


def test_summary_matches_scikit_learn_on_the_labelled_documents() -> None:
    a, b, labels = _documents()
    acc = Contingency()
    for start in range(0, len(a), 64):  # batch by batch, as the writer emits them
        part = slice(start, start + 64)
        acc = add_counts(acc, batch_contingency(a[part], b[part], labels[part]), False, 100)
    summary = summarise_contingency(acc, "label")
    rows = [i for i, label in enumerate(labels) if label is not None]
    truth = [labels[i] for i in rows]
    assert summary["documents"] == 500 and summary["labelled_docs"] == len(rows)
    assert summary["labels"] == len(set(truth)) and summary["labels_dropped"] is False
    pairs = [f"{a[i]}/{b[i]}" for i in rows]
    assert summary["level_1"]["nmi"] == pytest.approx(
        normalized_mutual_info_score(truth, [a[i] for i in rows]), abs=1e-12)
    assert summary["level_1"]["ari"] == pytest.approx(
        adjusted_rand_score(truth, [a[i] for i in rows]), abs=1e-12)
    assert summary["level_2"]["nmi"] == pytest.approx(
        normalized_mutual_info_score(truth, pairs), abs=1e-12)
    assert summary["level_2"]["ari"] == pytest.approx(adjusted_rand_score(truth, pairs),
                                                      abs=1e-12)
    # Sizes count every kept document, labelled or not.
    assert summary["level_1"]["sizes"]["sizes"] == {str(x): a.count(x) for x in range(4)}
    level_2 = summary["level_2"]["sizes"]
    assert sum(level_2["sizes"].values()) == 500 and level_2["count"] == 12
    assert level_2["sizes"]["2/1"] == sum(1 for x, y in zip(a, b) if (x, y) == (2, 1))


def test_too_many_labels_are_dropped_but_sizes_stay() -> None:
    fn = ContingencyFn(max_labels=3)
    accs = []
    for part in ([("a", 0), ("b", 1)], [("c", 0), ("d", 1), ("a", 1)]):
        acc = fn.create_accumulator()
        for label, cluster in part:
            acc = fn.add_input(acc, {(cluster, 0, label): 2})
        accs.append(acc)
    merged = fn.extract_output(fn.merge_accumulators(accs))
    assert merged.overflow and merged.counts == {(0, 0, None): 4, (1, 0, None): 6}
    summary = summarise_contingency(merged, "url")
    assert summary["labels_dropped"] and summary["labelled_docs"] is None
    assert summary["level_1"]["nmi"] is None and summary["level_1"]["ari"] is None
    assert summary["level_1"]["sizes"]["sizes"] == {"0": 4, "1": 6}


def test_summarise_clusters_in_a_pipeline() -> None:
    # Two topics put in two clusters perfectly (NMI = ARI = 1), sub-clusters splitting them;
    # split over batches, with one unlabelled document.
    perfect = [{(0, 0, "sport"): 3, (1, 0, "food"): 2}, {(0, 1, "sport"): 4},
               {(1, 1, "food"): 1, (1, 1, None): 1}]
    a, b, labels = _documents(seed=2, n=300)
    noisy = [batch_contingency(a[i:i + 50], b[i:i + 50], labels[i:i + 50])
             for i in range(0, 300, 50)]
    rows = [i for i, label in enumerate(labels) if label is not None]

    def check_perfect(got: list[dict]) -> None:
        (summary,) = got
        assert summary["documents"] == 11 and summary["labelled_docs"] == 10
        assert summary["level_1"]["nmi"] == 1.0 and summary["level_1"]["ari"] == 1.0
        assert summary["level_1"]["sizes"]["sizes"] == {"0": 7, "1": 4}
        assert summary["level_2"]["sizes"]["sizes"] == {"0/0": 3, "0/1": 4, "1/0": 2, "1/1": 2}
        # Splitting a topic over two sub-clusters costs NMI and ARI below 1.
        assert summary["level_2"]["nmi"] < 1 and summary["level_2"]["ari"] < 1

    def check_noisy(got: list[dict]) -> None:
        (summary,) = got
        truth = [labels[i] for i in rows]
        assert summary["level_1"]["nmi"] == pytest.approx(
            normalized_mutual_info_score(truth, [a[i] for i in rows]), abs=1e-12)
        assert summary["level_1"]["ari"] == pytest.approx(
            adjusted_rand_score(truth, [a[i] for i in rows]), abs=1e-12)

    def check_empty(got: list[dict]) -> None:
        (summary,) = got
        assert summary["documents"] == 0 and summary["level_1"]["nmi"] is None
        assert summary["level_1"]["sizes"]["count"] == 0

    with beam.Pipeline(runner=FnApiRunner()) as p:
        for name, parts, check in (("Perfect", perfect, check_perfect),
                                   ("Noisy", noisy, check_noisy),
                                   ("Empty", [], check_empty)):
            got = (p | f"Create{name}" >> beam.Create(parts, reshuffle=False)
                   | f"Summarise{name}" >> SummariseClusters("label"))
            assert_that(got, check, label=f"Check{name}")
