"""Input resolution: patterns to files, standard input and other streams read exactly once.

A stream cannot be read twice, and the job reads its inputs twice (the id scan, then the
read) and from worker processes that do not share this process's standard input. So
``--input -`` (standard input) and every local input that is not a regular file (a FIFO,
``/dev/stdin``, a process substitution under ``/dev/fd``) is first copied, once, into a
temporary folder that the run deletes when it ends, and the job reads the copy. The copy is
streamed in 1 MiB chunks (bounded memory; it takes disk space equal to the data). Derived ids
of such input use ``stdin`` (for ``-``, ``/dev/stdin``, ``/dev/fd/0``) or the stream's base
name as the file name: ``stdin:1``, ``stdin:2``, ... Gzip data on a stream is decompressed
while copying, Parquet (``PAR1`` magic) is kept as ``<name>.parquet``.
Standard input that is a terminal is refused (nothing was piped in).
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

from transforms.read import match_inputs

LOG = logging.getLogger("ndcl")

STDIN = "-"
_STDIN_PATHS = ("/dev/stdin", "/dev/fd/0", "/proc/self/fd/0")
CHUNK = 1 << 20


class InputError(ValueError):
    """An input cannot be read as given; one line saying which and why."""


def is_stream(path: str) -> bool:
    """Whether a matched input is something that can be read only once (not a regular file
    on local disk)."""
    if path == STDIN:
        return True
    if "://" in path:
        return False
    if path in _STDIN_PATHS or path.startswith(("/dev/", "/proc/")):
        return True
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False  # the read reports it (read_error) like any unreadable file


def _spool(source: BinaryIO, target: str) -> tuple[str, int]:
    """Copy ``source`` to ``target`` (``.parquet`` added for Parquet data, gzip unpacked);
    returns the written path and its size."""
    peek = source.peek(4)[:4] if hasattr(source, "peek") else b""
    if peek[:2] == b"\x1f\x8b":
        source = gzip.GzipFile(fileobj=source)
    elif peek == b"PAR1":
        target += ".parquet"
    with open(target, "wb") as out:
        shutil.copyfileobj(source, out, CHUNK)
    return target, os.path.getsize(target)


@contextlib.contextmanager
def resolved_inputs(patterns: list[str]) -> Iterator[list[str]]:
    """The sorted input files of ``patterns``, streams replaced by their copies (see the
    module docstring); the copies are deleted when the block ends. Raises
    :class:`FileNotFoundError` for a pattern that matches nothing and :class:`InputError`
    for standard input that cannot be read."""
    if patterns.count(STDIN) > 1:
        raise InputError("--input - (standard input) can be given only once")
    named = [p for p in patterns if p != STDIN]
    files = match_inputs(named) if named else []
    streams = [p for p in files if is_stream(p)] + ([STDIN] if STDIN in patterns else [])
    stdin_like = [s for s in streams if s == STDIN or s in _STDIN_PATHS]
    if len(stdin_like) > 1:
        raise InputError(f"standard input is named twice ({', '.join(stdin_like)}); it can be "
                         "read only once")
    if not streams:
        yield files
        return
    if STDIN in stdin_like and sys.stdin is not None and sys.stdin.isatty():
        raise InputError("--input -: standard input is a terminal; pipe JSON lines into it "
                         "(e.g. `zcat data.json.gz | ndcl dedup --input - ...`)")
    spool = tempfile.mkdtemp(prefix="ndcl-input-")
    try:
        copies = {}
        for index, stream in enumerate(streams):
            name = "stdin" if stream in (STDIN, *_STDIN_PATHS) else os.path.basename(stream)
            folder = os.path.join(spool, str(index))
            os.mkdir(folder)
            try:
                if stream == STDIN:
                    copies[stream] = _spool(sys.stdin.buffer, os.path.join(folder, name))
                else:
                    with open(stream, "rb") as handle:
                        copies[stream] = _spool(handle, os.path.join(folder, name))
            except (OSError, EOFError) as exc:
                raise InputError(f"cannot read {stream}: {exc}") from exc
            LOG.info("input: read %s once into %s (%d bytes)", "standard input"
                     if stream == STDIN else stream, copies[stream][0], copies[stream][1])
        yield sorted([f for f in files if f not in copies] +
                     [path for path, _ in copies.values()])
    finally:
        shutil.rmtree(spool, ignore_errors=True)
