"""Progress of the ``ndcl`` program on the demo corpus with standard error not a terminal,
with and without ``-q``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import DEMO_CORPUS, REPO

LINE = re.compile(r"read ([\d,]+) of (~?)([\d,]+|\?) documents")


def _ndcl(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NDCL_PROGRESS_INTERVAL": "0.05"}
    return subprocess.run(
        [sys.executable, "-m", "beam_pipeline.cli", *flags, "dedup", "--input",
         str(DEMO_CORPUS), "--output", str(tmp_path / "out"), "--batch-size", "100"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_cli_logs_progress_lines_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    done = _ndcl(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if "ndcl.progress:" in line]
    counts = [int(m.group(1).replace(",", "")) for m in map(LINE.search, lines) if m]
    assert len(counts) >= 2 and counts == sorted(counts), lines
    assert counts[-1] == 1308
    assert any("read 1,308 of 1,308 documents (100%)" in line for line in lines)
    # Every stage logs its count when it ends (in the order the stages end, before the job's
    # end), then its count and time once the job has ended.
    ended = [line.split("ndcl.progress:", 1)[1].strip() for line in lines if " ended: " in line]
    stages = [line.split()[1] for line in ended]
    assert stages[-1] == "write_outputs", ended
    assert {"read", "compute_features", "exact", "lsh", "verify", "components", "resolve"} \
        == set(stages[:-1]), ended
    # Stages a shuffle separates end in the graph's order (the read and the features are one
    # fused step: either may log first).
    assert max(stages.index("read"), stages.index("compute_features")) < stages.index("lsh") \
        < stages.index("verify") < stages.index("components") < stages.index("resolve"), ended
    assert "stage read ended: 1,308 documents read, 0 rejected" in ended
    assert "stage resolve ended: 277 documents to remove (exact and near duplicates)" in ended
    assert any(line.startswith("stage write_outputs ended: 1,031 kept,") for line in ended)
    first_total = next(i for i, line in enumerate(lines) if " in all: " in line)
    last_ended = max(i for i, line in enumerate(lines) if " ended: " in line)
    assert last_ended < first_total, lines
    totals = "\n".join(line for line in lines if " in all: " in line)
    assert "stage read in all: 1,308 records read, 0 rejected" in totals
    assert "stage write_outputs in all: 1,031 kept, 277 duplicates written" in totals


def test_cli_quiet_prints_no_progress(tmp_path: Path) -> None:
    done = _ndcl(tmp_path, "-q")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ndcl.progress" not in done.stderr and "documents (" not in done.stderr
