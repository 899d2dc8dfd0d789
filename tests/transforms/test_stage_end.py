"""transforms.stage_end: what an element counts, the line, and the composite's sum."""

from __future__ import annotations

import logging
from functools import partial

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.transforms.conftest import new_pipeline
from transforms.batches import FeatureBatch
from transforms.stage_end import (
    ReportStageEnd,
    StageEndParams,
    SumCountsFn,
    count_array,
    count_arrays,
    count_elements,
    count_keyed_arrays,
    count_keyed_batch,
    fit_counts,
    stage_end_line,
    stats_counts,
)


def test_measures_count_the_rows_of_each_shape() -> None:
    batch = FeatureBatch(3, np.arange(4), list("abcd"), np.zeros(4, np.int64),
                         np.zeros((4, 2), np.uint64), None)
    assert count_keyed_batch("documents", (3, batch)) == {"documents": 4}
    assert count_keyed_arrays("documents", (3, (np.arange(5), [0] * 5, [1] * 5))) == {
        "documents": 5}
    assert count_arrays("edges", (np.arange(6), np.arange(6))) == {"edges": 6}
    assert count_array("exact", np.arange(2)) == {"exact": 2}
    assert count_elements("rejected", {"reason": "x"}) == {"rejected": 1}
    assert fit_counts({"sample": 90, "A": {}, "B": {"0": {}, "1": {}}}) == {
        "sample": 90, "models_B": 2}


def test_stats_counts_keeps_integers_only() -> None:
    assert stats_counts({"a": 2, "b": np.int64(3), "c": 0.5, "d": "x"}) == {"a": 2, "b": 3}
    assert stats_counts((4, 1)) == {}  # a round's (index, changes) tuple counts nothing


def test_line_reads_missing_counts_as_zero() -> None:
    assert stage_end_line("verify", "{edges_verified:,} verified, {edges_rejected:,} rejected",
                          {"edges_verified": 12345}) == (
        "stage verify ended: 12,345 verified, 0 rejected")


def test_sum_is_key_wise_and_sorted() -> None:
    fn = SumCountsFn()
    acc = fn.add_input(fn.add_input(fn.create_accumulator(), {"b": 1}), {"a": 2, "b": 3})
    merged = fn.merge_accumulators([acc, {"a": 1}, {}])
    assert fn.extract_output(merged) == {"a": 3, "b": 4}
    assert list(fn.extract_output(merged)) == ["a", "b"]


def test_report_sums_every_input_and_logs_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ndcl.progress")
    params = StageEndParams("read", "{documents:,} documents read, {rejected:,} rejected", (
        ("batches", partial(count_keyed_arrays, "documents")),
        ("rejected", partial(count_elements, "rejected"))))
    with new_pipeline() as p:
        batches = p | "CreateBatches" >> beam.Create(
            [(k, (np.arange(n), None)) for k, n in enumerate([700, 600, 8])])
        rejected = p | "CreateRejected" >> beam.Create([{"reason": "bad_json"}] * 3)
        counts = {"batches": batches, "rejected": rejected} | ReportStageEnd(params)
        assert_that(counts, equal_to([{"documents": 1308, "rejected": 3}]))
    lines = [r.getMessage() for r in caplog.records if r.name == "ndcl.progress"]
    assert lines == ["stage read ended: 1,308 documents read, 3 rejected"]


def test_report_of_an_empty_stage_logs_zeros(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ndcl.progress")
    params = StageEndParams("lsh", "{candidate_edges:,} candidate pairs",
                            (("stats", stats_counts),))
    with new_pipeline() as p:
        stats = p | beam.Create([]).with_output_types(dict)
        assert_that({"stats": stats} | ReportStageEnd(params), equal_to([{}]))
    assert [r.getMessage() for r in caplog.records if r.name == "ndcl.progress"] == [
        "stage lsh ended: 0 candidate pairs"]
