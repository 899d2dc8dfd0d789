"""Shared by the Flink tests that run a job: why they skip, the direct runner's digests, and
the job server JVMs left running."""

from __future__ import annotations

import contextlib
import json

from runners.flink import dist
from tests.digests import DIGESTS


def _skip_reason() -> str | None:
    major = dist.java_major()
    if major is None:
        return "no `java` on PATH (the Flink job server is a Java 11+ program)"
    if major < 11:
        return f"Java {major} on PATH; the Flink job server needs Java 11+"
    if not dist.job_server_jar().is_file():
        return f"no Flink job server at {dist.job_server_jar()}: run `make flink`"
    return None


def _recorded(name: str) -> str:
    # The direct runner's digests, which tests/end_to_end/test_output_digests.py checks in
    # the same suite: equal digests here mean byte-identical kept/, duplicates/, rejected/.
    return json.loads(DIGESTS.read_text())[name]


def job_server_jvms() -> list[int]:
    """Job server JVMs that this test process started and that still run (once the thread
    that stops them after a job, ``StopFlinkJobServers``, has ended)."""
    import threading

    import psutil

    for thread in threading.enumerate():
        if thread.name == "StopFlinkJobServers":
            thread.join(timeout=30)

    pids = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if any("beam-flink-job-server" in part for part in child.cmdline()):
                pids.append(child.pid)
    return pids
