"""The runners benchmark's measurement and arithmetic (``benchmarks/runners.py``,
``benchmarks/_measure.py``), without running a runner."""

from __future__ import annotations

import sys

from benchmarks._measure import run_measured
from benchmarks.runners import mark_same_bytes, ratios, wall_bound


def _row(case: str, wall: float, cpu: float, read: int = 100, digest: str = "d",
         day: str = "2026-12-05") -> dict:
    return {"case": case, "returncode": 0, "wall_s": wall, "cpu_s": cpu, "read": read,
            "docs_per_s": read / wall, "digest": digest, "measured_at": f"{day} 07:00 UTC"}


def test_wall_bound_is_fixed_cost_plus_the_added_cpu_over_the_cores() -> None:
    assert wall_bound(_row("p2", 30, 40), _row("p2-demo", 20, 24, read=1), cores=2) == 28.0
    # Less CPU than the demo run (noise) adds nothing.
    assert wall_bound(_row("p2", 21, 20), _row("p2-demo", 20, 24, read=1), cores=2) == 20.0


def test_same_bytes_compares_with_the_direct_row_of_the_same_run_only() -> None:
    rows = [_row("direct", 20, 20), _row("flink-embedded-p2", 35, 46),
            _row("flink-embedded-p1", 36, 35, digest="other"),
            _row("flink-embedded-p2-demo", 21, 24, read=1)]
    mark_same_bytes(rows)
    assert [r["same"] for r in rows] == ["baseline", "yes", "no", "n/a (other input)"]
    earlier = _row("prism", 38, 60, day="2026-12-04")  # kept from an earlier run: not marked
    lines = ratios([*rows, earlier], cores=2)
    assert not any(line.startswith("prism") for line in lines)
    assert any(line.startswith("flink-embedded-p2 wall / direct wall: 1.75") for line in lines)
    assert any("lower bound" in line and "= 32.0 s" in line for line in lines), lines


def test_cpu_by_kind_counts_a_child_that_is_never_reaped_by_its_parent() -> None:
    """The parent starts a CPU-bound child and exits without waiting for it (as ``ndcl``
    leaves its job server JVM to a thread): the kernel's children total misses the child, the
    samples do not."""
    code = ("import subprocess, sys, time\n"
            "subprocess.Popen([sys.executable, '-c', "
            "'import time\\nend = time.time() + 1.5\\nwhile time.time() < end: pass'])\n"
            "time.sleep(1.4)\n")
    measured = run_measured([sys.executable, "-c", code], interval=0.1)
    assert measured["returncode"] == 0
    assert sum(measured["cpu_s_by_kind"].values()) > 0.8, measured["cpu_s_by_kind"]
    assert measured["cpu_s"] >= sum(measured["cpu_s_by_kind"].values()) - 1e-9
