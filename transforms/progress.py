"""Live read counts for the driver's progress reporter (``beam_pipeline.progress``).

Workers that run inside the driver's process (Beam's in-process FnApiRunner, and the LOOPBACK
SDK workers of Prism and an embedded Flink) add to :data:`LIVE` what they read, once per batch
(a lock taken per batch of thousands of documents, never per document), and record each stage
the first time it does work. A reporter thread in the driver reads it. Workers in other
processes (``--direct_running_mode=multi_processing``, Docker or Dataflow workers) add to their
own copy, which the driver never sees: there the driver says that no live counts reach it.
The same figures also go to Beam counters (``ndcl:progress_records``,
``ndcl:progress_bytes``), which every runner reports, if only at the end.

Worker processes on the driver's machine that inherit its environment (the LOOPBACK worker
processes of an embedded Flink at parallelism > 1, the direct runner's ``multi_processing``
workers) find the folder named by :data:`RELAY_ENV`, which the driver's reporter creates for
the length of a run: each writes its own counts there (``live-<pid>.json``, replaced per batch)
and the lines it has for the driver's log (``lines-<pid>.log``, appended: the stage-end lines
of ``transforms.stage_end``). The reporter sums the counts with its own process's and logs the
lines as its own. A worker process's logging is not the driver's (Beam's LOOPBACK worker
processes configure none, so their INFO lines went nowhere), hence a folder rather than a
logger. Workers elsewhere (a Flink cluster's worker pool, Docker, Dataflow) never see the
variable and log as before.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# The folder through which worker processes reach the driver's progress reporter (module doc).
RELAY_ENV = "NDCL_PROGRESS_RELAY"


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
    """Read counts and stages reached in this process; thread-safe, updated per batch.

    With a ``relay`` folder (a worker process of a run: see the module doc) every change is
    also written there for the driver."""

    def __init__(self, relay: str | None = None) -> None:
        self._lock = threading.Lock()
        self.relay = Path(relay) if relay else None
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
            self._stage_at: float | None = None

    def add_read(self, records: int, nbytes: int, file_done: bool = False) -> None:
        with self._lock:
            now = time.monotonic()
            if self._first_read_at is None:
                self._first_read_at, self._first_records = now, records
            self._last_read_at = now
            self._records += records
            self._bytes += nbytes
            self._files_done += int(file_done)
            self._publish()

    def stage_started(self, stage: str) -> bool:
        """Record that ``stage`` did work; True the first time (since the last reset)."""
        if stage in self._stages:  # the common case: no lock
            return False
        with self._lock:
            if stage in self._stages:
                return False
            self._stages[stage] = None
            self._stage = stage
            self._stage_at = time.monotonic()
            self._publish()
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


    def _publish(self) -> None:
        """Write this process's counts to the relay folder (called with the lock held). The
        file is replaced whole, so the driver never reads half of one."""
        if self.relay is None:
            return
        state = {"records": self._records, "bytes": self._bytes,
                 "first_read_at": self._first_read_at, "first_records": self._first_records,
                 "last_read_at": self._last_read_at, "stage": self._stage,
                 "stage_at": self._stage_at, "files_done": self._files_done}
        target = self.relay / f"live-{os.getpid()}.json"
        partial = target.with_suffix(".part")
        try:
            partial.write_text(json.dumps(state))
            os.replace(partial, target)
        except OSError:
            # The run ended and its reporter removed the folder while this worker still
            # counted: nothing reads it any more.
            self.relay = None


def relay_line(line: str) -> bool:
    """Hand ``line`` to the driver's log when this is a worker process of a run with a relay
    folder; False elsewhere (the caller then logs it itself)."""
    if LIVE.relay is None:
        return False
    try:
        # One write of a short line to a file opened for appending: never interleaved. The
        # time orders the lines of several workers that the driver finds in one look.
        with open(LIVE.relay / f"lines-{os.getpid()}.log", "a", encoding="utf-8") as out:
            out.write(f"{time.time():.6f} {line.replace(chr(10), ' ')}\n")
    except OSError:
        return False
    return True


def read_relay_counts(folder: Path, skip_pid: int) -> list[dict]:
    """The counts the worker processes wrote to ``folder`` (not ``skip_pid``'s: the driver's
    own are in its :data:`LIVE`)."""
    out = []
    for path in sorted(folder.glob("live-*.json")):
        if path.stem == f"live-{skip_pid}":
            continue
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # replaced or removed while listed
    return out


def merge_snapshots(own: ReadSnapshot, others: Iterable[dict]) -> ReadSnapshot:
    """One snapshot of the driver's counts and the worker processes' ones: counts summed,
    the earliest first read (with that worker's first batch), the latest read, and the stage
    that started last."""
    records, nbytes, files = own.records, own.bytes, own.files_done
    first_at, first_records, last_at = own.first_read_at, own.first_records, own.last_read_at
    stage, stage_at = own.stage, float("-inf") if own.stage else None
    for other in others:
        records += other["records"]
        nbytes += other["bytes"]
        files += other["files_done"]
        if other["first_read_at"] is not None and (first_at is None
                                                    or other["first_read_at"] < first_at):
            first_at, first_records = other["first_read_at"], other["first_records"]
        if other["last_read_at"] is not None and (last_at is None
                                                   or other["last_read_at"] > last_at):
            last_at = other["last_read_at"]
        if other["stage"] and (stage_at is None or other["stage_at"] > stage_at):
            stage, stage_at = other["stage"], other["stage_at"]
    return ReadSnapshot(records, nbytes, first_at, first_records, last_at, stage, files)


class RelayLines:
    """The complete lines the worker processes appended to a relay folder since last asked,
    in the order they were written."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._offsets: dict[Path, int] = {}

    def new_lines(self) -> list[str]:
        stamped: list[tuple[float, str]] = []
        for path in sorted(self.folder.glob("lines-*.log")):
            try:
                with open(path, "rb") as source:
                    source.seek(self._offsets.get(path, 0))
                    data = source.read()
            except OSError:
                continue
            end = data.rfind(b"\n") + 1  # a line still being written waits for the next call
            self._offsets[path] = self._offsets.get(path, 0) + end
            for entry in data[:end].decode("utf-8", errors="replace").splitlines():
                stamp, _, line = entry.partition(" ")
                stamped.append((float(stamp), line))
        return [line for _, line in sorted(stamped, key=lambda pair: pair[0])]


LIVE = LiveCounts(os.environ.get(RELAY_ENV))
