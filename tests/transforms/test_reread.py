"""``transforms.reread``: ``ReadSelected`` re-reads exactly the documents the first read
yielded, for every kind of selection, in a pipeline and called directly."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.transforms.conftest import MAX_DOC_BYTES, new_pipeline, write_json_lines
from transforms.batches import DocBatch, batch_key_of, make_uid
from transforms.read import ReadDocuments, ReadParams, ReadResult, Selection
from transforms.reread import ReadSelected

# --------------------------------------------------------------------------------------------
# ReadSelected (re-reads of the input)

RESELECT_BATCH = 3
# s.json (file 0): line -> raw JSON line; the read rejects lines 3 (bad JSON), 4 (repeats the
# id r1 of line 1) and 7 (too large).
RESELECT_JSON: dict[int, Any] = {
    1: {"id": "r1", "text": "one"},
    2: {"text": "two", "url": "http://two"},
    3: b'{"text": "bad',
    4: {"id": "r1", "text": "repeats r1"},
    5: {"text": "five", "extra": [5]},
    6: {"text": "six"},
    7: {"text": "x" * 600},
    8: {"id": 8, "text": "eight"},
}
# t.parquet (file 1): row 2 repeats r1 across files, row 4 has no text.
RESELECT_PARQUET: list[dict[str, Any]] = [
    {"id": "p1", "text": "pq one"},
    {"id": "r1", "text": "pq repeats r1"},
    {"id": None, "text": "pq three"},
    {"id": "p4", "text": None},
    {"id": None, "text": "pq five"},
]
# (file index, line) of the documents the first read yields, with their ids.
RESELECT_DOCS = {(0, 1): "r1", (0, 2): "s.json:2", (0, 5): "s.json:5", (0, 6): "s.json:6",
                 (0, 8): "8", (1, 1): "p1", (1, 3): "t.parquet:3", (1, 5): "t.parquet:5"}
RESELECT_REJECTED = {(0, 3): "bad_json", (0, 4): "duplicate_id", (0, 7): "too_large",
                     (1, 2): "duplicate_id", (1, 4): "text_not_string"}


def write_reselect_files(tmp_path: Path) -> list[str]:
    json_path = write_json_lines(tmp_path / "s.json", RESELECT_JSON)
    parquet_path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(RESELECT_PARQUET), parquet_path)
    return [json_path, str(parquet_path)]


def reselect_records(paths: list[str]) -> dict[int, tuple[str, dict[str, Any]]]:
    """``uid → (id, record)`` of every document, read independently of ``transforms.read``."""
    parquet_rows = pq.read_table(paths[1]).to_pylist()
    docs = {}
    for (file_index, line), doc_id in RESELECT_DOCS.items():
        record = RESELECT_JSON[line] if file_index == 0 else parquet_rows[line - 1]
        docs[make_uid(file_index, line)] = (doc_id, record)
    return docs


def expected_batches(docs: dict[int, tuple[str, dict[str, Any]]], uids: Iterable[int]
                     ) -> list[tuple]:
    """``describe_doc_batch`` rows of the batches holding ``uids`` (batches cut as the first
    read cuts them; a batch with no selected document is not there)."""
    by_key: dict[int, list[int]] = {}
    for uid in sorted(uids):
        by_key.setdefault(batch_key_of(uid, RESELECT_BATCH), []).append(uid)
    return [(key, tuple(members), tuple(docs[u][0] for u in members),
             tuple(json.dumps(docs[u][1], sort_keys=True) for u in members))
            for key, members in by_key.items()]


def describe_reselected(element: tuple[int, DocBatch]) -> tuple:
    key, batch = element
    assert key == batch.batch_key
    assert {batch_key_of(int(u), RESELECT_BATCH) for u in batch.uids.tolist()} == {key}
    return (key, tuple(batch.uids.tolist()), tuple(batch.ids),
            tuple(json.dumps(r, sort_keys=True) for r in batch.records))


def reselect_cases() -> dict[str, tuple[Selection, set[int]]]:
    """Selections (name → (selection, uids it yields)). Selected rejects (bad line, repeated
    ids, a line beyond the file) are never yielded."""
    docs = set(make_uid(*k) for k in RESELECT_DOCS)
    uid = make_uid
    only = [uid(0, 2), uid(0, 3), uid(0, 4), uid(0, 8), uid(0, 99), uid(1, 2), uid(1, 5)]
    excluded = [uid(0, 1), uid(0, 6), uid(0, 7), uid(1, 1)]
    return {
        "All": (Selection(), docs),
        "Only": (Selection("only", np.array(sorted(only), dtype=np.int64)),
                 {uid(0, 2), uid(0, 8), uid(1, 5)}),
        "Except": (Selection("except", np.array(sorted(excluded), dtype=np.int64)),
                   docs - set(excluded)),
        # Nothing from the Parquet file: it is not even opened.
        "OnlyJson": (Selection("only", np.array([uid(0, 5)], dtype=np.int64)), {uid(0, 5)}),
        "OnlyNothing": (Selection("only", np.zeros(0, dtype=np.int64)), set()),
        "ExceptNothing": (Selection("except", np.zeros(0, dtype=np.int64)), docs),
        "ExceptEverything": (Selection("except", np.array(sorted(docs), dtype=np.int64)),
                             set()),
    }


def test_read_selected_yields_the_first_reads_documents(tmp_path: Path) -> None:
    paths = write_reselect_files(tmp_path)
    docs = reselect_records(paths)
    params = ReadParams(tuple(paths), MAX_DOC_BYTES, RESELECT_BATCH)
    with new_pipeline() as p:
        read = p | "ReadDocuments" >> ReadDocuments(
            ReadParams(tuple(paths), MAX_DOC_BYTES, RESELECT_BATCH))
        assert isinstance(read, ReadResult) and read._fields == ("batches", "rejected", "repeats")
        # The first read: every document, and the rejects the re-reads must stay silent about.
        assert_that(read.batches | "DescribeFirstRead" >> beam.Map(describe_reselected),
                    equal_to(expected_batches(docs, docs)), label="CheckFirstRead")
        assert_that(read.rejected | "DescribeRejected" >> beam.Map(
            lambda r: ((0 if r["source"] == paths[0] else 1, r["line"]), r["reason"])),
            equal_to(list(RESELECT_REJECTED.items())), label="CheckRejected")
        for name, (selection, uids) in reselect_cases().items():
            selected = (
                {"repeats": read.repeats,
                 "selection": p | f"Create{name}Selection" >> beam.Create([selection])}
                | f"Read{name}" >> ReadSelected(params))
            assert_that(selected | f"Describe{name}" >> beam.Map(describe_reselected),
                        equal_to(expected_batches(docs, uids)), label=f"Check{name}")


def test_read_selected_fn_parses_only_selected_lines_and_reports_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Called directly: a re-read yields only ``(batch_key, DocBatch)`` (no rejected rows, no
    repeats), and lines outside the selection never reach the parser."""
    import transforms.read as read_module
    import transforms.reread as reread_module

    paths = write_reselect_files(tmp_path)
    docs = reselect_records(paths)
    parsed: list[tuple[str, int]] = []
    parse_json, check = read_module.parse_json_line, read_module.check_record

    def spy_parse(raw: bytes, base_name: str, line: int, max_doc_bytes: int) -> Any:
        parsed.append((base_name, line))
        return parse_json(raw, base_name, line, max_doc_bytes)

    def spy_check(record: Any, base_name: str, line: int) -> Any:
        if base_name.endswith(".parquet"):
            parsed.append((base_name, line))
        return check(record, base_name, line)

    opened: list[str] = []
    open_file = read_module.FileSystems.open

    def spy_open(path: str, *args: Any, **kwargs: Any) -> Any:
        opened.append(os.path.basename(path))
        return open_file(path, *args, **kwargs)

    monkeypatch.setattr(read_module, "parse_json_line", spy_parse)
    monkeypatch.setattr(read_module, "check_record", spy_check)
    monkeypatch.setattr(read_module.FileSystems, "open", spy_open)
    repeats = {make_uid(0, 4): make_uid(0, 1), make_uid(1, 2): make_uid(0, 1)}
    fn = reread_module.ReadSelectedFn(MAX_DOC_BYTES, RESELECT_BATCH,
                                    read_module.id_names(paths), paths)
    for name, (selection, uids) in reselect_cases().items():
        parsed.clear()
        opened.clear()
        out = [item for file_index, path in enumerate(paths)
               for item in fn.process((file_index, path), repeats, selection)]
        assert not [o for o in out if isinstance(o, beam.pvalue.TaggedOutput)], name
        # A file with nothing selected is not even opened.
        files_wanted = {os.path.basename(path) for file_index, path in enumerate(paths)
                        if selection.mode != "only"
                        or any(u >> 40 == file_index for u in selection.uids.tolist())}
        assert sorted(opened) == sorted(files_wanted), name
        assert sorted(describe_reselected(o) for o in out) == sorted(
            expected_batches(docs, uids)), name
        if selection.mode == "only":
            wanted = {(os.path.basename(paths[u >> 40]), u & ((1 << 40) - 1))
                      for u in selection.uids.tolist()}
            # Only selected lines are parsed (the too-large line 7 is cut before parsing).
            assert set(parsed) <= wanted, (name, sorted(set(parsed) - wanted))
        elif selection.mode == "except":
            unwanted = {(os.path.basename(paths[u >> 40]), u & ((1 << 40) - 1))
                        for u in selection.uids.tolist()}
            assert not set(parsed) & unwanted, name
    # The first read's DoFn, for contrast, reports the rejects (so the check above can fail).
    first = read_module.ReadFileFn(MAX_DOC_BYTES, RESELECT_BATCH,
                                   read_module.id_names(paths), paths)
    tagged = [o for file_index, path in enumerate(paths)
              for o in first.process((file_index, path), repeats)
              if isinstance(o, beam.pvalue.TaggedOutput)]
    assert len(tagged) == len(RESELECT_REJECTED)
