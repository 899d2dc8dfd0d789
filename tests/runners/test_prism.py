"""``--runner prism``: the Beam options it emits (:mod:`runners.prism`), ``make prism``'s
install step with a stand-in ``go``, and real runs on Beam's Prism runner.

The option and install tests need neither Go nor the binary (``NDCL_PRISM_DIR`` points at a
temporary folder). The end-to-end tests run the demo corpus through ``dedup`` and both ``run``
workflows on Prism (LOOPBACK SDK workers in this process) and assert byte-identical outputs
to the direct runner (the digests of ``tests/data/output-digests.json``); they skip, saying
why, where the ``make prism`` binary is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import time
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import (
    PipelineOptions,
    PortableOptions,
    PrismRunnerOptions,
    StandardOptions,
)

from beam_pipeline.cli import main
from runners import prism
from runners.options import RunnerConfigError, runner_name
from tests.conftest import DEMO_CORPUS, beam_args
from tests.digests import CASES, DIGESTS, output_digest


def _executable(path: Path, text: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def fake_prism(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NDCL_PRISM_DIR", str(tmp_path / "prism"))
    return _executable(tmp_path / "prism" / "bin" / "prism")


# --- options ----------------------------------------------------------------------------------


def test_prism_args_name_the_installed_binary(fake_prism: Path) -> None:
    assert prism.prism_binary() == fake_prism
    args = beam_args("--runner", "prism")
    assert args == ["--runner=PrismRunner", f"--prism_location={fake_prism}",
                    "--environment_type=LOOPBACK"]
    options = PipelineOptions(args)
    assert options.view_as(StandardOptions).runner == "PrismRunner"
    assert options.view_as(PrismRunnerOptions).prism_location == str(fake_prism)
    assert options.view_as(PortableOptions).environment_type == "LOOPBACK"
    # Beam's class name works too, and --setup-file passes on as for the other runners.
    setup = _executable(fake_prism.parent / "setup.py", "")
    assert beam_args("--runner=PrismRunner", "--setup-file", str(setup))[-1] == (
        f"--setup_file={setup}")
    assert runner_name("prismrunner") == "prism"
    # -q: Prism logs warnings only (Beam logs its lines at INFO whatever the root level).
    assert prism.prism_beam_args(argparse.Namespace(quiet=True))[-1] == "--prism_log_level=warn"


def test_prism_dir_defaults_to_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NDCL_PRISM_DIR", raising=False)
    assert prism.prism_dir() == prism.REPO / ".ndcl" / "prism"
    assert prism.prism_binary() == prism.REPO / ".ndcl" / "prism" / "bin" / "prism"


def test_prism_without_the_binary_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NDCL_PRISM_DIR", str(tmp_path / "none"))
    with pytest.raises(RunnerConfigError, match=r"run `make prism` \(.*none/bin/prism is"):
        beam_args("--runner", "prism")
    code = main(["-q", "dedup", "--input", str(DEMO_CORPUS), "--output", str(tmp_path / "o"),
                 "--runner", "prism"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines() == [
        "ndcl: runner error: --runner prism needs the Prism binary: run `make prism` "
        f"({tmp_path / 'none' / 'bin' / 'prism'} is missing)"]
    assert not (tmp_path / "o").exists()


def test_prism_refuses_other_runners_flags(fake_prism: Path) -> None:
    fake_prism.chmod(0o644)
    with pytest.raises(RunnerConfigError, match="is not executable"):
        beam_args("--runner", "prism")
    fake_prism.chmod(0o755)
    with pytest.raises(RunnerConfigError, match="--flink-master is a flink flag"):
        beam_args("--runner", "prism", "--flink-master", "localhost:8081")
    with pytest.raises(RunnerConfigError, match="--environment-type only applies"):
        beam_args("--runner", "prism", "--environment-type", "DOCKER")


# --- install (make prism) with a stand-in go ---------------------------------------------------


def test_install_runs_go_install_and_records_it(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # A `go` that logs its arguments and GOBIN, and "builds" a binary there.
    log = tmp_path / "go.log"
    _executable(tmp_path / "gobin" / "go",
                f'#!/bin/sh\n[ "$1" = env ] && {{ echo go9.9; exit 0; }}\n'
                f'echo "$@ GOBIN=$GOBIN CWD=$(pwd)" >> {log}\n'
                'printf 0123456789 > "$GOBIN/prism"\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'gobin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("NDCL_PRISM_DIR", str(tmp_path / "p"))
    record = prism.install()
    base = tmp_path / "p"
    assert log.read_text().splitlines() == [
        f"install {prism.MODULE}@v{prism.beam_version()} GOBIN={base / 'bin'} CWD={base}"]
    assert (record["version"], record["go"], record["bytes"]) == (
        f"v{prism.beam_version()}", "go9.9", 10)
    assert json.loads((base / "installed.json").read_text()) == record
    assert prism.main(["where"]) == 0
    # Installed already: nothing runs again unless forced.
    assert prism.install() == record
    assert len(log.read_text().splitlines()) == 1
    prism.install(force=True)
    assert len(log.read_text().splitlines()) == 2


def test_install_errors_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NDCL_PRISM_DIR", str(tmp_path / "p"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(prism.PrismSetupError, match="`go` is not on PATH"):
        prism.install()
    _executable(tmp_path / "gobin" / "go", "#!/bin/sh\necho 'module lookup disabled' >&2\n"
                                          "exit 1\n")
    monkeypatch.setenv("PATH", str(tmp_path / "gobin"))
    with pytest.raises(prism.PrismSetupError, match=r"(?s)failed \(exit 1\).*module lookup"):
        prism.install()
    assert prism.main(["install"]) == 1
    assert "error: `go install" in capsys.readouterr().err
    assert prism.main(["where"]) == 1
    assert not (tmp_path / "p" / "installed.json").exists()


# --- real runs on Prism -----------------------------------------------------------------------
# Each case runs once, on Prism only: tests/data/output-digests.json holds the digest of what
# the direct runner writes for it (test_output_digests re-checks that on every `make test`), so
# matching it is matching the direct runner byte for byte, at half the time of running both.

PRISM_CASES = ("demo-dedup", "demo-nd_cl", "demo-cl_nd")


@pytest.mark.slow
@pytest.mark.parametrize("name", PRISM_CASES)
def test_prism_writes_the_direct_runners_bytes(name: str, tmp_path: Path) -> None:
    if not prism.prism_binary().is_file():
        pytest.skip(f"no Prism binary at {prism.prism_binary()}: run `make prism`")
    (corpus,), (command, *flags) = CASES[name]
    out = tmp_path / "prism"
    start = time.monotonic()
    assert main(["-q", command, "--input", corpus, "--output", str(out), *flags,
                 "--runner", "prism"]) == 0
    seconds = time.monotonic() - start
    assert (out / "kept").is_dir() and (out / "duplicates").is_dir()
    assert output_digest(out) == json.loads(DIGESTS.read_text())[name]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["read"], summary["kept"] + summary["duplicates"] + summary["rejected"]) == (
        1308, 1308)
    assert seconds < 60, f"Prism took {seconds:.0f} s"
