"""Progress of a running job (``beam_pipeline.progress``): the pure figures and line, and the
reporter on a terminal (rich) and off one (log lines). The ``ndcl`` program's progress lines:
``tests/end_to_end/test_progress_lines.py``."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import time

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline.progress import (
    Figures,
    ProgressReporter,
    blind_line,
    estimate_total,
    figures,
    format_duration,
    live_counts_expected,
    log_stage_counts,
    progress_line,
)
from tests.conftest import REPO
from transforms.progress import LIVE, RELAY_ENV, ReadSnapshot

LINE = re.compile(r"read ([\d,]+) of (~?)([\d,]+|\?) documents")


# ------------------------------------------------------------------------------ pure figures


def test_format_duration() -> None:
    assert format_duration(0) == "0s"
    assert format_duration(7.4) == "7s"
    assert format_duration(59.6) == "1m00s"
    assert format_duration(125) == "2m05s"
    assert format_duration(3600 + 125) == "1h02m"


def test_estimate_total_from_the_share_of_bytes() -> None:
    assert estimate_total(0, 0, 1000) is None
    assert estimate_total(100, 0, 1000) is None
    assert estimate_total(100, 250, 1000) == 400
    assert estimate_total(100, 1000, 1000) == 100
    assert estimate_total(100, 1200, 1000) == 100  # never below what was read
    assert estimate_total(100, 100, 0) is None


def test_figures_rate_and_eta() -> None:
    snap = ReadSnapshot(records=600, bytes=300, first_read_at=100.0, first_records=100,
                        last_read_at=109.0, stage="compute_features", files_done=0)
    fig = figures(snap, files_total=1, bytes_total=1000, now=110.0, submitted_at=95.0)
    assert fig.total == 2000 and not fig.exact
    assert fig.rate == pytest.approx(50.0)  # 500 records in the 10 s after the first batch
    assert fig.eta_s == pytest.approx(28.0)  # 1,400 left at 50/s
    assert fig.elapsed_s == pytest.approx(15.0)
    assert progress_line(fig) == ("read 600 of ~2,000 documents (30%), 50 docs/s, ETA 28s, "
                                  "stage compute_features, elapsed 15s")


def test_figures_once_every_file_is_read() -> None:
    snap = ReadSnapshot(records=1308, bytes=900, first_read_at=100.0, first_records=108,
                        last_read_at=102.0, stage="lsh", files_done=2)
    fig = figures(snap, files_total=2, bytes_total=1000, now=160.0, submitted_at=99.0)
    assert fig.exact and fig.total == 1308 and fig.eta_s is None
    assert fig.rate == pytest.approx(600.0)  # up to the last batch, not to now
    assert progress_line(fig) == ("read 1,308 of 1,308 documents (100%), 600 docs/s, "
                                  "read done, stage lsh, elapsed 1m01s")


def test_no_rate_from_a_single_batch() -> None:
    snap = ReadSnapshot(records=100, bytes=100, first_read_at=100.0, first_records=100,
                        last_read_at=100.0, stage="read", files_done=0)
    fig = figures(snap, files_total=1, bytes_total=1000, now=105.0, submitted_at=99.0)
    assert fig.rate is None and fig.eta_s is None and fig.total == 1000
    assert progress_line(fig) == "read 100 of ~1,000 documents (10%), stage read, elapsed 6s"


def test_line_before_anything_is_read() -> None:
    fig = Figures(records=0, total=None, exact=False, rate=None, eta_s=None, stage=None,
                  elapsed_s=3)
    assert progress_line(fig) == "read 0 of ~? documents, stage starting, elapsed 3s"
    assert blind_line(75) == "running for 1m15s (no live counts on this runner)"


@pytest.mark.parametrize(("argv", "live"), [
    ([], True),
    (["--direct_num_workers=2", "--direct_running_mode=multi_threading"], True),
    # Worker processes on this machine relay their counts (transforms.progress).
    (["--direct_num_workers=2", "--direct_running_mode=multi_processing"], True),
    (["--runner=PrismRunner", "--environment_type=LOOPBACK"], True),
    (["--runner=FlinkRunner", "--environment_type=EXTERNAL"], False),
    (["--runner=DataflowRunner"], False),
])
def test_live_counts_expected(argv: list[str], live: bool) -> None:
    assert live_counts_expected(PipelineOptions(argv)) is live


def test_stage_counts_in_the_graph_order_when_workers_are_elsewhere(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    LIVE.reset()  # no stage started in this process: the canonical order of the graph
    summary = {"workflow": "cl_nd", "read": 10, "rejected": 1, "kept": 7, "duplicates": 2,
               "duplicates_exact": 2, "cluster": {"documents": 9},
               "stage_seconds": {"exact": 0.01, "embed": 0.5, "read": 0.2, "zeta": 0.0}}
    log_stage_counts(summary)
    assert [r.getMessage() for r in caplog.records] == [
        "stage read in all: 10 records read, 1 rejected, 0.2 s of processing",
        "stage embed in all: 9 kept documents clustered, 0.5 s of processing",
        "stage exact in all: 2 exact duplicates, 0.0 s of processing",
        "stage zeta in all: 0.0 s of processing",
    ]


# ------------------------------------------------------------------------------ the reporter


def _feed(steps: int, per_step: int, nbytes: int) -> None:
    for step in range(steps):
        LIVE.stage_started("read")
        LIVE.add_read(per_step, nbytes, file_done=step == steps - 1)
        time.sleep(0.05)


def test_reporter_logs_rising_counts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with ProgressReporter(files_total=1, bytes_total=1000, live_expected=True,
                          interval_s=0.01, terminal=False):
        _feed(steps=10, per_step=100, nbytes=100)
    lines = [r.getMessage() for r in caplog.records if r.name == "ndcl.progress"]
    counts = [int(m.group(1).replace(",", "")) for m in map(LINE.search, lines) if m]
    assert counts == sorted(counts) and counts[-1] == 1000
    assert any(0 < c < 1000 for c in counts), lines
    assert lines[-1].startswith("read 1,000 of 1,000 documents (100%)")
    assert any("ETA" in line and "of ~1,000" in line for line in lines), lines


def test_reporter_says_once_when_no_counts_reach_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with ProgressReporter(files_total=1, bytes_total=1000, live_expected=False,
                          interval_s=0.01, terminal=False):
        time.sleep(0.1)
    lines = [r.getMessage() for r in caplog.records if r.name == "ndcl.progress"]
    assert sum("no live counts reach ndcl" in line for line in lines) == 1
    assert all(line.startswith("running for") for line in lines[1:]) and len(lines) > 2


def test_reporter_on_a_terminal_draws_a_rich_line(caplog: pytest.LogCaptureFixture) -> None:
    from rich.console import Console

    caplog.set_level(logging.INFO)
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=160)
    with ProgressReporter(files_total=1, bytes_total=1000, live_expected=True,
                          terminal=True, console=console):
        _feed(steps=10, per_step=100, nbytes=100)
    drawn = screen.getvalue()
    assert "read 1,000 of 1,000 documents (100%)" in drawn
    assert "━" in drawn  # the bar
    assert not [r for r in caplog.records if r.name == "ndcl.progress"]  # no log lines


def test_reporter_relays_the_counts_and_lines_of_worker_processes(
        caplog: pytest.LogCaptureFixture) -> None:
    """Worker processes started during the run (they inherit the relay folder's name) add to
    the counts, and their stage-end lines are logged by the driver, before its last line; the
    folder is removed and the variable unset afterwards."""
    caplog.set_level(logging.INFO)
    code = ("from transforms.progress import LIVE, relay_line\n"
            "LIVE.stage_started('read'); LIVE.add_read(600, 600, file_done=True)\n"
            "relay_line('stage read ended: 600 documents read, 0 rejected')\n")
    with ProgressReporter(files_total=1, bytes_total=1000, live_expected=True,
                          interval_s=0.01, terminal=False):
        folder = os.environ[RELAY_ENV]
        subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)
        LIVE.add_read(400, 400)  # this process's own counts
    lines = [r.getMessage() for r in caplog.records if r.name == "ndcl.progress"]
    assert lines.count("stage read ended: 600 documents read, 0 rejected") == 1
    assert lines[-1].startswith("read 1,000 of 1,000 documents (100%)"), lines
    assert lines.index("stage read ended: 600 documents read, 0 rejected") < len(lines) - 1
    assert RELAY_ENV not in os.environ and not os.path.exists(folder)


def test_reporter_runs_without_a_relay_when_no_folder_can_be_made(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**_kwargs: object) -> str:
        raise PermissionError("read-only")

    monkeypatch.setattr("beam_pipeline.progress.tempfile.mkdtemp", refuse)
    caplog.set_level(logging.INFO)
    with ProgressReporter(files_total=1, bytes_total=1000, live_expected=True,
                          interval_s=0.01, terminal=False):
        _feed(steps=2, per_step=500, nbytes=500)
    lines = [r.getMessage() for r in caplog.records if r.name == "ndcl.progress"]
    assert any("cannot make a relay folder (read-only)" in line for line in lines)
    assert lines[-1].startswith("read 1,000 of 1,000 documents (100%)")
    assert RELAY_ENV not in os.environ
