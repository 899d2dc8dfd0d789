"""``transforms.exact``: exact-duplicate groups, the keep order of ``smallest_id`` (issue 10:
derived ids ``<file>:<line>`` by file name, then line number as a number; explicit ids by code
point; mixed, the text part before the number), and ``RemoveExactDuplicates`` in a pipeline."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.reference import RefDoc, smallest_id_key
from tests.transforms.conftest import (
    describe_uid_array,
    doc_batch,
    empty_uids,
    flat_edges,
    new_pipeline,
)
from transforms.batches import DocBatch, NodeInfo, batch_key_of, make_uid
from transforms.exact import (
    ExactDuplicates,
    ExactParams,
    RemoveExactDuplicates,
    exact_groups,
    id_order_key,
    rank_key,
)
from transforms.lsh import FindCandidatePairs, LshParams
from transforms.minhash import ComputeFeatures, FeatureParams
from transforms.resolve import choose_kept

# --------------------------------------------------------------------------------------------
# Exact groups
# --------------------------------------------------------------------------------------------


def exact_fixture() -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    h_a, h_b, h_c = (1, 10), (2, 20), (1, 11)  # h_c shares h_a's first half only
    # h_c sits between rows of h_a, so grouping on one half only would split group A.
    hashes = np.array([h_a, h_c, h_a, h_b, h_a, h_b, (3, 30)], dtype=np.uint64)
    uids = np.array([70, 20, 50, 60, 30, 40, 10], dtype=np.int64)
    ids = ["c", "zz", "10", "b9", "9", "b10", "solo"]
    norm_lengths = np.array([5, 1, 9, 7, 9, 7, 3], dtype=np.int64)
    return hashes, uids, ids, norm_lengths


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        # group A rows 0, 2, 4 (ids c, 10, 9); group B rows 3, 5 (ids b9, b10)
        ("smallest_id", {(70, "c", 50, "10"), (30, "9", 50, "10"), (60, "b9", 40, "b10")}),
        # longest: rows 2 and 4 tie at 9, smallest id "10" wins; B ties at 7 → "b10"
        ("longest", {(70, "c", 50, "10"), (30, "9", 50, "10"), (60, "b9", 40, "b10")}),
        ("first", {(70, "c", 30, "9"), (50, "10", 30, "9"), (60, "b9", 40, "b10")}),
    ],
)
def test_exact_groups(policy: str, expected: set[tuple[int, str, int, str]]) -> None:
    hashes, uids, ids, norm_lengths = exact_fixture()
    got = exact_groups(hashes, uids, ids, norm_lengths, policy)
    assert len(got) == len(expected)
    assert set(got) == expected


def test_exact_groups_longest_prefers_length() -> None:
    hashes = np.array([(5, 5)] * 3, dtype=np.uint64)
    uids = np.array([1, 2, 3], dtype=np.int64)
    ids = ["a", "b", "c"]
    got = exact_groups(hashes, uids, ids, np.array([3, 8, 8]), "longest")
    assert set(got) == {(1, "a", 2, "b"), (3, "c", 2, "b")}
    # Equal ids: the uid breaks the tie.
    got = exact_groups(hashes, uids, ["x", "x", "x"], np.array([1, 1, 1]), "smallest_id")
    assert set(got) == {(2, "x", 1, "x"), (3, "x", 1, "x")}


def test_exact_groups_edge_cases() -> None:
    empty = np.zeros((0, 2), dtype=np.uint64)
    assert exact_groups(empty, np.zeros(0, np.int64), [], np.zeros(0, np.int64), "first") == []
    distinct = np.array([(1, 1), (1, 2), (2, 1)], dtype=np.uint64)
    assert exact_groups(distinct, np.array([1, 2, 3]), ["a", "b", "c"], np.ones(3),
                        "smallest_id") == []
    with pytest.raises(ValueError, match="keep policy"):
        rank_key("random", "a", 1, 1)


# --------------------------------------------------------------------------------------------
# The smallest_id keep order (issue 10)
# --------------------------------------------------------------------------------------------


def smallest(*docs: tuple[str, bool]) -> str:
    """The id ``smallest_id`` keeps among ``(id, derived)`` documents (uid = position)."""
    keys = [rank_key("smallest_id", doc_id, 0, uid, derived)
            for uid, (doc_id, derived) in enumerate(docs)]
    return docs[keys.index(min(keys))][0]


def test_derived_ids_by_file_then_line_number() -> None:
    assert smallest(("a.json:1072", True), ("a.json:4", True)) == "a.json:4"
    assert smallest(("in.json.gz:1072", True), ("in.json.gz:4", True)) == "in.json.gz:4"
    assert smallest(("x.json:10", True), ("x.json:9", True)) == "x.json:9"
    # The file name first (code point), whatever the line numbers.
    assert smallest(("b.json:1", True), ("a.json:999", True)) == "a.json:999"
    # A name made of path components (inputs sharing a base name) or holding a colon.
    assert smallest(("2020/d.json:3", True), ("2019/d.json:70", True)) == "2019/d.json:70"
    assert id_order_key("gs:x/d.json:12", True) == ("gs:x/d.json", 12)


def test_explicit_ids_by_code_point() -> None:
    assert smallest(("9", False), ("10", False)) == "10"
    # Shaped like a derived id, but explicit (foo is no input file): still code point order.
    assert smallest(("foo:9", False), ("foo:12", False)) == "foo:12"
    assert smallest(("b", False), ("B", False), ("a", False)) == "B"


def test_the_derived_flag_decides_not_the_shape() -> None:
    assert id_order_key("foo:12", False) == ("foo:12", 0)
    assert id_order_key("foo:12", True) == ("foo", 12)
    # Hand-built data flagged derived without the <text>:<digits> shape ranks as explicit.
    assert id_order_key("d3", True) == ("d3", 0)


def test_mixed_ids_are_one_total_order() -> None:
    docs = [("a.json:10", True), ("a.json:x", False), ("a.json0", False), ("a.json", False),
            ("a.json:4", True), ("a.jso", False), ("b", False), ("10", False), ("9", False),
            ("a.json:100", True), ("b.json:2", True)]
    ranked = sorted(docs, key=lambda d: id_order_key(*d))
    assert [doc_id for doc_id, _ in ranked] == [
        "10", "9", "a.jso",
        # An explicit id equal to a file name, then that file's derived ids in line order,
        # then longer explicit ids starting with the name.
        "a.json", "a.json:4", "a.json:10", "a.json:100", "a.json0", "a.json:x",
        "b", "b.json:2"]
    # No two documents tie, in any input order; the reference oracle agrees.
    assert len({id_order_key(*d) for d in docs}) == len(docs)
    for seed in range(5):
        shuffled = list(docs)
        random.Random(seed).shuffle(shuffled)
        assert sorted(shuffled, key=lambda d: id_order_key(*d)) == ranked
    refs = [RefDoc(uid, doc_id, "", derived) for uid, (doc_id, derived) in enumerate(docs)]
    assert [(d.id, d.derived) for d in sorted(refs, key=smallest_id_key)] == ranked


def test_longest_breaks_ties_with_the_same_id_order() -> None:
    key = rank_key("longest", "a.json:4", 10, 7, True)
    assert key == (-10, "a.json", 4, 7)
    assert key < rank_key("longest", "a.json:1072", 10, 3, True)
    assert rank_key("longest", "a.json:1072", 11, 3, True) < key
    assert rank_key("first", "a.json:1072", 10, 3, True) == (3,)


def test_exact_groups_and_components_use_the_flag() -> None:
    hashes = np.array([(1, 1)] * 3, dtype=np.uint64)
    uids = np.array([1072, 4, 9], dtype=np.int64)
    ids = ["in.json:1072", "in.json:4", "in.json:9"]
    lengths = np.ones(3, dtype=np.int64)
    got = exact_groups(hashes, uids, ids, lengths, "smallest_id", np.ones(3, dtype=bool))
    assert set(got) == {(1072, "in.json:1072", 4, "in.json:4"), (9, "in.json:9", 4, "in.json:4")}
    # Without the flag the same strings are explicit ids: code point order.
    got = exact_groups(hashes, uids, ids, lengths, "smallest_id")
    assert {rep for _, _, _, rep in got} == {"in.json:1072"}
    nodes = [NodeInfo(10, "x.json:10", 5, None, derived=True),
             NodeInfo(9, "x.json:9", 5, None, derived=True),
             NodeInfo(1 << 40 | 1, "foo:9", 5, None),
             NodeInfo(1 << 40 | 2, "foo:12", 5, None)]
    assert choose_kept(nodes[:2], "smallest_id").id == "x.json:9"
    assert choose_kept(nodes[2:], "smallest_id").id == "foo:12"
    # Mixed: the text parts decide ("foo:12" < "x.json"), then the number.
    assert choose_kept(nodes, "smallest_id").id == "foo:12"


def same_set(expected: Iterable[Any]) -> Callable[[list[Any]], None]:
    """Matcher: the elements, as a set, are ``expected`` (repeats allowed)."""
    want = set(expected)

    def check(actual: list[Any]) -> None:
        got = set(actual)
        assert got == want, (sorted(got - want), sorted(want - got))

    return check


# --------------------------------------------------------------------------------------------
# RemoveExactDuplicates

EXACT_BATCH = 4
# (file index, line, id, text); groups of equal normalised text differ in case and punctuation.
EXACT_DOCS: list[tuple[int, int, str, str]] = [
    (0, 1, "d3", "Hello World, again"),
    (0, 2, "d1", "hello world again!!"),
    (0, 3, "u1", "unique text number one"),
    (0, 4, "d2", "HELLO... world -- AGAIN"),
    (0, 5, "e2", "Same-Same but different"),
    (0, 6, "u2", "another unique text"),
    (0, 7, "p1", "!!!"),
    (1, 1, "e1", "same same BUT different."),
    (1, 2, "p2", "!!!"),
    (1, 3, "a0", "completely unrelated words"),
    (1, 5, "d0", "hello  world  again"),
    (1, 6, "p3", "..."),
    (1, 9, "p4", "??"),  # a batch without any tokenised document
    (1, 13, "d9", "Hello world again"),  # a batch whose only document is removed
]
# Representative per keep policy: (group ids, representative id).
EXACT_GROUPS = {
    "smallest_id": [({"d3", "d1", "d2", "d0", "d9"}, "d0"), ({"e2", "e1"}, "e1")],
    "first": [({"d3", "d1", "d2", "d0", "d9"}, "d3"), ({"e2", "e1"}, "e2")],
}


def exact_doc_batches() -> list[tuple[int, DocBatch]]:
    by_key: dict[int, list[tuple[int, int, str, str]]] = {}
    for doc in EXACT_DOCS:
        by_key.setdefault(batch_key_of(make_uid(doc[0], doc[1]), EXACT_BATCH), []).append(doc)
    return [doc_batch(docs[0][0], [d[1] for d in docs], [d[3] for d in docs], EXACT_BATCH,
                      ids=[d[2] for d in docs])
            for docs in by_key.values()]


@pytest.mark.parametrize("policy", ["smallest_id", "first"])
def test_remove_exact_duplicates(policy: str) -> None:
    """``members`` names every exact duplicate left out with its representative; ``removed``
    is one sorted int64 array of their uids, and banding with it leaves one document per text
    in the buckets (the feature batches themselves no longer pass through this transform)."""
    uid_of = {doc_id: make_uid(fi, line) for fi, line, doc_id, _ in EXACT_DOCS}
    expected_members = []
    for group, rep in EXACT_GROUPS[policy]:
        for member in sorted(group - {rep}):
            uid = uid_of[member]
            expected_members.append(
                (batch_key_of(uid, EXACT_BATCH), (uid, member, uid_of[rep], rep)))
    expected_removed = tuple(sorted(m[1][0] for m in expected_members))
    assert len(expected_removed) == 5
    # Without the removed uids, each exact group is one LSH star round its smallest uid; with
    # them, one document per text is left in the buckets. u1 and u2 share the bigram "unique
    # text" and meet in a band either way (several band partitions may emit the same edge).
    near_edges = {(uid_of["u2"], uid_of["u1"])}
    star_edges_unfiltered = set(near_edges)
    for group, _ in EXACT_GROUPS[policy]:
        uids = sorted(uid_of[m] for m in group)
        star_edges_unfiltered |= {(u, uids[0]) for u in uids[1:]}

    with new_pipeline() as p:
        features = (
            p
            | "CreateDocBatches" >> beam.Create(exact_doc_batches())
            | "ComputeFeatures" >> ComputeFeatures(FeatureParams(2, 16, 11, banding=(4, 4)))
        ).features
        exact = features | "RemoveExactDuplicates" >> RemoveExactDuplicates(
            ExactParams(policy, EXACT_BATCH, 3))
        assert isinstance(exact, ExactDuplicates)
        assert_that(exact.members, equal_to(expected_members), label="CheckExactMembers")
        assert_that(exact.removed | "DescribeRemoved" >> beam.Map(describe_uid_array),
                    equal_to([("int64", expected_removed)]), label="CheckRemovedUids")
        no_removed = p | "CreateNoRemoved" >> beam.Create([empty_uids()])
        for name, removed, edges in (("Filtered", exact.removed, near_edges),
                                     ("Unfiltered", no_removed, star_edges_unfiltered)):
            found = ({"features": features, "removed": removed}
                     | f"FindPairs{name}" >> FindCandidatePairs(LshParams(4, 4, 11, 3, 100)))
            assert_that(found.edges | f"FlattenEdges{name}" >> beam.FlatMap(flat_edges),
                        same_set(edges), label=f"CheckEdges{name}")
