"""Honest times (issue 15) of the ``ndcl`` program: the summary's wall is the process's, its
parts cover it, and a dedup run does not import scikit-learn at start-up."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.digests import DEMO_CORPUS, REPO


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
