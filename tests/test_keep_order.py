"""The ``smallest_id`` keep order (issue 10): derived ids ``<file>:<line>`` by file name, then
line number as a number; explicit ids by code point; mixed, the text part before the number."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from beam_pipeline.cli import main
from tests.reference import RefDoc, read_docs, reference_dedup, smallest_id_key
from transforms.batches import NodeInfo
from transforms.exact import exact_groups, id_order_key, rank_key
from transforms.resolve import choose_kept


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


@pytest.mark.slow
def test_cli_keeps_the_lower_line_number(tmp_path: Path) -> None:
    rng = random.Random(3)
    words = [f"w{i}" for i in range(3000)]

    def text(length: int) -> list[str]:
        return [rng.choice(words) for _ in range(length)]

    records = [{"text": " ".join(text(40))} for _ in range(1100)]
    exact = " ".join(text(60))
    records[4 - 1] = {"text": exact}
    records[1072 - 1] = {"text": exact.upper().replace(" ", ", ")}  # same normalised text
    def edited(tokens: list[str]) -> str:
        return " ".join([*tokens[:50], "changed", *tokens[51:]])  # Jaccard about 0.9

    near = text(100)
    records[9 - 1] = {"text": " ".join(near)}
    records[10 - 1] = {"text": edited(near)}
    # Explicit ids: code point order, even when shaped like a derived id.
    records[20 - 1] = {"id": "9", "text": " ".join(text(50))}
    records[21 - 1] = {"id": "10", "text": records[20 - 1]["text"]}
    other = text(100)
    records[30 - 1] = {"id": "foo:9", "text": " ".join(other)}
    records[31 - 1] = {"id": "foo:12", "text": edited(other)}
    path = tmp_path / "in.json.gz"
    path.write_bytes(gzip.compress(
        "".join(json.dumps(r) + "\n" for r in records).encode(), mtime=0))
    out = tmp_path / "out"
    assert main(["-q", "dedup", "--input", str(path), "--output", str(out)]) == 0
    dups = {d["id"]: (d["duplicate_of"], d["reason"])
            for d in pq.read_table(out / "duplicates").to_pylist()}
    assert dups == {
        "in.json.gz:1072": ("in.json.gz:4", "exact"),  # string order kept :1072
        "in.json.gz:10": ("in.json.gz:9", "near"),     # string order kept :10
        "9": ("10", "exact"),
        "foo:9": ("foo:12", "near"),
    }
    assert dups == reference_dedup(read_docs([path]))
