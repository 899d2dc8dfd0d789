"""Honest times (issue 15, ``beam_pipeline.timeline``): ``wall_seconds`` is what the user
waited, cut into named parts that add up to it. The program's own times:
``tests/end_to_end/test_timing.py``."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from beam_pipeline.timeline import Timeline, process_started_at, time_section


def test_parts_are_consecutive_and_add_up_to_the_wall() -> None:
    timeline = Timeline(started_at=100.0)
    timeline.mark("start_up", now=101.5)
    timeline.mark("prepare", now=102.0)
    timeline.mark("run", now=110.0)
    timeline.mark("run", now=111.0)  # a repeated part adds up
    timeline.mark("late", now=109.0)  # a clock going back counts 0, never negative
    assert timeline.parts() == {"start_up": 1.5, "prepare": 0.5, "run": 9.0, "late": 0.0}
    assert timeline.elapsed(now=111.0) == 11.0


def test_time_section_reports_overhead_outside_stages() -> None:
    now = time.time()
    timeline = Timeline(started_at=now - 10)
    timeline.mark("start_up", now=now - 9)
    timeline.mark("run", now=now - 1)
    section = time_section(timeline, {"read": 3.0, "write": 2.0})
    assert section["runner_overhead_seconds"] == 3.0
    parts = section["time_parts"]
    assert abs(sum(parts.values()) - section["wall_seconds"]) < 0.01
    # Stage times summed over parallel workers can exceed the run: overhead 0, not negative.
    assert time_section(Timeline(started_at=now - 1), {"read": 50.0})[
        "runner_overhead_seconds"] == 0.0


def test_process_start_is_before_now() -> None:
    assert process_started_at() <= time.time()


def test_process_start_is_within_a_tick_or_two_of_a_child_starting(tmp_path: Path) -> None:
    """A child process reports when it started; the parent brackets the start. psutil's
    create_time was up to a second early here (whole-second boot time)."""
    script = ("import time, sys; from beam_pipeline.timeline import process_started_at; "
              "print(process_started_at())")
    before = time.time()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).parents[2])
    started = float(done.stdout)
    assert before - 0.02 <= started <= time.time()
