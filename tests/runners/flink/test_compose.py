"""The Flink compose files and scripts of ``runners/flink/`` (which cannot be started here: no
Docker daemon, no Docker Hub or Maven Central)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from runners.dataflow import template
from runners.options import DEFAULT_FLINK_VERSION
from tests.conftest import REPO, beam_args

BEAM_VERSION = template.beam_version_of_setup(REPO / "setup.py")


@pytest.fixture(autouse=True)
def no_flink_jar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runner flags must not depend on whether ``make flink`` ran on this machine."""
    monkeypatch.setenv("NDCL_FLINK_DIR", str(tmp_path / "no-flink"))


# --- Flink files -----------------------------------------------------------------------------

FLINK = REPO / "runners" / "flink"


def _resolve(value: str) -> str:
    """Compose's ``${VAR:-default}`` with the defaults."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_flink_compose_file() -> None:
    compose = yaml.safe_load((FLINK / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"jobmanager", "taskmanager", "job-server", "python-worker-pool"}
    job_server = _resolve(services["job-server"]["image"])
    assert job_server == f"apache/beam_flink{DEFAULT_FLINK_VERSION}_job_server:{BEAM_VERSION}"
    for name in ("jobmanager", "taskmanager"):
        assert _resolve(services[name]["image"]).startswith(f"flink:{DEFAULT_FLINK_VERSION}-")
    assert "8099:8099" in services["job-server"]["ports"]
    assert "8081:8081" in services["jobmanager"]["ports"]
    assert "--flink-master=jobmanager:8081" in services["job-server"]["command"]
    pool = services["python-worker-pool"]
    assert pool["command"] == ["--worker_pool"]
    # localhost:50000 (our EXTERNAL default) is the task manager's own network namespace.
    assert pool["network_mode"] == "service:taskmanager"
    artifacts = "beam-artifacts:/tmp/beam-artifact-staging"
    for name in ("job-server", "taskmanager", "python-worker-pool"):
        assert artifacts in services[name]["volumes"], name
    assert "--artifacts-dir=/tmp/beam-artifact-staging" in services["job-server"]["command"]
    data = _resolve(pool["volumes"][1])
    assert data.split(":")[0] == data.split(":")[1]  # same path inside and out
    context = (FLINK / pool["build"]["context"]).resolve()
    assert context == REPO
    worker = context / pool["build"]["dockerfile"]
    assert f"FROM apache/beam_python3.11_sdk:{BEAM_VERSION}" in worker.read_text()


def test_flink_scripts_and_readme_commands() -> None:
    for script in ("start.sh", "stop.sh"):
        path = FLINK / script
        assert os.access(path, os.X_OK), script
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    readme = (FLINK / "README.md").read_text()
    assert "--runner portable --job-endpoint localhost:8099" in readme
    assert "--environment-type EXTERNAL --environment-config localhost:50000" in readme
    assert "--runner flink --flink-master localhost:8081" in readme
    # The README's submit flags translate to the intended Beam options.
    assert beam_args("--runner", "portable", "--job-endpoint", "localhost:8099",
                     "--environment-type", "EXTERNAL", "--environment-config",
                     "localhost:50000")[2:] == ["--environment_type=EXTERNAL",
                                                "--environment_config=localhost:50000"]
