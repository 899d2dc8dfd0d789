"""What ``ndcl dedup`` of the demo corpus logs as progress (standard error not a terminal):
shared by the direct runner's test and the runners' tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.conftest import DEMO_CORPUS, REPO

LINE = re.compile(r"read ([\d,]+) of (~?)([\d,]+|\?) documents")


def run_demo_dedup(tmp_path: Path, *flags: str, before: Sequence[str] = ()
                   ) -> subprocess.CompletedProcess[str]:
    """``ndcl [before] dedup`` of the demo corpus into ``tmp_path/out`` as a user runs it (a
    process of its own, standard error not a terminal, a progress line every 0.05 s), with
    ``flags`` after the command (a runner's, Beam's)."""
    return subprocess.run(
        [sys.executable, "-m", "beam_pipeline.cli", *before, "--db-url",
         f"sqlite:///{tmp_path / 'runs.db'}", "dedup", "--input", str(DEMO_CORPUS), "--output",
         str(tmp_path / "out"), *flags],
        cwd=REPO, env={**os.environ, "NDCL_PROGRESS_INTERVAL": "0.05"}, capture_output=True,
        text=True, timeout=300, check=False)


def check_demo_dedup_progress(stderr: str) -> None:
    """Rising live counts up to all 1,308 documents; every stage's ``ended`` line, in the
    graph's order across shuffles and before the job's end; then the ``in all`` lines."""
    lines = [line for line in stderr.splitlines() if "ndcl.progress:" in line]
    counts = [int(m.group(1).replace(",", "")) for m in map(LINE.search, lines) if m]
    assert len(counts) >= 2 and counts == sorted(counts), lines
    assert counts[-1] == 1308
    assert any("read 1,308 of 1,308 documents (100%)" in line for line in lines)
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
