"""The portable runner end to end against Beam's own Python job service: byte-identical outputs
to the direct runner."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from beam_pipeline.cli import main
from tests.conftest import beam_args
from tests.fixtures import planted_records, write_corpus
from tests.progress_checks import check_demo_dedup_progress, run_demo_dedup


@pytest.fixture(autouse=True)
def no_flink_jar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runner flags must not depend on whether ``make flink`` ran on this machine."""
    monkeypatch.setenv("NDCL_FLINK_DIR", str(tmp_path / "no-flink"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def job_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Beam's own Python job service in a subprocess; yields its ``localhost:PORT``."""
    port = free_port()
    log = tmp_path_factory.mktemp("job-service") / "job_service.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main",
             "--port", str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("localhost", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"job service did not start: {log.read_text()[-2000:]}")
                time.sleep(0.2)
        yield f"localhost:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.suffix in (".parquet", ".jsonl")}


TIMING_KEYS = ("stage_seconds", "stage_cpu_seconds", "wall_seconds", "time_parts",
               "runner_overhead_seconds")


def _counts(out: Path) -> dict[str, object]:
    summary = json.loads((out / "summary.json").read_text())
    # Timings and the per-run id differ between any two runs.
    return {k: v for k, v in summary.items() if k not in TIMING_KEYS}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_corpus(tmp_path_factory.mktemp("portable"), planted_records(seed=5), files=2)


def test_portable_dedup_equals_direct(job_service: str, corpus: list[Path],
                                      tmp_path: Path) -> None:
    portable = beam_args("--runner", "portable", "--job-endpoint", job_service)
    inputs = ["--input", *map(str, corpus)]
    assert main(["-q", "dedup", *inputs, "--output", str(tmp_path / "direct")]) == 0
    # The runner flags are not wired into the CLI yet: their Beam translation passes through.
    assert main(["-q", "dedup", *inputs, "--output", str(tmp_path / "portable"),
                 *portable]) == 0
    direct_files, portable_files = _files(tmp_path / "direct"), _files(tmp_path / "portable")
    assert any(name.startswith("kept/") for name in direct_files)
    assert any(name.startswith("duplicates/") for name in direct_files)
    assert portable_files == direct_files  # byte for byte
    assert _counts(tmp_path / "portable") == _counts(tmp_path / "direct")
    assert _counts(tmp_path / "direct")["duplicates"] > 0
    # Metrics reach the driver through the job service too.
    summary = json.loads((tmp_path / "portable" / "summary.json").read_text())
    assert summary["stage_seconds"]


@pytest.mark.slow
def test_portable_cl_nd_equals_direct(job_service: str, corpus: list[Path],
                                      tmp_path: Path) -> None:
    """CL→ND on the portable runner: RunInference, side inputs and the cluster-scoped ND."""
    run = ["-q", "run", "--workflow", "cl_nd", "--input", *map(str, corpus),
           "--kmeans-backend", "local", "--k1", "4", "--k2", "2"]
    assert main([*run, "--output", str(tmp_path / "direct")]) == 0
    assert main([*run, "--output", str(tmp_path / "portable"), "--runner=PortableRunner",
                 f"--job_endpoint={job_service}", "--environment_type=LOOPBACK"]) == 0
    assert _files(tmp_path / "portable") == _files(tmp_path / "direct")
    direct, portable = _counts(tmp_path / "direct"), _counts(tmp_path / "portable")
    for summary in (direct, portable):
        summary["cluster"] = {k: v for k, v in summary["cluster"].items()  # type: ignore[union-attr]
                              if k not in ("level_1", "level_2")}  # fit timings
    assert portable == direct


def test_portable_loopback_shows_progress(job_service: str, tmp_path: Path) -> None:
    """Through the ``ndcl`` program against a job service in another process: the LOOPBACK
    workers run in ``ndcl``, so its live counts and every stage's ``ended`` line appear as on
    the direct runner."""
    done = run_demo_dedup(tmp_path, "--runner", "portable", "--job-endpoint", job_service)
    assert done.returncode == 0, done.stderr[-3000:]
    check_demo_dedup_progress(done.stderr)
