"""Live read counts for the driver's progress reporter (``beam_pipeline.progress``).

Workers that run inside the driver's process (Beam's in-process FnApiRunner, and the LOOPBACK
SDK workers of Prism and an embedded Flink) add to :data:`LIVE` what they read, once per batch
(a lock taken per batch of thousands of documents, never per document), and record each stage
the first time it does work. A reporter thread in the driver reads it. Workers in other
processes (``--direct_running_mode=multi_processing``, Docker or Dataflow workers) add to their
own copy, which the driver never sees: there the driver says that no live counts reach it.
The same figures also go to Beam counters (``ndcl:progress_records``,
``ndcl:progress_bytes``), which every runner reports, if only at the end.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class ReadSnapshot:
    """What had been read when the snapshot was taken."""

    records: int  # input records read (documents and rejected records) by the first read
    bytes: int  # bytes of the input files consumed (compressed bytes for .gz)
    first_read_at: float | None  # time.monotonic() of the first batch read
    first_records: int  # the records of that first batch (read before first_read_at)
    last_read_at: float | None  # time.monotonic() of the last batch read
    stage: str | None  # the last stage that started doing work
    files_done: int


class LiveCounts:
    """Read counts and stages reached in this process; thread-safe, updated per batch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._records = 0
            self._bytes = 0
            self._files_done = 0
            self._first_read_at: float | None = None
            self._first_records = 0
            self._last_read_at: float | None = None
            self._stages: dict[str, None] = {}  # insertion-ordered set
            self._stage: str | None = None

    def add_read(self, records: int, nbytes: int, file_done: bool = False) -> None:
        with self._lock:
            now = time.monotonic()
            if self._first_read_at is None:
                self._first_read_at, self._first_records = now, records
            self._last_read_at = now
            self._records += records
            self._bytes += nbytes
            self._files_done += int(file_done)

    def stage_started(self, stage: str) -> bool:
        """Record that ``stage`` did work; True the first time (since the last reset)."""
        if stage in self._stages:  # the common case: no lock
            return False
        with self._lock:
            if stage in self._stages:
                return False
            self._stages[stage] = None
            self._stage = stage
            return True

    def stages(self) -> list[str]:
        """The stages that did work, in the order they started."""
        with self._lock:
            return list(self._stages)

    def snapshot(self) -> ReadSnapshot:
        with self._lock:
            return ReadSnapshot(self._records, self._bytes, self._first_read_at,
                                self._first_records, self._last_read_at, self._stage,
                                self._files_done)


LIVE = LiveCounts()
