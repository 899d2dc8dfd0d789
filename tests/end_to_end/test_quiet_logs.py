"""An ordinary CPU run logs NDCL's lines, not the libraries' noise (issue 15): no JAX probe of
a TPU it does not have, no RunInference "Resource module is not available" per batch, no
"No module named build" in a Dataflow dry run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.digests import DEMO_CORPUS, REPO, SMALL_K

NOISE = ("Unable to initialize backend", "Resource module is not available")


def test_cpu_run_has_no_library_noise(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "beam_pipeline.cli", "--db-url", f"sqlite:///{tmp_path}/r.db",
         "run", "--workflow", "nd_cl", *SMALL_K, "--input", str(DEMO_CORPUS),
         "--output", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ndcl" in proc.stderr  # NDCL's own log lines are still there
    for noise in NOISE:
        assert noise not in proc.stderr, noise


def test_dataflow_dry_run_packages_without_missing_modules(tmp_path: Path) -> None:
    """Beam's stager builds this project's sdist with ``python -m build`` for the workers: the
    module is a dependency, so a dry run logs no "No module named build" (issue 15)."""
    proc = subprocess.run(
        [sys.executable, "-m", "beam_pipeline.cli", "--db-url", f"sqlite:///{tmp_path}/r.db",
         "dedup", "--runner", "dataflow", "--project", "ndcl-test", "--region", "us-central1",
         "--temp-location", "gs://ndcl-test/tmp", "--dry-run", "--input", str(DEMO_CORPUS),
         "--output", "gs://ndcl-test/out"],
        capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "workflow.tar.gz" in proc.stdout + proc.stderr  # the sdist was staged
    assert "No module named build" not in proc.stderr
