"""``runners/dataflow/main.py``: the template's launcher entry runs ``ndcl run`` locally."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures import planted_records, write_corpus


@pytest.fixture(autouse=True)
def no_flink_jar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runner flags must not depend on whether ``make flink`` ran on this machine."""
    monkeypatch.setenv("NDCL_FLINK_DIR", str(tmp_path / "no-flink"))


@pytest.mark.slow
def test_template_main_runs_ndcl_run_locally(tmp_path: Path) -> None:
    """``main.py`` as the launcher would call it, on the direct runner."""
    from runners.dataflow.main import main as template_main

    corpus = write_corpus(tmp_path / "in", planted_records(seed=4), files=1)
    out = tmp_path / "out"
    assert template_main([f"--input={corpus[0]}", f"--output={out}", "--workflow=nd_cl",
                          "--num_perm=128", "--k1=3", "--k2=2", "--runner=direct"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_perm"] == 128 and summary["workflow"] == "nd_cl"
    assert summary["cluster"]["k1"] == 3 and summary["cluster"]["backend"] == "local"
