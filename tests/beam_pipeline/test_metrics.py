"""``beam_pipeline.metrics``: pair and document counts on planted clusters with hand-computed
counts, and the detection rate per similarity bin."""

from __future__ import annotations

import pytest

from beam_pipeline.metrics import (
    Counts,
    cluster_labels,
    document_counts,
    miss_probability,
    pair_counts,
    predicted_labels,
    similarity_bins,
)
from beam_pipeline.truth import parse_truth
from tests.beam_pipeline.conftest import ROWS, SCORED_ROWS, SCORED_TRUTH, TRUTH

# --------------------------------------------------------------------------- pure metrics


def test_pair_counts_by_hand() -> None:
    counts = pair_counts(predicted_labels(ROWS), cluster_labels(TRUTH))
    # Predicted pairs: {a,b} → ab; {d,e,f} → de, df, ef: 4. Truth pairs: ab, ac, bc, de: 4.
    # Both: ab (n_11 = |{a,b}| = 2 → C(2,2) = 1) and de (n_22 = 2 → 1): TP = 2.
    # FP = 4 - 2 = 2 (df, ef); FN = 4 - 2 = 2 (ac, bc). P = R = 2/4, F1 = 4 / (4 + 2 + 2).
    assert counts == Counts(tp=2, fp=2, fn=2)
    assert (counts.precision, counts.recall, counts.f1) == (0.5, 0.5, 0.5)


def test_document_counts_by_hand() -> None:
    counts = document_counts(ROWS.keys(), cluster_labels(TRUTH))
    # Removed R = {b, e, f}. Truth wants |T| - 1 removed: 2 from {a,b,c}, 1 from {d,e}: 3.
    # TP = min(|R ∩ {a,b,c}| = 1, 2) + min(|R ∩ {d,e}| = 1, 1) = 2.
    # FP = |R| - TP = 1 (f is in no truth cluster); FN = 3 - 2 = 1 (a and c both kept).
    assert counts == Counts(tp=2, fp=1, fn=1)
    assert counts.precision == counts.recall == counts.f1 == pytest.approx(2 / 3)


def test_over_removal_and_merges_are_document_errors() -> None:
    # One predicted cluster {a,b,c,d,e} keeping a: all of {d,e} is removed, so that family
    # lost every copy. R = {b,c,d,e}: TP = min(2, 2) + min(2, 1) = 3, FP = 4 - 3 = 1, FN = 0.
    # Pairs: predicted C(5,2) = 10, truth 4, TP = C(3,2) + C(2,2) = 4 → FP 6, FN 0.
    rows = {m: "a" for m in "bcde"}
    truth = cluster_labels(TRUTH)
    assert document_counts(rows.keys(), truth) == Counts(3, 1, 0)
    assert pair_counts(predicted_labels(rows), truth) == Counts(4, 6, 0)


def test_undefined_ratios_are_none_not_invented() -> None:
    nothing = Counts(0, 0, 3)  # truth has duplicates, the run removed none
    assert (nothing.precision, nothing.recall, nothing.f1) == (None, 0.0, 0.0)
    empty = Counts(0, 0, 0)
    assert (empty.precision, empty.recall, empty.f1) == (None, None, None)


def test_similarity_bins_by_hand() -> None:
    truth = parse_truth(SCORED_TRUTH, "t.json")
    bins = similarity_bins(truth, predicted_labels(SCORED_ROWS))
    assert [(b["lo"], b["hi"]) for b in bins] == [
        (0.5, 0.55), (0.55, 0.6), (0.6, 0.65), (0.65, 0.7), (0.7, 0.75), (0.75, 0.8),
        (0.8, 0.85), (0.85, 0.9), (0.9, 0.95), (0.95, 1.0)]
    got = {b["lo"]: (b["pairs"], b["detected"], b["same_truth_cluster"]) for b in bins
           if b["pairs"]}
    assert got == {
        0.5: (1, 1, 0),   # e ~ f, 0.52: in one run cluster, below the truth's threshold
        0.65: (1, 0, 0),  # c ~ d, 0.6999: just below 0.7 (not rounded up into the next bin)
        0.7: (1, 0, 1),   # b ~ c, exactly 0.7: a truth edge; c was missed by the run
        0.8: (2, 2, 2),   # a ~ b stands for a ~ b and a2 ~ b (a2 is identical to a)
        0.95: (2, 1, 2),  # x ~ y at 0.9999 (missed) and the identical pair a ~ a2 (found)
    }
    assert [b["rate"] for b in bins if b["lo"] in (0.5, 0.7, 0.95)] == [1.0, 0.0, 0.5]
    assert all(b["rate"] is None for b in bins if not b["pairs"])
    # The truth candidates' S-curve at each bin's lower edge, from the file's metadata.
    assert bins[0]["truth_candidate_recall"] == pytest.approx(1 - miss_probability(0.5, 64, 4))


def test_similarity_bins_start_at_the_lower_bound_and_need_pairs() -> None:
    # No pairs_min: the lowest pair sets it; the first bin starts there, not at its edge.
    truth = parse_truth({"clusters": [["a", "b"]], "pairs": [["a", "b", 0.9], ["a", "c", 0.63]]},
                        "t.json")
    bins = similarity_bins(truth, predicted_labels({"b": "a"}))
    assert (bins[0]["lo"], bins[0]["hi"], bins[-1]["hi"]) == (0.63, 0.65, 1.0)
    assert [b["pairs"] for b in bins] == [1, 0, 0, 0, 0, 0, 1, 0]  # 0.63 and 0.9
    assert bins[0]["truth_candidate_recall"] is None  # no candidate metadata in the file
    # A truth file without pairs (the format before them) has no bins.
    old = parse_truth({"threshold": 0.7, "clusters": [["a", "b"]]}, "t.json")
    assert old.pairs is None and old.identical == [] and old.pairs_min is None
    assert similarity_bins(old, predicted_labels({"b": "a"})) == []
