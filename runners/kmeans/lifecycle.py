"""Starting and stopping the K-Means service: a local Ray head (``ray start --head`` on
127.0.0.1 with its own temp folder) and the detached actor, recorded in the state file so that
``stop_service`` ends what ``start_service`` started and nothing else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.exceptions

from runners.kmeans.actor import KMeansService
from runners.kmeans.client import KMeansClient
from runners.kmeans.connection import (
    cluster_alive,
    connected_to,
    disconnect,
    ensure_ray,
    lookup_actor,
    resolve_address,
    same_address,
    tcp_reachable,
)
from runners.kmeans.errors import ServiceError
from runners.kmeans.service_config import (
    DEFAULT_STATE_FILE,
    STATE_FORMAT,
    ServiceConfig,
    read_state,
    write_state,
)

LOG = logging.getLogger("ndcl.service")

# Where locally started heads keep their sessions: one folder per head, so that stop_service
# can find exactly that head's processes (every one of them names its session folder).
LOCAL_TEMP_ROOT = Path("/tmp") if Path("/tmp").is_dir() else Path(os.path.realpath("."))


@dataclass(frozen=True)
class StartResult:
    """What ``start_service`` found or did."""

    address: str  # GCS address, what ServiceConfig.address / --address takes
    client_address: str | None  # "ray://127.0.0.1:PORT" for Ray Client drivers (local heads)
    started_head: bool  # this start (or the one recorded in the state file) started the head
    created_actor: bool  # likewise for the actor
    state_file: str
    health: dict[str, Any]
    seconds: float


@dataclass(frozen=True)
class ServiceStatus:
    """What ``service_status`` found; ``error`` says why when ``ok`` is False."""

    ok: bool
    address: str | None
    cluster_reachable: bool
    actor_found: bool
    health: dict[str, Any] | None
    state: dict[str, Any] | None
    error: str | None = None


@dataclass(frozen=True)
class StopResult:
    """What ``stop_service`` stopped (only ever what the state file says it started)."""

    address: str | None
    killed_actor: bool
    stopped_head: bool
    messages: list[str] = dataclasses.field(default_factory=list)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ray_command() -> list[str]:
    # The `ray` script of this interpreter's environment, so the head runs the same Ray and
    # Python (and can import ndcl) as the driver.
    script = Path(sys.executable).with_name("ray")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "ray.scripts.scripts"]


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # explicit addresses only
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # Workers inherit the raylet's environment: let the actor import `runners` from this
    # checkout even when ndcl is not installed in the environment.
    repo_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root, env.get("PYTHONPATH")) if p)
    return env


def _start_local_head(config: ServiceConfig, timeout_s: float) -> dict[str, Any]:
    """``ray start --head`` on free 127.0.0.1 ports with its own temp folder; the state to
    record."""
    port, client_port, agent_port = _free_port(), _free_port(), _free_port()
    temp_dir = LOCAL_TEMP_ROOT / f"ndcl-ray-{port}"
    num_cpus = config.head_num_cpus or max(os.cpu_count() or 1, int(np.ceil(config.num_cpus)))
    # No --node-ip-address=127.0.0.1: on Linux Ray replaces a loopback node address by the
    # host's routable IP anyway; drivers here connect through 127.0.0.1 all the same.
    cmd = [*_ray_command(), "start", "--head", f"--port={port}", f"--num-cpus={num_cpus}",
           "--include-dashboard=false", "--disable-usage-stats",
           f"--ray-client-server-port={client_port}",
           f"--dashboard-agent-listen-port={agent_port}", f"--temp-dir={temp_dir}"]
    LOG.info("starting a local Ray head: %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, env=_subprocess_env(), capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        _kill_session_processes(temp_dir, port)
        raise ServiceError(f"`ray start --head` did not finish within {timeout_s:.0f} s") from exc
    if proc.returncode != 0:
        _kill_session_processes(temp_dir, port)
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ServiceError(f"`ray start --head` failed (exit {proc.returncode}):\n{tail}")
    return {"address": f"127.0.0.1:{port}", "client_address": f"ray://127.0.0.1:{client_port}",
            "temp_dir": str(temp_dir), "gcs_port": port, "head_num_cpus": num_cpus}


def session_processes(temp_dir: str | os.PathLike[str], gcs_port: int | None = None) -> list[Any]:
    """The processes of a head started by ``start_service``: those whose command line names its
    private temp folder (nearly every Ray process names its session folder) or, for the Ray
    Client server, its GCS port; plus their descendants."""
    import psutil

    marker = str(temp_dir)
    gcs_args = ("--address=", "--gcs-address=", "--gcs_address=")

    def ours(arg: str) -> bool:
        if marker in arg:
            return True
        return gcs_port is not None and arg.startswith(gcs_args) and arg.endswith(f":{gcs_port}")

    found: dict[int, Any] = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmdline = proc.info.get("cmdline") or []
            if proc.pid != os.getpid() and any(ours(arg) for arg in cmdline):
                found[proc.pid] = proc
                # Workers and agents rename themselves ("ray::KMeansService"): they are found
                # as the raylet's children instead.
                for child in proc.children(recursive=True):
                    found.setdefault(child.pid, child)
    found.pop(os.getpid(), None)
    return list(found.values())


def _kill_session_processes(temp_dir: str | os.PathLike[str], gcs_port: int | None = None,
                            grace_s: float = 2.0) -> int:
    """SIGTERM the head's processes, SIGKILL what is left after ``grace_s``; how many."""
    import psutil

    procs = session_processes(temp_dir, gcs_port)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=2.0)
    return len(procs)


def _create_or_get_actor(config: ServiceConfig) -> tuple[Any, bool, str]:
    """The service actor, whether it existed before this call, and the token that proves
    (through ``health()``) that this call created it."""
    try:
        ray.get_actor(config.name, namespace=config.namespace)
        existed = True
    except ValueError:
        existed = False
    token = uuid.uuid4().hex
    options: dict[str, Any] = {
        "name": config.name, "namespace": config.namespace, "lifetime": "detached",
        "get_if_exists": True, "num_cpus": config.num_cpus, "num_gpus": config.num_gpus,
        "max_restarts": config.max_restarts, "max_task_retries": config.max_task_retries,
        "max_concurrency": config.max_concurrency,
    }
    if config.resources:
        options["resources"] = dict(config.resources)
    if config.runtime_env:
        options["runtime_env"] = dict(config.runtime_env)
    model_dir = str(Path(config.model_dir).resolve()) if config.model_dir else None
    # get_if_exists makes concurrent starts safe (one actor); the constructor runs only when
    # the actor is new, so a health() token equal to ours proves we created it.
    actor = KMeansService.options(**options).remote(
        model_dir=model_dir, token=token, name=config.name, namespace=config.namespace)
    return actor, existed, token


def _wait_ready(actor: Any, config: ServiceConfig, timeout_s: float) -> dict[str, Any]:
    try:
        return ray.get(actor.health.remote(), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError as exc:
        try:
            have = {k: v for k, v in ray.available_resources().items()
                    if not k.startswith(("node:", "memory", "object_store"))}
        except Exception:
            have = {}
        want = {k: v for k, v in {"CPU": config.num_cpus, "GPU": config.num_gpus,
                                  **config.resources}.items() if v}
        raise ServiceError(
            f"the K-Means service actor did not become ready within {timeout_s:.0f} s; it asks "
            f"for {want} and the cluster has {have} available (`ray status` shows the "
            f"cluster)") from exc
    except ray.exceptions.RayError as exc:
        raise ServiceError(f"the K-Means service actor failed to start: {exc}") from exc


def start_service(config: ServiceConfig | None = None,
                  state_file: str | os.PathLike[str] = DEFAULT_STATE_FILE,
                  timeout_s: float = 120.0) -> StartResult:
    """Start (or find) the service; record what was started in ``state_file``.

    ``config.address is None``: reuse the cluster recorded in ``state_file`` when it still
    answers, else start a local head (``ray start --head`` on 127.0.0.1, free ports, its own
    temp folder). An explicit address is connected to, never started. Then the detached actor
    is created unless one of that name already runs. Running it twice is harmless: the state
    keeps saying what the first start started. Leaves this process connected to the cluster
    only if it already was.
    """
    config = config or ServiceConfig()
    state_path = Path(state_file)
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    previous = read_state(state_path)
    state: dict[str, Any] = {}
    started_now = False

    if config.address is None and previous and cluster_alive(previous["address"]):
        state = dict(previous)  # our recorded cluster is still up: reuse it, keep its ledger
    elif config.address is None:
        state = _start_local_head(config, timeout_s=max(deadline - time.monotonic(), 10.0))
        state.update(started_head=True, created_actor=False)
        started_now = True
    else:
        address = resolve_address(config.address, state_path)
        same = previous and same_address(previous["address"], address)
        state = dict(previous) if same else {
            "address": address, "client_address": None, "started_head": False,
            "created_actor": False}

    was_connected = ray.is_initialized()
    try:
        if started_now:
            # Record the head at once: if anything below fails, `stop` can still clean it up.
            write_state(state_path, {**state, "format": STATE_FORMAT})
        ensure_ray(state["address"], config.namespace,
                   max(deadline - time.monotonic(), 5.0))
        actor, existed, token = _create_or_get_actor(config)
        try:
            health = _wait_ready(actor, config, max(deadline - time.monotonic(), 5.0))
        except ServiceError:
            if not existed:  # a detached actor stuck pending would outlive us: remove it
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)
            raise
        created = health.get("token") == token
        if created:
            state["created_actor"] = True
        elif not (state.get("created_actor") and state.get("name") == config.name
                  and state.get("namespace") == config.namespace):
            state["created_actor"] = False
    except BaseException:
        if started_now:  # undo what this call started, nothing else
            with contextlib.suppress(Exception):
                disconnect()
            _kill_session_processes(state["temp_dir"], state.get("gcs_port"))
            shutil.rmtree(state["temp_dir"], ignore_errors=True)
            state_path.unlink(missing_ok=True)
        raise
    finally:
        if not was_connected and ray.is_initialized():
            disconnect()

    state.update(name=config.name, namespace=config.namespace, model_dir=health.get("model_dir"),
                 format=STATE_FORMAT, updated_at=time.time())
    state.setdefault("started_at", time.time())
    write_state(state_path, state)
    return StartResult(address=state["address"], client_address=state.get("client_address"),
                       started_head=bool(state.get("started_head")),
                       created_actor=bool(state.get("created_actor")), state_file=str(state_path),
                       health=health, seconds=time.monotonic() - t0)


def service_status(config: ServiceConfig | None = None,
                   state_file: str | os.PathLike[str] = DEFAULT_STATE_FILE,
                   timeout_s: float = 15.0) -> ServiceStatus:
    """Is the service up? Never raises for an unreachable service: ``ok`` and ``error`` say."""
    config = config or ServiceConfig()
    state = read_state(state_file)
    address: str | None = None
    cluster = found = False
    was_connected = ray.is_initialized()
    try:
        address = resolve_address(config.address, state_file)
        if state and config.address is None:
            # `status` with no flags describes the service the state file recorded.
            config = dataclasses.replace(config, name=state.get("name", config.name),
                                         namespace=state.get("namespace", config.namespace))
        ensure_ray(address, config.namespace, timeout_s)
        cluster = True
        client = KMeansClient(lookup_actor(config.name, config.namespace, address), config,
                              address, timeout_s=timeout_s)
        found = True
        health = client.health()
        return ServiceStatus(True, address, cluster, found, health, state)
    except ServiceError as exc:
        return ServiceStatus(False, address, cluster, found, None, state, str(exc))
    finally:
        if not was_connected and ray.is_initialized():
            disconnect()


def stop_service(state_file: str | os.PathLike[str] = DEFAULT_STATE_FILE,
                 timeout_s: float = 30.0) -> StopResult:
    """Stop what ``start_service`` started, as recorded in ``state_file``, and nothing else.

    Kills the actor only if the recorded start created it, and stops the head only if it
    started it. The head is stopped by ending the processes of its own session (found by its
    private temp folder), not with ``ray stop``, which would end every Ray cluster on the
    machine. Removes the state file. This process is disconnected from a head it stops.
    """
    state_path = Path(state_file)
    state = read_state(state_path)
    if state is None:
        return StopResult(None, False, False,
                          [f"nothing to stop: no service recorded in {state_path}"])
    address = str(state["address"])
    messages: list[str] = []
    killed = stopped = False
    reachable = tcp_reachable(address, 2.0) is None

    if state.get("created_actor") and reachable:
        was_connected = ray.is_initialized()
        try:
            ensure_ray(address, str(state.get("namespace", "ndcl")), timeout_s)
            actor = ray.get_actor(str(state["name"]), namespace=str(state["namespace"]))
            ray.kill(actor, no_restart=True)
            killed = True
            messages.append(f"killed actor {state['name']!r} (namespace {state['namespace']!r})")
        except ValueError:
            messages.append(f"actor {state['name']!r} was already gone")
        except ServiceError as exc:
            messages.append(f"could not reach the cluster to kill the actor: {exc}")
        finally:
            if not was_connected and ray.is_initialized():
                disconnect()
    elif state.get("created_actor"):
        messages.append(f"cluster at {address} is not reachable; actor not killed")
    else:
        messages.append(f"left actor {state.get('name')!r} running (this start did not create it)")

    if state.get("started_head"):
        if ray.is_initialized() and connected_to(address):
            disconnect()  # a driver whose head dies is killed by Ray; leave first
        count = (_kill_session_processes(state["temp_dir"], state.get("gcs_port"))
                 if state.get("temp_dir") else 0)
        shutil.rmtree(state.get("temp_dir") or "/nonexistent", ignore_errors=True)
        stopped = True
        messages.append(f"stopped the local Ray head at {address} ({count} processes)")
    else:
        messages.append(f"left the Ray cluster at {address} running (this start did not "
                        f"start it)")
    state_path.unlink(missing_ok=True)
    return StopResult(address, killed, stopped, messages)
