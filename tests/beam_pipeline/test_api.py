"""The Python API (``beam_pipeline.api``): the CLI's commands as functions that return the
summary, record the run and raise instead of exiting."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from beam_pipeline import api
from beam_pipeline.config_fields import ConfigError
from beam_pipeline.db import get_run, list_runs
from beam_pipeline.outputs import OutputError
from tests.conftest import DEMO_CORPUS


def test_importing_the_api_imports_nothing_heavy() -> None:
    import subprocess

    code = ("import sys, beam_pipeline.api; "
            "print(sorted(m for m in ('apache_beam', 'sqlalchemy', 'jax', 'ray') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_command_argv_is_the_cli_command() -> None:
    argv = api.command_argv("run", [DEMO_CORPUS], "out", {
        "workflow": "cl_nd", "threshold": 0.8, "k1": 4, "kmeans_backend": "local",
        "balanced": True, "bands": None})
    assert argv == ["run", "--input", str(DEMO_CORPUS), "--output", "out", "--workflow=cl_nd",
                    "--threshold=0.8", "--k1=4", "--kmeans-backend=local", "--balanced"]


@pytest.mark.parametrize(("call", "options", "error", "named"), [
    (api.dedup, {"treshold": 0.8}, TypeError, "'treshold'; did you mean 'threshold'?"),
    (api.dedup, {"k1": 4}, TypeError, "'k1'"),  # a clustering option given to dedup
    (api.dedup, {"balanced": "yes"}, TypeError, "'balanced'"),
    (api.dedup, {"keep": "largest"}, ValueError, "--keep"),
    (api.dedup, {"threshold": 1.5}, ConfigError, "threshold"),
    (api.dedup, {"beam_args": ["--no_such_beam_option=1"]}, ValueError,
     "--no_such_beam_option"),
    (api.run, {"workflow": "nd_nd"}, ValueError, "--workflow"),
    # The CLI's runner checks: a remote runner cannot reach a service this machine starts.
    (api.cluster, {"runner": "flink", "flink_master": "flink.example:8081"}, ValueError,
     "--kmeans-backend local"),
])
def test_a_bad_option_raises_naming_it_before_anything_runs(
        tmp_path: Path, call: object, options: dict, error: type, named: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(error, match=None) as raised:
        call(str(DEMO_CORPUS), str(out), **options)  # type: ignore[operator]
    assert named in str(raised.value)
    assert not out.exists()


def test_a_foreign_output_is_refused_as_by_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError):
        api.dedup(str(DEMO_CORPUS), str(out), db_url=f"sqlite:///{tmp_path / 'runs.db'}")
    assert (out / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_dedup_returns_the_summary_and_records_the_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    out = tmp_path / "out"
    summary = api.dedup([str(DEMO_CORPUS)], str(out), threshold=0.7, db_url=url,
                        beam_args=["--direct_num_workers=1"])
    assert summary == json.loads((out / "summary.json").read_text())
    assert (summary["read"], summary["duplicates"]) == (1308, 277)
    assert 0 < summary["wall_seconds"] < 300  # from the call, not the process's start
    (run,) = list_runs(url)
    recorded = get_run(url, run["id"])
    assert recorded is not None and recorded["duplicates"] == 277
    assert recorded["argv"] == ["dedup", "--input", str(DEMO_CORPUS), "--output", str(out),
                                "--threshold=0.7", "--direct_num_workers=1"]
