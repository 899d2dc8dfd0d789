"""Progress of the ``ndcl`` program on the demo corpus with standard error not a terminal,
with and without ``-q``."""

from __future__ import annotations

from pathlib import Path

from tests.progress_checks import check_demo_dedup_progress, run_demo_dedup


def test_cli_logs_progress_lines_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    done = run_demo_dedup(tmp_path, "--batch-size", "100")
    assert done.returncode == 0, done.stderr[-3000:]
    check_demo_dedup_progress(done.stderr)


def test_cli_quiet_prints_no_progress(tmp_path: Path) -> None:
    done = run_demo_dedup(tmp_path, "--batch-size", "100", before=["-q"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ndcl.progress" not in done.stderr and "documents (" not in done.stderr


def test_cli_relays_progress_from_multi_processing_workers(tmp_path: Path) -> None:
    """The direct runner's worker processes count and log through the run's relay folder, so
    the live counts and the stage-end lines are the in-process run's."""
    done = run_demo_dedup(tmp_path, "--batch-size", "100", "--direct_num_workers=2",
                          "--direct_running_mode=multi_processing")
    assert done.returncode == 0, done.stderr[-3000:]
    check_demo_dedup_progress(done.stderr)
    assert "no live counts" not in done.stderr
