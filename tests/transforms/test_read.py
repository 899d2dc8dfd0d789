"""``transforms.read``: input matching, derived-id names, repeated ids, the re-read selections
(``Selection``, ``LineFilter``) and the ``ReadDocuments`` transform on planted plain, gzip
and Parquet files (batches, ids, uids and every rejection reason)."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.transforms.conftest import MAX_DOC_BYTES, _json_line, new_pipeline
from transforms.batches import LINE_MASK, DocBatch, batch_key_of, make_uid
from transforms.read import (
    LineFilter,
    ReadDocuments,
    ReadParams,
    Selection,
    id_names,
    match_inputs,
    repeated_ids,
)


def test_match_inputs_no_match(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("{}\n")
    for pattern in (str(tmp_path / "*.parquet"), str(tmp_path / "missing.json"),
                    str(tmp_path / "nodir" / "*.json")):
        with pytest.raises(FileNotFoundError) as info:
            match_inputs([str(tmp_path / "a.json"), pattern])
        assert pattern in str(info.value)


def test_match_inputs_sorted_and_deduplicated(tmp_path: Path) -> None:
    for name in ("c.json", "a.json", "b.json.gz", "d.parquet"):
        (tmp_path / name).write_text("{}\n")
    got = match_inputs([
        str(tmp_path / "*.json*"),
        str(tmp_path / "a.json"),
        str(tmp_path / "*"),
        str(tmp_path / "c.*"),
    ])
    expected = sorted(str(tmp_path / n) for n in ("a.json", "b.json.gz", "c.json", "d.parquet"))
    assert got == expected
    assert match_inputs([str(tmp_path / "c.json")]) == [str(tmp_path / "c.json")]


def test_id_names_disambiguate_equal_base_names() -> None:
    files = ["/d/2019/data.json", "/d/2020/data.json", "/d/x/a/part.json", "/d/y/a/part.json",
             "/d/other.json", "gs://b/z/data.json"]
    assert id_names(files) == {
        "/d/2019/data.json": "2019/data.json", "/d/2020/data.json": "2020/data.json",
        "/d/x/a/part.json": "x/a/part.json", "/d/y/a/part.json": "y/a/part.json",
        "/d/other.json": "other.json", "gs://b/z/data.json": "z/data.json"}


def test_repeated_ids_keep_the_smallest_uid() -> None:
    ids = ["a", "b", "a", "c", "a", "b"]
    uids = np.array([50, 10, 20, 30, 40, 60], dtype=np.int64)
    # Equal (colliding) hashes for everything: ids are still compared as strings.
    hashes = np.zeros(len(ids), dtype=np.uint64)
    assert sorted(repeated_ids(hashes, uids, ids)) == [(40, 20), (50, 20), (60, 10)]


# --------------------------------------------------------------------------------------------
# Re-read selections (Selection, LineFilter)
# --------------------------------------------------------------------------------------------


def test_line_filter_only_and_except() -> None:
    only = LineFilter("only", frozenset({1, 3}))
    assert [line for line in range(1, 6) if only.wanted(line)] == [1, 3]
    excluded = LineFilter("except", frozenset({1, 3}))
    assert [line for line in range(1, 6) if excluded.wanted(line)] == [2, 4, 5]
    assert not any(LineFilter("only", frozenset()).wanted(line) for line in range(1, 100))
    assert all(LineFilter("except", frozenset()).wanted(line) for line in range(1, 100))


def test_selection_lines_of_each_file() -> None:
    uids = np.array(sorted([make_uid(0, 1), make_uid(0, 3), make_uid(2, 5), make_uid(2, 7),
                            make_uid(2, LINE_MASK), make_uid(4, 1)]), dtype=np.int64)
    assert Selection().mode == "all" and len(Selection().uids) == 0
    assert all(Selection().lines_of(f) is None for f in range(5))  # all: no filter at all
    only = Selection("only", uids)
    assert only.lines_of(0) == LineFilter("only", frozenset({1, 3}))
    # A file with nothing selected: an empty "only" filter (the re-read skips the file).
    assert only.lines_of(1) == LineFilter("only", frozenset())
    # The largest line number of file 2 belongs to file 2, not to file 3.
    assert only.lines_of(2) == LineFilter("only", frozenset({5, 7, LINE_MASK}))
    assert only.lines_of(3) == LineFilter("only", frozenset())
    assert only.lines_of(4) == LineFilter("only", frozenset({1}))
    assert only.lines_of(5) == LineFilter("only", frozenset())
    excluded = Selection("except", uids)
    assert excluded.lines_of(0) == LineFilter("except", frozenset({1, 3}))
    assert excluded.lines_of(2) == LineFilter("except", frozenset({5, 7, LINE_MASK}))
    # Nothing excepted from a file: no filter (every line wanted).
    assert excluded.lines_of(1) is None and excluded.lines_of(3) is None
    nothing = Selection("only", np.zeros(0, dtype=np.int64))
    assert nothing.lines_of(0) == LineFilter("only", frozenset())
    assert Selection("except", np.zeros(0, dtype=np.int64)).lines_of(0) is None
    # The filter's lines are plain ints (hashable, comparable with line counters).
    assert all(type(line) is int for line in only.lines_of(2).lines)


# --------------------------------------------------------------------------------------------
# ReadDocuments

READ_BATCH = 3


# (raw line, expected id or None, expected rejection reason or None)
PLAIN_LINES: list[tuple[bytes, str | None, str | None]] = [
    (_json_line({"text": "alpha one", "url": "http://u1"}), "a.json:1", None),
    (_json_line({"id": "doc-x", "text": "beta"}), "doc-x", None),
    (b'{"text": "unterminated', None, "bad_json"),
    (_json_line({"id": 7, "text": "gamma", "n": 1}), "7", None),
    (_json_line({"title": "no text here"}), None, "missing_text"),
    (b'{"text": "caf\xe9 latin-1"}', None, "invalid_utf8"),
    (b"   \t ", None, "blank_line"),
    (_json_line({"text": "delta"}), "a.json:8", None),
    (_json_line({"id": None, "text": "epsilon"}), "a.json:9", None),
    (_json_line([1, 2, 3]), None, "not_object"),
    (_json_line({"text": 5}), None, "text_not_string"),
    (_json_line({"id": True, "text": "bool id"}), None, "bad_id"),
    (_json_line({"text": "zeta"}), "a.json:13", None),
    (_json_line({"text": "x" * 600}), None, "too_large"),
    (_json_line({"text": "eta", "meta": {"k": [1, 2]}}), "a.json:15", None),
    (_json_line({"text": "theta"}), "a.json:16", None),
    (_json_line({"text": "iota"}), "a.json:17", None),
]
GZIP_LINES: list[tuple[bytes, str | None, str | None]] = [
    (_json_line({"text": "gz one"}), "b.json.gz:1", None),
    (_json_line({"id": "gz-2", "text": "gz two"}), "gz-2", None),
    (_json_line({"text": "gz three"}), "b.json.gz:3", None),
    (_json_line({"id": 44, "text": "gz four"}), "44", None),
    (_json_line({"text": "gz five"}), "b.json.gz:5", None),
    (b"not json at all", None, "bad_json"),
    (_json_line({"text": "gz seven"}), "b.json.gz:7", None),
    (_json_line({"text": "gz eight"}), "b.json.gz:8", None),
    (b"", None, "blank_line"),
    (_json_line({"text": "gz ten"}), "b.json.gz:10", None),
]
PARQUET_ROWS: list[dict[str, Any]] = [
    {"id": None, "text": "pq one", "url": "http://p1"},
    {"id": "p-2", "text": "pq two", "url": None},
    {"id": None, "text": "pq three", "url": "http://p3"},
    {"id": "p-4", "text": "pq four", "url": "http://p4"},
    {"id": None, "text": "pq five", "url": None},
]
PARQUET_IDS = ["c.parquet:1", "p-2", "c.parquet:3", "p-4", "c.parquet:5"]


def write_read_fixtures(tmp_path: Path) -> list[str]:
    """Write a.json (plain), b.json.gz and c.parquet; return their paths in file-index order."""
    plain = tmp_path / "a.json"
    plain.write_bytes(b"\n".join(raw for raw, _, _ in PLAIN_LINES) + b"\n")
    gz = tmp_path / "b.json.gz"
    # CRLF line ends in the gzip file: the terminator must not reach the parser.
    gz.write_bytes(gzip.compress(b"\r\n".join(raw for raw, _, _ in GZIP_LINES) + b"\r\n"))
    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pylist(PARQUET_ROWS), parquet)
    return [str(plain), str(gz), str(parquet)]


def expected_read(paths: list[str]) -> tuple[list[tuple], list[tuple]]:
    """Expected ``(key, uids, ids, records)`` per batch and ``(source, line, reason, raw)``."""
    good: list[tuple[int, int, str, dict[str, Any]]] = []
    rejected: list[tuple] = []
    for file_index, lines in ((0, PLAIN_LINES), (1, GZIP_LINES)):
        for line, (raw, doc_id, reason) in enumerate(lines, start=1):
            if reason is None:
                assert doc_id is not None
                good.append((file_index, line, doc_id, json.loads(raw)))
            else:
                preview = raw.decode("utf-8", errors="replace")
                rejected.append((paths[file_index], line, reason, preview))
    for row, (record, doc_id) in enumerate(zip(PARQUET_ROWS, PARQUET_IDS), start=1):
        good.append((2, row, doc_id, record))
    batches: dict[int, list[tuple[int, str, dict[str, Any]]]] = {}
    for file_index, line, doc_id, record in good:
        uid = make_uid(file_index, line)
        batches.setdefault(batch_key_of(uid, READ_BATCH), []).append((uid, doc_id, record))
    expected = [
        (key, tuple(m[0] for m in members), tuple(m[1] for m in members),
         tuple(json.dumps(m[2], sort_keys=True) for m in members))
        for key, members in batches.items()
    ]
    return expected, rejected


def describe_doc_batch(element: tuple[int, DocBatch]) -> tuple:
    key, batch = element
    assert key == batch.batch_key
    assert len(batch.ids) <= READ_BATCH
    assert len(batch.ids) == len(batch.uids) == len(batch.records)
    assert {batch_key_of(int(u), READ_BATCH) for u in batch.uids.tolist()} == {key}
    return (key, tuple(batch.uids.tolist()), tuple(batch.ids),
            tuple(json.dumps(r, sort_keys=True) for r in batch.records))


def test_read_documents_ids_uids_batches_and_rejections(tmp_path: Path) -> None:
    paths = write_read_fixtures(tmp_path)
    expected_batches, expected_rejected = expected_read(paths)
    # The planted batches really exercise the boundaries: a full batch in every file.
    assert {b[0] >> 40 for b in expected_batches if len(b[1]) == READ_BATCH} == {0, 1, 2}
    with new_pipeline() as p:
        read = p | "ReadPlantedFiles" >> ReadDocuments(
            ReadParams(tuple(paths), MAX_DOC_BYTES, READ_BATCH))
        assert_that(read.batches | "DescribeBatches" >> beam.Map(describe_doc_batch),
                    equal_to(expected_batches), label="CheckBatches")
        assert_that(
            read.rejected | "DescribeRejected" >> beam.Map(
                lambda r: (r["source"], r["line"], r["reason"], r["raw"])),
            equal_to(expected_rejected), label="CheckRejected")


def test_read_documents_truncated_gzip_keeps_earlier_lines(tmp_path: Path) -> None:
    rng = random.Random(3)
    lines = [_json_line({"text": " ".join(f"w{rng.randrange(10**9)}" for _ in range(20))})
             for _ in range(3000)]
    blob = gzip.compress(b"\n".join(lines) + b"\n")
    path = tmp_path / "t.json.gz"
    path.write_bytes(blob[: len(blob) // 2])

    def check(actual: list[tuple]) -> None:
        good = sorted(line for kind, line in actual if kind == "doc")
        errors = [line for kind, line in actual if kind == "read_error"]
        assert 0 < len(good) < len(lines)
        assert good == list(range(1, len(good) + 1))
        assert errors == [len(good) + 1]

    with new_pipeline() as p:
        read = p | "ReadTruncatedGzip" >> ReadDocuments(
            ReadParams((str(path),), MAX_DOC_BYTES * 10, 1000))
        docs = read.batches | "ListLines" >> beam.FlatMap(
            lambda kv: [("doc", int(u) & ((1 << 40) - 1)) for u in kv[1].uids.tolist()])
        errors = read.rejected | "ListErrors" >> beam.Map(lambda r: (r["reason"], r["line"]))
        merged = (docs, errors) | "MergeLines" >> beam.Flatten()
        assert_that(merged, check, label="CheckTruncation")
