"""transforms.combine: a global combine that folds each bundle before its shuffle."""

from __future__ import annotations

from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.batches import UidSetFn
from transforms.combine import CombineGloballyInBundles, FoldBundleFn, MergeAccumulatorsFn
from transforms.write import FieldTypesFn


class Batch(NamedTuple):  # what FieldTypesFn reads of a DocBatch
    records: list[dict[str, Any]]


def test_merge_accumulators_fn_adds_accumulators_not_inputs() -> None:
    fn = MergeAccumulatorsFn(UidSetFn())
    acc = fn.create_accumulator()
    acc = fn.add_input(acc, [np.array([5, 1])])
    acc = fn.add_input(acc, [np.array([3, 1])])
    assert fn.extract_output(acc).tolist() == [1, 3, 5]


def test_fold_bundle_fn_emits_one_accumulator_per_bundle_and_nothing_for_an_empty_one() -> None:
    fold = FoldBundleFn(UidSetFn())
    fold.setup()
    fold.start_bundle()
    assert list(fold.finish_bundle()) == []
    fold.start_bundle()
    for uids in ([4, 2], [2, 9]):
        assert list(fold.process(np.array(uids))) == []
    (emitted,) = list(fold.finish_bundle())
    assert [a.tolist() for a in emitted.value] == [[4, 2], [2, 9]]
    assert list(fold.finish_bundle()) == []  # the accumulator went with the bundle


def test_combine_in_bundles_equals_combine_globally() -> None:
    uid_arrays = [np.array([i, i + 7, 3 * i], dtype=np.int64) for i in range(40)]
    expected = np.unique(np.concatenate(uid_arrays)).tolist()
    records = [{"id": "a", "text": "x", "n": 1}, {"id": "b", "text": "y", "n": 2.5, "t": "s"}]
    batches = [(k, Batch(records[k % 2:])) for k in range(6)]
    with BeamTestPipeline(runner=FnApiRunner()) as p:
        uids = (p | "CreateUids" >> beam.Create(uid_arrays)
                | "CollectUids" >> CombineGloballyInBundles(UidSetFn())
                | "AsList" >> beam.Map(lambda a: a.tolist()))
        assert_that(uids, equal_to([expected]), label="CheckUids")
        types = (p | "CreateBatches" >> beam.Create(batches)
                 | "CollectTypes" >> CombineGloballyInBundles(FieldTypesFn())
                 | "Sorted" >> beam.Map(lambda d: sorted((k, sorted(v)) for k, v in d.items())))
        assert_that(types, equal_to([[("n", ["float", "int"]), ("t", ["string"])]]),
                    label="CheckTypes")
        empty = (p | "CreateNothing" >> beam.Create([]).with_output_types(np.ndarray)
                 | "CollectNothing" >> CombineGloballyInBundles(UidSetFn())
                 | "Length" >> beam.Map(len))
        assert_that(empty, equal_to([0]), label="CheckEmpty")
