"""Read C4-style JSON lines (plain or gzip) and Parquet into document batches.

Every record gets a stable id: its ``id`` field when present (a string, or an integer written
in decimal), else ``<file base name>:<line number starting at 1>`` (for Parquet: the 1-based
row number). External tools rely on this rule.

A record that cannot be used never crashes the job and is never dropped silently: it goes to
the ``rejected`` output with one of these reasons:

``too_large``      raw line (Parquet: text) longer than ``max_doc_bytes`` bytes
``invalid_utf8``   bytes that are not UTF-8
``bad_json``       not parseable JSON (this includes raw control characters such as NUL)
``invalid_unicode`` escapes that decode to a lone surrogate (not representable in UTF-8)
``not_object``     JSON that is not an object
``missing_text``   no ``text`` field
``text_not_string`` a ``text`` that is not a string
``bad_id``         an ``id`` that is neither a string nor an integer
``blank_line``     a line holding only whitespace
``read_error``     the file could not be read on (e.g. truncated gzip); earlier lines are kept
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.batches import DocBatch, batch_key_of, make_uid, stage_counter, timed

LOG = logging.getLogger(__name__)

REJECTED_TAG = "rejected"
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
RAW_PREVIEW_CHARS = 1000
PROGRESS_EVERY = 100_000


def preview(raw: bytes | str) -> str:
    """A printable, bounded preview of a raw line for the dead-letter output."""
    if isinstance(raw, bytes):
        raw = raw[: RAW_PREVIEW_CHARS * 4].decode("utf-8", errors="replace")
    return raw[:RAW_PREVIEW_CHARS]


def rejection(source: str, line: int, reason: str, raw: bytes | str, detail: str = "") -> dict:
    """One dead-letter row."""
    return {"source": source, "line": line, "reason": reason, "detail": detail,
            "raw": preview(raw)}


def record_id(record: dict[str, Any], base_name: str, line: int) -> str | None:
    """The document id of ``record`` (None when its ``id`` field has an unusable type)."""
    if "id" not in record or record["id"] is None:
        return f"{base_name}:{line}"
    value = record["id"]
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def parse_json_line(
    raw: bytes, base_name: str, line: int, max_doc_bytes: int
) -> tuple[str, dict[str, Any]] | tuple[None, tuple[str, str]]:
    """Parse one JSON line into ``(id, record)`` or ``(None, (reason, detail))``."""
    if len(raw) > max_doc_bytes:
        return None, ("too_large", f"{len(raw)} bytes > max_doc_bytes={max_doc_bytes}")
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


def iter_lines(path: str) -> Iterator[bytes]:
    """Raw lines of a (possibly gzip) file, without their line terminator.

    Beam's FileSystems opens the file (local, gs://, ...); gzip is decoded by the standard
    library's C reader rather than Beam's pure-Python ``CompressedFile``, which is slower.
    A truncated gzip member raises ``EOFError`` after the lines before the damage.
    """
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw_handle:
        handle = raw_handle
        if path.endswith(".gz"):
            # GzipFile decodes in small chunks, so a damaged file still yields its good start.
            handle = gzip.GzipFile(fileobj=raw_handle, mode="rb")
        for raw in handle:
            yield raw.rstrip(b"\r\n")


class _BatchBuilder:
    """Accumulates parsed records and cuts them into :class:`DocBatch` at batch boundaries."""

    def __init__(self, file_index: int, batch_size: int) -> None:
        self.file_index = file_index
        self.batch_size = batch_size
        self.current_key: int | None = None
        self.uids: list[int] = []
        self.ids: list[str] = []
        self.records: list[dict[str, Any]] = []
        self.nbytes = 0

    def add(self, line: int, doc_id: str, record: dict[str, Any], nbytes: int
            ) -> DocBatch | None:
        uid = make_uid(self.file_index, line)
        key = batch_key_of(uid, self.batch_size)
        done = None
        if self.current_key is not None and key != self.current_key:
            done = self.flush()
        self.current_key = key
        self.uids.append(uid)
        self.ids.append(doc_id)
        self.records.append(record)
        self.nbytes += nbytes
        return done

    def flush(self) -> DocBatch | None:
        if not self.uids:
            return None
        batch = DocBatch(
            batch_key=self.current_key,
            uids=np.array(self.uids, dtype=np.int64),
            ids=self.ids,
            records=self.records,
            nbytes=self.nbytes,
        )
        self.uids, self.ids, self.records, self.nbytes = [], [], [], 0
        return batch


class ReadFileFn(beam.DoFn):
    """``(file_index, path)`` → ``(batch_key, DocBatch)``; rejects go to ``rejected``."""

    timer = stage_counter("read")

    def __init__(self, max_doc_bytes: int, batch_size: int) -> None:
        self.max_doc_bytes = max_doc_bytes
        self.batch_size = batch_size
        self.read_counter = beam.metrics.Metrics.counter("ndcl", "read")

    def process(self, element: tuple[int, str]) -> Iterator[Any]:
        return timed(self._process(element), self.timer)

    def _process(self, element: tuple[int, str]) -> Iterator[Any]:
        file_index, path = element
        base_name = os.path.basename(path)
        builder = _BatchBuilder(file_index, self.batch_size)
        reader = self._read_parquet if path.endswith(".parquet") else self._read_json
        count = 0
        for item in reader(path, base_name):
            if isinstance(item, dict):
                yield beam.pvalue.TaggedOutput(REJECTED_TAG, item)
                continue
            line, doc_id, record, nbytes = item
            count += 1
            if count % PROGRESS_EVERY == 0:
                LOG.info("read %d documents from %s", count, base_name)
            done = builder.add(line, doc_id, record, nbytes)
            if done is not None:
                yield done.batch_key, done
        done = builder.flush()
        if done is not None:
            yield done.batch_key, done
        self.read_counter.inc(count)
        LOG.info("finished reading %s: %d documents", base_name, count)

    def _read_json(self, path: str, base_name: str) -> Iterator[Any]:
        line = 0
        try:
            for raw in iter_lines(path):
                line += 1
                doc_id, value = parse_json_line(raw, base_name, line, self.max_doc_bytes)
                if doc_id is None:
                    reason, detail = value
                    yield rejection(path, line, reason, raw, detail)
                else:
                    yield line, doc_id, value, len(raw)
        except (OSError, EOFError, ValueError) as exc:
            # A truncated or corrupt compressed file: keep what was read, reject the rest.
            yield rejection(path, line + 1, "read_error", b"", f"{type(exc).__name__}: {exc}")

    def _read_parquet(self, path: str, base_name: str) -> Iterator[Any]:
        import pyarrow.parquet as pq

        row = 0
        try:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
                parquet = pq.ParquetFile(fh)
                for record_batch in parquet.iter_batches(batch_size=self.batch_size):
                    for record in record_batch.to_pylist():
                        row += 1
                        text = record.get("text")
                        size = len(text.encode("utf-8")) if isinstance(text, str) else 0
                        if size > self.max_doc_bytes:
                            yield rejection(path, row, "too_large", text,
                                            f"{size} bytes > max_doc_bytes={self.max_doc_bytes}")
                            continue
                        doc_id, value = check_record(record, base_name, row)
                        if doc_id is None:
                            reason, detail = value
                            yield rejection(path, row, reason, json.dumps(record, default=str),
                                            detail)
                        else:
                            yield row, doc_id, value, len(value["text"])
        except (OSError, ValueError) as exc:
            yield rejection(path, row + 1, "read_error", b"", f"{type(exc).__name__}: {exc}")


def match_inputs(patterns: list[str]) -> list[str]:
    """Sorted, de-duplicated files matched by ``patterns``; a pattern matching nothing is an
    error raised here, before any job starts."""
    from apache_beam.io.filesystem import BeamIOError

    files: set[str] = set()
    for pattern in patterns:
        try:
            result = FileSystems.match([pattern])[0]
        except BeamIOError as exc:
            raise FileNotFoundError(
                f"input pattern {pattern!r} could not be matched: {exc}") from exc
        paths = [m.path for m in result.metadata_list]
        if not paths:
            raise FileNotFoundError(f"input pattern {pattern!r} matches no file")
        files.update(paths)
    return sorted(files)


class ReadDocuments(beam.PTransform):
    """Files → ``(batch_key, DocBatch)`` main output and a ``rejected`` dead-letter output."""

    def __init__(self, files: list[str], max_doc_bytes: int, batch_size: int) -> None:
        super().__init__()
        self.files = files
        self.max_doc_bytes = max_doc_bytes
        self.batch_size = batch_size

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.DoOutputsTuple:
        indexed_files = list(enumerate(self.files))
        return (
            pbegin
            | "ListInputFiles" >> beam.Create(indexed_files)
            # Spread files over workers before the expensive read.
            | "SpreadFiles" >> beam.Reshuffle()
            | "ParseFiles" >> beam.ParDo(ReadFileFn(self.max_doc_bytes, self.batch_size))
            .with_output_types(tuple[int, DocBatch])
            .with_outputs(REJECTED_TAG, main="batches")
        )
