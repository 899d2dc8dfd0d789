"""The live counts and the relay folder through which worker processes reach the driver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import transforms.progress as progress
from tests.conftest import REPO
from transforms.progress import (
    RELAY_ENV,
    LiveCounts,
    ReadSnapshot,
    RelayLines,
    merge_snapshots,
    read_relay_counts,
    relay_line,
)


def test_counts_without_a_relay_stay_in_the_process(tmp_path: Path) -> None:
    live = LiveCounts()
    live.add_read(10, 100)
    assert live.snapshot().records == 10
    assert list(tmp_path.iterdir()) == []
    assert relay_line("stage x ended: 1") is False  # this test process has no relay


def test_counts_with_a_relay_are_written_for_the_driver(tmp_path: Path) -> None:
    live = LiveCounts(str(tmp_path))
    live.stage_started("read")
    live.add_read(10, 100)
    live.add_read(5, 50, file_done=True)
    written = json.loads((tmp_path / f"live-{os.getpid()}.json").read_text())
    assert written["records"] == 15 and written["bytes"] == 150 and written["files_done"] == 1
    assert written["stage"] == "read" and written["first_records"] == 10
    assert [p.name for p in tmp_path.iterdir()] == [f"live-{os.getpid()}.json"]  # no .part
    assert read_relay_counts(tmp_path, skip_pid=os.getpid()) == []
    assert read_relay_counts(tmp_path, skip_pid=-1) == [written]


def test_a_relay_removed_under_a_worker_stops_its_writes(tmp_path: Path) -> None:
    live = LiveCounts(str(tmp_path / "gone"))
    live.add_read(1, 1)  # no folder: the run has ended; counting goes on
    assert live.relay is None and live.snapshot().records == 1


def test_merge_sums_counts_and_takes_the_latest_stage() -> None:
    own = ReadSnapshot(0, 0, None, 0, None, None, 0)
    workers = [
        {"records": 10, "bytes": 100, "first_read_at": 5.0, "first_records": 10,
         "last_read_at": 6.0, "stage": "lsh", "stage_at": 7.0, "files_done": 1},
        {"records": 20, "bytes": 200, "first_read_at": 4.0, "first_records": 20,
         "last_read_at": 9.0, "stage": "read", "stage_at": 4.0, "files_done": 0},
    ]
    merged = merge_snapshots(own, workers)
    assert merged == ReadSnapshot(30, 300, 4.0, 20, 9.0, "lsh", 1)
    assert merge_snapshots(own, []) == own


def test_relay_lines_returns_complete_lines_once(tmp_path: Path) -> None:
    lines = RelayLines(tmp_path)
    assert lines.new_lines() == []
    (tmp_path / "lines-1.log").write_text("1.0 stage a ended: 1\n3.0 stage b ")
    assert lines.new_lines() == ["stage a ended: 1"]
    with open(tmp_path / "lines-1.log", "a") as out:
        out.write("ended: 2\n")
    (tmp_path / "lines-2.log").write_text("2.0 stage c ended: 3\n")
    # Two workers' lines found in one look come in the order they were written.
    assert lines.new_lines() == ["stage c ended: 3", "stage b ended: 2"]
    assert lines.new_lines() == []


def test_a_worker_process_relays_its_counts_and_lines(tmp_path: Path) -> None:
    """A process started with the variable set (as the driver's worker processes are) writes
    to the folder; its logging is not used."""
    code = ("from transforms.progress import LIVE, relay_line\n"
            "LIVE.add_read(7, 70)\n"
            "assert relay_line('stage read ended: 7 documents read')\n")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60,
                   env={**os.environ, RELAY_ENV: str(tmp_path)})
    counts = read_relay_counts(tmp_path, skip_pid=os.getpid())
    assert [c["records"] for c in counts] == [7]
    assert RelayLines(tmp_path).new_lines() == ["stage read ended: 7 documents read"]
    assert progress.LIVE.relay is None  # this process's own counts never go to a folder
