"""The Ray-hosted K-Means service (runners.kmeans.service) against a real local Ray cluster.

One head (127.0.0.1, 2 CPUs, its own temp folder) is started by ``start_service`` for the whole
module, with the service actor and a ``model_dir`` in a temporary folder; the last test stops
it with ``stop_service`` and checks that its processes are gone. Covered: fit/predict through
the service equal a local fit/predict, health, models kept by id, concurrent level-2 fits,
restart of a killed actor with lazy reload of persisted models, fast and helpful errors for a
dead address or a missing actor, and start/stop stopping only what they started.

Run: ``.venv/bin/python -m pytest -q tests/runners/kmeans/test_service.py`` (about 30–60 s on
2 cores, most of it starting Ray and its worker processes).
"""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

from runners.kmeans import jax_kmeans  # noqa: E402
from runners.kmeans.jax_kmeans import KMeansConfig  # noqa: E402
from runners.kmeans.service import (  # noqa: E402
    KMeansClient,
    ModelNotFoundError,
    ServiceConfig,
    ServiceUnavailableError,
    disconnect,
    model_path,
    read_state,
    service_status,
    session_processes,
    start_service,
    stop_service,
)
from runners.kmeans.service_cli import main as service_cli  # noqa: E402

pytestmark = pytest.mark.slow

NAMESPACE = "ndcl-test"


def blobs(n: int, k: int = 4, d: int = 8, seed: int = 0) -> np.ndarray:
    """Well separated Gaussian blobs: labels do not hinge on float rounding."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10.0, size=(k, d))
    which = rng.integers(0, k, size=n)
    return (centres[which] + rng.normal(scale=0.3, size=(n, d))).astype(np.float32)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    root = tmp_path_factory.mktemp("ray-service")
    state_file = root / "service.json"
    config = ServiceConfig(name="ndcl-kmeans-test", namespace=NAMESPACE, num_cpus=1,
                           head_num_cpus=2, model_dir=str(root / "models"), max_concurrency=4)
    t0 = time.monotonic()
    result = start_service(config, state_file=state_file, timeout_s=90)
    started_s = time.monotonic() - t0
    try:
        bound = dataclasses.replace(config, address=result.address)
        client = KMeansClient.connect(bound, timeout_s=30)
        yield SimpleNamespace(config=bound, result=result, client=client, root=root,
                              state_file=state_file, started_s=started_s)
    finally:
        stop_service(state_file)  # a no-op once test_stop_after_start_... has stopped it
        disconnect()


def test_start_records_what_it_started(service: SimpleNamespace) -> None:
    result = service.result
    assert result.started_head and result.created_actor
    assert result.address.startswith("127.0.0.1:")
    state = read_state(service.state_file)
    assert state is not None
    assert state["address"] == result.address
    assert state["started_head"] is True and state["created_actor"] is True
    assert state["name"] == "ndcl-kmeans-test" and state["namespace"] == NAMESPACE
    print(f"head + actor ready in {service.started_s:.1f} s")


def test_health(service: SimpleNamespace) -> None:
    health = service.client.health()
    assert health["ok"] is True
    assert health["name"] == "ndcl-kmeans-test" and health["namespace"] == NAMESPACE
    assert health["jax_backend"] == "cpu" and health["jax_devices"]
    assert isinstance(health["pid"], int) and health["uptime_s"] >= 0
    assert health["model_dir"] == str(Path(service.config.model_dir).resolve())
    assert not health["restarted"]


def test_fit_predict_match_local(service: SimpleNamespace) -> None:
    client = service.client
    x = blobs(600, k=4, seed=1)
    config = KMeansConfig(k=4, seed=3)
    summary = client.fit("t/match", x, config)
    assert summary["k"] == 4 and summary["n"] == 600 and summary["d"] == 8
    assert summary["n_iter"] >= 1 and summary["seconds"] > 0 and summary["persisted"]

    local = jax_kmeans.fit(x, config)
    assert summary["inertia"] == pytest.approx(local.inertia, rel=1e-5)
    x_new = blobs(200, k=4, seed=2)
    for data in (x, x_new):
        labels, dist = client.predict("t/match", data)
        want_labels, want_dist = jax_kmeans.predict(local, data)
        np.testing.assert_array_equal(labels, want_labels)
        np.testing.assert_allclose(dist, want_dist, rtol=1e-5, atol=1e-6)
    model = client.get_model("t/match")
    np.testing.assert_allclose(model.centres, local.centres, rtol=1e-6, atol=1e-6)


def test_models_kept_by_id(service: SimpleNamespace) -> None:
    client = service.client
    x = blobs(300, k=3, seed=4)
    client.fit("t/ids/1", x, KMeansConfig(k=2, seed=0))
    client.fit("t/ids/2", x, KMeansConfig(k=3, seed=0))
    models = client.list_models()
    assert {"t/ids/1", "t/ids/2"} <= set(models)
    assert client.has_model("t/ids/1") and not client.has_model("t/ids/none")
    assert client.predict("t/ids/1", x)[0].max() < 2
    assert set(client.predict("t/ids/2", x)[0].tolist()) == {0, 1, 2}
    # Ids with slashes are one flat file each under model_dir.
    assert model_path(service.config.model_dir, "t/ids/2").is_file()

    assert client.drop("t/ids/1") is True
    assert client.drop("t/ids/1") is False
    assert "t/ids/1" not in client.list_models()
    t0 = time.monotonic()
    with pytest.raises(ModelNotFoundError, match="t/ids/1"):
        client.predict("t/ids/1", x)
    assert time.monotonic() - t0 < 5, "a missing model is an error, not something to retry"


def test_parallel_level2_fits(service: SimpleNamespace) -> None:
    client = service.client
    x = blobs(1500, k=3, d=16, seed=5)
    level1 = client.fit("run1/A", x, KMeansConfig(k=3, seed=0))
    assert level1["k"] == 3
    labels, _ = client.predict("run1/A", x)
    # One level-2 model per level-1 cluster, cut to a common size so that all share one
    # compiled shape (JAX compiles per shape: ~1 s each on a small CPU).
    size = min(int(np.sum(labels == c)) for c in range(3))
    jobs = [(f"run1/B/{c}", x[labels == c][:size], KMeansConfig(k=4, seed=c))
            for c in range(3)]

    summaries = client.fit_many(jobs)
    assert sorted(summaries) == ["run1/B/0", "run1/B/1", "run1/B/2"]
    # All three were running at the same moment in the (threaded) actor.
    starts = [s["started_at"] for s in summaries.values()]
    ends = [s["finished_at"] for s in summaries.values()]
    assert max(starts) < min(ends), summaries
    assert {"run1/A", "run1/B/0", "run1/B/1", "run1/B/2"} <= set(client.list_models())
    for model_id, points, config in jobs:
        got, _ = client.predict(model_id, points)
        want, _ = jax_kmeans.predict(jax_kmeans.fit(points, config), points)
        np.testing.assert_array_equal(got, want)


def test_restart_reloads_persisted_model(service: SimpleNamespace) -> None:
    client = service.client
    x = blobs(400, k=4, seed=6)
    client.fit("t/persist", x, KMeansConfig(k=4, seed=1))
    before_labels, before_dist = client.predict("t/persist", x)
    pid = client.health()["pid"]

    ray.kill(client.actor, no_restart=False)  # the process dies; Ray restarts the actor
    t0 = time.monotonic()
    health = client.health(timeout_s=60)
    while health["pid"] == pid and time.monotonic() - t0 < 60:
        time.sleep(0.2)
        health = client.health(timeout_s=60)
    assert health["pid"] != pid and health["restarted"] is True
    assert health["models_in_memory"] == 0 and health["models_persisted"] >= 1

    labels, dist = client.predict("t/persist", x)  # reloaded lazily from model_dir
    np.testing.assert_array_equal(labels, before_labels)
    np.testing.assert_array_equal(dist, before_dist)
    assert client.get_summary("t/persist")["reloaded"] is True
    assert client.health()["models_in_memory"] == 1
    print(f"actor back after {time.monotonic() - t0:.1f} s")


REMOTE_CLIENT = """
import json, sys
import numpy as np
from runners.kmeans.service import KMeansClient, ServiceConfig
address, name, namespace, x_path = sys.argv[1:]
client = KMeansClient.connect(ServiceConfig(address=address, name=name, namespace=namespace),
                              timeout_s=30)
labels, _ = client.predict("t/remote", np.load(x_path))
print(json.dumps({"labels": labels.tolist(), "pid": client.health()["pid"]}))
"""


def failure_report(stderr: str, state_file: Path) -> str:
    """The client's retries and error, and the head's Ray Client server logs: the per-client
    server Ray starts on port 23000 has died while starting in 2 of some 8 CI runs, and its
    log is gone with the head's temp folder once the module's service stops."""
    retries = [line for line in stderr.splitlines() if "connecting again" in line]
    parts = [*retries, stderr[-2000:]]
    temp_dir = json.loads(state_file.read_text()).get("temp_dir", "")
    for log in sorted(Path(temp_dir).glob("session_latest/logs/ray_client_server*")):
        parts.append(f"--- {log.name}:\n{log.read_text(errors='replace')[-1500:]}")
    return "\n".join(parts)


def test_other_process_reaches_service(service: SimpleNamespace, repo: Path) -> None:
    """As a Beam worker would: a separate process, by the GCS and the Ray Client address."""
    client = service.client
    x = blobs(300, k=3, seed=7)
    client.fit("t/remote", x, KMeansConfig(k=3, seed=0))
    want, _ = client.predict("t/remote", x)
    x_path = service.root / "remote_x.npy"
    np.save(x_path, x)
    assert service.result.client_address.startswith("ray://127.0.0.1:")
    # 150 s: each of ensure_ray's 3 Ray Client tries may wait Ray's own 30 s for its server.
    for address in (service.config.address, service.result.client_address):
        proc = subprocess.run(
            [sys.executable, "-c", REMOTE_CLIENT, address, service.config.name, NAMESPACE,
             str(x_path)], cwd=repo, capture_output=True, text=True, timeout=150, check=False)
        assert proc.returncode == 0, failure_report(proc.stderr, service.state_file)
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["labels"] == want.tolist()
        assert out["pid"] == client.health()["pid"]


def test_dead_address_fails_fast(service: SimpleNamespace) -> None:
    for address in (f"127.0.0.1:{free_port()}", f"ray://127.0.0.1:{free_port()}"):
        t0 = time.monotonic()
        with pytest.raises(ServiceUnavailableError) as err:
            KMeansClient.connect(ServiceConfig(address=address), timeout_s=20)
        assert time.monotonic() - t0 < 10
        assert address in str(err.value) and "ndcl service start" in str(err.value)


def test_no_recorded_service_fails_fast(tmp_path: Path) -> None:
    with pytest.raises(ServiceUnavailableError, match="ndcl service start"):
        KMeansClient.connect(ServiceConfig(), timeout_s=5, state_file=tmp_path / "none.json")


def test_missing_actor_fails_fast(service: SimpleNamespace) -> None:
    config = dataclasses.replace(service.config, name="no-such-service")
    t0 = time.monotonic()
    with pytest.raises(ServiceUnavailableError) as err:
        KMeansClient.connect(config, timeout_s=20)
    assert time.monotonic() - t0 < 10
    message = str(err.value)
    assert "no-such-service" in message and service.config.address in message
    assert "ndcl service start" in message


def test_cli_status(service: SimpleNamespace, capsys: pytest.CaptureFixture[str]) -> None:
    flags = ["--name", service.config.name, "--namespace", NAMESPACE]
    assert service_cli(["service", "status", "--address", service.config.address, *flags]) == 0
    assert f"up at {service.config.address}" in capsys.readouterr().out
    dead = f"127.0.0.1:{free_port()}"
    assert service_cli(["service", "status", "--address", dead, *flags]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and dead in err and "ndcl service start" in err


def test_start_on_running_head_stops_only_its_actor(service: SimpleNamespace,
                                                    tmp_path: Path) -> None:
    # Another service on the same, already running head: stop removes its actor, not the head.
    second = dataclasses.replace(service.config, name="ndcl-kmeans-second", num_cpus=0.5,
                                 model_dir=None)
    state2 = tmp_path / "second.json"
    result = start_service(second, state_file=state2, timeout_s=60)
    assert result.created_actor and not result.started_head
    client2 = KMeansClient.connect(second, timeout_s=10)
    assert client2.health()["name"] == "ndcl-kmeans-second"
    again = start_service(second, state_file=state2, timeout_s=30)  # idempotent, same ledger
    assert again.created_actor and not again.started_head
    assert again.health["pid"] == result.health["pid"]

    # A start that only finds the existing main service owns nothing: its stop kills nothing.
    state3 = tmp_path / "third.json"
    found = start_service(service.config, state_file=state3, timeout_s=30)
    assert not found.created_actor and not found.started_head
    stopped3 = stop_service(state3)
    assert not stopped3.killed_actor and not stopped3.stopped_head
    assert service.client.health()["ok"]

    stopped = stop_service(state2)
    assert stopped.killed_actor and not stopped.stopped_head
    assert not state2.exists()
    # A client of the killed actor gets a clear error quickly, not a hang.
    t0 = time.monotonic()
    with pytest.raises(ServiceUnavailableError, match="ndcl service start"):
        for _ in range(50):  # the kill is asynchronous: the first calls may still land
            client2.health(timeout_s=15)
            time.sleep(0.1)
    assert time.monotonic() - t0 < 20
    assert port_open(service.config.address)
    assert service.client.health()["ok"]
    status = service_status(service.config, state_file=service.state_file)
    assert status.ok and status.cluster_reachable and status.actor_found


def test_stop_after_start_stops_its_head(service: SimpleNamespace) -> None:
    """Runs last: stops the module's head and checks nothing it started survives."""
    state = read_state(service.state_file)
    assert state is not None
    procs = session_processes(state["temp_dir"])
    assert len(procs) >= 3, "gcs_server, raylet and workers name the head's temp folder"
    result = stop_service(service.state_file)
    assert result.killed_actor and result.stopped_head, result.messages
    assert not service.state_file.exists()
    assert not ray.is_initialized()
    _, alive = psutil.wait_procs(procs, timeout=10)
    assert not alive, [p.pid for p in alive]
    assert not session_processes(state["temp_dir"])
    assert not port_open(service.config.address)
    assert stop_service(service.state_file).messages[0].startswith("nothing to stop")
