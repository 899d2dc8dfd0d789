"""Lines and records of the input files, before Beam: reading lines with bounded memory,
parsing a JSON line, checking a record, the derived-id rule, and the dead-letter row of a
rejected record (reasons: ``transforms.read``'s module docstring)."""

from __future__ import annotations

import contextlib
import gzip
import itertools
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

try:  # Intel ISA-L's gzip: about 3x faster to decode than zlib, on its own thread
    from isal import igzip_threaded
    from isal.isal_zlib import error as IsalError
except ImportError:  # pragma: no cover - isal is a dependency; kept optional for odd platforms
    igzip_threaded = None
    IsalError = zlib.error
try:  # about 3x faster than json.loads; used only where it certainly agrees (fast_record)
    import orjson
except ImportError:  # pragma: no cover - orjson comes with apache-beam
    orjson = None

# What a damaged compressed file raises while being read: a truncated member (EOFError), a bad
# header or checksum (gzip.BadGzipFile, an OSError), or invalid deflate data (zlib.error, or
# ISA-L's IsalError, neither an OSError).
READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, IsalError)

SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
RAW_PREVIEW_CHARS = 1000
# A preview of RAW_PREVIEW_CHARS characters needs at most 4 bytes per character.
PREVIEW_BYTES = RAW_PREVIEW_CHARS * 4
# The rest of an over-long line is skipped in chunks of this size (bounded memory).
SKIP_CHUNK_BYTES = 1 << 20
# Blocks of ISA-L's threaded gzip reader (open_gzip).
GZIP_BLOCK_BYTES = 128 << 10


def preview(raw: bytes | str) -> str:
    """A printable, bounded preview of a raw line for the dead-letter output."""
    if isinstance(raw, bytes):
        raw = raw[: RAW_PREVIEW_CHARS * 4].decode("utf-8", errors="replace")
    return raw[:RAW_PREVIEW_CHARS]


def rejection(source: str, line: int, reason: str, raw: bytes | str, detail: str = "") -> dict:
    """One dead-letter row."""
    return {"source": source, "line": line, "reason": reason, "detail": detail,
            "raw": preview(raw)}


# An "id" key spelled out, or with an escaped letter ("\u0069d", "i\u0064", "\u0069\u0064"):
# both escapes begin with \u006, so two searches find all three (a few other \u006X escapes,
# rare in JSON, only send their lines to the parser). One search fewer over the decompressed
# text: 0.12 -> 0.08 s for a 63 MB blog shard, measured.
_ID_KEY_MARKS = (b'"id"', b"\\u006")


def _may_hold_id(raw: bytes) -> bool:
    """Whether a JSON line can hold an ``id`` key (see ReadFileFn._read_json)."""
    return any(mark in raw for mark in _ID_KEY_MARKS)


def file_may_hold_ids(path: str) -> bool:
    """Whether a JSON-lines file (plain or gzip) holds anything that could be an ``id`` key.

    Reads the file in 1 MiB chunks with no line splitting or parsing (about 0.2 s for 63 MB
    of blog posts, against 0.6 s for the line-by-line scan), so the id scan of a corpus
    without ids costs little more than decompressing it once.
    """
    tail = b""
    with contextlib.ExitStack() as stack:
        handle = stack.enter_context(
            FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED))
        stream = stack.enter_context(open_gzip(handle)) if path.endswith(".gz") else handle
        try:
            while chunk := stream.read(1 << 20):
                # Keep a few bytes from the previous chunk: a mark can straddle the cut.
                window = tail + chunk
                if any(mark in window for mark in _ID_KEY_MARKS):
                    return True
                tail = chunk[-8:]
        except READ_ERRORS:
            return True  # damaged: let the line-by-line scan see what the read will see
    return False


def is_generated(record: dict[str, Any]) -> bool:
    """Whether ``record``'s id is derived from its file and line (it has no ``id`` value)."""
    return record.get("id") is None


def record_id(record: dict[str, Any], base_name: str, line: int) -> str | None:
    """The document id of ``record`` (None when its ``id`` field has an unusable type)."""
    if is_generated(record):
        return f"{base_name}:{line}"
    value = record["id"]
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


# Value types whose orjson reading is certainly json.loads': orjson reads an integer beyond 64
# bits as a float (json keeps it exact), so a record holding any float, or any nesting that
# could hide one, is read again by json.
_PLAIN_TYPES = frozenset({str, int, bool, type(None)})


def fast_record(raw: bytes) -> dict[str, Any] | None:
    """``raw`` parsed by orjson when that is certainly what ``json.loads`` gives: a JSON object
    whose values are strings, integers, booleans or nulls. Otherwise None, and the caller
    takes the json path, which also names what is wrong with a bad line. orjson rejects
    everything json does here and more (lone surrogate escapes, NaN, a BOM, invalid UTF-8),
    so a line it accepts is one json accepts with the same value."""
    if orjson is None:
        return None
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(record) is not dict:
        return None
    for value in record.values():
        if type(value) not in _PLAIN_TYPES:
            return None
    return record


def parse_json_line(
    raw: bytes, base_name: str, line: int, max_doc_bytes: int
) -> tuple[str, dict[str, Any]] | tuple[None, tuple[str, str]]:
    """Parse one JSON line into ``(id, record)`` or ``(None, (reason, detail))``."""
    if len(raw) > max_doc_bytes:
        return None, ("too_large", f"{len(raw)} bytes > max_doc_bytes={max_doc_bytes}")
    nul = raw.find(b"\x00")
    if nul >= 0:
        # Its own reason rather than bad_json: NULs mostly mean a binary or UTF-16 file.
        return None, ("nul_byte", f"raw NUL byte at byte {nul} (binary or UTF-16 input?)")
    record = fast_record(raw)
    if record is not None:
        return check_record(record, base_name, line)
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, ("invalid_utf8", str(exc))
    if not decoded.strip():
        return None, ("blank_line", "")
    try:
        record = json.loads(decoded)
    except ValueError as exc:
        return None, ("bad_json", str(exc))
    if SURROGATE_ESCAPE.search(decoded):
        # A \\uD800-style escape can decode to a lone surrogate, which no UTF-8 writer accepts.
        try:
            json.dumps(record, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            return None, ("invalid_unicode", str(exc))
    return check_record(record, base_name, line)


def check_record(
    record: Any, base_name: str, line: int
) -> tuple[str, dict[str, Any]] | tuple[None, tuple[str, str]]:
    """Validate a decoded record (shared by JSON and Parquet input)."""
    if not isinstance(record, dict):
        return None, ("not_object", type(record).__name__)
    if "text" not in record:
        return None, ("missing_text", "")
    if not isinstance(record["text"], str):
        return None, ("text_not_string", type(record["text"]).__name__)
    doc_id = record_id(record, base_name, line)
    if doc_id is None:
        return None, ("bad_id", type(record["id"]).__name__)
    return doc_id, record


@dataclass(frozen=True)
class LongLine:
    """A line longer than the reader's limit: its first bytes (for the preview) and its size
    in bytes without the terminator. The line itself is never held whole."""

    head: bytes
    size: int


def _skip_long_line(handle: Any, first: bytes) -> LongLine:
    """Read past the rest of a line whose first ``first`` bytes were read, in bounded chunks."""
    head = first[:PREVIEW_BYTES]
    size = len(first)
    last = first
    while not last.endswith(b"\n"):
        last = handle.readline(SKIP_CHUNK_BYTES)
        if not last:
            break
        size += len(last)
        if len(head) < PREVIEW_BYTES:
            head += last[: PREVIEW_BYTES - len(head)]
    terminator = len(last) - len(last.rstrip(b"\r\n"))
    if size <= PREVIEW_BYTES:
        head = head.rstrip(b"\r\n")
    return LongLine(head=head, size=size - terminator)


def open_gzip(handle: Any) -> Any:
    """A binary reader of the gzip data in the open file ``handle``.

    ISA-L's decoder (``isal``) on a thread of its own when it is installed: it decodes about 3
    times as fast as zlib and in parallel with the parsing that consumes the lines (on the 184k
    blog posts, 1.2 s of zlib per pass became 0.3 s, and it is done off the main thread). Else
    the standard library's ``GzipFile``. Both raise ``EOFError`` on a truncated member and
    ``gzip.BadGzipFile`` on a bad header or checksum."""
    if igzip_threaded is not None:
        # Its buffers are about 12 blocks (a read-ahead of 8, a queue of 2, ...): 128 KiB
        # blocks keep a 50 MB line's read under 6 MiB (tests/transforms/test_records.py), at
        # about the speed of 1 MiB blocks (0.35 s against 0.33 s a pass over the 184k posts).
        return igzip_threaded.open(handle, "rb", threads=1, block_size=GZIP_BLOCK_BYTES)
    return _open_stdlib_gzip(handle)


def iter_lines(path: str, max_line_bytes: int | None = None, handles: list[Any] | None = None
               ) -> Iterator[bytes | LongLine]:
    """Raw lines of a (possibly gzip) file, without their line terminator.

    Beam's FileSystems opens the file (local, gs://, ...); gzip is decoded by
    :func:`open_gzip` rather than Beam's pure-Python ``CompressedFile``, which is slower.
    A truncated gzip member raises ``EOFError`` after every whole line before the damage: the
    fast decoder works ahead in blocks, so when it fails the file is decoded again by the
    standard library's small-chunk reader from the line where it stopped.

    With ``max_line_bytes``, a longer line comes back as a :class:`LongLine` and is read in
    chunks, so a file with a 50 MB line (or no newline at all) costs bounded memory.

    With ``handles``, the open file (before decompression) is appended to it, so that the
    caller can read its position (``tell()``: bytes of the file consumed) for progress.
    """
    fast = path.endswith(".gz") and igzip_threaded is not None
    yielded = 0
    try:
        for item in _read_lines(path, max_line_bytes, handles, open_gzip):
            yielded += 1
            yield item
    except READ_ERRORS:
        if not fast:
            raise
        # Every line the fast decoder gave is given; the rest up to the damage, from here.
        lines = _read_lines(path, max_line_bytes, None, _open_stdlib_gzip)
        for item in itertools.islice(lines, yielded, None):
            yield item


def _open_stdlib_gzip(handle: Any) -> Any:
    return gzip.GzipFile(fileobj=handle, mode="rb")


def _read_lines(path: str, max_line_bytes: int | None, handles: list[Any] | None,
                gunzip: Any) -> Iterator[bytes | LongLine]:
    """:func:`iter_lines` with ``gunzip`` (an opener of a binary reader) for gzip files."""
    with contextlib.ExitStack() as stack:
        raw_handle = stack.enter_context(
            FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED))
        if handles is not None:
            handles.append(raw_handle)
        handle = raw_handle
        if path.endswith(".gz"):
            # Closed first (the stack unwinds in reverse): its decoding thread stops reading.
            handle = stack.enter_context(gunzip(raw_handle))
        if max_line_bytes is None:
            for raw in handle:
                yield raw.rstrip(b"\r\n")
            return
        # Room for a "\r\n" terminator after a line of exactly max_line_bytes.
        limit = max_line_bytes + 2
        while True:
            raw = handle.readline(limit)
            if not raw:
                return
            if len(raw) < limit or raw.endswith(b"\n"):
                yield raw.rstrip(b"\r\n")
            else:
                yield _skip_long_line(handle, raw)
