"""The CLI records every run in the benchmark database; `ndcl runs` lists them and
`ndcl rerun` repeats a recorded `ndcl run` with the other ordering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beam_pipeline.cli import GC_YOUNG_THRESHOLD, main
from beam_pipeline.db import get_run, list_runs
from tests.conftest import DEMO_CORPUS

pytestmark = pytest.mark.slow


def test_run_is_recorded_listed_and_rerun_with_the_other_ordering(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    out = tmp_path / "out"
    assert main(["-q", "--db-url", url, "run", "--workflow", "nd_cl", "--input", str(DEMO_CORPUS),
                 "--output", str(out), "--kmeans-backend", "local", "--k1", "3",
                 "--k2", "2"]) == 0
    assert "recorded as run 1" in capsys.readouterr().out
    run = get_run(url, 1)
    assert run is not None and run["workflow"] == "nd_cl" and run["docs_read"] == 1308
    assert run["duplicates"] == 277 and run["argv"][0] == "run"
    assert main(["--db-url", url, "runs"]) == 0
    assert "nd_cl" in capsys.readouterr().out
    assert main(["--db-url", url, "rerun", "1", "--print-only"]) == 0
    printed = capsys.readouterr().out
    assert "--workflow cl_nd" in printed and f"--output {out}-cl_nd" in printed
    assert "--k1 3" in printed
    assert main(["--db-url", url, "rerun", "1", "--template-path", "gs://b/t/ndcl.json",
                 "--image", "gcr.io/p/ndcl:1"]) == 0
    launch = capsys.readouterr().out
    assert "gcloud dataflow flex-template run" in launch and "workflow=cl_nd" in launch
    assert "k1=3" in launch
    assert main(["-q", "--db-url", url, "rerun", "1"]) == 0
    rows = list_runs(url)
    assert [r["workflow"] for r in rows] == ["cl_nd", "nd_cl"]
    summary = json.loads((Path(f"{out}-cl_nd") / "summary.json").read_text())
    assert summary["workflow"] == "cl_nd" and summary["cluster"]["k1"] == 3


def test_unreachable_database_does_not_lose_the_run(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql+pg8000://ndcl:secret@127.0.0.1:1/ndcl"
    out = tmp_path / "out"
    assert main(["-q", "--db-url", url, "dedup", "--input", str(DEMO_CORPUS),
                 "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "NOT recorded" in err and "secret" not in err
    record = json.loads((out / "run-record.json").read_text())
    assert "secret" not in json.dumps(record)
    assert (out / "summary.json").exists()


def test_rerun_of_a_dedup_only_run_is_refused(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    assert main(["-q", "--db-url", url, "dedup", "--input", str(DEMO_CORPUS), "--output",
                 str(tmp_path / "out")]) == 0
    assert main(["--db-url", url, "rerun", "1"]) == 2
    assert "not `ndcl run`" in capsys.readouterr().err


def test_runs_on_an_unreachable_database_is_one_clear_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql+psycopg://ndcl:hunter2secret@127.0.0.1:1/none"
    assert main(["--db-url", url, "runs"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ndcl: cannot read the benchmark database") and len(
        err.strip().splitlines()) == 1
    assert "hunter2secret" not in err and "***" in err


def test_only_the_program_freezes_the_garbage_collector(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """``ndcl`` (argv from the command line) freezes after its imports and before its exit;
    and raises the young generation's threshold; a call with argv (tests, ``ndcl rerun``)
    leaves the collector alone."""
    import gc
    import sys

    frozen: list[int] = []
    thresholds: list[tuple[int, ...]] = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(1))
    monkeypatch.setattr(gc, "set_threshold", lambda *t: thresholds.append(t))
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    assert main(["runs", "--db-url", db]) == 0
    assert frozen == [] and thresholds == []
    monkeypatch.setattr(sys, "argv", ["ndcl", "runs", "--db-url", db])
    assert main() == 0
    assert frozen == [1, 1]
    assert thresholds == [(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])]
