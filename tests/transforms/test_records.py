"""``transforms.records``: the record rules (reject reasons, the id rule, dead-letter rows),
line reading with bounded memory and its limits, and the scan for id keys."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from pathlib import Path

import pytest

import transforms.records as records
from tests.fixtures import write_lines
from transforms.records import (
    RAW_PREVIEW_CHARS,
    LongLine,
    check_record,
    fast_record,
    file_may_hold_ids,
    iter_lines,
    parse_json_line,
    record_id,
    rejection,
)

# --------------------------------------------------------------------------------------------
# parse_json_line, the id rule, rejections
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


# Lines where orjson and json.loads could part: each must parse as json.loads parses it.
AGREEMENT_LINES = [
    b'{"text": "plain", "id": 7, "ok": true, "none": null}',
    b'{"text": "big", "id": 123456789012345678901234567890}',  # orjson: a float
    b'{"text": "u64", "n": 18446744073709551616}',
    b'{"text": "neg", "n": -9223372036854775809}',
    b'{"text": "float", "x": 0.1, "y": 1e-400, "z": -0.0}',
    b'{"text": "inf", "x": 1.0e400}',  # json: inf; orjson rejects
    b'{"text": "nan", "x": NaN}',
    b'{"text": "nested", "meta": {"n": 123456789012345678901234567890}, "l": [1.5, 2]}',
    b'{"text": "dup", "text": "later wins"}',
    b'{"text": "\\u00e9t\\u00e9 \\ud83d\\ude00", "id": "\\u0069d"}',
    b'{"text": "escaped nul \\u0000"}',
    b'  {"text": "spaces around"}  ',
]


@pytest.mark.parametrize("raw", AGREEMENT_LINES)
def test_fast_path_parses_as_json_does(raw: bytes) -> None:
    record = json.loads(raw.decode("utf-8"))
    doc_id, value = parse_json_line(raw, "f.json", 3, 10_000)
    assert doc_id == record_id(record, "f.json", 3)
    # repr tells 1 from 1.0 and keeps key order; NaN != NaN, so compare the text.
    assert repr(value) == repr(record)


def test_fast_record_leaves_what_it_cannot_vouch_for_to_json() -> None:
    assert fast_record(b'{"text": "a", "n": 5}') == {"text": "a", "n": 5}
    for raw in (b'{"text": "a", "n": 123456789012345678901234567890}',  # a float in orjson
                b'{"text": "a", "x": 0.5}', b'{"text": "a", "m": {}}', b'[1, 2]',
                b'{"text": "\\ud800"}', b'{"text": "caf\xe9"}', b"", b"{"):
        assert fast_record(raw) is None, raw


def test_parse_without_orjson_gives_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = [parse_json_line(raw, "f.json", 1, 10_000) for raw in AGREEMENT_LINES]
    monkeypatch.setattr(records, "orjson", None)
    slow = [parse_json_line(raw, "f.json", 1, 10_000) for raw in AGREEMENT_LINES]
    assert repr(fast) == repr(slow)


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


# --------------------------------------------------------------------------------------------
# Lines read with bounded memory, and the scan for id keys
# --------------------------------------------------------------------------------------------

BIG_LINE_BYTES = 50 * 2**20


@pytest.mark.parametrize("compressed", [False, True])
def test_long_line_is_read_with_bounded_memory(tmp_path: Path, compressed: bool) -> None:
    limit = 2**20
    body = b'{"text": "' + b"y" * BIG_LINE_BYTES + b'"}\n{"text": "after"}\n'
    path = tmp_path / ("big.json.gz" if compressed else "big.json")
    path.write_bytes(gzip.compress(body, compresslevel=1) if compressed else body)
    del body
    tracemalloc.start()
    try:
        lines = list(iter_lines(str(path), limit))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(lines[0], LongLine) and lines[0].size == BIG_LINE_BYTES + 12
    assert len(lines[0].head) == 4000 and lines[1] == b'{"text": "after"}'
    # The 50 MB line is never held: the peak is a few chunks of at most limit + 1 MiB.
    assert peak < 6 * limit, peak


def read_until_error(path: Path, error: type | tuple) -> list:
    read: list = []
    with pytest.raises(error):
        read.extend(iter_lines(str(path), 1000))
    return read


def test_gzip_lines_truncation_and_corruption(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """ISA-L's threaded reader gives every line the standard library's reader gives, on a
    whole, a truncated and a corrupt file (then EOFError, or a READ_ERRORS member)."""
    lines = [b'{"text": "line %d"}' % i for i in range(200_000)]
    packed = gzip.compress(b"\n".join(lines) + b"\n")
    (tmp_path / "whole.json.gz").write_bytes(packed)
    (tmp_path / "cut.json.gz").write_bytes(packed[: len(packed) // 2])
    damaged = bytearray(packed)
    damaged[len(packed) // 2: len(packed) // 2 + 64] = bytes(range(64))
    (tmp_path / "bad.json.gz").write_bytes(bytes(damaged))
    # A small file cut short: ISA-L's first 128 KiB block already fails.
    small = gzip.compress(b"".join(b'{"text": "doc %d"}\n' % i for i in range(4000)))
    (tmp_path / "small.json.gz").write_bytes(small[: len(small) // 2])

    def read_all() -> list[list]:
        return [list(iter_lines(str(tmp_path / "whole.json.gz"), 1000)),
                read_until_error(tmp_path / "cut.json.gz", EOFError),
                read_until_error(tmp_path / "bad.json.gz", records.READ_ERRORS),
                read_until_error(tmp_path / "small.json.gz", EOFError)]

    fast = read_all()
    monkeypatch.setattr(records, "igzip_threaded", None)
    assert fast == read_all()
    assert fast[0] == lines
    cut = fast[1]
    assert 0 < len(cut) < len(lines) and cut == lines[: len(cut)]
    # Damaged deflate data decodes to garbage before the checksum says so: the same garbage.
    assert len(fast[2]) > 0 and fast[2][:1000] == lines[:1000]
    assert len(fast[3]) > 1000 and fast[3][-1].startswith(b'{"text": "doc')


def test_line_limit_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "edge.json"
    path.write_bytes(b"a" * 10 + b"\r\n" + b"b" * 11 + b"\n" + b"c" * 12 + b"\r\n" + b"d" * 10)
    lines = list(iter_lines(str(path), 10))
    assert lines[0] == b"a" * 10
    assert lines[1] == b"b" * 11  # returned whole: the parser rejects it as too_large
    assert lines[2] == LongLine(head=b"c" * 12, size=12)
    assert lines[3] == b"d" * 10


def test_id_scan_finds_every_spelling_of_an_id_key(tmp_path: Path) -> None:
    assert not file_may_hold_ids(str(write_lines(tmp_path / "none.json.gz", [
        {"text": "caf\u00e9 with an idea"}, {"text": "idle", "url": "u"}])))
    for key in ('"id"', '"\\u0069d"', '"i\\u0064"', '"\\u0069\\u0064"'):
        path = tmp_path / "one.json"
        path.write_text('{"text": "t"}\n{' + key + ': "x", "text": "t"}\n')
        assert file_may_hold_ids(str(path)), key
        assert json.loads(path.read_text().splitlines()[1])["id"] == "x"
