"""Progress of a running job, from the driver: a live line on a terminal, log lines elsewhere.

The first read of the input counts, per batch, the records it read and the bytes of the input
files it consumed (``transforms.progress.LIVE``, and the Beam counters ``progress_records`` /
``progress_bytes``). The driver knows the size of every input file, so the share of bytes
consumed estimates the total: ``records × total bytes / bytes consumed`` (exact once every
file is read). A reporter thread reads the counts while ``pipeline.run()`` blocks:

- on a terminal (standard error a TTY, no ``-q``), a ``rich`` progress bar with the line;
- otherwise one log line every ``NDCL_PROGRESS_INTERVAL`` seconds (default 10) on the
  ``ndcl.progress`` logger:
  ``read 650 of ~1,308 documents (50%), 1,200 docs/s, ETA 1s, stage compute_features``.

The counts reach the driver when the SDK workers run in its process (the default in-process
FnApiRunner; the LOOPBACK workers of Prism, of an embedded Flink at parallelism 1 and of a
portable job service with ``--environment-type LOOPBACK``) or in processes started from it
(an embedded Flink's LOOPBACK worker processes at parallelism > 1,
``--direct_running_mode=multi_processing``): those inherit the name of a relay folder that the
reporter makes for the run, write their counts and lines there, and the reporter adds them up
every ``RELAY_POLL_S`` (``transforms.progress``). With workers started elsewhere (Docker or
EXTERNAL workers such as a Flink cluster's worker pool, Dataflow) the reporter says so once
and shows the elapsed time only; the counts then arrive with the job's metrics at the end.
``-q`` (the ``ndcl`` loggers at WARNING) turns progress off.

Each stage logs its count when it ends, from the workers (``stage <name> ended: ...``,
``transforms.stage_end``; a worker process relays the line to the driver). When the job has
ended, :func:`log_stage_counts` logs each stage's count and processing time (summed over
workers) from the summary (``stage <name> in all: ...``): the seconds come only with the
job's metrics.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apache_beam.options.pipeline_options import (
    PipelineOptions,
    PortableOptions,
    StandardOptions,
)

from transforms.progress import (
    LIVE,
    RELAY_ENV,
    ReadSnapshot,
    RelayLines,
    merge_snapshots,
    read_relay_counts,
)

LOG = logging.getLogger("ndcl.progress")

INTERVAL_ENV = "NDCL_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 10.0
TERMINAL_REFRESH_S = 0.25
RELAY_POLL_S = 0.25  # how often the worker processes' lines are looked for
NO_LIVE_COUNTS = ("the workers of this runner run in other processes, so no live counts reach "
                  "ndcl: progress shows the elapsed time only (the counts arrive with the job's "
                  "results at the end)")
# The stages in the order a dedup graph runs them, for the end-of-job lines when the order
# they started in is not known here (workers in other processes).
STAGE_ORDER = ("read", "compute_features", "exact", "lsh", "verify", "reread", "components",
               "resolve", "embed", "cluster_fit", "write_outputs")
CLUSTER_FIRST = ("read", "embed", "cluster_fit", "scope")


# --------------------------------------------------------------------------------------------
# Pure figures and formatting
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """What a progress line says."""

    records: int  # records read so far
    total: int | None  # estimated (or, once every file is read, exact) total; None: unknown
    exact: bool  # every input file read: ``total`` is the count, not an estimate
    rate: float | None  # records per second since the first batch read (to the last batch
    #                     once every file is read); None before a second batch
    eta_s: float | None  # seconds left for the read, at ``rate``
    stage: str | None  # the last stage that started work
    elapsed_s: float  # since the job was submitted


def estimate_total(records: int, bytes_done: int, bytes_total: int) -> int | None:
    """The total number of records, extrapolated from the share of input bytes consumed."""
    if records <= 0 or bytes_done <= 0 or bytes_total <= 0:
        return None
    if bytes_done >= bytes_total:
        return records
    return max(records, round(records * bytes_total / bytes_done))


def figures(snapshot: ReadSnapshot, files_total: int, bytes_total: int, now: float,
            submitted_at: float) -> Figures:
    """The figures of ``snapshot`` at monotonic time ``now``."""
    exact = files_total > 0 and snapshot.files_done >= files_total
    total = snapshot.records if exact else estimate_total(snapshot.records, snapshot.bytes,
                                                          bytes_total)
    # The first batch was read before its time was taken: the rate counts the records after it.
    rate = None
    until = snapshot.last_read_at if exact else now
    after_first = snapshot.records - snapshot.first_records
    if (snapshot.first_read_at is not None and until is not None and after_first > 0
            and until > snapshot.first_read_at):
        rate = after_first / (until - snapshot.first_read_at)
    eta = None
    if rate and total is not None and not exact:
        eta = max(0.0, (total - snapshot.records) / rate)
    return Figures(snapshot.records, total, exact, rate, eta, snapshot.stage,
                   max(0.0, now - submitted_at))


def format_duration(seconds: float) -> str:
    """``7s``, ``2m05s``, ``1h02m``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def progress_line(fig: Figures) -> str:
    """``read 650 of ~1,308 documents (50%), 1,200 docs/s, ETA 1s, stage compute_features``."""
    if fig.total is None:
        parts = [f"read {fig.records:,} of ~? documents"]
    else:
        percent = 100 * fig.records / fig.total if fig.total else 100.0
        approx = "" if fig.exact else "~"
        parts = [f"read {fig.records:,} of {approx}{fig.total:,} documents ({percent:.0f}%)"]
    if fig.rate is not None:
        parts.append(f"{fig.rate:,.0f} docs/s")
    if fig.exact:
        parts.append("read done")
    elif fig.eta_s is not None:
        parts.append(f"ETA {format_duration(fig.eta_s)}")
    parts.append(f"stage {fig.stage or 'starting'}")
    parts.append(f"elapsed {format_duration(fig.elapsed_s)}")
    return ", ".join(parts)


def blind_line(elapsed_s: float) -> str:
    """The line for runners whose counts do not reach the driver: no numbers to show."""
    return f"running for {format_duration(elapsed_s)} (no live counts on this runner)"


def interval_seconds() -> float:
    """Seconds between log lines: ``NDCL_PROGRESS_INTERVAL``, default 10."""
    value = os.environ.get(INTERVAL_ENV)
    if not value:
        return DEFAULT_INTERVAL_S
    try:
        return max(0.05, float(value))
    except ValueError:
        LOG.warning("%s=%r is not a number of seconds; using %.0f", INTERVAL_ENV, value,
                    DEFAULT_INTERVAL_S)
        return DEFAULT_INTERVAL_S


def live_counts_expected(options: PipelineOptions) -> bool:
    """Whether the SDK workers run in this process, or in processes it starts (which relay
    their counts: ``transforms.progress``), so that their counts reach the driver."""
    runner = options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) or runner is None else type(runner).__name__
    if name in (None, "DirectRunner", "direct", "FnApiRunner"):
        return True  # in-process, threads, or multi_processing workers started from here
    environment = options.view_as(PortableOptions).environment_type
    return (environment or "").upper() == "LOOPBACK"


# --------------------------------------------------------------------------------------------
# The reporter thread
# --------------------------------------------------------------------------------------------


class ProgressReporter:
    """Reports progress while the ``with`` block runs (a thread; see the module doc).

    ``terminal`` defaults to whether standard error is a TTY; ``console`` (a ``rich``
    Console) is for tests. Nothing is shown when the ``ndcl.progress`` logger is off (``-q``).
    """

    def __init__(self, files_total: int, bytes_total: int, live_expected: bool,
                 interval_s: float | None = None, terminal: bool | None = None,
                 console: Any = None) -> None:
        self.files_total = files_total
        self.bytes_total = bytes_total
        self.live_expected = live_expected
        self.interval_s = interval_seconds() if interval_s is None else interval_s
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.console = console
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._submitted_at = time.monotonic()
        self._progress: Any = None
        self._task: Any = None
        self._handlers: list[tuple[logging.StreamHandler, Any]] = []
        self._final = True
        self._relay: Path | None = None
        self._relay_lines: RelayLines | None = None
        self._env_before: str | None = None

    def __enter__(self) -> ProgressReporter:
        if not LOG.isEnabledFor(logging.INFO):
            return self
        LIVE.reset()
        self._open_relay()
        self._submitted_at = time.monotonic()
        if not self.live_expected:
            LOG.info("%s", NO_LIVE_COUNTS)
        if self.terminal:
            self._start_terminal()
        self._thread = threading.Thread(target=self._loop, name="ndcl-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._log_relayed()
        if self._final:
            self._show()
        if self._progress is not None:
            self._progress.stop()
            self._restore_handlers()
            self._progress = None
        self._close_relay()

    def discard(self) -> None:
        """End without a last line (a template launch: the job runs later)."""
        self._final = False

    def snapshot(self) -> ReadSnapshot:
        """This process's counts and those its worker processes relayed."""
        if self._relay is None:
            return LIVE.snapshot()
        return merge_snapshots(LIVE.snapshot(), read_relay_counts(self._relay, os.getpid()))

    def current_line(self) -> str:
        snapshot = self.snapshot()
        now = time.monotonic()
        if not self.live_expected and snapshot.records == 0 and snapshot.stage is None:
            return blind_line(now - self._submitted_at)
        return progress_line(figures(snapshot, self.files_total, self.bytes_total, now,
                                     self._submitted_at))

    def _loop(self) -> None:
        wait = TERMINAL_REFRESH_S if self._progress is not None else self.interval_s
        next_show = time.monotonic() + wait
        while not self._stop.wait(min(wait, RELAY_POLL_S)):
            self._log_relayed()
            if time.monotonic() >= next_show:
                self._show()
                next_show += wait

    def _open_relay(self) -> None:
        """A folder for the worker processes this run starts (``transforms.progress``), named
        in the environment they inherit."""
        try:
            self._relay = Path(tempfile.mkdtemp(prefix="ndcl-progress-"))
        except OSError as exc:  # progress is no reason to fail a run
            LOG.warning("no live counts from worker processes: cannot make a relay folder "
                        "(%s)", exc)
            return
        self._relay_lines = RelayLines(self._relay)
        self._env_before = os.environ.get(RELAY_ENV)
        os.environ[RELAY_ENV] = str(self._relay)

    def _close_relay(self) -> None:
        if self._relay is None:
            return
        if self._env_before is None:
            os.environ.pop(RELAY_ENV, None)
        else:
            os.environ[RELAY_ENV] = self._env_before
        shutil.rmtree(self._relay, ignore_errors=True)
        self._relay = self._relay_lines = None

    def _log_relayed(self) -> None:
        if self._relay_lines is not None:
            for line in self._relay_lines.new_lines():
                LOG.info("%s", line)

    def _show(self) -> None:
        if self._progress is None:
            LOG.info("%s", self.current_line())
            return
        snapshot = self.snapshot()
        fig = figures(snapshot, self.files_total, self.bytes_total, time.monotonic(),
                      self._submitted_at)
        self._progress.update(self._task, total=fig.total, completed=fig.records,
                              line=self.current_line())

    def _start_terminal(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        console = self.console or Console(stderr=True)
        self._progress = Progress(BarColumn(bar_width=20),
                                  TextColumn("{task.fields[line]}", markup=False),
                                  console=console, redirect_stderr=True, redirect_stdout=True)
        self._task = self._progress.add_task("read", total=None, line="starting")
        self._progress.start()
        # Log lines go above the live line: point stderr handlers at rich's redirected stream.
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream in (
                    sys.__stderr__, getattr(console, "file", None)):
                self._handlers.append((handler, handler.setStream(sys.stderr)))

    def _restore_handlers(self) -> None:
        for handler, stream in self._handlers:
            handler.setStream(stream)
        self._handlers = []


# --------------------------------------------------------------------------------------------
# Stage counts at the end
# --------------------------------------------------------------------------------------------


def _stage_count(stage: str, summary: dict[str, Any]) -> str | None:
    """What ``stage`` counted, in words, from the run's summary (None: nothing to count)."""
    cluster = summary.get("cluster") or {}
    documents = summary.get("read", 0) - summary.get("rejected", 0)
    counts = {
        "read": f"{summary.get('read', 0):,} records read, {summary.get('rejected', 0):,} "
                "rejected",
        "compute_features": f"{documents:,} documents",
        "exact": f"{summary.get('duplicates_exact', 0):,} exact duplicates",
        "lsh": f"{summary.get('candidate_edges', 0):,} candidate pairs",
        "verify": f"{summary.get('edges_verified', 0):,} pairs verified, "
                  f"{summary.get('edges_rejected', 0):,} rejected",
        "components": f"{summary.get('cc_rounds', 0)} round(s)",
        "resolve": f"{summary.get('duplicates_near', 0):,} near duplicates",
        "write_outputs": f"{summary.get('kept', 0):,} kept, {summary.get('duplicates', 0):,} "
                         "duplicates written",
    }
    if cluster.get("documents") is not None:
        counts["embed"] = counts["cluster_fit"] = (f"{cluster['documents']:,} kept documents "
                                                   "clustered")
    return counts.get(stage)


def log_stage_counts(summary: dict[str, Any]) -> None:
    """One line per stage of the finished job: its count and its processing time (summed over
    workers),
    in the order the stages started when that is known here, else in the graph's order."""
    seconds_by_stage = summary.get("stage_seconds") or {}
    order = [stage for stage in LIVE.stages() if stage in seconds_by_stage]
    if not order:
        canonical = list(STAGE_ORDER)
        if summary.get("workflow") in ("cl", "cl_nd"):  # clustering runs first there
            canonical = [*CLUSTER_FIRST, *(s for s in canonical if s not in CLUSTER_FIRST)]
        rank = {stage: index for index, stage in enumerate(canonical)}
        order = sorted(seconds_by_stage, key=lambda s: (rank.get(s, len(rank)), s))
    order += sorted(set(seconds_by_stage) - set(order))
    for stage in order:
        seconds = seconds_by_stage[stage]
        count = _stage_count(stage, summary)
        LOG.info("stage %s in all: %s%.1f s of processing", stage,
                 f"{count}, " if count else "", seconds)
