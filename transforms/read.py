"""Read C4-style JSON lines (plain or gzip) and Parquet into document batches.

Every record gets a stable id: its ``id`` field when present (a string, or an integer written
in decimal), else ``<file name>:<line number starting at 1>`` (for Parquet: the 1-based row
number). ``<file name>`` is the file's base name; only when two input files share a base name
(``2019/data.json`` and ``2020/data.json``) is it the shortest path suffix that tells them
apart (``2019/data.json:7``), so that derived ids never collide. External tools rely on this
rule.

Ids are unique in the output. When several records carry the same id (explicit ids repeated
within or across files), the first one in input order (files in sorted path order, then line)
is the document and every later one is rejected as ``duplicate_id``, with the source and line
of the first in its ``detail``. Keeping both would put two rows with one id in ``kept/`` and
make ``duplicate_of`` ambiguous. An explicit id that reads as a derived id of an input file
(``"id": "a.json:3"`` with ``a.json`` among the inputs) is rejected too: derived ids are unique
by construction and must stay what file and line say. Repeats are found by a scan ahead of the
read (:class:`ScanIdsFn`: a file with no ``id`` key at all is only decompressed and searched
once; otherwise only lines that can hold one are parsed) and one shuffle of ``(64-bit id hash,
uid, id)``; the read takes the result as a side input, so its batches stream straight into
the feature computation. Ids with equal hashes are compared as strings, so a hash collision
cannot reject a document.

A record that cannot be used never crashes the job and is never dropped silently: it goes to
the ``rejected`` output with one of these reasons:

``too_large``      raw line (Parquet: text) longer than ``max_doc_bytes`` bytes; the reader
                   never holds more than ``max_doc_bytes`` (+1 MiB) of such a line in memory
``nul_byte``       a raw NUL byte (0x00) in the line: JSON forbids unescaped control characters,
                   and NULs usually mean a binary or UTF-16 file. An escaped ``\u0000`` inside a
                   string is valid JSON and kept as it is (so is a NUL in Parquet text)
``invalid_utf8``   bytes that are not UTF-8
``bad_json``       not parseable JSON (this includes other raw control characters, e.g. a tab)
``invalid_unicode`` escapes that decode to a lone surrogate (not representable in UTF-8)
``not_object``     JSON that is not an object
``missing_text``   no ``text`` field
``text_not_string`` a ``text`` that is not a string
``bad_id``         an ``id`` that is neither a string nor an integer
``blank_line``     a line holding only whitespace
``read_error``     the file could not be read on (e.g. truncated gzip); earlier lines are kept
``duplicate_id``   the id of an earlier record (see above); ``raw`` is the record re-encoded
                   as JSON, since the raw line is no longer at hand where repeats are found
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
import xxhash
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.batches import (
    LINE_BITS,
    LINE_MASK,
    DocBatch,
    batch_key_of,
    make_uid,
    rows_by_part,
    sorted_runs,
    stage_counter,
    timed,
)
from transforms.progress import LIVE
from transforms.records import (
    READ_ERRORS,
    LongLine,
    _may_hold_id,
    check_record,
    file_may_hold_ids,
    is_generated,
    iter_lines,
    parse_json_line,
    rejection,
)

LOG = logging.getLogger(__name__)

REJECTED_TAG = "rejected"
DERIVED_FORM_TAG = "derived_form"
PROGRESS_EVERY = 100_000


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


@dataclass(frozen=True)
class LineFilter:
    """The lines (Parquet: rows) of one file that a re-read wants: ``only`` these, or all
    ``except`` these."""

    mode: str  # "only" | "except"
    lines: frozenset[int]

    def wanted(self, line: int) -> bool:
        return (line in self.lines) == (self.mode == "only")


@dataclass(frozen=True)
class Selection:
    """Which documents a re-read of the input yields, by uid: ``all``, ``only`` the sorted
    ``uids``, or all ``except`` them. Compact (8 bytes a uid), so it travels as a side input
    whose size follows the candidates or the duplicates, not the corpus."""

    mode: str = "all"
    uids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def lines_of(self, file_index: int) -> LineFilter | None:
        if self.mode == "all":
            return None
        lo = np.searchsorted(self.uids, make_uid(file_index, 0))
        hi = np.searchsorted(self.uids, make_uid(file_index + 1, 0))
        lines = frozenset((self.uids[lo:hi] & LINE_MASK).tolist())
        if self.mode == "except" and not lines:
            return None
        return LineFilter(self.mode, lines)


class ReadFileFn(beam.DoFn):
    """``(file_index, path)`` → ``(batch_key, DocBatch)``; rejects go to ``rejected``."""

    timer = stage_counter("read")

    def __init__(self, max_doc_bytes: int, batch_size: int,
                 id_names: dict[str, str] | None = None, files: list[str] | None = None
                 ) -> None:
        self.max_doc_bytes = max_doc_bytes
        self.batch_size = batch_size
        # Input paths by file index, for the detail of duplicate_id rejections.
        self.files = files or []
        # File name used in derived ids, by path (default: the base name; see id_names).
        self.id_names = id_names or {}
        self.read_counter = beam.metrics.Metrics.counter("ndcl", "read")
        # Progress: records read and input bytes consumed, added per batch (transforms.progress).
        self.progress_records = beam.metrics.Metrics.counter("ndcl", "progress_records")
        self.progress_bytes = beam.metrics.Metrics.counter("ndcl", "progress_bytes")

    def process(self, element: tuple[int, str], repeats: dict[int, int] | None = None
                ) -> Iterator[Any]:
        return timed(self._process(element, repeats or {}), self.timer)

    def _process(self, element: tuple[int, str], repeats: dict[int, int],
                 selection: Selection | None = None) -> Iterator[Any]:
        file_index, path = element
        base_name = self.id_names.get(path) or os.path.basename(path)
        builder = _BatchBuilder(file_index, self.batch_size)
        lines = selection.lines_of(file_index) if selection is not None else None
        if lines is not None and lines.mode == "only" and not lines.lines:
            return  # nothing wanted from this file: not even opened
        reread = selection is not None
        handles: list[Any] = []  # the open input file, whose position tells the bytes read
        if path.endswith(".parquet"):
            items = self._read_parquet(path, base_name, lines, handles)
        else:
            items = self._read_json(path, base_name, lines=lines, handles=handles)
        progress = None if reread else _ReadProgress(self, handles)
        count = 0
        seen = 0  # records read (documents and rejects), for progress
        for item in items:
            seen += 1
            if isinstance(item, dict):
                if not reread:  # the first read reports rejects; a re-read skips them
                    yield beam.pvalue.TaggedOutput(REJECTED_TAG, item)
                continue
            line, doc_id, record, nbytes = item
            # Repeats are rare: most files look nothing up (uids are built only when needed).
            owner = repeats.get(make_uid(file_index, line)) if repeats else None
            if owner is not None:
                if not reread:
                    yield beam.pvalue.TaggedOutput(REJECTED_TAG, self._repeated(
                        path, line, doc_id, record, owner))
                continue
            count += 1
            if count % PROGRESS_EVERY == 0 and not reread:
                LOG.info("read %d documents from %s", count, base_name)
            done = builder.add(line, doc_id, record, nbytes)
            if done is not None:
                if progress is not None:
                    progress.report(seen)
                yield done.batch_key, done
        if progress is not None:
            progress.report(seen, file_done=True, file_size=_file_size(path))
        done = builder.flush()
        if done is not None:
            yield done.batch_key, done
        if not reread:
            self.read_counter.inc(count)
            LOG.info("finished reading %s: %d documents", base_name, count)

    def _repeated(self, path: str, line: int, doc_id: str, record: dict[str, Any], owner: int
                  ) -> dict[str, Any]:
        """The ``duplicate_id`` rejection of a record whose id belongs to ``owner`` (a uid, or
        -1 when the id has the form of a derived id)."""
        shown = doc_id if len(doc_id) <= 200 else doc_id[:200] + "…"
        if owner < 0:
            detail = f"id {shown!r} has the form of a derived id (<input file>:<line>)"
        else:
            detail = (f"id {shown!r} first seen at {self.files[owner >> LINE_BITS]}:"
                      f"{owner & LINE_MASK}")
        raw = json.dumps(record, ensure_ascii=False, default=str)
        return rejection(path, line, "duplicate_id", raw, detail)

    def _read_json(self, path: str, base_name: str, id_lines_only: bool = False,
                   lines: LineFilter | None = None, handles: list[Any] | None = None
                   ) -> Iterator[Any]:
        line = 0
        try:
            for raw in iter_lines(path, self.max_doc_bytes, handles):
                line += 1
                if lines is not None and not lines.wanted(line):
                    continue  # a re-read skips what it does not need before parsing
                if isinstance(raw, LongLine):
                    yield rejection(path, line, "too_large", raw.head,
                                    f"{raw.size} bytes > max_doc_bytes={self.max_doc_bytes}")
                    continue
                # The id scan (ScanIdsFn) parses only lines that can hold an "id" key: spelled
                # out, or with escapes ("\u0069d", "i\u0064", "\u0069\u0064").
                if id_lines_only and not _may_hold_id(raw):
                    continue
                doc_id, value = parse_json_line(raw, base_name, line, self.max_doc_bytes)
                if doc_id is None:
                    reason, detail = value
                    yield rejection(path, line, reason, raw, detail)
                else:
                    yield line, doc_id, value, len(raw)
        except READ_ERRORS as exc:
            # A truncated or corrupt compressed file: keep what was read, reject the rest.
            yield rejection(path, line + 1, "read_error", b"", f"{type(exc).__name__}: {exc}")

    def _read_parquet(self, path: str, base_name: str, lines: LineFilter | None = None,
                      handles: list[Any] | None = None) -> Iterator[Any]:
        import pyarrow.parquet as pq

        row = 0
        try:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
                if handles is not None:
                    handles.append(fh)
                parquet = pq.ParquetFile(fh)
                for record_batch in parquet.iter_batches(batch_size=self.batch_size):
                    for record in record_batch.to_pylist():
                        row += 1
                        if lines is not None and not lines.wanted(row):
                            continue
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


class _ReadProgress:
    """One file's read progress, reported per batch to :data:`transforms.progress.LIVE` and to
    the read's Beam counters: the records read since the last report and the bytes of the file
    consumed (the open file's position)."""

    def __init__(self, fn: ReadFileFn, handles: list[Any]) -> None:
        self.fn = fn
        self.handles = handles
        self.reported_records = 0
        self.reported_bytes = 0

    def report(self, records: int, file_done: bool = False, file_size: int | None = None
               ) -> None:
        """Report the file's first ``records`` records (the ones not reported yet)."""
        new_records, self.reported_records = records - self.reported_records, records
        position = file_size if file_size is not None else self._position()
        nbytes = max(0, position - self.reported_bytes) if position is not None else 0
        self.reported_bytes += nbytes
        LIVE.add_read(new_records, nbytes, file_done=file_done)
        self.fn.progress_records.inc(new_records)
        self.fn.progress_bytes.inc(nbytes)

    def _position(self) -> int | None:
        try:
            return self.handles[0].tell() if self.handles else None
        except (OSError, ValueError):  # closed, or a stream without a position
            return None


def _file_size(path: str) -> int | None:
    """The size of input ``path`` in bytes (None when it cannot be read)."""
    try:
        metadata = FileSystems.match([path])[0].metadata_list
    except Exception:  # progress must never fail a read
        return None
    return metadata[0].size_in_bytes if metadata else None


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


def id_names(files: list[str]) -> dict[str, str]:
    """The file name used in derived ids (``<name>:<line>``) for each input file: its base name,
    or, when several inputs share that base name, the shortest path suffix (whole components)
    that differs between them, so derived ids of different files never collide."""
    parts = {path: path.replace("\\", "/").split("/") for path in files}
    names: dict[str, str] = {}
    depth = 1
    pending = list(files)
    while pending:
        suffixes: dict[str, list[str]] = {}
        for path in pending:
            suffixes.setdefault("/".join(parts[path][-depth:]), []).append(path)
        pending = []
        for suffix, paths in suffixes.items():
            whole = all(depth >= len(parts[p]) for p in paths)
            if len(paths) == 1 or whole:
                for path in paths:
                    names[path] = suffix if len(paths) == 1 else path
            else:
                pending.extend(paths)
        depth += 1
    return names


# --------------------------------------------------------------------------------------------
# Repeated ids: the first record in input order keeps the id, later ones are rejected.
# --------------------------------------------------------------------------------------------


def id_hashes(ids: list[str]) -> np.ndarray:
    """``uint64[m]``: the xxh3-64 of each id. Only a sort and partition key: equal hashes are
    compared as strings afterwards, so a collision costs a comparison, never a document."""
    encoded = [doc_id.encode("utf-8", "surrogatepass") for doc_id in ids]
    return np.fromiter(map(xxhash.xxh3_64_intdigest, encoded), dtype=np.uint64,
                       count=len(encoded))


def has_derived_form(doc_id: str, names: set[str]) -> bool:
    """Whether an explicit id reads as a derived id ``<name>:<line>`` of an input file."""
    name, _, line = doc_id.rpartition(":")
    return bool(name) and name in names and line.isdigit()


class ScanIdsFn(beam.DoFn):
    """``(file_index, path)`` → ``(partition, (id hashes, uids, ids))`` for the records that
    :class:`ReadFileFn` accepts with an explicit id, and ``(uid, -1)`` on the ``derived_form``
    output for explicit ids that read as a derived id of an input (``a.json:3``; rejected,
    since derived ids are unique by construction and must stay what file and line say).

    A pass of its own, ahead of the read, so that the read can take the repeats as a side
    input and stream its batches straight into the feature computation (filtering the read's
    batches instead made the runner store them all first: ~0.7 s per 50,000 blog posts). It
    parses only the lines that can hold an ``id`` key, so on corpora without ids it costs
    little more than decompressing the input.
    """

    timer = stage_counter("read")

    def __init__(self, max_doc_bytes: int, batch_size: int, id_names: dict[str, str],
                 num_partitions: int) -> None:
        self.reader = ReadFileFn(max_doc_bytes, batch_size, id_names)
        self.names = set(id_names.values())
        self.num_partitions = num_partitions

    def process(self, element: tuple[int, str]) -> Iterator[Any]:
        return timed(self._process(element), self.timer)

    def _process(self, element: tuple[int, str]) -> Iterator[Any]:
        file_index, path = element
        base_name = self.reader.id_names.get(path) or os.path.basename(path)
        if path.endswith(".parquet"):
            items = self.reader._read_parquet(path, base_name)
        elif file_may_hold_ids(path):
            items = self.reader._read_json(path, base_name, id_lines_only=True)
        else:
            return
        uids: list[int] = []
        ids: list[str] = []
        for item in items:
            if isinstance(item, dict) or is_generated(item[2]):
                continue
            uid = make_uid(file_index, item[0])
            if has_derived_form(item[1], self.names):
                yield beam.pvalue.TaggedOutput(DERIVED_FORM_TAG, (uid, -1))
                continue
            uids.append(uid)
            ids.append(item[1])
        if not ids:
            return
        hashes = id_hashes(ids)
        uid_array = np.array(uids, dtype=np.int64)
        parts = (hashes % np.uint64(self.num_partitions)).astype(np.int64)
        for part, rows in rows_by_part(parts):
            yield part, (hashes[rows], uid_array[rows], [ids[r] for r in rows.tolist()])


def repeated_ids(hashes: np.ndarray, uids: np.ndarray, ids: list[str]
                 ) -> list[tuple[int, int]]:
    """``(uid, first uid)`` for every record whose id already belongs to a smaller uid."""
    if len(uids) < 2:
        return []
    order = np.lexsort((uids, hashes))
    starts, sizes, _ = sorted_runs(hashes[order])
    if not (sizes > 1).any():
        return []
    out: list[tuple[int, int]] = []
    for start, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist()):
        first: dict[str, int] = {}
        # Rows are in uid order within a run; equal hashes are compared as strings too.
        for row in order[start : start + size].tolist():
            uid = int(uids[row])
            earlier = first.setdefault(ids[row], uid)
            if earlier != uid:
                out.append((uid, earlier))
    return out


class FindRepeatedIdsFn(beam.DoFn):
    """One partition's ids → ``(uid, first uid)`` for each repeated id."""

    timer = stage_counter("read")

    def process(self, element: tuple[int, Iterable[tuple]]) -> Iterator[tuple[int, int]]:
        return timed(self._process(element), self.timer)

    def _process(self, element: tuple[int, Iterable[tuple]]) -> Iterator[tuple[int, int]]:
        _, chunks = element
        chunks = list(chunks)
        hashes = np.concatenate([c[0] for c in chunks])
        uids = np.concatenate([c[1] for c in chunks])
        ids = [doc_id for c in chunks for doc_id in c[2]]
        yield from repeated_ids(hashes, uids, ids)


class ReadResult(NamedTuple):
    """The first read's document batches and dead-letter rows, plus what a later re-read of
    the same documents needs (the ``uid → owner`` repeats)."""

    batches: beam.PCollection  # (batch_key, DocBatch)
    rejected: beam.PCollection  # dead-letter rows
    repeats: beam.PCollection  # (uid, owner uid) of the repeated and derived ids


@dataclass(frozen=True)
class ReadParams:
    """How the input is read (the same for the first read and every re-read);
    ``id_partitions``: keys of the first read's repeated-id scan (a shuffle width)."""

    files: tuple[str, ...]
    max_doc_bytes: int
    batch_size: int
    id_partitions: int = 32


class ReadDocuments(beam.PTransform):
    """Files → ``(batch_key, DocBatch)`` ``batches`` and a ``rejected`` dead-letter output.

    Ids are unique in ``batches``: records repeating an earlier id are rejected (module doc).
    """

    def __init__(self, params: ReadParams) -> None:
        super().__init__()
        self.files = list(params.files)
        self.max_doc_bytes = params.max_doc_bytes
        self.batch_size = params.batch_size
        self.num_partitions = params.id_partitions

    def expand(self, pbegin: beam.pvalue.PBegin) -> ReadResult:
        names = id_names(self.files)
        indexed_files = (
            pbegin
            | "ListInputFiles" >> beam.Create(list(enumerate(self.files)))
            # Spread files over workers before the expensive read.
            | "SpreadFiles" >> beam.Reshuffle()
        )
        scanned = indexed_files | "ScanIds" >> beam.ParDo(ScanIdsFn(
            self.max_doc_bytes, self.batch_size, names, self.num_partitions)
        ).with_outputs(DERIVED_FORM_TAG, main="keys")
        repeated = (
            scanned.keys
            | "GroupIds" >> beam.GroupByKey()
            | "FindRepeatedIds" >> beam.ParDo(FindRepeatedIdsFn())
        )
        uid_to_owner = ((repeated, scanned[DERIVED_FORM_TAG])
                        | "CollectRepeatedIds" >> beam.Flatten())
        parsed = (
            indexed_files
            | "ParseFiles" >> beam.ParDo(
                ReadFileFn(self.max_doc_bytes, self.batch_size, names, self.files),
                beam.pvalue.AsDict(uid_to_owner))
            .with_output_types(tuple[int, DocBatch])
            .with_outputs(REJECTED_TAG, main="batches")
        )
        return ReadResult(batches=parsed.batches, rejected=parsed[REJECTED_TAG],
                          repeats=uid_to_owner)
