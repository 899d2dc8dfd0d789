"""Tier 1: configuration loading/validation, record parsing and the write helpers.

Plain asserts on pure functions (no Beam pipeline runs): ``beam_pipeline.config``, the record
rules of ``transforms.read`` (reject reasons, the id rule, input matching, dead-letter rows)
and the schema helpers of ``transforms.write``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from beam_pipeline.config import (
    ConfigError,
    DedupConfig,
    dedup_config_from_mapping,
    load_dedup_config,
    load_yaml,
)
from transforms.read import match_inputs
from transforms.records import (
    RAW_PREVIEW_CHARS,
    check_record,
    parse_json_line,
    record_id,
    rejection,
)
from transforms.write import kept_schema, kept_table, unify_types, value_type

REPO = Path(__file__).resolve().parents[1]


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


def test_defaults_are_valid() -> None:
    cfg = DedupConfig()
    assert cfg.threshold == 0.7
    assert cfg.num_perm == 256
    assert cfg.ngram == 5
    assert cfg.bands is None and cfg.rows is None
    assert cfg.verify == "exact" and cfg.keep == "smallest_id"
    assert load_dedup_config() == cfg
    assert dedup_config_from_mapping({}) == cfg


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DedupConfig().threshold = 0.5  # type: ignore[misc]


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match="treshold"):
        dedup_config_from_mapping({"treshold": 0.8})


def test_unknown_yaml_key_is_named(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "c.yaml", "dedup:\n  threshold: 0.8\n  num_perms: 128\n")
    with pytest.raises(ConfigError, match="num_perms") as info:
        load_dedup_config(path)
    assert str(path) in str(info.value)


def test_unknown_yaml_section_is_named(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "c.yaml", "dedupe:\n  threshold: 0.8\n")
    with pytest.raises(ConfigError, match="dedupe"):
        load_dedup_config(path)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("threshold", "0.7"),
        ("threshold", True),
        ("threshold", [0.7]),
        ("num_perm", 256.0),
        ("num_perm", "256"),
        ("num_perm", True),
        ("ngram", None),
        ("seed", 1.5),
        ("bands", "4"),
        ("verify", 1),
        ("keep", None),
        ("fp_weight", "0.1"),
    ],
)
def test_wrong_types_error(key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=key):
        dedup_config_from_mapping({key: value})


def test_wrong_type_from_yaml(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "c.yaml", "dedup:\n  num_perm: lots\n")
    with pytest.raises(ConfigError, match="num_perm"):
        load_dedup_config(path)


def test_integer_accepted_for_float() -> None:
    cfg = dedup_config_from_mapping({"threshold": 1})
    assert cfg.threshold == 1.0 and isinstance(cfg.threshold, float)


@pytest.mark.parametrize("values", [{"bands": 16}, {"rows": 16}])
def test_bands_and_rows_together(values: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match="bands and rows"):
        dedup_config_from_mapping(values)


def test_bands_times_rows_at_most_num_perm() -> None:
    with pytest.raises(ConfigError, match="num_perm"):
        dedup_config_from_mapping({"bands": 17, "rows": 16, "num_perm": 256})
    cfg = dedup_config_from_mapping({"bands": 16, "rows": 16, "num_perm": 256})
    assert (cfg.bands, cfg.rows) == (16, 16)
    with pytest.raises(ConfigError):
        DedupConfig(num_perm=64, bands=9, rows=8)


@pytest.mark.parametrize(
    "values",
    [
        {"threshold": 0.0},
        {"threshold": 1.01},
        {"threshold": -0.5},
        {"num_perm": 1},
        {"ngram": 0},
        {"bands": 0, "rows": 4},
        {"verify": "fuzzy"},
        {"keep": "random"},
        {"max_bucket_size": 1},
        {"batch_size": 0},
        {"shuffle_partitions": 0},
        {"cc_max_rounds": 0},
        {"max_doc_bytes": 0},
        {"seed": -1},
        {"seed": 2**63},
        {"fp_weight": 0.2},
        {"fp_weight": 0.0, "fn_weight": 0.0},
        {"fp_weight": -0.1, "fn_weight": 1.0},
    ],
)
def test_out_of_domain_values_error(values: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        dedup_config_from_mapping(values)


def test_domain_edges_accepted() -> None:
    cfg = dedup_config_from_mapping({"threshold": 1.0, "seed": 2**63 - 1, "max_bucket_size": 2,
                                     "ngram": 1, "num_perm": 2})
    assert cfg.seed == 2**63 - 1


def test_load_yaml_and_overrides(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "preset.yaml", (
        "dedup:\n"
        "  threshold: 0.8\n"
        "  num_perm: 128\n"
        "  bands: 16\n"
        "  rows: 8\n"
        "  verify: signature\n"
        "pipeline:\n"
        "  anything: goes\n"
    ))
    cfg = load_dedup_config(path)
    assert (cfg.threshold, cfg.num_perm, cfg.bands, cfg.rows, cfg.verify) == (
        0.8, 128, 16, 8, "signature")
    assert cfg.ngram == DedupConfig().ngram  # untouched keys keep their defaults
    over = load_dedup_config(path, {"threshold": 0.9, "verify": None, "keep": "first"})
    assert over.threshold == 0.9  # override wins
    assert over.verify == "signature"  # None overrides are ignored
    assert over.keep == "first"
    assert over.num_perm == 128
    # Overrides are validated like the file.
    with pytest.raises(ConfigError, match="num_perm"):
        load_dedup_config(path, {"num_perm": 64})  # 16 * 8 > 64


def test_load_yaml_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_dedup_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="YAML"):
        load_dedup_config(write_yaml(tmp_path / "bad.yaml", "dedup: [unclosed\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_dedup_config(write_yaml(tmp_path / "list.yaml", "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_dedup_config(write_yaml(tmp_path / "section.yaml", "dedup: 3\n"))


def test_empty_yaml_gives_defaults(tmp_path: Path) -> None:
    assert load_dedup_config(write_yaml(tmp_path / "empty.yaml", "")) == DedupConfig()
    assert load_dedup_config(write_yaml(tmp_path / "null.yaml", "dedup:\n")) == DedupConfig()


def test_local_preset_loads() -> None:
    path = REPO / "configs" / "local.yaml"
    assert set(load_yaml(path)) <= {"dedup", "pipeline"}
    cfg = load_dedup_config(path)
    assert isinstance(cfg, DedupConfig)
    assert cfg == DedupConfig()  # the local preset spells out the defaults


def test_banding_weights() -> None:
    # None: the recall floor derives b and r (with verification).
    assert DedupConfig().banding_weights() is None
    assert DedupConfig(verify="signature").banding_weights() is None
    assert DedupConfig(verify="none").banding_weights() == (0.5, 0.5)
    explicit = dedup_config_from_mapping({"verify": "none", "fp_weight": 0.3, "fn_weight": 0.7})
    assert explicit.banding_weights() == (0.3, 0.7)


def test_fingerprint() -> None:
    assert DedupConfig().fingerprint() == DedupConfig().fingerprint()
    assert DedupConfig().fingerprint() != DedupConfig(seed=2).fingerprint()
    assert len(DedupConfig().fingerprint()) == 16


# --------------------------------------------------------------------------------------------
# Read: parse_json_line, the id rule, rejections, input matching
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"text": "' + b"x" * 200 + b'"}', "too_large"),
        (b'{"text": "caf\xe9"}', "invalid_utf8"),
        (b'{"text": "\xff\xfe"}', "invalid_utf8"),
        (b"", "blank_line"),
        (b"   \t  ", "blank_line"),
        (b'{"text": "unterminated', "bad_json"),
        (b'{"text": "a\x00b"}', "nul_byte"),
        (b'{"text": "a"}\x00', "nul_byte"),
        (b"\x00{\x00\"\x00t\x00", "nul_byte"),  # UTF-16
        (b'{"text": "tab\tinside"}', "bad_json"),
        (b'{"text": "a"} trailing', "bad_json"),
        (b"{'text': 'single quotes'}", "bad_json"),
        (b"[1, 2]", "not_object"),
        (b'"just a string"', "not_object"),
        (b"42", "not_object"),
        (b"null", "not_object"),
        (b'{"id": "a", "url": "u"}', "missing_text"),
        (b'{"text": 5}', "text_not_string"),
        (b'{"text": null}', "text_not_string"),
        (b'{"text": ["a"]}', "text_not_string"),
        (b'{"text": {"a": 1}}', "text_not_string"),
        (b'{"text": "a", "id": 1.5}', "bad_id"),
        (b'{"text": "a", "id": true}', "bad_id"),
        (b'{"text": "a", "id": [1]}', "bad_id"),
        (b'{"text": "a", "id": {"k": 1}}', "bad_id"),
    ],
)
def test_parse_json_line_rejects(raw: bytes, reason: str) -> None:
    doc_id, value = parse_json_line(raw, "f.json", 3, 100)
    assert doc_id is None
    got_reason, detail = value
    assert got_reason == reason
    assert isinstance(detail, str)


def test_too_large_boundary() -> None:
    raw = b'{"text": "abc"}'
    assert parse_json_line(raw, "f", 1, len(raw))[0] == "f:1"
    doc_id, (reason, detail) = parse_json_line(raw, "f", 1, len(raw) - 1)
    assert doc_id is None and reason == "too_large"
    assert str(len(raw)) in detail


def test_too_large_checked_before_decoding() -> None:
    doc_id, (reason, _) = parse_json_line(b"\xff" * 50, "f", 1, 10)
    assert doc_id is None and reason == "too_large"


@pytest.mark.parametrize(
    ("raw", "expected_id"),
    [
        (b'{"text": "a", "id": "doc-7"}', "doc-7"),
        (b'{"text": "a", "id": ""}', ""),
        (b'{"text": "a", "id": "0042"}', "0042"),
        (b'{"text": "a", "id": 42}', "42"),
        (b'{"text": "a", "id": -3}', "-3"),
        (b'{"text": "a", "id": 123456789012345678901234567890}', "123456789012345678901234567890"),
        (b'{"text": "a"}', "part-0.json.gz:17"),
        (b'{"text": "a", "id": null}', "part-0.json.gz:17"),
    ],
)
def test_id_rule(raw: bytes, expected_id: str) -> None:
    doc_id, record = parse_json_line(raw, "part-0.json.gz", 17, 10_000)
    assert doc_id == expected_id
    assert record["text"] == "a"


def test_parse_keeps_every_field() -> None:
    raw = json.dumps({"text": "héllo \u0000 nul escaped", "url": "http://x", "meta": {"a": [1]},
                      "timestamp": "2020"}).encode()
    doc_id, record = parse_json_line(raw, "b", 2, 10_000)
    assert doc_id == "b:2"
    assert record == {"text": "héllo \x00 nul escaped", "url": "http://x", "meta": {"a": [1]},
                      "timestamp": "2020"}
    # Non-ASCII written raw (not escaped) is fine too.
    doc_id, record = parse_json_line('{"text": "日本語 ✓"}'.encode(), "b", 3, 10_000)
    assert doc_id == "b:3" and record["text"] == "日本語 ✓"


def test_record_id_and_check_record() -> None:
    assert record_id({"id": "x"}, "base", 1) == "x"
    assert record_id({"id": 7}, "base", 1) == "7"
    assert record_id({}, "base", 9) == "base:9"
    assert record_id({"id": False}, "base", 1) is None
    assert record_id({"id": 2.0}, "base", 1) is None
    assert check_record({"text": "t", "id": 5}, "p.parquet", 4) == ("5", {"text": "t", "id": 5})
    assert check_record({"text": "t"}, "p.parquet", 4)[0] == "p.parquet:4"
    assert check_record(["text"], "p", 1) == (None, ("not_object", "list"))
    assert check_record({"text": "t", "id": 1.5}, "p", 1) == (None, ("bad_id", "float"))


def test_rejection_row_and_preview() -> None:
    row = rejection("gs://b/f.json", 12, "bad_json", b'{"x', "Expecting value")
    assert row == {"source": "gs://b/f.json", "line": 12, "reason": "bad_json",
                   "detail": "Expecting value", "raw": '{"x'}
    assert RAW_PREVIEW_CHARS == 1000
    assert rejection("s", 1, "too_large", b"a" * 5000)["raw"] == "a" * 1000
    assert rejection("s", 1, "too_large", "b" * 2000)["raw"] == "b" * 1000
    assert rejection("s", 1, "too_large", "é".encode() * 3000)["raw"] == "é" * 1000
    assert rejection("s", 1, "too_large", "😀".encode() * 3000)["raw"] == "😀" * 1000
    assert rejection("s", 1, "invalid_utf8", b"ab\xffcd")["raw"] == "ab\ufffdcd"
    assert rejection("s", 1, "read_error", b"")["raw"] == ""
    assert rejection("s", 1, "blank_line", b"   ")["detail"] == ""


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
