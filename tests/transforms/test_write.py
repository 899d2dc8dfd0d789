"""``transforms.write``: the schema helpers (value types, unification, column order, mixed
columns) with plain asserts, and the ``WriteOutputs`` transform in a TestPipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.transforms.conftest import MAX_DOC_BYTES, new_pipeline, write_json_lines
from transforms.batches import batch_key_of, make_uid
from transforms.read import ReadDocuments, ReadParams
from transforms.resolve import DuplicateRow
from transforms.write import (
    MAX_PENDING_WRITES,
    BackgroundWriter,
    FieldTypesFn,
    WriteOutputs,
    WriteParams,
    Written,
    arrow_column,
    kept_schema,
    kept_table,
    unify_types,
    value_type,
)

# --------------------------------------------------------------------------------------------
# Write helpers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [(None, "null"), (True, "bool"), (False, "bool"), (0, "int"), (-5, "int"), (1.5, "float"),
     ("s", "string"), ("", "string"), ({"a": 1}, "json"), ([1, 2], "json")],
)
def test_value_type(value: Any, kind: str) -> None:
    assert value_type(value) == kind


@pytest.mark.parametrize(
    ("types", "unified"),
    [
        (set(), "string"),
        ({"null"}, "string"),
        ({"string"}, "string"),
        ({"string", "null"}, "string"),
        ({"bool"}, "bool"),
        ({"bool", "null"}, "bool"),
        ({"int"}, "int"),
        ({"int", "null"}, "int"),
        ({"float"}, "float"),
        ({"int", "float"}, "float"),
        ({"int", "float", "null"}, "float"),
        ({"bool", "int"}, "json"),
        ({"bool", "float"}, "json"),
        ({"string", "int"}, "json"),
        ({"string", "bool"}, "json"),
        ({"json"}, "json"),
        ({"json", "null"}, "json"),
        ({"json", "string"}, "json"),
    ],
)
def test_unify_types(types: set[str], unified: str) -> None:
    assert unify_types(set(types)) == unified


def test_unify_types_does_not_mutate_input() -> None:
    types = {"null", "int"}
    unify_types(types)
    assert types == {"null", "int"}


def test_kept_schema_column_order() -> None:
    field_types = {
        "zeta": {"int"},
        "alpha": {"string"},
        "timestamp": {"string", "null"},
        "Meta": {"json"},
        "url": {"string"},
        "mixed": {"int", "float"},
    }
    assert kept_schema(field_types) == [
        ("id", "string"), ("text", "string"), ("url", "string"), ("timestamp", "string"),
        ("Meta", "json"), ("alpha", "string"), ("mixed", "float"), ("zeta", "int"),
    ]
    # url and timestamp are always present; id and text are never repeated.
    assert kept_schema({"id": {"int"}, "text": {"string"}, "b": {"bool"}}) == [
        ("id", "string"), ("text", "string"), ("url", "string"), ("timestamp", "string"),
        ("b", "bool"),
    ]


def test_kept_table_mixed_types() -> None:
    records = [
        {"text": "t0", "url": "u0", "extra": 1, "score": 1, "flag": True, "nested": {"b": 2,
                                                                                    "a": [1]}},
        {"text": "t1", "extra": "x", "score": 2.5, "flag": None, "nested": [1, "two"]},
        {"text": "t2", "url": None, "extra": {"k": [1, 2]}, "score": None, "flag": False},
        {"text": "t3", "extra": [1, 2], "nested": None},
        {"text": "t4", "extra": None},
        {"text": "t5", "extra": True, "score": -3},
    ]
    field_types: dict[str, set[str]] = {}
    for record in records:
        for name, value in record.items():
            if name not in ("id", "text"):
                field_types.setdefault(name, set()).add(value_type(value))
    columns = kept_schema(field_types)
    ids = [f"d{i}" for i in range(len(records))]
    table = kept_table(ids, records, columns)
    assert table.column_names == ["id", "text", "url", "timestamp", "extra", "flag", "nested",
                                  "score"]
    assert table.schema.field("extra").type == pa.string()
    assert table.schema.field("nested").type == pa.string()
    assert table.schema.field("score").type == pa.float64()
    assert table.schema.field("flag").type == pa.bool_()
    assert table.schema.field("timestamp").type == pa.string()
    data = table.to_pydict()
    assert data["id"] == ids
    assert data["text"] == [r["text"] for r in records]
    assert data["url"] == ["u0", None, None, None, None, None]
    assert data["timestamp"] == [None] * 6
    assert data["score"] == [1.0, 2.5, None, None, None, -3.0]
    assert data["flag"] == [True, None, False, None, None, None]
    # Mixed-type fields hold JSON text that decodes back to the value.
    extra = data["extra"]
    assert [json.loads(extra[i]) for i in (0, 2, 3, 5)] == [1, {"k": [1, 2]}, [1, 2], True]
    assert extra[4] is None
    assert extra[1] == "x" or json.loads(extra[1]) == "x"
    assert json.loads(data["nested"][0]) == {"a": [1], "b": 2}
    assert data["nested"][0] == json.dumps({"a": [1], "b": 2}, sort_keys=True)
    assert json.loads(data["nested"][1]) == [1, "two"]
    assert data["nested"][2:] == [None, None, None, None]


def test_kept_table_empty_schema_fields() -> None:
    table = kept_table(["a"], [{"text": "only text"}], kept_schema({}))
    assert table.column_names == ["id", "text", "url", "timestamp"]
    assert table.to_pylist() == [{"id": "a", "text": "only text", "url": None,
                                  "timestamp": None}]


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
            {"repeats": read.repeats, "field_types": field_types,
             "duplicates": p | "CreateDuplicateRows" >> beam.Create(duplicates),
             "rejected": read.rejected, "stats": stats}
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
            {"repeats": read.repeats,
             "field_types": read.batches | "CollectFieldTypes" >> beam.CombineGlobally(
                 FieldTypesFn()),
             "duplicates": p | "CreateDuplicateRows" >> beam.Create(duplicates),
             "rejected": read.rejected,
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


def test_background_writer_writes_bounded_and_raises_on_drain(tmp_path: Path) -> None:
    table = pa.table({"x": list(range(1000))})
    writer = BackgroundWriter()
    for part in range(5):
        writer.submit(table, str(tmp_path / f"part-{part}.parquet"))
        assert len(writer.pending) <= MAX_PENDING_WRITES
    assert writer.drain() >= 0 and not writer.pending
    assert [pq.read_table(tmp_path / f"part-{p}.parquet") == table for p in range(5)] == [True] * 5
    (tmp_path / "a-file").write_text("not a folder")
    writer.submit(table, str(tmp_path / "a-file" / "part.parquet"))
    with pytest.raises(OSError):
        writer.drain()  # the bundle that wrote it fails, not a later one
    writer.submit(table, str(tmp_path / "a-file" / "again.parquet"))
    writer.discard()  # a failed bundle's leftovers: waited for, errors dropped
    writer.close()
    assert writer.pool is None


def test_field_types_by_class_match_value_type() -> None:
    class Text(str):
        pass

    import datetime

    from transforms.batches import DocBatch

    records = [{"text": "t", "id": "i", "n": 1, "f": 1.5, "b": True, "s": "x", "z": None,
                "l": [1], "d": {"a": 1}, "t": Text("y"), "when": datetime.date(2020, 1, 2)},
               {"text": "u", "n": 2.5, "b": None, "s": 3}]
    batch = DocBatch(batch_key=0, uids=np.arange(2), ids=["a", "b"], records=records, nbytes=0)
    got = FieldTypesFn().add_input({}, (0, batch))
    want: dict[str, set[str]] = {}
    for record in records:
        for name, value in record.items():
            if name not in ("id", "text"):
                want.setdefault(name, set()).add(value_type(value))
    assert got == want and got["t"] == {"string"} and got["when"] == {"json"}


ARROW_CASES = {
    pa.string(): [[], [None], ["a", None, "héllo", ""], ["x" * 100] * 70, [None] * 9,
                  ["\ud800"], [1, "a"]],  # the last two through pa.array
    pa.int64(): [[], [None], [1, None, -5, 2**62], [2**70], [True, 1]],
    pa.float64(): [[], [1.5, None, float("nan"), -0.0], [None] * 3, [1, 2.0]],
    pa.bool_(): [[], [True, False, None, True] * 5, [None]],
}


@pytest.mark.parametrize("arrow_type", list(ARROW_CASES), ids=str)
def test_arrow_column_is_pa_array_buffer_for_buffer(arrow_type: pa.DataType) -> None:
    for values in ARROW_CASES[arrow_type]:
        try:
            want = pa.array(values, arrow_type)
        except (pa.ArrowException, OverflowError, UnicodeEncodeError) as error:
            with pytest.raises(type(error)):
                arrow_column(values, arrow_type)
            continue
        got = arrow_column(values, arrow_type)
        assert got.type == want.type and got.null_count == want.null_count, values
        # Buffer for buffer (NaN compares unequal as a value, not as bytes); a validity
        # bitmap only where there are nulls, as pa.array makes it.
        assert [b and b.to_pybytes() for b in got.buffers()] == [
            b and b.to_pybytes() for b in want.buffers()], values


def test_writing_outputs_does_not_import_pandas(tmp_path: Path) -> None:
    """pa.array's first call imports pandas (~0.25 s a run); the writer never calls it."""
    script = (
        "import sys; import beam_pipeline._startup\n"
        "from transforms.write import kept_table, arrow_table, DUPLICATE_SCHEMA, write_parquet\n"
        "t = kept_table(['a', 'b'], [{'text': 'x', 'url': None, 'n': 1}, {'text': 'y', 'n': 2}],\n"
        "               [('id', 'string'), ('text', 'string'), ('url', 'string'),\n"
        "                ('timestamp', 'string'), ('n', 'int')])\n"
        "write_parquet(t, sys.argv[1])\n"
        "assert t.column('n').to_pylist() == [1, 2]\n"
        "assert 'pandas' not in sys.modules, 'pandas imported'\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "kept.parquet")],
                          capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr
    assert pq.read_table(tmp_path / "kept.parquet").column("text").to_pylist() == ["x", "y"]
