"""Tier-2 tests: each composite transform of the ND graph run in a Beam pipeline.

Every test builds a tiny planted fixture, runs one (or a few) of the composite transforms of
``transforms/`` in ``TestPipeline`` on the FnApiRunner (plain DirectRunner would try to
download the Prism runner, which fails offline) and checks the outputs with ``assert_that``.
Elements holding numpy arrays are turned into plain tuples in a ``beam.Map`` first, or checked
by a matcher function. Expected values are computed independently: ids and uids from the
documented rules, signatures and similarities from the module-level helper functions.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import os
import random
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.batches import (
    DocBatch,
    FeatureBatch,
    JoinByKey,
    NodeInfo,
    UidSetFn,
    batch_key_of,
    make_uid,
    partition_of,
)
from transforms.components import STATS_TAG as CC_STATS_TAG
from transforms.components import ConnectedComponents
from transforms.exact import ExactDuplicates, RemoveExactDuplicates
from transforms.lsh import (
    BAND_GROUPS,
    CandidatePairs,
    EmitBandKeysFn,
    FindCandidatePairs,
    FindStarsFn,
    MergeEdgesFn,
    band_groups,
    band_hashes,
    group_tag,
    key_edges_by_member,
    uid_offsets,
    uids_of_chunk,
)
from transforms.minhash import (
    ComputeFeatures,
    FeatureParams,
    exact_hash,
    minhash_signatures,
    normalised_text,
    permutation_params,
    shingle_hashes,
    token_hashes,
    tokenize,
)
from transforms.read import (
    REJECTED_TAG,
    ReadDocuments,
    ReadParams,
    ReadResult,
    Selection,
)
from transforms.reread import ReadSelected
from transforms.resolve import DuplicateRow, ResolveDuplicates, ResolveParams
from transforms.verify import FetchNodes, NodeParams, VerifyCandidates, VerifyParams
from transforms.write import FieldTypesFn, WriteOutputs, WriteParams, Written

# --------------------------------------------------------------------------------------------
# helpers


def new_pipeline() -> BeamTestPipeline:
    """A test pipeline on Beam's local portable runner (works offline)."""
    return BeamTestPipeline(runner=FnApiRunner())


def add_dicts(dicts: Iterable[dict[str, int]]) -> dict[str, int]:
    """Key-wise sum of stats dictionaries (a CombineGlobally function)."""
    total: dict[str, int] = {}
    for item in dicts:
        for key, value in item.items():
            total[key] = total.get(key, 0) + int(value)
    return total


def dict_items(d: dict[str, Any]) -> tuple:
    """A dict as a sorted tuple of items, so ``equal_to`` can compare it."""
    return tuple(sorted(d.items()))


def doc_batch(file_index: int, lines: list[int], texts: list[str], batch_size: int,
              ids: list[str] | None = None, extra: list[dict[str, Any]] | None = None
              ) -> tuple[int, DocBatch]:
    """``(batch_key, DocBatch)`` of records at ``lines`` of file ``file_index``."""
    uids = [make_uid(file_index, line) for line in lines]
    keys = {batch_key_of(uid, batch_size) for uid in uids}
    assert len(keys) == 1, "fixture lines must lie in one batch"
    key = keys.pop()
    if ids is None:
        ids = [f"f{file_index}:{line}" for line in lines]
    records = [{"text": text} for text in texts]
    if extra is not None:
        for record, fields in zip(records, extra):
            record.update(fields)
    return key, DocBatch(key, np.array(uids, dtype=np.int64), list(ids), records,
                         sum(len(t) for t in texts))


def feature_batch(batch_key: int, uids: list[int], signatures: np.ndarray,
                  ids: list[str] | None = None) -> tuple[int, FeatureBatch]:
    """A hand-built ``(batch_key, FeatureBatch)`` with the given signatures."""
    count = len(uids)
    return batch_key, FeatureBatch(
        batch_key=batch_key,
        uids=np.array(uids, dtype=np.int64),
        ids=ids if ids is not None else [f"doc{uid}" for uid in uids],
        norm_lengths=np.full(count, 10, dtype=np.int64),
        exact_hashes=np.array([[uid, uid] for uid in uids], dtype=np.uint64).reshape(-1, 2),
        signatures=signatures.astype(np.uint32),
    )


def expected_shingles(text: str, ngram: int, seed: int, tokenizer: str = "unicode"
                      ) -> np.ndarray:
    """Raw shingle hashes of one document, from the per-document helpers."""
    return shingle_hashes(token_hashes(tokenize(text, tokenizer), seed), ngram, seed)


def expected_signature(text: str, ngram: int, seed: int, num_perm: int,
                       tokenizer: str = "unicode") -> np.ndarray:
    """MinHash signature of one document, from ``minhash_signatures`` on its own."""
    shingles = expected_shingles(text, ngram, seed, tokenizer)
    a, b = permutation_params(num_perm, seed)
    return minhash_signatures(shingles, np.array([0, len(shingles)], dtype=np.int64), a, b)[0]


def flat_edges(edges: tuple) -> Iterator[tuple]:
    """Array-valued edge elements → one plain tuple per edge."""
    yield from zip(*(column.tolist() for column in edges))


def empty_uids() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


def describe_uid_array(uids: np.ndarray) -> tuple[str, tuple[int, ...]]:
    """A uid array as ``(dtype name, values)``, so ``equal_to`` can compare it."""
    return uids.dtype.name, tuple(uids.tolist())


def same_set(expected: Iterable[Any]) -> Callable[[list[Any]], None]:
    """Matcher: the elements, as a set, are ``expected`` (repeats allowed)."""
    want = set(expected)

    def check(actual: list[Any]) -> None:
        got = set(actual)
        assert got == want, (sorted(got - want), sorted(want - got))

    return check


def exception_text(exc: BaseException) -> str:
    """Messages of an exception and of everything it wraps."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# ReadDocuments

READ_BATCH = 3
MAX_DOC_BYTES = 500


def _json_line(obj: Any) -> bytes:
    return json.dumps(obj).encode("utf-8")


def write_json_lines(path: Path, lines: dict[int, Any], filler: bytes = b'{"text": bad') -> str:
    """A JSON-lines file with ``lines[n]`` (a record, or raw bytes) at 1-based line ``n`` and
    ``filler`` (a line the read rejects) on every other line up to the last."""
    raw = [filler] * max(lines)
    for line, value in lines.items():
        raw[line - 1] = value if isinstance(value, bytes) else _json_line(value)
    path.write_bytes(b"\n".join(raw) + b"\n")
    return str(path)


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
            read[REJECTED_TAG] | "DescribeRejected" >> beam.Map(
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
        errors = read[REJECTED_TAG] | "ListErrors" >> beam.Map(lambda r: (r["reason"], r["line"]))
        merged = (docs, errors) | "MergeLines" >> beam.Flatten()
        assert_that(merged, check, label="CheckTruncation")


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
        assert isinstance(read, ReadResult) and set(read) == {"batches", "rejected", "repeats"}
        # The first read: every document, and the rejects the re-reads must stay silent about.
        assert_that(read.batches | "DescribeFirstRead" >> beam.Map(describe_reselected),
                    equal_to(expected_batches(docs, docs)), label="CheckFirstRead")
        assert_that(read[REJECTED_TAG] | "DescribeRejected" >> beam.Map(
            lambda r: ((0 if r["source"] == paths[0] else 1, r["line"]), r["reason"])),
            equal_to(list(RESELECT_REJECTED.items())), label="CheckRejected")
        for name, (selection, uids) in reselect_cases().items():
            selected = (
                {"repeats": read["repeats"],
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
# ComputeFeatures

FEATURE_BATCH = 4
FEATURE_TEXTS_0 = [
    "The quick brown fox jumps over the lazy dog",
    "Hello, world!",
    "",
]
FEATURE_TEXTS_1 = [
    "!!! --- ...",
    "Größe Übung: naïve CAFÉ façade 123 ÉCOLE",
    "snake_case under_score words here and there",
    "one two three four five six seven",
]
FEATURE_TEXTS_2 = ["?", "x y z w", "سلام دنیا ۱۲۳"]  # no ASCII token in the last


def long_texts() -> list[str]:
    """Documents long enough that one batch spans several MinHash chunks (2048 shingles),
    one of them longer than a chunk on its own."""
    rng = random.Random(5)
    return [" ".join(f"w{rng.randrange(5000)}" for _ in range(count))
            for count in (900, 2500, 700)]


def feature_fixture() -> list[tuple[int, DocBatch]]:
    return [
        doc_batch(0, [1, 2, 3], FEATURE_TEXTS_0, FEATURE_BATCH),
        doc_batch(0, [4, 5, 6, 7], FEATURE_TEXTS_1, FEATURE_BATCH),
        doc_batch(1, [1, 2, 3], FEATURE_TEXTS_2, FEATURE_BATCH),
        doc_batch(1, [4, 6, 7], long_texts(), FEATURE_BATCH),
    ]


def describe_features(element: tuple[int, FeatureBatch]) -> tuple:
    """Rows of a feature batch; the LSH column is the band hashes when the batch carries
    them, else the signatures (exactly one of the two travels)."""
    key, f = element
    assert key == f.batch_key
    assert (f.signatures is None) != (f.band_hashes is None), "one LSH input per batch"
    if f.band_hashes is not None:
        assert f.band_hashes.dtype == np.uint64 and f.band_hashes.shape[0] == len(f)
        lsh = f.band_hashes
    else:
        assert f.signatures.dtype == np.uint32 and f.signatures.shape[0] == len(f)
        lsh = f.signatures
    rows = tuple(
        (int(f.uids[r]), f.ids[r], int(f.norm_lengths[r]), tuple(f.exact_hashes[r].tolist()),
         tuple(lsh[r].tolist()))
        for r in range(len(f))
    )
    return key, rows


@pytest.mark.parametrize("banding", [None, (4, 4), (5, 3)], ids=["signatures", "b4r4", "b5r3"])
@pytest.mark.parametrize("tokenizer,untokenized_per_batch",
                         [("unicode", [1, 1, 1, 0]), ("ascii", [1, 1, 2, 0])])
def test_compute_features_matches_direct_minhash(
        tokenizer: str, untokenized_per_batch: list[int], banding: tuple[int, int] | None
) -> None:
    """Without banding the batches carry the MinHash signatures; with ``(bands, rows)`` they
    carry ``band_hashes`` of those signatures instead (b * r may be below num_perm)."""
    ngram, num_perm, seed = 3, 16, 7

    def lsh_values(text: str) -> tuple:
        signature = expected_signature(text, ngram, seed, num_perm, tokenizer)
        if banding is None:
            return tuple(signature.tolist())
        return tuple(band_hashes(signature[None, :], *banding, seed)[0].tolist())

    batches = feature_fixture()
    expected = []
    untokenized = []
    for key, batch in batches:
        rows = []
        for uid, doc_id, record in zip(batch.uids.tolist(), batch.ids, batch.records):
            text = record["text"]
            tokens = tokenize(text, tokenizer)
            if not tokens:
                continue
            norm = normalised_text(tokens).encode("utf-8")
            rows.append((uid, doc_id, len(norm), exact_hash(norm, seed), lsh_values(text)))
        expected.append((key, tuple(rows)))
        untokenized.append(dict_items(
            {"read_batches": 1, "kept_untokenized": len(batch.records) - len(rows)}))
    assert [dict(u)["kept_untokenized"] for u in untokenized] == untokenized_per_batch

    with new_pipeline() as p:
        features = (
            p
            | "CreateDocBatches" >> beam.Create(batches)
            | "ComputeFeatures" >> ComputeFeatures(FeatureParams(
                ngram, num_perm, seed, tokenizer=tokenizer, banding=banding))
        )
        assert_that(features.features | "DescribeFeatures" >> beam.Map(describe_features),
                    equal_to(expected), label="CheckFeatures")
        assert_that(features.stats | "StatsAsItems" >> beam.Map(dict_items),
                    equal_to(untokenized), label="CheckStats")


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


def exact_fixture() -> list[tuple[int, DocBatch]]:
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
            | "CreateDocBatches" >> beam.Create(exact_fixture())
            | "ComputeFeatures" >> ComputeFeatures(FeatureParams(2, 16, 11, banding=(4, 4)))
        ).features
        exact = features | "RemoveExactDuplicates" >> RemoveExactDuplicates(
            policy, EXACT_BATCH, 3)
        assert isinstance(exact, ExactDuplicates)
        assert_that(exact.members, equal_to(expected_members), label="CheckExactMembers")
        assert_that(exact.removed | "DescribeRemoved" >> beam.Map(describe_uid_array),
                    equal_to([("int64", expected_removed)]), label="CheckRemovedUids")
        no_removed = p | "CreateNoRemoved" >> beam.Create([empty_uids()])
        for name, removed, edges in (("Filtered", exact.removed, near_edges),
                                     ("Unfiltered", no_removed, star_edges_unfiltered)):
            found = ({"features": features, "removed": removed}
                     | f"FindPairs{name}" >> FindCandidatePairs(4, 4, 11, 3, 100))
            assert_that(found.edges | f"FlattenEdges{name}" >> beam.FlatMap(flat_edges),
                        same_set(edges), label=f"CheckEdges{name}")


# --------------------------------------------------------------------------------------------
# FindCandidatePairs

LSH_BANDS, LSH_ROWS = 4, 2


LSH_SEED = 5


def lsh_fixture(form: str = "signatures"
                ) -> tuple[list[tuple[int, FeatureBatch]], dict[str, int]]:
    """Six documents whose signatures share planted bands; every other value is unique.

    ``form``: the batches carry the ``signatures`` (banded by ``EmitBandKeysFn``) or, as
    ``ComputeFeatures`` makes them with banding, only their ``band_hashes``.
    """
    uid = {"A": make_uid(0, 1), "B": make_uid(0, 2), "D": make_uid(0, 3),
           "C": make_uid(1, 1), "E": make_uid(1, 2), "F": make_uid(1, 3)}
    values = iter(range(1000, 100_000, 7))
    sig = {name: np.array([next(values) for _ in range(LSH_BANDS * LSH_ROWS)], dtype=np.uint32)
           for name in uid}
    sig["B"][0:2] = sig["A"][0:2]  # band 0: {A, B, C}
    sig["C"][0:2] = sig["A"][0:2]
    sig["E"][4:6] = sig["D"][4:6]  # band 2: {D, E}
    sig["D"][6:8] = sig["A"][6:8]  # band 3: {A, D}
    sig["D"][2:4] = sig["A"][2:4]  # band 1: {A, D} too (another band group: one edge)
    batches = [
        feature_batch(batch_key_of(uid["A"], 8), [uid[n] for n in "ABD"],
                      np.stack([sig[n] for n in "ABD"])),
        feature_batch(batch_key_of(uid["C"], 8), [uid[n] for n in "CEF"],
                      np.stack([sig[n] for n in "CEF"])),
    ]
    if form == "band_hashes":
        batches = [(key, dataclasses.replace(
            f, signatures=None,
            band_hashes=band_hashes(f.signatures, LSH_BANDS, LSH_ROWS, LSH_SEED)))
            for key, f in batches]
    else:
        assert form == "signatures", form
    return batches, uid


@pytest.mark.parametrize("form", ["signatures", "band_hashes"])
def test_find_candidate_pairs_star_edges_and_bucket_cap(form: str) -> None:
    batches, uid = lsh_fixture(form)
    uncapped = [(uid["B"], uid["A"]), (uid["C"], uid["A"]), (uid["E"], uid["D"]),
                (uid["D"], uid["A"])]
    capped = [(uid["B"], uid["A"]), (uid["E"], uid["D"]), (uid["D"], uid["A"])]
    # (D, A) is found in bands 1 and 3, two band groups (two shuffles): it is reported and
    # counted once. Exact duplicates (``removed``) leave the buckets before anything else:
    # without the centre A, band 0 is {B, C} around B and bands 1 and 3 hold D alone.
    without_a = [(uid["C"], uid["B"]), (uid["E"], uid["D"])]
    # ... and before the cap: without B, band 0 is {A, C}, within a cap of 2.
    without_b_capped = [(uid["C"], uid["A"]), (uid["E"], uid["D"]), (uid["D"], uid["A"])]
    with new_pipeline() as p:
        features = p | "CreateFeatureBatches" >> beam.Create(batches)
        for label, cap, removed, edges, stats in (
            ("Uncapped", 100, [], uncapped,
             {"buckets_capped": 0, "bucket_members_dropped": 0, "buckets_multi": 4,
              "candidate_edges": 4}),
            ("Capped", 2, [], capped,
             {"buckets_capped": 1, "bucket_members_dropped": 1, "buckets_multi": 4,
              "candidate_edges": 3}),
            ("WithoutA", 100, [uid["A"]], without_a,
             {"buckets_capped": 0, "bucket_members_dropped": 0, "buckets_multi": 2,
              "candidate_edges": 2}),
            ("WithoutBCapped", 2, [uid["B"], make_uid(5, 5)], without_b_capped,
             {"buckets_capped": 0, "bucket_members_dropped": 0, "buckets_multi": 4,
              "candidate_edges": 3}),
        ):
            removed_pc = p | f"CreateRemoved{label}" >> beam.Create(
                [np.array(sorted(removed), dtype=np.int64)])
            found = ({"features": features, "removed": removed_pc}
                     | f"FindPairs{label}" >> FindCandidatePairs(
                         LSH_BANDS, LSH_ROWS, LSH_SEED, 3, cap))
            assert isinstance(found, CandidatePairs)
            assert_that(found.edges | f"FlattenEdges{label}" >> beam.FlatMap(flat_edges),
                        equal_to(edges), label=f"CheckEdges{label}")
            assert_that(found.stats | f"SumStats{label}" >> beam.CombineGlobally(add_dicts),
                        equal_to([stats]), label=f"CheckStats{label}")


def test_find_candidate_pairs_accepts_any_valid_seed() -> None:
    batches, uid = lsh_fixture()
    edges = [(uid["B"], uid["A"]), (uid["C"], uid["A"]), (uid["E"], uid["D"]),
             (uid["D"], uid["A"])]
    with new_pipeline() as p:
        inputs = {"features": p | "CreateFeatureBatches" >> beam.Create(batches),
                  "removed": p | "CreateNoRemoved" >> beam.Create([empty_uids()])}
        found = inputs | "FindPairs" >> FindCandidatePairs(LSH_BANDS, LSH_ROWS, 2**62, 3, 100)
        assert_that(found.edges | "FlattenEdges" >> beam.FlatMap(flat_edges), equal_to(edges),
                    label="CheckEdges")


BIG_BASE = make_uid(3, 1000)  # uids beyond 32 bits, as offsets from a batch's first uid


def band_key_chunk(band_ids: list[int], hashes: list[int], uids: list[int]) -> tuple:
    """One ``(band_ids, hashes, uid offsets, base uid)`` element of a band-key partition, as
    EmitBandKeysFn emits it (uint8 band ids, uint16 offsets from the smallest uid)."""
    base = min(uids)
    return (np.array(band_ids, dtype=np.uint8), np.array(hashes, dtype=np.uint64),
            np.array([u - base for u in uids], dtype=np.uint16), base)


def run_find_stars(cap: int, chunks: list[tuple], removed: np.ndarray | None
                   ) -> tuple[list[tuple[int, int]], dict[str, int]]:
    """FindStarsFn on one partition, outside a pipeline: its edges and its stats."""
    fn = FindStarsFn(cap)
    edges: list[tuple[int, int]] = []
    stats: list[dict[str, int]] = []
    args = () if removed is None else (removed,)
    for out in fn.process((0, iter(chunks)), *args):
        if isinstance(out, beam.pvalue.TaggedOutput):
            assert out.tag == FindStarsFn.STATS_TAG
            stats.append(out.value)
        else:
            members, centres = out
            assert members.dtype == centres.dtype == np.int64
            edges += list(flat_edges(out))
    assert len(stats) == 1
    return sorted(edges), stats[0]


def test_find_stars_drops_removed_members_before_the_cap() -> None:
    u = {i: BIG_BASE + i for i in range(10, 16)}
    # Band 0, hash 7: {10, 11, 12, 13} over two chunks; band 1, hash 7 (another bucket, same
    # hash): {10, 14}; band 0, hash 9: {15} alone.
    chunks = [band_key_chunk([0, 0, 1, 0], [7, 7, 7, 9], [u[12], u[10], u[10], u[15]]),
              band_key_chunk([0, 1, 0], [7, 7, 7], [u[13], u[14], u[11]])]
    # Nothing removed: the cap of 2 keeps {10, 11} of the first bucket. (The edges are
    # counted once they are merged across band groups: MergeEdgesFn.)
    assert run_find_stars(2, chunks, None) == run_find_stars(2, chunks, empty_uids()) == (
        [(u[11], u[10]), (u[14], u[10])],
        {"buckets_capped": 1, "bucket_members_dropped": 2, "buckets_multi": 2})
    # 10 and 12 removed first: {11, 13} fits the cap, centre 11; 14 is left alone.
    removed = np.array([u[10], u[12], 99], dtype=np.int64)
    assert run_find_stars(2, chunks, removed) == (
        [(u[13], u[11])],
        {"buckets_capped": 0, "bucket_members_dropped": 0, "buckets_multi": 1})
    # Every member removed: no edge, no bucket, the stats still come.
    assert run_find_stars(2, chunks, np.array(sorted(u.values()), dtype=np.int64)) == (
        [], {"buckets_capped": 0, "bucket_members_dropped": 0, "buckets_multi": 0})
    # The older chunk form (band_ids, hashes, uids) is read the same way.
    plain = [(c[0], c[1], c[2].astype(np.int64) + c[3]) for c in chunks]
    assert run_find_stars(2, plain, removed) == run_find_stars(2, chunks, removed)


def test_emit_band_keys_groups_offsets_and_partitions() -> None:
    """EmitBandKeysFn: one tagged output per band group, every (document, band) key once,
    uids as narrow offsets from the batch's smallest uid, partitions from the hash."""
    bands, rows, seed, parts = 6, 2, 3, 4
    rng = np.random.default_rng(1)
    uids = [BIG_BASE + i for i in (5, 0, 9, 2)]
    signatures = rng.integers(0, 2**32, size=(len(uids), bands * rows), dtype=np.uint32)
    _, features = feature_batch(batch_key_of(uids[0], 16), uids, signatures)
    banded = dataclasses.replace(features, signatures=None,
                                 band_hashes=band_hashes(signatures, bands, rows, seed))
    groups = band_groups(bands)
    assert [g.tolist() for g in groups] == [[0, 1], [2, 3], [4], [5]]
    assert [g.tolist() for g in band_groups(2)] == [[0], [1]]
    assert sum(len(g) for g in band_groups(300)) == 300 and len(band_groups(300)) == BAND_GROUPS
    hashes = band_hashes(signatures, bands, rows, seed)
    expected = sorted((band, int(hashes[i, band]), uid)
                      for i, uid in enumerate(uids) for band in range(bands))
    for form in (features, banded):  # from signatures, or from the carried band hashes
        fn = EmitBandKeysFn(bands, rows, seed, parts)
        keys = []
        for out in fn.process((features.batch_key, form)):
            assert isinstance(out, beam.pvalue.TaggedOutput)
            group = int(out.tag.removeprefix("bands"))
            assert out.tag == group_tag(group)
            part, (band_ids, chunk_hashes, offsets, base) = out.value
            assert band_ids.dtype == np.uint8 and offsets.dtype == np.uint16
            assert base == min(uids)
            assert set(band_ids.tolist()) <= set(groups[group].tolist())
            assert (chunk_hashes % np.uint64(parts) == np.uint64(part)).all()
            keys += list(zip(band_ids.tolist(), chunk_hashes.tolist(),
                             (offsets.astype(np.int64) + base).tolist()))
        assert sorted(keys) == expected
    many = EmitBandKeysFn(300, 1, seed, parts)
    wide = dataclasses.replace(features, signatures=np.zeros((4, 300), dtype=np.uint32))
    assert {out.value[1][0].dtype for out in many.process((0, wide))} == {np.dtype(np.uint16)}


def test_uid_offsets_and_chunk_uids() -> None:
    base, offsets = uid_offsets(np.array([BIG_BASE + 7, BIG_BASE, BIG_BASE + 65535]))
    assert base == BIG_BASE and offsets.dtype == np.uint16
    assert offsets.tolist() == [7, 0, 65535]
    _, wider = uid_offsets(np.array([BIG_BASE, BIG_BASE + 65536]))
    assert wider.dtype == np.uint32
    _, widest = uid_offsets(np.array([make_uid(0, 1), make_uid(2, 1)]))
    assert widest.dtype == np.int64
    assert uid_offsets(np.zeros(0, dtype=np.int64))[1].tolist() == []
    for uids in ([BIG_BASE + 7, BIG_BASE], [make_uid(0, 1), make_uid(2, 1)]):
        base, offsets = uid_offsets(np.array(uids, dtype=np.int64))
        chunk = (np.zeros(len(uids), np.uint8), np.zeros(len(uids), np.uint64), offsets, base)
        assert uids_of_chunk(chunk).dtype == np.int64
        assert uids_of_chunk(chunk).tolist() == uids


def test_merge_edges_keeps_each_edge_once() -> None:
    edges = (np.array([5, 7, 5, 9], dtype=np.int64), np.array([1, 1, 2, 1], dtype=np.int64))
    keyed = list(key_edges_by_member(edges, 3))
    assert sorted(part for part, _ in keyed) == sorted({5 % 3, 7 % 3, 9 % 3})
    for part, (members, _) in keyed:
        assert (members % 3 == part).all()
    assert sorted(e for _, pair in keyed for e in flat_edges(pair)) == sorted(flat_edges(edges))
    # The same edge from two band groups, plus a distinct one.
    chunks = [(np.array([5, 8]), np.array([1, 2])), (np.array([5]), np.array([1]))]
    out = list(MergeEdgesFn().process((2, iter(chunks))))
    stats = [o.value for o in out if isinstance(o, beam.pvalue.TaggedOutput)]
    found = [e for o in out if not isinstance(o, beam.pvalue.TaggedOutput)
             for e in flat_edges(o)]
    assert stats == [{"candidate_edges": 2}]
    assert sorted(found) == [(5, 1), (8, 2)]


# --------------------------------------------------------------------------------------------
# FetchNodes + VerifyCandidates

VERIFY_BATCH, VERIFY_NGRAM, VERIFY_PERM, VERIFY_SEED, VERIFY_PARTS = 4, 2, 64, 3, 3
VERIFY_THRESHOLD = 0.5
# name: (file index, line, text)
VERIFY_DOCS = {
    "A": (0, 1, "the quick brown fox jumps over the lazy dog near the river bank"),
    "B": (0, 2, "the quick brown fox jumps over the lazy dog near the river side"),
    "E": (0, 3, "an unrelated document that takes part in no candidate edge at all"),
    "C": (0, 5, "completely different words appear in this one sentence only"),
    "D": (1, 1, "The quick brown fox jumps over the lazy CAT near the river bank!"),
}


def write_verify_files(tmp_path: Path) -> list[str]:
    """VERIFY_DOCS as JSON lines (ids = names), one file per file index; the read rejects the
    lines in between (FetchNodes re-reads the endpoints from these files)."""
    by_file: dict[int, dict[int, Any]] = {}
    for name, (file_index, line, text) in VERIFY_DOCS.items():
        by_file.setdefault(file_index, {})[line] = {"id": name, "text": text}
    return [write_json_lines(tmp_path / f"verify{fi}.json", by_file[fi])
            for fi in sorted(by_file)]


def close_edges(expected: list[tuple[int, int, float]]) -> Callable[[list[tuple]], None]:
    """Matcher: the same ``(member, centre)`` pairs, similarities within 1e-12."""

    def check(actual: list[tuple]) -> None:
        got = sorted(actual)
        want = sorted(expected)
        assert [e[:2] for e in got] == [e[:2] for e in want], (got, want)
        for g, w in zip(got, want):
            assert math.isclose(g[2], w[2], abs_tol=1e-12), (g, w)

    return check


def test_fetch_nodes_and_verify_candidates(tmp_path: Path) -> None:
    files = write_verify_files(tmp_path)
    read_params = ReadParams(tuple(files), MAX_DOC_BYTES, VERIFY_BATCH)
    uid = {n: make_uid(fi, line) for n, (fi, line, _) in VERIFY_DOCS.items()}
    shingles = {n: set(expected_shingles(t, VERIFY_NGRAM, VERIFY_SEED).tolist())
                for n, (_, _, t) in VERIFY_DOCS.items()}
    sigs = {n: expected_signature(t, VERIFY_NGRAM, VERIFY_SEED, VERIFY_PERM)
            for n, (_, _, t) in VERIFY_DOCS.items()}

    def jac(x: str, y: str) -> float:
        return len(shingles[x] & shingles[y]) / len(shingles[x] | shingles[y])

    def sig_sim(x: str, y: str) -> float:
        return float(np.mean(sigs[x] == sigs[y]))

    pairs = [("B", "A"), ("C", "A"), ("D", "A"), ("C", "B")]
    # The planted similarities straddle the threshold as intended.
    assert jac("B", "A") > 0.8 and jac("D", "A") > 0.7
    assert jac("C", "A") < 0.1 and jac("C", "B") < 0.1
    expected = {
        "exact": [(uid[m], uid[c], jac(m, c)) for m, c in pairs
                  if jac(m, c) >= VERIFY_THRESHOLD],
        "signature": [(uid[m], uid[c], sig_sim(m, c)) for m, c in pairs
                      if sig_sim(m, c) >= VERIFY_THRESHOLD],
        "none": [(uid[m], uid[c], sig_sim(m, c)) for m, c in pairs],
    }
    assert len(expected["exact"]) == len(expected["signature"]) == 2
    expected_nodes = sorted(
        (int(partition_of(np.array([uid[n]]), VERIFY_PARTS, VERIFY_SEED)[0]), uid[n], n,
         len(normalised_text(tokenize(VERIFY_DOCS[n][2])).encode()), tuple(sigs[n].tolist()),
         tuple(sorted(shingles[n])))
        for n in "ABCD")
    # (B, A) arrives twice, from two candidate elements: it must be verified once.
    edge_elements = [
        (np.array([uid["B"], uid["C"]]), np.array([uid["A"], uid["A"]])),
        (np.array([uid["D"], uid["B"]]), np.array([uid["A"], uid["A"]])),
        (np.array([uid["C"]]), np.array([uid["B"]])),
    ]

    def describe_nodes(element: tuple[int, list[NodeInfo]]) -> list[tuple]:
        part, nodes = element
        return [(part, n.uid, n.id, n.norm_length,
                 tuple(n.signature.tolist()) if n.signature is not None else None,
                 tuple(n.shingles.tolist()) if n.shingles is not None else None)
                for n in nodes]

    with new_pipeline() as p:
        read = p | "ReadDocuments" >> ReadDocuments(
            ReadParams(tuple(files), MAX_DOC_BYTES, VERIFY_BATCH))
        edges = p | "CreateCandidateEdges" >> beam.Create(edge_elements)
        for mode in ("exact", "signature", "none"):
            name = mode.title()
            params = NodeParams(VERIFY_NGRAM, VERIFY_PERM, VERIFY_SEED, "unicode", mode)
            # FetchNodes re-reads the endpoints (A, B, C, D; never E) from the input files.
            nodes = ({"edges": edges, "repeats": read["repeats"]}
                     | f"FetchNodes{name}" >> FetchNodes(params, read_params, VERIFY_PARTS))
            # Exact mode needs shingle sets only, the others signatures only.
            want_nodes = [(n[0], n[1], n[2], n[3], None if mode == "exact" else n[4],
                           n[5] if mode == "exact" else None) for n in expected_nodes]
            assert_that(nodes | f"DescribeNodes{name}" >> beam.FlatMap(describe_nodes),
                        equal_to(want_nodes), label=f"CheckNodes{name}")
            verified = ({"edges": edges, "nodes": nodes} | f"Verify{name}" >> VerifyCandidates(
                VerifyParams(mode, VERIFY_THRESHOLD, VERIFY_PARTS, VERIFY_SEED)))
            assert_that(verified.edges | f"FlattenVerified{name}" >> beam.FlatMap(flat_edges),
                        close_edges(expected[mode]), label=f"CheckEdges{name}")
            kept = len(expected[mode])
            assert_that(verified.stats | f"SumStats{name}" >> beam.CombineGlobally(add_dicts),
                        equal_to([{"edges_checked": 4, "edges_verified": kept,
                                   "edges_rejected": 4 - kept}]),
                        label=f"CheckStats{name}")


# --------------------------------------------------------------------------------------------
# ConnectedComponents

CC_PARTS, CC_SEED = 4, 9


def chain_edges(first: int, count: int, seed: int) -> list[tuple[int, int]]:
    """A path through ``count`` nodes from ``first`` on, visited in shuffled order, with its
    edges shuffled and randomly oriented."""
    rng = random.Random(seed)
    order = list(range(first, first + count))
    rng.shuffle(order)
    edges = [(order[i], order[i + 1]) if rng.random() < 0.5 else (order[i + 1], order[i])
             for i in range(count - 1)]
    rng.shuffle(edges)
    return edges


def edge_elements(edges: list[tuple[int, int]], pieces: int) -> list[tuple]:
    """Split edges into ``pieces`` array-valued elements ``(left, right)``."""
    chunks = [edges[i::pieces] for i in range(pieces)]
    return [(np.array([e[0] for e in c], dtype=np.int64),
             np.array([e[1] for e in c], dtype=np.int64)) for c in chunks if c]


def label_matcher(expected: dict[int, int]) -> Callable[[list[tuple[int, int]]], None]:
    """Matcher: every node has one label, and the labels are ``expected``."""

    def check(actual: list[tuple[int, int]]) -> None:
        labels: dict[int, int] = {}
        for node, label in actual:
            assert labels.setdefault(node, label) == label, f"node {node}: two labels"
        assert labels == expected

    return check


def test_connected_components_labels_are_component_minimum() -> None:
    big = [make_uid(3, 1), make_uid(2, 7), make_uid(2, 9)]  # uids beyond 32 bits
    edges = [(50, 20), (20, 0), (420, 400), (400, 420), (big[0], big[1]), (big[2], big[0])]
    edges += chain_edges(1000, 200, seed=1)
    expected = {n: 0 for n in (0, 20, 50)} | {400: 400, 420: 400}
    expected |= {n: make_uid(2, 7) for n in big}
    expected |= {n: 1000 for n in range(1000, 1200)}
    with new_pipeline() as p:
        cc = (p | "CreateEdges" >> beam.Create(edge_elements(edges, 5))
              | "ConnectedComponents" >> ConnectedComponents(16, CC_PARTS, CC_SEED))
        pairs = cc["labels"] | "FlattenLabels" >> beam.FlatMap(flat_edges)
        assert_that(pairs, label_matcher(expected), label="CheckLabels")
        stats = cc[CC_STATS_TAG] | "SumStats" >> beam.CombineGlobally(add_dicts)
        assert_that(stats | "SummariseRounds" >> beam.Map(
            lambda s: (s["cc_converged"], s["cc_changed_round_01"] > 0,
                       s["cc_changed_round_16"])),
            equal_to([(1, True, 0)]), label="CheckStats")

        empty = (p | "CreateNoEdges" >> beam.Create([]).with_output_types(tuple)
                 | "ComponentsOfEmptyGraph" >> ConnectedComponents(2, CC_PARTS, CC_SEED))
        assert_that(empty["labels"], equal_to([]), label="CheckEmptyLabels")
        assert_that(empty[CC_STATS_TAG], equal_to([{"cc_converged": 1}]),
                    label="CheckEmptyStats")


def test_connected_components_finish_exactly_when_rounds_run_out() -> None:
    # A 200-node chain needs about 15 rounds; with one, the rest is finished on one worker.
    edges = [*chain_edges(0, 200, 2), (900, 901), (902, 901)]
    expected = {n: 0 for n in range(200)} | {900: 900, 901: 900, 902: 900}
    with new_pipeline() as p:
        cc = (p | "CreateChain" >> beam.Create(edge_elements(edges, 3))
              | "ConnectedComponents" >> ConnectedComponents(1, CC_PARTS, CC_SEED))
        pairs = cc["labels"] | "FlattenLabels" >> beam.FlatMap(flat_edges)
        assert_that(pairs, label_matcher(expected), label="CheckLabels")
        stats = cc[CC_STATS_TAG] | "SumStats" >> beam.CombineGlobally(add_dicts)
        assert_that(stats | "SummariseFinish" >> beam.Map(
            lambda s: (s["cc_converged"], s["cc_changed_round_01"] > 0,
                       s["cc_finished_locally_edges"] > 0)),
            equal_to([(0, True, True)]), label="CheckStats")


# --------------------------------------------------------------------------------------------
# ResolveDuplicates

RESOLVE_BATCH, RESOLVE_PARTS, RESOLVE_SEED = 4, 3, 5


def resolve_nodes() -> dict[str, NodeInfo]:
    base = np.arange(100, 108, dtype=np.uint32)

    def sig(changed: list[int]) -> np.ndarray:
        out = base.copy()
        out[changed] += 1000
        return out

    return {
        "d": NodeInfo(make_uid(0, 1), "d", 100, sig([])),
        "b": NodeInfo(make_uid(0, 2), "b", 50, sig([0, 1])),
        "c": NodeInfo(make_uid(1, 1), "c", 120, sig([0, 5, 6, 7])),
        "x": NodeInfo(make_uid(1, 2), "x", 10, sig([3])),
        "y": NodeInfo(make_uid(0, 3), "y", 10, sig([3, 4, 5])),
    }


def test_resolve_duplicates_rows() -> None:
    nodes = resolve_nodes()
    uid = {n: node.uid for n, node in nodes.items()}
    label1 = min(uid[n] for n in "dbc")
    label2 = min(uid[n] for n in "xy")
    assert label1 == uid["d"] and label2 == uid["y"]
    # The centre of component 1 arrives with two label elements, as it does from CC.
    labels = [
        (np.array([uid["b"], uid["c"], uid["d"]]), np.array([label1] * 3)),
        (np.array([uid["d"], uid["x"], uid["y"]]), np.array([label1, label2, label2])),
    ]
    node_elements = [
        (int(partition_of(np.array([node.uid]), RESOLVE_PARTS, RESOLVE_SEED)[0]), [node])
        for node in nodes.values()
    ]
    q1 = make_uid(1, 7)
    members = {  # member id: (uid, representative name or (uid, id) outside any component)
        "da": (make_uid(0, 4), "d"),
        "z": (make_uid(1, 5), "b"),
        "q2": (make_uid(1, 6), (q1, "q1")),
        "q3": (make_uid(0, 8), (q1, "q1")),
    }
    exact_members = []
    for member_id, (member_uid, rep) in members.items():
        rep_uid, rep_id = rep if isinstance(rep, tuple) else (uid[rep], rep)
        exact_members.append((batch_key_of(member_uid, RESOLVE_BATCH),
                              (member_uid, member_id, rep_uid, rep_id)))

    def sim(x: str, y: str) -> float:
        return float(np.count_nonzero(nodes[x].signature == nodes[y].signature)) / 8

    def row(doc_uid: int, doc_id: str, kept: str, reason: str, similarity: float,
            size: int) -> tuple[int, DuplicateRow]:
        return batch_key_of(doc_uid, RESOLVE_BATCH), DuplicateRow(
            doc_uid, doc_id, kept, reason, similarity, size)

    expected = {
        # smallest_id keeps "b" (component 1) and "x" (component 2).
        "smallest_id": [
            row(uid["d"], "d", "b", "near", sim("d", "b"), 3),
            row(uid["c"], "c", "b", "near", sim("c", "b"), 3),
            row(uid["y"], "y", "x", "near", sim("y", "x"), 2),
            row(members["da"][0], "da", "b", "exact", sim("d", "b"), 3),
            row(members["z"][0], "z", "b", "exact", 1.0, 3),
            row(members["q2"][0], "q2", "q1", "exact", 1.0, 1),
            row(members["q3"][0], "q3", "q1", "exact", 1.0, 1),
        ],
        # longest keeps "c" (norm length 120); component 2 ties on length, so "x".
        "longest": [
            row(uid["d"], "d", "c", "near", sim("d", "c"), 3),
            row(uid["b"], "b", "c", "near", sim("b", "c"), 3),
            row(uid["y"], "y", "x", "near", sim("y", "x"), 2),
            row(members["da"][0], "da", "c", "exact", sim("d", "c"), 3),
            row(members["z"][0], "z", "c", "exact", sim("b", "c"), 3),
            row(members["q2"][0], "q2", "q1", "exact", 1.0, 1),
            row(members["q3"][0], "q3", "q1", "exact", 1.0, 1),
        ],
    }
    with new_pipeline() as p:
        label_pc = p | "CreateLabels" >> beam.Create(labels)
        node_pc = p | "CreateNodes" >> beam.Create(node_elements)
        member_pc = p | "CreateExactMembers" >> beam.Create(exact_members)
        for policy, rows in expected.items():
            name = policy.title().replace("_", "")
            resolved = (
                {"labels": label_pc, "nodes": node_pc, "exact_members": member_pc}
                | f"Resolve{name}" >> ResolveDuplicates(ResolveParams(
                    policy, "signature", RESOLVE_BATCH, RESOLVE_PARTS, RESOLVE_SEED)))
            assert_that(resolved, equal_to(rows), label=f"CheckRows{name}")


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
    p = beam.Pipeline(runner=FnApiRunner())
    inputs = {"ab": p | "CreateLower" >> beam.Create([(1, "x")]),
              "AB": p | "CreateUpper" >> beam.Create([(1, "y")])}
    _ = inputs | "JoinByKey" >> JoinByKey()


# --------------------------------------------------------------------------------------------
# WriteOutputs

WRITE_BATCH = 4


def write_outputs_files(tmp_path: Path) -> list[str]:
    """The writer's input: a, b, c documents (ids a1...c5) with extra fields, and lines the
    first read rejects (blank, bad JSON, a repeated id) that a re-read must not write."""
    in0 = write_json_lines(tmp_path / "in0.json", {
        1: {"id": "a1", "text": "text a1", "url": "http://a1", "timestamp": "t1", "score": 1,
            "flag": True},
        2: {"id": "a2", "text": "text a2", "url": "http://a2", "score": 2.5, "meta": {"k": [1]}},
        3: {"id": "a3", "text": "text a3", "url": "http://a3", "timestamp": "t3", "flag": False},
        4: b"   ",
        5: b"{x",
    })
    in1 = write_json_lines(tmp_path / "in1.json", {
        1: {"id": "b1", "text": "text b1"},
        # A repeat of a1's id: rejected by the first read, so its field never gets a column.
        2: {"id": "a1", "text": "repeated id", "only_in_repeat": 1},
        3: b"]",
        4: {"id": "c4", "text": "text c4", "url": "http://c4", "score": 3},
        5: {"id": "c5", "text": "text c5", "meta": "plain"},
    })
    return [in0, in1]


def test_write_outputs_files_and_stats(tmp_path: Path) -> None:
    files = write_outputs_files(tmp_path)
    src1, src2 = files
    key_a = batch_key_of(make_uid(0, 1), WRITE_BATCH)
    key_b = batch_key_of(make_uid(1, 1), WRITE_BATCH)
    key_c = batch_key_of(make_uid(1, 4), WRITE_BATCH)
    assert len({key_a, key_b, key_c}) == 3
    uid_a2, uid_b1 = make_uid(0, 2), make_uid(1, 1)
    duplicates = [
        (key_a, DuplicateRow(uid_a2, "a2", "a1", "near", 0.75, 2)),
        (key_b, DuplicateRow(uid_b1, "b1", "a1", "exact", 1.0, 2)),
    ]
    staging = tmp_path / "staging"
    with new_pipeline() as p:
        read = p | "ReadDocuments" >> ReadDocuments(
            ReadParams(tuple(files), MAX_DOC_BYTES, WRITE_BATCH))
        field_types = read.batches | "CollectFieldTypes" >> beam.CombineGlobally(FieldTypesFn())
        stats = (
            (p | "CreateFeatureStats" >> beam.Create([{"kept_untokenized": 1}]),
             p | "CreateLshStats" >> beam.Create([{"candidate_edges": 5},
                                                  {"candidate_edges": 2}]))
            | "FlattenStageStats" >> beam.Flatten()
        )
        written = (
            {"repeats": read["repeats"], "field_types": field_types,
             "duplicates": p | "CreateDuplicateRows" >> beam.Create(duplicates),
             "rejected": read[REJECTED_TAG], "stats": stats}
            | "WriteOutputs" >> WriteOutputs(WriteParams(
                str(staging), ReadParams(tuple(files), MAX_DOC_BYTES, WRITE_BATCH)))
        )
        assert isinstance(written, Written)
        assert_that(written.stats | "StatsFileName" >> beam.Map(os.path.basename),
                    equal_to(["_stats.json"]), label="CheckStatsPath")
        assert_that(written.contingency, equal_to([]), label="CheckNoContingency")

    part = "part-{:016x}.parquet".format
    assert sorted(os.listdir(staging / "kept")) == sorted([part(key_a), part(key_c)])
    assert sorted(os.listdir(staging / "duplicates")) == sorted([part(key_a), part(key_b)])

    kept_a = pq.read_table(staging / "kept" / part(key_a))
    assert kept_a.column_names == ["id", "text", "url", "timestamp", "flag", "meta", "score"]
    assert kept_a.schema.field("score").type == pa.float64()
    assert kept_a.schema.field("flag").type == pa.bool_()
    assert kept_a.schema.field("meta").type == pa.string()
    assert kept_a.to_pylist() == [
        {"id": "a1", "text": "text a1", "url": "http://a1", "timestamp": "t1", "flag": True,
         "meta": None, "score": 1.0},
        {"id": "a3", "text": "text a3", "url": "http://a3", "timestamp": "t3", "flag": False,
         "meta": None, "score": None},
    ]
    kept_c = pq.read_table(staging / "kept" / part(key_c)).to_pylist()
    assert [(r["id"], r["meta"], r["score"]) for r in kept_c] == [
        ("c4", None, 3.0), ("c5", json.dumps("plain"), None)]  # mixed column: JSON strings

    dup_rows = (pq.read_table(staging / "duplicates" / part(key_a)).to_pylist()
                + pq.read_table(staging / "duplicates" / part(key_b)).to_pylist())
    assert dup_rows == [
        {"id": "a2", "duplicate_of": "a1", "reason": "near", "similarity": 0.75,
         "component_size": 2, "url": "http://a2"},
        {"id": "b1", "duplicate_of": "a1", "reason": "exact", "similarity": 1.0,
         "component_size": 2, "url": None},
    ]

    rejected_files = sorted((staging / "rejected").iterdir())
    assert len(rejected_files) == 2
    by_source: dict[str, list[tuple[int, str]]] = {}
    for path in rejected_files:
        assert path.suffix == ".jsonl"
        rows_in_file = [json.loads(line) for line in path.read_text().splitlines()]
        assert len({r["source"] for r in rows_in_file}) == 1
        by_source[rows_in_file[0]["source"]] = [(r["line"], r["reason"]) for r in rows_in_file]
    assert by_source == {src1: [(4, "blank_line"), (5, "bad_json")],
                         src2: [(2, "duplicate_id"), (3, "bad_json")]}

    # "parsed" counts the documents the writer re-read: rejects are not re-emitted.
    assert json.loads((staging / "_stats.json").read_text()) == {
        "parsed": 6, "kept": 4, "duplicates_exact": 1, "duplicates_near": 1, "rejected": 4,
        "rejected:bad_json": 2, "rejected:blank_line": 1, "rejected:duplicate_id": 1,
        "kept_untokenized": 1, "candidate_edges": 7,
    }


def test_write_outputs_with_clusters_side_input(tmp_path: Path) -> None:
    """With ``clusters`` (labels of the kept documents, keyed by batch, possibly in several
    elements per batch) the kept parts get cluster_A/cluster_B and the contingency output
    counts each batch's kept documents per (cluster_A, cluster_B, label)."""
    files = write_outputs_files(tmp_path)
    key_a = batch_key_of(make_uid(0, 1), WRITE_BATCH)
    key_c = batch_key_of(make_uid(1, 4), WRITE_BATCH)
    uid = {"a1": make_uid(0, 1), "a3": make_uid(0, 3), "b1": make_uid(1, 1),
           "c4": make_uid(1, 4), "c5": make_uid(1, 5)}
    duplicates = [
        (key_a, DuplicateRow(make_uid(0, 2), "a2", "a1", "near", 0.75, 2)),
        (batch_key_of(uid["b1"], WRITE_BATCH),
         DuplicateRow(uid["b1"], "b1", "a1", "exact", 1.0, 2)),
    ]
    labels = {"a1": (0, 1), "a3": (2, 0), "c4": (0, 0), "c5": (0, 0)}

    def label_element(key: int, names: list[str]) -> tuple:
        return key, (np.array([uid[n] for n in names], dtype=np.int64),
                     np.array([labels[n][0] for n in names], dtype=np.int32),
                     np.array([labels[n][1] for n in names], dtype=np.int32))

    clusters = [label_element(key_a, ["a3", "a1"]), label_element(key_c, ["c5"]),
                label_element(key_c, ["c4"])]
    staging = tmp_path / "staging"
    with new_pipeline() as p:
        read = p | "ReadDocuments" >> ReadDocuments(
            ReadParams(tuple(files), MAX_DOC_BYTES, WRITE_BATCH))
        written = (
            {"repeats": read["repeats"],
             "field_types": read.batches | "CollectFieldTypes" >> beam.CombineGlobally(
                 FieldTypesFn()),
             "duplicates": p | "CreateDuplicateRows" >> beam.Create(duplicates),
             "rejected": read[REJECTED_TAG],
             "stats": p | "CreateNoStats" >> beam.Create([]).with_output_types(dict),
             "clusters": p | "CreateClusterLabels" >> beam.Create(clusters)}
            | "WriteOutputs" >> WriteOutputs(WriteParams(
                str(staging), ReadParams(tuple(files), MAX_DOC_BYTES, WRITE_BATCH), "url"))
        )
        assert_that(written.contingency | "SortCells" >> beam.Map(
            lambda cells: tuple(sorted(cells.items(), key=str))),
            equal_to([tuple(sorted({(0, 1, "http://a1"): 1, (2, 0, "http://a3"): 1}.items(),
                                   key=str)),
                      tuple(sorted({(0, 0, "http://c4"): 1, (0, 0, None): 1}.items(),
                                   key=str))]),
            label="CheckContingency")

    part = "part-{:016x}.parquet".format
    kept_a = pq.read_table(staging / "kept" / part(key_a))
    assert kept_a.column_names[:6] == ["id", "text", "url", "timestamp", "cluster_A",
                                       "cluster_B"]
    assert [(r["id"], r["cluster_A"], r["cluster_B"]) for r in kept_a.to_pylist()] == [
        ("a1", 0, 1), ("a3", 2, 0)]
    kept_c = pq.read_table(staging / "kept" / part(key_c)).to_pylist()
    assert [(r["id"], r["cluster_A"], r["cluster_B"]) for r in kept_c] == [
        ("c4", 0, 0), ("c5", 0, 0)]
    stats = json.loads((staging / "_stats.json").read_text())
    assert (stats["parsed"], stats["kept"], stats["rejected"]) == (6, 4, 4)
