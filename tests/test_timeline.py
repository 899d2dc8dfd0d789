"""Honest times (issue 15): ``wall_seconds`` is what the user waited, cut into named parts
that add up to it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from beam_pipeline.timeline import Timeline, process_started_at, time_section
from tests.digests import DEMO_CORPUS, REPO


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


def test_summary_wall_is_the_process_and_parts_cover_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    began = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "beam_pipeline.cli", "-q", "--db-url",
         f"sqlite:///{tmp_path}/r.db", "dedup", "--input", str(DEMO_CORPUS), "--output",
         str(out)], capture_output=True, text=True, cwd=REPO, timeout=600)
    waited = time.time() - began
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    parts = summary["time_parts"]
    assert list(parts) == ["start_up", "prepare", "build_graph", "run", "summarise"]
    assert sum(parts.values()) >= 0.9 * summary["wall_seconds"]
    # The wall counts the interpreter's start and imports (only the recording comes after).
    assert 0.7 * waited <= summary["wall_seconds"] <= waited
    assert parts["start_up"] > 0.2  # Python, Beam and NDCL imports: never free
    assert summary["runner_overhead_seconds"] <= parts["run"]
    # The summary table shows the same parts, the stages and the overhead inside the run.
    for line in ("start up s", "build graph s", "run s", "runner overhead s", "summarise s"):
        assert line in proc.stdout, proc.stdout


def test_a_dedup_run_does_not_import_scikit_learn_at_start_up() -> None:
    """scikit-learn (with scipy.stats and pandas) costs about 0.9 s to import; only clustering
    needs it, so the job's modules import it on first use (transforms.embed.stop_words)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, beam_pipeline.cli, beam_pipeline.run; "
         "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'jax', 'ray')))"],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_time_parts_are_recorded_beside_the_stages_and_kept_out_of_the_stage_list() -> None:
    from beam_pipeline.report_plots import PARTS_AFTER, PARTS_BEFORE, _ordered_stages
    from beam_pipeline.run_record import build_record

    summary = {"read": 3, "kept": 3, "duplicates": 0, "rejected": 0, "wall_seconds": 5.0,
               "stage_seconds": {"read": 0.5, "write_outputs": 0.5},
               "time_parts": {"start_up": 2.0, "prepare": 0.1, "build_graph": 0.8, "run": 2.0,
                              "summarise": 0.1},
               "runner_overhead_seconds": 1.0}
    record = build_record(summary, command="dedup", argv=["dedup"], input_patterns=["in"],
                          output="out", runner="direct", workers=1, resources=None,
                          input_bytes=1)
    stages = {row["stage"]: row["seconds"] for row in record["stage_timings"]}
    assert stages == {"read": 0.5, "write_outputs": 0.5, "(start up)": 2.0, "(prepare)": 0.1,
                      "(build graph)": 0.8, "(summarise)": 0.1, "(runner overhead)": 1.0}
    # Every recorded part has its place in the report's whole-run bar; they add up to the wall.
    assert set(stages) - {"read", "write_outputs"} == set(PARTS_BEFORE) | set(PARTS_AFTER)
    assert sum(stages.values()) == summary["wall_seconds"]

    class Run:
        def __init__(self, stages: dict[str, float]) -> None:
            self.stages = stages

    assert _ordered_stages([Run(stages)]) == ["read", "write_outputs"]
