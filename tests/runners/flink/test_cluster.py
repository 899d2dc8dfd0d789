"""``runners.flink.cluster``: a standalone cluster started, faulted, used and stopped (skips
without Java or ``make flink``), and the state folder it refuses."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from beam_pipeline.cli import main
from runners.flink import cluster, dist
from tests.conftest import DEMO_CORPUS
from tests.digests import run_case
from tests.runners.flink.conftest import _recorded, _skip_reason, job_server_jvms
from transforms import faults


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
