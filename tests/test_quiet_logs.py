"""An ordinary CPU run logs NDCL's lines, not the libraries' noise (issue 15): no JAX probe of
a TPU it does not have, no RunInference "Resource module is not available" per batch."""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
from pathlib import Path

from runners.kmeans.backend import connect_backend
from tests.digests import DEMO_CORPUS, REPO, SMALL_K
from transforms.cluster import BackendSpec, ClusterModelHandler, _DropNoResourceWarning

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


def test_handler_unpickled_on_a_worker_drops_only_that_warning(tmp_path: Path) -> None:
    root = logging.getLogger()
    before = list(root.filters)
    try:
        for f in [f for f in root.filters if isinstance(f, _DropNoResourceWarning)]:
            root.removeFilter(f)
        spec = BackendSpec(kind="local", model_dir=str(tmp_path), connect=connect_backend)
        pickle.loads(pickle.dumps(ClusterModelHandler(spec, "run-x")))
        pickle.loads(pickle.dumps(ClusterModelHandler(spec, "run-y")))
        (drop,) = [f for f in root.filters if isinstance(f, _DropNoResourceWarning)]
        record = logging.LogRecord("root", logging.WARNING, __file__, 1,
                                   "Resource module is not available for current platform, "
                                   "memory usage cannot be fetched.", None, None)
        other = logging.LogRecord("root", logging.WARNING, __file__, 1, "something else",
                                  None, None)
        assert not drop.filter(record) and drop.filter(other)
    finally:
        root.filters[:] = before


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
