"""Where a run's time went, as consecutive named parts from the process's start.

The summary's ``wall_seconds`` is what the user waited: from the start of the ``ndcl`` process
(the operating system's record of it, so interpreter start-up and imports count) to the
summary. It is cut into consecutive parts that add up to it exactly:

``start_up``      the interpreter, imports and the command line's checks;
``prepare``       inputs matched, the output checked and its staging folder made, the K-Means
                  service found or started;
``build_graph``   the pipeline options and the graph;
``run``           the runner, from submission to the job's end (the stages' own times,
                  ``stage_seconds``, are inside it; what they do not cover is the runner's
                  overhead: start-up of its workers, data transfer, scheduling);
``summarise``     reading the job's statistics and checking the accounting.
"""

from __future__ import annotations

import os
import time

import psutil


def process_started_at() -> float:
    """When this process started (seconds since the epoch), to the kernel's clock tick.

    On Linux from ``/proc/self/stat``'s start time (ticks since boot) against the boot-time
    clock. Not ``psutil.Process().create_time()``: it adds the start time to ``btime`` from
    ``/proc/stat``, which is whole seconds, so every process seemed to start up to a second
    early (0.50 s on the machine where this was found, the fraction of a second it booted
    at), and that went into ``start_up``.
    """
    try:
        return _linux_start_time()
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        return psutil.Process().create_time()
    except psutil.Error:  # no process table (unusual sandboxes): count from the first import
        return _IMPORTED_AT


def _linux_start_time() -> float:
    with open("/proc/self/stat", "rb") as stat:
        # Field 22 (starttime); the command name (field 2) may hold spaces, so count after it.
        fields = stat.read().rsplit(b")", 1)[1].split()
    since_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    now, up = time.time(), time.clock_gettime(time.CLOCK_BOOTTIME)
    return now - (up - since_boot)


_IMPORTED_AT = time.time()


class Timeline:
    """Consecutive parts, each ended by :meth:`mark`; the first starts with the process."""

    def __init__(self, started_at: float | None = None) -> None:
        self.started_at = process_started_at() if started_at is None else started_at
        self._last = self.started_at
        self._parts: dict[str, float] = {}

    def mark(self, part: str, now: float | None = None) -> None:
        """End the current part, naming it ``part`` (a repeated name adds up)."""
        now = time.time() if now is None else now
        self._parts[part] = self._parts.get(part, 0.0) + max(0.0, now - self._last)
        self._last = max(self._last, now)

    def elapsed(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.started_at

    def parts(self) -> dict[str, float]:
        return {name: round(seconds, 3) for name, seconds in self._parts.items()}


def time_section(timeline: Timeline, stage_seconds: dict[str, float]) -> dict[str, object]:
    """The summary's timing fields, ending the ``summarise`` part now."""
    timeline.mark("summarise")
    parts = timeline.parts()
    in_stages = sum(stage_seconds.values())
    return {
        "wall_seconds": round(timeline.elapsed(timeline._last), 3),
        "time_parts": parts,
        # The stages' times are summed over workers, so with parallel workers they can
        # exceed the run; the overhead is then reported as 0, not negative.
        "runner_overhead_seconds": round(max(0.0, parts.get("run", 0.0) - in_stages), 3),
    }
