"""What ``ndcl show`` reads: an NDCL output's own files and, for the removed documents it
prints, just those documents from the run's inputs.

``OUT/duplicates`` holds no text, ``OUT/kept`` does. So the kept side of a duplicate group and
every cluster example come from ``OUT/kept`` (its ``id`` column first, then the rows wanted),
and a removed document is re-read from the input file its id names: a derived id
``<name>:<line>`` gives the file (by the ``id_name`` the manifest ``_ndcl.json`` records for
each input) and the line, and only that line is parsed; the file is read no further than the
last line wanted. An explicit id (``"id"`` in the record) says nothing about where it is, so
the inputs are scanned in the run's order (sorted paths, then line), parsing only the lines
that contain one of the wanted ids; the first record with the id is the document, as in the
run (later ones were rejected as ``duplicate_id``).

An input is checked before it is read: it must still exist with the size and modification time
the manifest recorded, and every re-read record must carry the id and ``url`` the output says.
Anything else is a :class:`ShowError` (one line, exit status 2). Local paths and ``gs://``
alike go through Beam's ``FileSystems``; gzip inputs are decoded as the run decoded them
(``transforms.records.iter_lines``).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

# Modification times are compared as the file system reports them (float seconds).
MTIME_TOLERANCE_S = 1e-3
DEFAULT_MAX_DOC_BYTES = 10_000_000


class ShowError(ValueError):
    """``ndcl show`` cannot show what was asked; one line saying why (exit status 2)."""


def join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}"


def read_json(path: str) -> Any:
    """The JSON at ``path``, or None (``beam_pipeline.outputs``, imported on first use: it
    imports Beam, which ``ndcl --help`` should not pay)."""
    from beam_pipeline.outputs import read_json_or_none

    return read_json_or_none(path)


@dataclass(frozen=True)
class Output:
    """A finished NDCL output: its files (relative paths), manifest and summary."""

    path: str
    files: tuple[str, ...]
    manifest: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    def parts(self, sub: str) -> list[str]:
        """The Parquet part files under ``sub/``, as full paths in name order."""
        return [join(self.path, f) for f in self.files
                if f.startswith(sub + "/") and f.endswith(".parquet")]

    @property
    def max_doc_bytes(self) -> int:
        config = self.summary.get("config") or {}
        dedup = config.get("dedup") if isinstance(config.get("dedup"), dict) else config
        value = (dedup or {}).get("max_doc_bytes")
        return value if isinstance(value, int) and value > 0 else DEFAULT_MAX_DOC_BYTES


def open_output(path: str) -> Output:
    """``path`` as a finished NDCL output; :class:`ShowError` when it is missing, not NDCL's
    (no manifest with NDCL's signature, nor an older NDCL output's ``_SUCCESS`` and summary)
    or not finished. Its files are the manifest's list, so nothing else is listed or read."""
    import os

    from apache_beam.io.filesystems import FileSystems

    from beam_pipeline import outputs

    path = path.rstrip("/") or path
    if outputs.is_local(path):
        if not os.path.exists(path):
            raise ShowError(f"{path} does not exist")
        if not os.path.isdir(path):
            raise ShowError(f"{path} is a file, not an NDCL output folder")
    manifest = read_json(join(path, outputs.MANIFEST))
    summary = read_json(join(path, "summary.json"))
    summary = summary if isinstance(summary, dict) else {}
    finished = FileSystems.exists(join(path, "_SUCCESS"))
    if isinstance(manifest, dict) and manifest.get("signature") == outputs.SIGNATURE:
        files = [f for f in manifest.get("files") or () if isinstance(f, str)]
    elif finished and {"read", "kept", "duplicates"} <= set(summary):
        manifest, files = {}, outputs.list_files(path) or []  # older than the manifest
    elif not outputs.is_local(path) and not _any_object(join(path, "*")):
        raise ShowError(f"{path} does not exist")
    else:
        raise ShowError(f"{path} is not an NDCL output (no {outputs.MANIFEST} with NDCL's "
                        "signature)")
    if not finished:
        raise ShowError(f"{path} is not a finished NDCL output (no _SUCCESS marker)")
    return Output(path, tuple(sorted(files)), manifest, summary)


def _any_object(pattern: str) -> bool:
    from apache_beam.io.filesystems import FileSystems

    try:
        return bool(FileSystems.match([pattern], [1])[0].metadata_list)
    except Exception:  # Beam raises BeamIOError for a pattern matching nothing on some stores
        return False


# --------------------------------------------------------------------------- OUT's Parquet parts


@contextlib.contextmanager
def _parquet(path: str) -> Iterator[Any]:
    """``path`` open as a ``pyarrow.parquet.ParquetFile`` (it reads only the column chunks
    and row groups asked for)."""
    import pyarrow.parquet as pq
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    try:
        handle = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as exc:
        raise ShowError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else exc!r}"
                        ) from None
    with handle:
        yield pq.ParquetFile(handle)


def read_columns(parts: Iterable[str], columns: list[str]) -> list[dict[str, Any]]:
    """Rows of ``columns`` (those the parts have) from every part, in part order."""
    rows: list[dict[str, Any]] = []
    for path in parts:
        with _parquet(path) as parquet:
            present = [c for c in columns if c in parquet.schema_arrow.names]
            rows += parquet.read(columns=present).to_pylist()
    return rows


def read_rows(parts: Iterable[str], ids: Iterable[str], columns: list[str]
              ) -> dict[str, dict[str, Any]]:
    """The rows (``columns`` present in the parts) whose ``id`` is in ``ids``, by id: each
    part's ``id`` column is read first, the other columns only of parts holding a wanted id."""
    import pyarrow as pa
    import pyarrow.compute as pc

    wanted = set(ids)
    found: dict[str, dict[str, Any]] = {}
    for path in parts:
        if len(found) == len(wanted):
            break
        with _parquet(path) as parquet:
            mask = pc.is_in(parquet.read(columns=["id"]).column("id"),
                            value_set=pa.array(sorted(wanted - set(found)), pa.string()))
            if not pc.any(mask).as_py():
                continue
            present = [c for c in columns if c in parquet.schema_arrow.names]
            for row in parquet.read(columns=present).filter(mask).to_pylist():
                found.setdefault(row["id"], row)
    return found


# --------------------------------------------------------------------------- the run's inputs


@dataclass(frozen=True)
class InputFile:
    """One input of the run: where it is, the name its derived ids use, and its size and
    modification time at the run (None when not recorded: no check)."""

    path: str
    id_name: str
    size: int | None = None
    mtime: float | None = None


def run_inputs(output: Output, patterns: list[str] | None) -> list[InputFile]:
    """The run's inputs: ``patterns`` (``--input``) when given, else the manifest's record."""
    if patterns:
        from transforms.read import id_names, match_inputs

        try:
            files = match_inputs(patterns)
        except FileNotFoundError as exc:
            raise ShowError(str(exc)) from None
        names = id_names(files)
        return [InputFile(path, names[path]) for path in files]
    entries = output.manifest.get("inputs")
    if not isinstance(entries, list) or not entries:
        raise ShowError(f"{output.path} does not record its input files (written by an older "
                        "NDCL); give the run's inputs with --input")
    return [InputFile(e["path"], e.get("id_name") or e["path"].rsplit("/", 1)[-1],
                      e.get("size"), e.get("mtime")) for e in entries]


def check_input(source: InputFile) -> None:
    """:class:`ShowError` when ``source`` is gone or differs from what the run read."""
    from apache_beam.io.filesystems import FileSystems

    try:
        metadata = FileSystems.match([source.path])[0].metadata_list
    except Exception as exc:
        raise ShowError(f"cannot reach input {source.path}: {exc}") from None
    meta = next((m for m in metadata if m.path == source.path), None)
    if meta is None:
        hint = (" (a temporary copy of standard input or a stream, deleted after the run)"
                if "/ndcl-input-" in source.path else "")
        raise ShowError(f"input {source.path} no longer exists{hint}; cannot re-read the "
                        "removed documents")
    if source.size is not None and meta.size_in_bytes != source.size:
        raise ShowError(f"input {source.path} changed since the run ({source.size:,} bytes "
                        f"then, {meta.size_in_bytes:,} now)")
    now = getattr(meta, "last_updated_in_seconds", None)
    if source.mtime is not None and now and abs(now - source.mtime) > MTIME_TOLERANCE_S:
        when = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        raise ShowError(f"input {source.path} changed since the run (modified {when})")


def _changed(source: InputFile, why: str) -> ShowError:
    return ShowError(f"input {source.path} changed since the run: {why}")


def _needles(ids: Iterable[str]) -> re.Pattern[bytes] | None:
    """A byte pattern matching a raw JSON line that may hold one of the explicit ``ids`` (as
    written by a JSON encoder, with or without ASCII escapes; an integer id as its digits)."""
    forms = set()
    for doc_id in ids:
        forms.add(json.dumps(doc_id, ensure_ascii=False)[1:-1].encode("utf-8"))
        forms.add(json.dumps(doc_id)[1:-1].encode("ascii"))
    if not forms:
        return None
    return re.compile(b"|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)))


def _json_records(source: InputFile, lines: dict[int, str], explicit: set[str],
                  max_doc_bytes: int, full_parse: bool) -> Iterator[tuple[str, dict]]:
    """``(id, record)`` of the wanted ``lines`` and of the first records with an id in
    ``explicit`` (updated as they are found), reading no further than needed."""
    from transforms.records import LongLine, iter_lines, parse_json_line

    needles = None if full_parse else _needles(explicit)
    last = max(lines, default=0)
    line = 0
    try:
        for raw in iter_lines(source.path, max_doc_bytes):
            line += 1
            if line > last and not explicit:
                return
            if line in lines:
                if isinstance(raw, LongLine):
                    raise _changed(source, f"line {line} is over max_doc_bytes")
                doc_id, record = parse_json_line(raw, source.id_name, line, max_doc_bytes)
                if doc_id != lines[line]:
                    raise _changed(source, f"line {line} is no longer document {lines[line]}")
                yield doc_id, record
            elif explicit and not isinstance(raw, LongLine) and (
                    needles is None or needles.search(raw)):
                doc_id, record = parse_json_line(raw, source.id_name, line, max_doc_bytes)
                if doc_id is not None and record.get("id") is not None and doc_id in explicit:
                    explicit.discard(doc_id)
                    yield doc_id, record
    except ShowError:
        raise
    except (OSError, EOFError, ValueError) as exc:
        raise ShowError(f"cannot read input {source.path}: {type(exc).__name__}: {exc}"
                        ) from None


def _parquet_records(source: InputFile, rows: dict[int, str], explicit: set[str]
                     ) -> Iterator[tuple[str, dict]]:
    """Like :func:`_json_records` for a Parquet input (rows numbered from 1); only the row
    groups holding a wanted row are read."""
    from transforms.records import check_record

    try:
        with _parquet(source.path) as parquet:
            if explicit and "id" in parquet.schema_arrow.names:
                ids = parquet.read(columns=["id"]).column("id").to_pylist()
                for row, value in enumerate(ids, start=1):
                    doc_id = str(value) if isinstance(value, int) else value
                    if doc_id in explicit:
                        rows.setdefault(row, doc_id)
                        explicit.discard(doc_id)
            start = 0
            for group in range(parquet.num_row_groups):
                count = parquet.metadata.row_group(group).num_rows
                wanted = [r for r in sorted(rows) if start < r <= start + count]
                if wanted:
                    records = parquet.read_row_group(group).to_pylist()
                    for row in wanted:
                        doc_id, record = check_record(records[row - start - 1],
                                                      source.id_name, row)
                        if doc_id != rows[row]:
                            raise _changed(source, f"row {row} is no longer document "
                                                   f"{rows[row]}")
                        yield doc_id, record
                start += count
    except ShowError:
        raise
    except (OSError, ValueError) as exc:
        raise ShowError(f"cannot read input {source.path}: {type(exc).__name__}: {exc}"
                        ) from None


def fetch_documents(inputs: list[InputFile], urls: dict[str, str | None],
                    max_doc_bytes: int = DEFAULT_MAX_DOC_BYTES) -> dict[str, dict[str, Any]]:
    """The input records of the documents ``urls`` names (id → the ``url`` OUT holds for it),
    by id, re-read as the module docstring says."""
    by_name = {source.id_name: source for source in inputs}
    lines: dict[str, dict[int, str]] = {source.path: {} for source in inputs}
    explicit: set[str] = set()
    for doc_id in urls:
        name, _, line = doc_id.rpartition(":")
        if name in by_name and line.isdigit():
            lines[by_name[name].path][int(line)] = doc_id
        else:
            explicit.add(doc_id)
    found: dict[str, dict[str, Any]] = {}
    found_in: dict[str, str] = {}
    for full_parse in (False, True):
        for source in inputs:
            if not lines[source.path] and not explicit:
                continue
            check_input(source)
            reader = (_parquet_records(source, lines[source.path], explicit)
                      if source.path.endswith(".parquet") else
                      _json_records(source, lines[source.path], explicit, max_doc_bytes,
                                    full_parse))
            for doc_id, record in reader:
                if doc_id not in found:
                    found[doc_id], found_in[doc_id] = record, source.path
            lines[source.path] = {}
        if not explicit:
            break  # the second pass only looks for ids written with unusual escapes
    missing = sorted(set(urls) - set(found))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ShowError(f"document {missing[0]}{more} is not in the inputs any more; they "
                        "changed since the run")
    for doc_id, record in found.items():
        url, now = urls.get(doc_id), record.get("url")
        if isinstance(url, str) and isinstance(now, str) and url != now:
            raise ShowError(f"input {found_in[doc_id]} changed since the run: document "
                            f"{doc_id} has url {now!r} there, {url!r} in the output")
    return found
