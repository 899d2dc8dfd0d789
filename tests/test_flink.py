"""``--runner flink`` without Docker: what ``make flink`` assembles (:mod:`runners.flink.dist`),
the Beam options an embedded Flink gets, and a real run on it.

The option and assembly tests need neither Java nor the jar. The end-to-end test runs the demo
corpus on an embedded Flink (Beam's Flink job server with ``--flink_master=[local]``, LOOPBACK
SDK workers in this process) and asserts byte-identical outputs to the direct runner; it skips,
saying why, where Java or the ``make flink`` jar is missing.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import (
    FlinkRunnerOptions,
    PipelineOptions,
    StandardOptions,
)

from beam_pipeline.cli import main
from runners.flink import dist
from runners.options import (
    EMBEDDED_FLINK_CONF,
    RunnerConfigError,
    add_runner_flags,
    runner_beam_args,
)
from tests.conftest import DEMO_CORPUS


def beam_args(*argv: str) -> list[str]:
    parser = argparse.ArgumentParser()
    add_runner_flags(parser)
    return runner_beam_args(parser.parse_args(list(argv)))


def fake_job_server(base: Path, flink_minor: str = "1.19") -> Path:
    """A launcher jar with the manifest ``make flink`` writes (nothing runnable in it)."""
    jar = dist.job_server_jar(base)
    jar.parent.mkdir(parents=True)
    manifest = ("Manifest-Version: 1.0\r\nMain-Class: org.apache.beam.runners.flink.Flink"
                "JobServerDriver\r\nClass-Path: lib/a.jar lib/b.jar\r\nBeam-Version: 2.62.0\r\n"
                f"Flink-Minor-Version: {flink_minor}\r\nFlink-Version: {flink_minor}.3\r\n\r\n")
    with zipfile.ZipFile(jar, "w") as zf:
        zf.writestr("META-INF/MANIFEST.MF", manifest)
    return jar


# --- options ----------------------------------------------------------------------------------


def test_embedded_flink_uses_the_make_flink_jar(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NDCL_FLINK_DIR", str(tmp_path))
    jar = fake_job_server(tmp_path)
    assert dist.jar_versions(jar) == {"beam": "2.62.0", "flink_minor": "1.19",
                                      "flink": "1.19.3"}
    args = beam_args("--runner", "flink", "--parallelism", "2")
    assert args == ["--runner=FlinkRunner", "--flink_master=[local]", "--flink_version=1.19",
                    "--streaming", f"--flink_job_server_jar={jar}",
                    f"--flink_conf_dir={EMBEDDED_FLINK_CONF}", "--parallelism=2",
                    "--environment_type=LOOPBACK"]
    assert (EMBEDDED_FLINK_CONF / "config.yaml").is_file()
    # Beam's Python SDK does not declare --flink_conf_dir; runners.options does, so that it
    # reaches the job server instead of being dropped as unknown.
    assert PipelineOptions(args).get_all_options()["flink_conf_dir"] == str(EMBEDDED_FLINK_CONF)
    flink = PipelineOptions(args).view_as(FlinkRunnerOptions)
    assert (flink.flink_master, flink.parallelism, flink.flink_job_server_jar) == (
        "[local]", 2, str(jar))
    assert PipelineOptions(args).view_as(StandardOptions).streaming
    # Beam's underscore spellings land in the same place; a cluster gets the jar too.
    remote = beam_args("--runner", "flink", "--flink_master", "localhost:8081")
    assert f"--flink_job_server_jar={jar}" in remote
    assert not any(arg.startswith("--flink_conf_dir") for arg in remote)
    assert remote[-2:] == ["--environment_type=EXTERNAL", "--environment_config=localhost:50000"]
    # An explicit jar wins over the make flink one, and its Flink version is the user's call.
    own = tmp_path / "own.jar"
    own.write_bytes(b"")
    args = beam_args("--runner", "flink", "--flink-job-server-jar", str(own),
                     "--flink_version", "1.20")
    assert f"--flink_job_server_jar={own}" in args and "--flink_version=1.20" in args


@pytest.mark.parametrize(("argv", "message"), [
    (["--runner", "flink"], "run `make flink` for an embedded Flink"),
    (["--runner", "flink", "--flink-master", "[local]"], "run `make flink`"),
    (["--runner", "flink", "--flink-job-server-jar", "/no/such.jar"], "does not exist"),
])
def test_embedded_flink_without_the_jar_is_one_clear_error(
        argv: list[str], message: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NDCL_FLINK_DIR", str(tmp_path / "none"))
    with pytest.raises(RunnerConfigError, match=message) as err:
        beam_args(*argv)
    assert "\n" not in str(err.value)


def test_flink_option_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NDCL_FLINK_DIR", str(tmp_path))
    fake_job_server(tmp_path)
    with pytest.raises(RunnerConfigError, match="does not match the `make flink` job server"):
        beam_args("--runner", "flink", "--flink-version", "1.20")
    with pytest.raises(RunnerConfigError, match="--parallelism must be >= 1"):
        beam_args("--runner", "flink", "--parallelism", "0")
    with pytest.raises(RunnerConfigError, match="--parallelism is a flink flag"):
        beam_args("--parallelism", "2")
    with pytest.raises(RunnerConfigError, match="no meaning with LOOPBACK"):
        beam_args("--runner", "flink", "--environment-config", "localhost:50000")


def test_cli_names_make_flink_when_the_jar_is_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NDCL_FLINK_DIR", str(tmp_path / "none"))
    code = main(["-q", "dedup", "--input", str(DEMO_CORPUS), "--output", str(tmp_path / "o"),
                 "--runner", "flink"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "make flink" in err[0]
    assert not (tmp_path / "o").exists()


# --- the Flink distribution from PyPI's two files -------------------------------------------


def test_assemble_flink_home_from_the_pypi_layout(tmp_path: Path) -> None:
    sdist = tmp_path / "apache-flink-libraries-1.19.3.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for name in ("deps/lib/flink-dist-1.19.3.jar", "deps/opt/flink-python-1.19.3.jar",
                     "deps/bin/bash-java-utils.jar", "deps/plugins/metrics-jmx/m.jar",
                     "setup.py", "deps/../../escape.txt"):
            data = name.encode()
            info = tarfile.TarInfo(f"apache-flink-libraries-1.19.3/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    wheel = tmp_path / "apache_flink-1.19.3-cp311-cp311-manylinux2014_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name in ("pyflink/bin/jobmanager.sh", "pyflink/bin/taskmanager.sh",
                     "pyflink/bin/config.sh", "pyflink/conf/config.yaml",
                     "pyflink/table/t.py"):
            zf.writestr(name, "#!/bin/sh\n")
    home = tmp_path / "flink-1.19.3"
    dist.assemble_flink_home(sdist, wheel, home)
    files = sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())
    assert files == ["bin/bash-java-utils.jar", "bin/config.sh", "bin/jobmanager.sh",
                     "bin/taskmanager.sh", "conf/config.yaml", "lib/flink-dist-1.19.3.jar",
                     "opt/flink-python-1.19.3.jar", "plugins/metrics-jmx/m.jar"]
    assert os.access(home / "bin" / "jobmanager.sh", os.X_OK)
    assert not os.access(home / "bin" / "bash-java-utils.jar", os.X_OK)
    assert (home / "log").is_dir()
    assert not (tmp_path / "escape.txt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_assemble_refuses_an_incomplete_distribution(tmp_path: Path) -> None:
    sdist = tmp_path / "libs.tar.gz"
    with tarfile.open(sdist, "w:gz"):
        pass
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pyflink/bin/config.sh", "")
    with pytest.raises(dist.FlinkSetupError, match="lib/flink-dist"):
        dist.assemble_flink_home(sdist, wheel, tmp_path / "flink")
    assert not (tmp_path / "flink").exists()


# --- a real run on the embedded Flink ---------------------------------------------------------


def _skip_reason() -> str | None:
    major = dist.java_major()
    if major is None:
        return "no `java` on PATH (the Flink job server is a Java 11+ program)"
    if major < 11:
        return f"Java {major} on PATH; the Flink job server needs Java 11+"
    if not dist.job_server_jar().is_file():
        return f"no Flink job server at {dist.job_server_jar()}: run `make flink`"
    return None


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.suffix in (".parquet", ".jsonl")}


def _counts(out: Path) -> dict[str, object]:
    summary = json.loads((out / "summary.json").read_text())
    return {k: v for k, v in summary.items() if k not in ("stage_seconds", "wall_seconds")}


@pytest.mark.slow
def test_embedded_flink_dedup_equals_direct(tmp_path: Path) -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    inputs = ["--input", str(DEMO_CORPUS)]
    assert main(["-q", "dedup", *inputs, "--output", str(tmp_path / "direct")]) == 0
    start = time.monotonic()
    assert main(["-q", "dedup", *inputs, "--output", str(tmp_path / "flink"),
                 "--runner", "flink", "--parallelism", "2"]) == 0
    seconds = time.monotonic() - start
    direct, flink = _files(tmp_path / "direct"), _files(tmp_path / "flink")
    assert any(name.startswith("kept/") for name in direct)
    assert any(name.startswith("duplicates/") for name in direct)
    assert sorted(flink) == sorted(direct)
    for name in direct:
        assert flink[name] == direct[name], f"{name} differs"  # byte for byte
    assert _counts(tmp_path / "flink") == _counts(tmp_path / "direct")
    assert seconds < 120, f"embedded Flink took {seconds:.0f} s"
