"""What a run costs the machine: CPU %, RSS, disk and network bytes, sampled while it runs.

``ResourceSampler`` wraps a run (``with ResourceSampler() as sampler: ...``); its ``result()``
has exactly the columns of the benchmark database's ``ResourceMetric``
(``beam_pipeline.db``), which stores it. Apart from the database code because it needs only
psutil, not SQLAlchemy, and runs beside the pipeline in a thread of its own.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import psutil

# What ResourceSampler.result() holds: the columns of the database's ResourceMetric.
RESOURCE_FIELDS = ("cpu_percent_avg", "cpu_percent_peak", "rss_bytes_avg", "rss_bytes_peak",
                   "disk_read_bytes", "disk_write_bytes", "net_sent_bytes", "net_recv_bytes",
                   "samples_json")


class ResourceSampler:
    """Samples CPU % and RSS of this process and its children in a daemon thread.

    CPU % is summed over the process tree (so it can exceed 100 on several cores); RSS is
    summed too.  Disk and network byte counts are system-wide deltas between ``__enter__``
    and ``__exit__`` (per-process network counters do not exist), ``None`` where psutil
    cannot read them (containers, some platforms).
    """

    CHILD_RESCAN_S = 5.0

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self._root = psutil.Process()
        # Keep Process objects between ticks: cpu_percent() measures since the previous
        # call on the *same* object, so a fresh object would always report 0.
        self._procs: dict[int, psutil.Process] = {}
        self._samples: list[tuple[float, float, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._last_scan = 0.0
        self._disk0: Any = None
        self._net0: Any = None
        self._disk1: Any = None
        self._net1: Any = None

    def __enter__(self) -> ResourceSampler:
        self._t0 = time.monotonic()
        self._disk0 = _safe_counters(psutil.disk_io_counters)
        self._net0 = _safe_counters(psutil.net_io_counters)
        self._sample(record=False, rescan=True)  # prime cpu_percent baselines
        self._thread = threading.Thread(target=self._loop, name="ndcl-resources", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5 * self.interval + 1)
        # A last sample only if the thread took none lately: cpu_percent over a few
        # milliseconds is noise (usually 0.0) and would drag the average down.
        last = self._samples[-1][0] if self._samples else None
        if last is None or time.monotonic() - self._t0 - last > self.interval / 2:
            self._sample(record=True)
        self._disk1 = _safe_counters(psutil.disk_io_counters)
        self._net1 = _safe_counters(psutil.net_io_counters)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample(record=True)

    def _sample(self, record: bool, rescan: bool = False) -> None:
        # Listing children scans all of /proc, and every read releases the GIL; while the
        # pipeline keeps the GIL busy each re-acquire waits ~5 ms, so one scan can take a
        # second.  Hence the tree is re-listed only every CHILD_RESCAN_S, not every tick.
        now = time.monotonic()
        if rescan or now - self._last_scan >= self.CHILD_RESCAN_S:
            try:
                tree = [self._root, *self._root.children(recursive=True)]
            except psutil.Error:
                tree = list(self._procs.values()) or [self._root]
            self._last_scan = now
        else:
            tree = list(self._procs.values()) or [self._root]
        cpu, rss, alive = 0.0, 0, {}
        for proc in tree:
            proc = self._procs.get(proc.pid, proc)
            try:
                with proc.oneshot():
                    cpu += proc.cpu_percent(None)
                    rss += proc.memory_info().rss
            except psutil.Error:  # exited between listing and reading
                continue
            alive[proc.pid] = proc
        self._procs = alive
        if record:
            self._samples.append((round(time.monotonic() - self._t0, 3), cpu, rss))

    def result(self) -> dict[str, Any]:
        """Summary matching the ``ResourceMetric`` columns (``samples_json`` as a JSON text)."""
        cpus = [s[1] for s in self._samples]
        rsses = [s[2] for s in self._samples]
        return {
            "cpu_percent_avg": round(sum(cpus) / len(cpus), 2) if cpus else None,
            "cpu_percent_peak": max(cpus) if cpus else None,
            "rss_bytes_avg": int(sum(rsses) / len(rsses)) if rsses else None,
            "rss_bytes_peak": max(rsses) if rsses else None,
            "disk_read_bytes": _delta(self._disk0, self._disk1, "read_bytes"),
            "disk_write_bytes": _delta(self._disk0, self._disk1, "write_bytes"),
            "net_sent_bytes": _delta(self._net0, self._net1, "bytes_sent"),
            "net_recv_bytes": _delta(self._net0, self._net1, "bytes_recv"),
            "samples_json": json.dumps(
                [{"t": t, "cpu_percent": c, "rss_bytes": r} for t, c, r in self._samples]),
        }


def _safe_counters(fn: Any) -> Any:
    try:
        return fn()
    except (OSError, RuntimeError, psutil.Error):
        return None


def _delta(before: Any, after: Any, field: str) -> int | None:
    if before is None or after is None:
        return None
    return max(0, int(getattr(after, field)) - int(getattr(before, field)))
