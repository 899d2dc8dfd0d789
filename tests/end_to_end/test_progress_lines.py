"""Progress of the ``ndcl`` program on the demo corpus with standard error not a terminal,
with and without ``-q``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import DEMO_CORPUS, REPO
from tests.progress_checks import check_demo_dedup_progress


def _ndcl(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NDCL_PROGRESS_INTERVAL": "0.05"}
    global_flags = [f for f in flags if not f.startswith("--direct")]
    beam_flags = [f for f in flags if f.startswith("--direct")]
    return subprocess.run(
        [sys.executable, "-m", "beam_pipeline.cli", *global_flags, "dedup", "--input",
         str(DEMO_CORPUS), "--output", str(tmp_path / "out"), "--batch-size", "100",
         *beam_flags],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_cli_logs_progress_lines_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    done = _ndcl(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    check_demo_dedup_progress(done.stderr)


def test_cli_quiet_prints_no_progress(tmp_path: Path) -> None:
    done = _ndcl(tmp_path, "-q")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ndcl.progress" not in done.stderr and "documents (" not in done.stderr


def test_cli_relays_progress_from_multi_processing_workers(tmp_path: Path) -> None:
    """The direct runner's worker processes count and log through the run's relay folder, so
    the live counts and the stage-end lines are the in-process run's."""
    done = _ndcl(tmp_path, "--direct_num_workers=2", "--direct_running_mode=multi_processing")
    assert done.returncode == 0, done.stderr[-3000:]
    check_demo_dedup_progress(done.stderr)
    assert "no live counts" not in done.stderr
