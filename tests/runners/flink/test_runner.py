"""``--runner flink`` without Docker: the Beam options an embedded Flink gets
(``runners.options`` with the job server ``make flink`` assembles), and a real run on it
(``runners.flink.runner``).

The option tests need neither Java nor the jar. The end-to-end test runs the demo corpus on an
embedded Flink (Beam's Flink job server with ``--flink_master=[local]``, LOOPBACK SDK workers
in this process) and asserts byte-identical outputs to the direct runner; it skips, saying
why, where Java or the ``make flink`` jar is missing.
"""

from __future__ import annotations

import json
import os
import sys
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
    loopback_worker_env,
    workers_on_this_machine,
)
from tests.conftest import DEMO_CORPUS, beam_args
from tests.digests import output_digest, run_case
from tests.progress_checks import check_demo_dedup_progress, run_demo_dedup
from tests.runners.flink.conftest import _recorded, _skip_reason, job_server_jvms


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
                    "--sdk_worker_parallelism=2",
                    "--experiments=use_loopback_process_worker",
                    "--environment_type=LOOPBACK"]
    # One SDK worker process per slot, started as `python` from PATH (this interpreter, its
    # stderr to a log), and the job server JVM with the C1 compiler only.
    env = loopback_worker_env(args)
    shim = Path(env["PATH"].split(os.pathsep)[0]) / "python"
    assert str(sys.executable) in shim.read_text()
    assert env["JDK_JAVA_OPTIONS"] == "-XX:TieredStopAtLevel=1" or \
        "JDK_JAVA_OPTIONS" in os.environ
    assert "--experiments=use_loopback_process_worker" not in beam_args("--runner", "flink")
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


def test_workers_on_this_machine() -> None:
    assert workers_on_this_machine([])
    assert workers_on_this_machine(["--runner=FlinkRunner", "--flink_master=[local]"])
    assert workers_on_this_machine(["--runner=FlinkRunner", "--flink_master=localhost:8081"])
    assert workers_on_this_machine(["--runner=FlinkRunner",
                                    "--flink_master=http://127.0.0.1:8081"])
    assert not workers_on_this_machine(["--runner=FlinkRunner",
                                        "--flink_master=flink.example.com:8081"])
    assert workers_on_this_machine(["--runner=PortableRunner", "--job_endpoint=embed"])
    assert not workers_on_this_machine(["--runner=PortableRunner", "--job_endpoint=j:8099"])
    assert not workers_on_this_machine(["--runner=DataflowRunner", "--project=p"])


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


@pytest.mark.slow
def test_embedded_flink_parallelism_2_dedup_logs_progress_and_equals_direct(
        tmp_path: Path) -> None:
    """Through the ``ndcl`` program, as a user runs it: at parallelism 2 the SDK workers are
    processes of their own, yet the live counts and every stage's ``ended`` line reach the
    driver's log (through the relay folder of ``transforms.progress``); the outputs are the
    direct runner's, byte for byte."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    done = run_demo_dedup(tmp_path, "--runner", "flink", "--parallelism", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    check_demo_dedup_progress(done.stderr)
    assert output_digest(tmp_path / "out") == _recorded("demo-dedup"), \
        "dedup on Flink differs from direct"


@pytest.mark.slow
@pytest.mark.parametrize(("name", "backend"), [
    ("demo-nd_cl", "ray"),  # the K-Means service of a local Ray head, called from the workers
    ("demo-cl_nd", "local"),
])
def test_embedded_flink_parallelism_2_equals_direct(name: str, backend: str | None,
                                                    tmp_path: Path) -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    flags: tuple[str, ...] = ("--runner", "flink", "--parallelism", "2")
    if backend:
        flags += ("--kmeans-backend", backend)
    start = time.monotonic()
    digest = run_case(name, tmp_path, flags)
    seconds = time.monotonic() - start
    summary = json.loads((tmp_path / name / "summary.json").read_text())
    assert summary["read"] == summary["kept"] + summary["duplicates"] + summary["rejected"]
    assert digest == _recorded(name), f"{name} on Flink differs from the direct runner"
    assert seconds < 180, f"embedded Flink took {seconds:.0f} s"
    # The job server JVM (2 GiB or more) ends with its job, not when this process exits.
    assert job_server_jvms() == []
