"""``--runner flink`` without Docker: what ``make flink`` assembles (:mod:`runners.flink.dist`),
the Beam options an embedded Flink gets, and a real run on it.

The option and assembly tests need neither Java nor the jar. The end-to-end test runs the demo
corpus on an embedded Flink (Beam's Flink job server with ``--flink_master=[local]``, LOOPBACK
SDK workers in this process) and asserts byte-identical outputs to the direct runner; it skips,
saying why, where Java or the ``make flink`` jar is missing.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import sys
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
from runners.flink import cluster, dist
from runners.options import (
    EMBEDDED_FLINK_CONF,
    RunnerConfigError,
    loopback_worker_env,
    workers_on_this_machine,
)
from tests.conftest import DEMO_CORPUS, beam_args
from tests.digests import DIGESTS, run_case
from transforms import faults


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


def _recorded(name: str) -> str:
    # The direct runner's digests, which tests/test_output_digests.py checks in the same
    # suite: equal digests here mean byte-identical kept/, duplicates/, rejected/.
    return json.loads(DIGESTS.read_text())[name]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "backend"), [
    ("demo-dedup", None),
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


def job_server_jvms() -> list[int]:
    """Job server JVMs that this test process started and that still run."""
    import psutil

    pids = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if any("beam-flink-job-server" in part for part in child.cmdline()):
                pids.append(child.pid)
    return pids


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_standalone_cluster_fault_then_dedup_then_stop(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    """start → a dedup whose task fails (one line, exit 1, nothing committed) → the same
    dedup, byte-identical to the direct runner → stop, with no process of the cluster left.
    The fault fires once (its marker), so the SDK workers the pool starts for the second job
    run clean."""
    reason = _skip_reason() or (None if (dist.flink_home() / "bin" / "jobmanager.sh").is_file()
                                else f"no Flink distribution at {dist.flink_home()}: "
                                     "run `make flink`")
    if reason:
        pytest.skip(reason)
    marker = tmp_path / "fault-fired"
    monkeypatch.setenv(faults.ENV, f"write_fail={marker}")  # inherited by the worker pool
    spec = cluster.ClusterSpec(slots=2, rest_port=_free_port(), rpc_port=_free_port(),
                               worker_pool_port=_free_port(), tm_memory="2g")
    state_dir = tmp_path / "cluster"
    state = cluster.start(spec, state_dir)
    try:
        assert cluster.status(state_dir)["running"]
        assert set(state.pids) == {"jobmanager", "taskmanager", "worker_pool"}
        flags = ("--runner", "flink", "--flink-master", f"localhost:{spec.rest_port}",
                 "--parallelism", "2", "--environment-config",
                 f"localhost:{spec.worker_pool_port}")
        failed = tmp_path / "failed"
        code = main(["-q", "--db-url", f"sqlite:///{tmp_path / 'runs.db'}", "dedup",
                     "--input", str(DEMO_CORPUS), "--output", str(failed), *flags])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and marker.exists()
        assert len(err) == 1 and "the pipeline failed: InjectedFault" in err[0], err
        assert not failed.exists() and not Path(f"{failed}.ndcl-staging").exists()
        assert job_server_jvms() == []  # stopped after the failed job too
        assert run_case("demo-dedup", tmp_path, flags) == _recorded("demo-dedup")
    finally:
        outcome = cluster.stop(state_dir)
    assert set(outcome) == {"jobmanager", "taskmanager", "worker_pool"}
    for kind, pid in state.pids.items():
        assert not cluster._alive(pid, cluster.MARKERS[kind]), f"{kind} {pid} still runs"
    assert not cluster.status(state_dir)["running"]
    assert cluster.stop(state_dir) == {}  # nothing recorded any more: nothing to stop


def test_cluster_refuses_a_state_folder_it_did_not_make(tmp_path: Path) -> None:
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "log").mkdir()
    (mine / "log" / "keep.txt").write_text("the user's")
    with pytest.raises(cluster.ClusterError, match=r"not made by cluster\.sh"):
        cluster._claim(mine)
    assert (mine / "log" / "keep.txt").read_text() == "the user's"
    fresh = tmp_path / "fresh"
    cluster._claim(fresh)  # new: claimed, and claimed again later (its marker is there)
    (fresh / "log").mkdir()
    cluster._claim(fresh)
    assert (fresh / cluster.STATE_MARKER).is_file()
