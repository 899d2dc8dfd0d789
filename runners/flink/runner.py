"""Beam's ``FlinkRunner`` with a job server that lives as long as the job.

Beam's ``FlinkRunner`` starts a job server JVM per run (``StopOnExitJobServer``) and stops it
only when the Python process exits. A process that runs several jobs (the Python API, a test
session, a notebook) kept one idle JVM per finished job, 1.7–2.7 GiB of RSS each (seen in
``make test``). :class:`JobScopedFlinkRunner` records the servers it starts, and the driver
calls its ``stop_job_servers`` once it has read the job's metrics (they come from the job
server, so it must outlive the job by that much).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.flink_runner import FlinkRunner


class JobScopedFlinkRunner(FlinkRunner):
    """``FlinkRunner`` that can stop the job servers it started."""

    def __init__(self) -> None:
        super().__init__()
        self.job_servers: list[Any] = []

    def default_job_server(self, options: PipelineOptions) -> Any:
        server = super().default_job_server(options)
        self.job_servers.append(server)
        return server


    def stop_job_servers(self) -> threading.Thread | None:
        """Stop the job servers this runner started, in a thread (returned; None when there
        were none): Beam's stop waits a second after its SIGINT before it looks again, which
        the summary and the commit need not wait for. The thread is not a daemon, so the
        process still waits for the JVMs to end before it exits. Beam logs "Really destroying
        service" at WARNING for each: an expected stop here, so that line is not shown."""
        servers, self.job_servers = self.job_servers, []
        if not servers:
            return None
        thread = threading.Thread(target=_stop_quietly, args=(servers,),
                                  name="StopFlinkJobServers")
        thread.start()
        return thread


def _stop_quietly(servers: list[Any]) -> None:
    beam_log = logging.getLogger("apache_beam.utils.subprocess_server")
    level = beam_log.level
    beam_log.setLevel(logging.ERROR)
    try:
        for server in servers:
            server.stop()
    finally:
        beam_log.setLevel(level)
