"""Run a command and measure its wall time and the peak memory of its process tree.

``run_measured`` starts the command, then every ``interval`` seconds sums the
resident set size (RSS) of the process and all its descendants, because
Beam's multi-processing DirectRunner runs its SDK workers as child processes.
The peak is the largest such sum. Pages shared between processes (the Python
interpreter, copy-on-write memory) are counted once per process, so the
figure is an upper bound on the tree's physical memory; a child that starts
and ends between two samples is missed.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TypedDict

import psutil

TAIL_CHARS = 4000


class Measurement(TypedDict):
    cmd: list[str]
    returncode: int
    wall_s: float
    peak_rss_bytes: int
    peak_processes: int
    samples: int
    stdout_tail: str
    stderr_tail: str
    # Peak summed RSS per kind of process (process_kind), and CPU seconds (user + system) of
    # the tree's reaped processes plus the sampled extra processes' growth.
    peak_rss_by_kind: dict[str, int]
    cpu_s: float
    # CPU seconds per kind of process as last sampled (a process's final fraction of a sampling
    # interval is missed, so these add up to a little less than cpu_s).
    cpu_s_by_kind: dict[str, float]


# Command-line fragments that name a process's role in a run (first match wins).
PROCESS_KINDS = (
    ("beam-flink-job-server", "Flink job server JVM"),
    ("StandaloneSessionClusterEntrypoint", "Flink JobManager JVM"),
    ("TaskManagerRunner", "Flink TaskManager JVM"),
    ("worker_pool_main", "SDK worker pool"),
    ("SdkHarness", "SDK worker"),
    ("sdk_worker_main", "SDK worker"),
    ("prism", "Prism"),
    ("ray", "Ray"),
    ("raylet", "Ray"),
    ("gcs_server", "Ray"),
    ("ndcl", "ndcl"),
)


def process_kind(process: psutil.Process) -> str:
    try:
        cmdline = " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "other"
    for fragment, kind in PROCESS_KINDS:
        if fragment in cmdline:
            return kind
    return "other"


def _cpu(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0.0
    return times.user + times.system


def tree_rss(root: psutil.Process) -> tuple[int, int]:
    """Summed RSS in bytes of ``root`` and its descendants, and how many were read."""
    try:
        processes = [root, *root.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0, 0
    total = counted = 0
    for process in processes:
        try:
            total += process.memory_info().rss
            counted += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue  # it ended between listing and reading
    return total, counted


def _tail(stream: IO[bytes], chars: int = TAIL_CHARS) -> str:
    stream.seek(0)
    return stream.read().decode("utf-8", errors="replace")[-chars:]


def run_measured(
    cmd: Sequence[str],
    env: Mapping[str, str] | None = None,
    interval: float = 0.1,
    timeout: float | None = None,
    extra_pids: Sequence[int] = (),
) -> Measurement:
    """Run ``cmd`` to completion, sampling its process tree's RSS every ``interval`` s.

    ``returncode`` is the command's exit status, or -9 when it ran past
    ``timeout`` seconds and was killed with its descendants. ``extra_pids`` are processes
    outside the tree that work for it (a standalone Flink cluster's JVMs and SDK worker
    pool): they and their descendants are sampled too, for the peaks and the CPU seconds.
    """
    import resource

    extra = []
    for pid in extra_pids:
        try:
            extra.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    extra_cpu_start = {p.pid: _cpu(p) for p in extra}
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_by_kind: dict[str, int] = {}
    extra_cpu_last: dict[int, float] = {}
    cpu_last: dict[int, tuple[str, float]] = {}
    with (
        tempfile.SpooledTemporaryFile(max_size=1 << 20) as out,
        tempfile.SpooledTemporaryFile(max_size=1 << 20) as err,
    ):
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=err,
            env=dict(env) if env is not None else None,
        )
        root = psutil.Process(proc.pid)
        peak_rss = peak_processes = samples = 0
        while proc.poll() is None:
            rss, processes = tree_rss(root)
            for outside in extra:
                more, counted = tree_rss(outside)
                rss, processes = rss + more, processes + counted
            peak_rss = max(peak_rss, rss)
            peak_processes = max(peak_processes, processes)
            samples += 1
            _sample_kinds(root, extra, peak_by_kind, extra_cpu_last, cpu_last)
            if timeout is not None and time.perf_counter() - start > timeout:
                _kill_tree(root)
                proc.wait()
                break
            try:
                proc.wait(timeout=interval)
            except subprocess.TimeoutExpired:
                pass
        wall = time.perf_counter() - start
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (children_after.ru_utime - children_before.ru_utime
               + children_after.ru_stime - children_before.ru_stime)
        cpu += sum(last - extra_cpu_start.get(pid, 0.0) for pid, last in extra_cpu_last.items())
        cpu_by_kind: dict[str, float] = {}
        for pid, (kind, last) in cpu_last.items():
            cpu_by_kind[kind] = cpu_by_kind.get(kind, 0.0) + last - extra_cpu_start.get(pid, 0.0)
        # A process the tree started but never reaped (a job server JVM that ndcl stops in a
        # thread and does not wait for) is missing from the kernel's children total.
        cpu = max(cpu, sum(cpu_by_kind.values()))
        return Measurement(
            cpu_s_by_kind=dict(sorted(cpu_by_kind.items())),
            peak_rss_by_kind=dict(sorted(peak_by_kind.items())),
            cpu_s=cpu,
            cmd=list(cmd),
            returncode=proc.returncode,
            wall_s=wall,
            peak_rss_bytes=peak_rss,
            peak_processes=peak_processes,
            samples=samples,
            stdout_tail=_tail(out),
            stderr_tail=_tail(err),
        )


def _sample_kinds(root: psutil.Process, extra: list[psutil.Process],
                  peak_by_kind: dict[str, int], extra_cpu_last: dict[int, float],
                  cpu_last: dict[int, tuple[str, float]]) -> None:
    """Update the per-kind RSS peaks, the last CPU seconds seen of every process outside
    the tree (its own children are counted by the kernel when reaped), and every process's
    kind and last CPU seconds (``cpu_last``, for the split by kind)."""
    now: dict[str, int] = {}
    trees = [(root, False), *((p, True) for p in extra)]
    for top, outside in trees:
        try:
            processes = [top, *top.children(recursive=True)]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for process in processes:
            try:
                rss = process.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            kind = process_kind(process)
            now[kind] = now.get(kind, 0) + rss
            cpu = _cpu(process)
            # An ending process's command line reads empty ("other"): keep its first kind.
            known, last = cpu_last.get(process.pid, (kind, 0.0))
            cpu_last[process.pid] = (kind if known == "other" else known, max(last, cpu))
            if outside:
                extra_cpu_last[process.pid] = max(extra_cpu_last.get(process.pid, 0.0), cpu)
    for kind, rss in now.items():
        peak_by_kind[kind] = max(peak_by_kind.get(kind, 0), rss)


def _kill_tree(root: psutil.Process) -> None:
    try:
        processes = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            continue


def report(lines: list[str], results: Path) -> int:
    """Prints the report's ``lines`` and writes them to the ``results`` file; exit status 0."""
    text = "\n".join(lines) + "\n"
    print(text, end="")
    results.write_text(text)
    return 0


def median(values: Iterable[float]) -> float:
    """Median of ``values``; raises ``ValueError`` when there are none."""
    values = list(values)
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


@contextmanager
def baseline_tree(repo: Path, ref: str | None, code: Path | None, scratch: Path
                  ) -> Iterator[tuple[Path, str] | None]:
    """``(tree, description)`` of the code to compare against: the checkout ``code``, or a
    temporary ``git worktree`` of ``ref`` under ``scratch`` (removed afterwards: only that
    one), or None when neither is given."""
    if code is not None:
        yield code.resolve(), str(code.resolve())
        return
    if ref is None:
        yield None
        return
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", f"{ref}^{{commit}}"],
                            check=True, capture_output=True, text=True).stdout.strip()
    tree = scratch / "baseline-worktree"
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(tree), commit],
                   check=True, capture_output=True, text=True)
    try:
        yield tree, f"{ref} = {commit[:12]} (temporary worktree {tree})"
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)],
                       check=False, capture_output=True)
