"""Fault injection points for the reliability tests and ``benchmarks/reliability.py``.

Test hooks only: nothing here does anything unless the environment variable ``NDCL_FAULTS`` is
set. Its value is a comma-separated list of ``POINT=MARKER`` pairs. Each point fires once per
marker file: the first process that reaches it creates ``MARKER`` (atomically, ``O_EXCL``) and
injects the fault; every later pass (a retried bundle, another worker, a rerun) finds the
marker and goes on normally. The marker must be on a disk that every worker sees (a local path
for the direct and portable runners, whose workers inherit the environment).

Points
    ``write_fail``
        ``WriteBatchFn`` raises :class:`InjectedFault` after it has written its part files and
        before it emits its counts: a bundle that fails after its side effects, which a
        retrying runner runs again.
    ``write_stall``
        ``WriteBatchFn`` sleeps (:data:`STALL_SECONDS`) after writing its part files, so a
        test can kill the process while the output is half written.
    ``kmeans_kill``
        The first K-Means predict kills the Ray service actor's process; Ray restarts the
        actor, which reloads the models from its model folder.
    ``kmeans_kill_for_good``
        The same without a restart: the run must fail with a clear ServiceUnavailableError.
"""

from __future__ import annotations

import os
import time

ENV = "NDCL_FAULTS"
STALL_SECONDS = 3600.0


class InjectedFault(RuntimeError):
    """A failure injected through ``NDCL_FAULTS`` (never raised otherwise)."""


def enabled() -> bool:
    """Whether ``NDCL_FAULTS`` asks for any fault (callers may then skip what would hide one)."""
    return bool(os.environ.get(ENV))


def fires(point: str) -> bool:
    """Whether ``point`` fires now: named in ``NDCL_FAULTS`` and its marker not yet there."""
    spec = os.environ.get(ENV)
    if not spec:
        return False
    for item in spec.split(","):
        name, _, marker = item.partition("=")
        if name.strip() != point or not marker.strip():
            continue
        try:
            fd = os.open(marker.strip(), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.close(fd)
        return True
    return False


def inject(stage: str) -> None:
    """Raise (``<stage>_fail``) or stall (``<stage>_stall``) when ``NDCL_FAULTS`` asks to."""
    if fires(f"{stage}_fail"):
        raise InjectedFault(f"fault injected at {stage} by {ENV}")
    if fires(f"{stage}_stall"):
        time.sleep(STALL_SECONDS)
