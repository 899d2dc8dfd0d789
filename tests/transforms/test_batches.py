"""``transforms.batches``: feature batches, the uid set combine (``UidSetFn``, by hand and in a
pipeline), rows by partition, sorted runs, and ``JoinByKey`` against ``CoGroupByKey``."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from tests.transforms.conftest import describe_uid_array, new_pipeline
from transforms.batches import FeatureBatch, JoinByKey, UidSetFn, rows_by_part
from transforms.read import LineFilter, Selection


def test_feature_batch_select_keeps_absent_parts_absent() -> None:
    hashes = np.arange(12, dtype=np.uint64).reshape(4, 3)
    batch = FeatureBatch(batch_key=7, uids=np.array([10, 11, 12, 13], dtype=np.int64),
                         ids=["a", "b", "c", "d"], norm_lengths=np.arange(4, dtype=np.int64),
                         exact_hashes=np.zeros((4, 2), dtype=np.uint64), signatures=None,
                         band_hashes=hashes)
    picked = batch.select(np.array([1, 3]))
    assert picked.uids.tolist() == [11, 13] and picked.ids == ["b", "d"]
    assert picked.signatures is None and picked.scopes is None and picked.derived is None
    assert picked.band_hashes.tolist() == [[3, 4, 5], [9, 10, 11]]


def test_uid_set_fn_methods() -> None:
    fn = UidSetFn()
    empty = fn.extract_output(fn.create_accumulator())
    assert empty.dtype == np.int64 and empty.tolist() == []
    acc = fn.create_accumulator()
    for uids in (np.array([9, 2], dtype=np.int64), [2, 5], np.array([], dtype=np.int64),
                 np.array([1 << 41], dtype=np.int64), np.array([7], dtype=np.int32)):
        acc = fn.add_input(acc, uids)
    out = fn.extract_output(acc)
    assert out.dtype == np.int64 and out.tolist() == [2, 5, 7, 9, 1 << 41]
    # Many small inputs: the accumulator is compacted, the result unchanged.
    big = fn.create_accumulator()
    for i in range(200):
        big = fn.add_input(big, np.array([i % 70, 1000 + i], dtype=np.int64))
    assert len(big) <= 65
    assert fn.extract_output(big).tolist() == list(range(70)) + list(range(1000, 1200))
    # Merging: empty accumulators are harmless; repeats across accumulators collapse.
    merged = fn.merge_accumulators([fn.create_accumulator(), acc, big,
                                    fn.create_accumulator()])
    assert fn.extract_output(merged).tolist() == sorted(
        set(out.tolist()) | set(range(70)) | set(range(1000, 1200)))
    nothing = fn.merge_accumulators([fn.create_accumulator(), fn.create_accumulator()])
    assert fn.extract_output(nothing).dtype == np.int64
    assert fn.extract_output(nothing).tolist() == []
    assert fn.extract_output(fn.merge_accumulators([])).tolist() == []
    # Sorted and unique: usable as a Selection at once.
    assert Selection("only", out).lines_of(0) == LineFilter("only", frozenset({2, 5, 7, 9}))


def test_rows_by_part_matches_a_mask_per_partition() -> None:
    parts = np.random.default_rng(3).integers(0, 7, size=500)
    split = list(rows_by_part(parts))
    assert [part for part, _ in split] == sorted(set(parts.tolist()))
    for part, rows in split:
        assert np.array_equal(rows, np.flatnonzero(parts == part))
    assert list(rows_by_part(np.array([], dtype=np.int64))) == []


def test_sorted_runs_of_one_two_and_row_keys() -> None:
    from transforms.batches import sorted_runs

    a = np.array([1, 1, 2, 3, 3, 3])
    starts, sizes, run = sorted_runs(a)
    assert starts.tolist() == [0, 2, 3] and sizes.tolist() == [2, 1, 3]
    assert run.tolist() == [0, 0, 1, 2, 2, 2]
    b = np.array([5, 6, 6, 7, 7, 8])
    assert sorted_runs(a, b)[0].tolist() == [0, 1, 2, 3, 5]
    rows = np.array([[1, 2], [1, 2], [1, 3], [2, 3]])
    assert sorted_runs(rows)[1].tolist() == [2, 1, 1]
    empty = np.zeros(0, dtype=np.int64)
    assert [len(x) for x in sorted_runs(empty)] == [0, 0, 0]
    assert [x.tolist() for x in sorted_runs(np.array([4]))] == [[0], [1], [0]]


def test_uid_set_fn_in_a_pipeline() -> None:
    """CombineGlobally(UidSetFn()) gives one sorted unique int64 array, also of no input
    (the singleton side input of ``removed`` and of the selections must always exist)."""
    arrays = [np.array([5, 3], dtype=np.int64), np.array([3, 1 << 41], dtype=np.int64),
              np.array([], dtype=np.int64), np.array([7], dtype=np.int32)]
    with new_pipeline() as p:
        some = (p | "CreateUidArrays" >> beam.Create(arrays)
                | "CollectUids" >> beam.CombineGlobally(UidSetFn()))
        none = (p | "CreateNoArrays" >> beam.Create([]).with_output_types(np.ndarray)
                | "CollectNoUids" >> beam.CombineGlobally(UidSetFn()))
        assert_that(some | "DescribeSome" >> beam.Map(describe_uid_array),
                    equal_to([("int64", (3, 5, 7, 1 << 41))]), label="CheckSome")
        assert_that(none | "DescribeNone" >> beam.Map(describe_uid_array),
                    equal_to([("int64", ())]), label="CheckNone")


# --------------------------------------------------------------------------------------------
# JoinByKey


def normalise_join(element: tuple[int, dict[str, list[Any]]]) -> tuple:
    key, grouped = element
    return key, tuple(sorted((tag, tuple(sorted(values))) for tag, values in grouped.items()))


def test_join_by_key_matches_cogroupbykey() -> None:
    left = [(1, "a"), (1, "b"), (-3, "c"), (1 << 45, "d")]
    right = [(1, (7, "x")), (2, (8, "y")), (2, (9, "z"))]
    expected = [
        (1, (("empty", ()), ("left", ("a", "b")), ("right_side", ((7, "x"),)))),
        (-3, (("empty", ()), ("left", ("c",)), ("right_side", ()))),
        (1 << 45, (("empty", ()), ("left", ("d",)), ("right_side", ()))),
        (2, (("empty", ()), ("left", ()), ("right_side", ((8, "y"), (9, "z"))))),
    ]
    with new_pipeline() as p:
        inputs = {
            "left": p | "CreateLeft" >> beam.Create(left),
            "right_side": p | "CreateRight" >> beam.Create(right),
            "empty": p | "CreateEmpty" >> beam.Create([]).with_output_types(tuple[int, str]),
        }
        joined = inputs | "JoinByKey" >> JoinByKey()
        grouped = inputs | "CoGroupByKey" >> beam.CoGroupByKey()
        assert_that(joined | "NormaliseJoin" >> beam.Map(normalise_join), equal_to(expected),
                    label="CheckJoin")
        assert_that(grouped | "NormaliseCoGroup" >> beam.Map(normalise_join),
                    equal_to(expected), label="CheckCoGroup")


def test_join_by_key_accepts_tags_differing_only_in_case() -> None:
    # Step labels are made unique by the tag's index: "ab" and "AB" would collide otherwise.
    with beam.Pipeline(runner=FnApiRunner()) as p:
        inputs = {"ab": p | "CreateLower" >> beam.Create([(1, "x")]),
                  "AB": p | "CreateUpper" >> beam.Create([(1, "y")])}
        joined = (inputs | "JoinByKey" >> JoinByKey()
                  | "Plain" >> beam.MapTuple(lambda key, grouped: (key, sorted(grouped.items()))))
        assert_that(joined, equal_to([(1, [("AB", ["y"]), ("ab", ["x"])])]))
