"""K-Means as a service: JAX K-Means hosted in a detached, named Ray actor.

What it computes
    The actor ``KMeansService`` fits K-Means models (``runners.kmeans.jax_kmeans.fit``) on the
    arrays callers send and assigns points to the nearest centroid
    (``runners.kmeans.jax_kmeans.predict``: labels and squared distances). Fitted models are
    kept in memory by model id (any string, e.g. ``"run123/A"`` for a level-1 model and
    ``"run123/B/3"`` for the level-2 model of level-1 cluster 3), so a Beam job can fit once
    and label every batch against the same model, and the level-2 fits can run concurrently
    (the actor is threaded, ``ServiceConfig.max_concurrency``; JAX releases the GIL while it
    computes).

Where it runs
    In production on a Ray cluster of TPU/GPU hosts (``ServiceConfig.resources={"TPU": 4}`` or
    ``num_gpus=1`` pins the actor to an accelerator host); here on a local Ray head started
    by ``start_service`` with JAX on CPU. Beam workers reach it through ``KMeansClient``: by
    the GCS address (``host:6379``) from a process on a Ray node, by the Ray Client address
    (``ray://host:10001``) from anywhere else. A local head is recorded and reached as
    ``127.0.0.1:PORT``; Ray itself cannot be confined to loopback on Linux (it advertises the
    host's routable IP and its gRPC servers listen on all interfaces), so firewall the ports
    on a shared machine.

Fault tolerance
    The actor is detached (it outlives the process that created it) and restarted by Ray up to
    ``max_restarts`` times if its process dies; calls in flight are retried by Ray
    (``max_task_retries``) and by ``KMeansClient`` (exponential backoff, total timeout). A
    restarted actor starts with an empty model table, so when ``model_dir`` is set every fitted
    model is also written there (``<model_dir>/<quoted model id>.pkl``, written atomically) and
    ``predict``/``get_model`` reload a missing model from it lazily. ``model_dir`` must be a
    path the actor's host can read and write (a local disk here; shared storage when the actor
    may be rescheduled on another host). Without ``model_dir`` a restart loses the models and
    ``predict`` raises ``ModelNotFoundError``: the caller has to fit again. The files are
    pickles: point ``model_dir`` only at a directory you trust.

How to run
    ndcl service start [--num-cpus 1] [--model-dir DIR]   # local head + actor
    ndcl service start --address 10.0.0.5:6379 --resources '{"TPU": 4}'   # existing cluster
    ndcl service status
    ndcl service stop       # stops only what `start` started (see stop_service)

    from runners.kmeans.jax_kmeans import KMeansConfig
    from runners.kmeans.service import KMeansClient, ServiceConfig
    client = KMeansClient.connect(ServiceConfig(address="127.0.0.1:PORT"), timeout_s=30)
    client.fit("run1/A", x, KMeansConfig(k=8))
    labels, sq_dist = client.predict("run1/A", x)

``start_service`` records what it did in ``.ndcl/service.json`` (the address, and whether it
started the head and created the actor); ``status``/``stop`` and clients given no address read
it from there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pickle
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import numpy as np
import ray
import ray.exceptions

from runners.kmeans.errors import ModelNotFoundError, ServiceError, ServiceUnavailableError

if TYPE_CHECKING:
    from runners.kmeans.jax_kmeans import KMeansConfig, KMeansModel

LOG = logging.getLogger("ndcl.service")

DEFAULT_STATE_FILE = Path(".ndcl") / "service.json"
START_HINT = "start it with `ndcl service start` (or pass --address of a running one)"
# Where locally started heads keep their sessions: one folder per head, so that stop_service
# can find exactly that head's processes (every one of them names its session folder).
LOCAL_TEMP_ROOT = Path("/tmp") if Path("/tmp").is_dir() else Path(os.path.realpath("."))
MODEL_SUFFIX = ".pkl"
STATE_FORMAT = 1


# Errors worth retrying: the actor is restarting or unreachable, or the connection dropped.
# RayTaskError (an exception raised by the service's own code) is deliberately not here.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ray.exceptions.RayActorError,  # includes ActorDiedError and ActorUnavailableError
    ray.exceptions.GetTimeoutError,
    ConnectionError,
)


@dataclass(frozen=True)
class ServiceConfig:
    """Where the service lives and what its actor asks Ray for.

    ``address``: ``None`` means the service recorded in the state file (``start_service``
    starts a local head when there is none); otherwise a GCS address ``"host:port"``, a Ray
    Client address ``"ray://host:10001"``, or ``"auto"`` (the cluster of the last default
    ``ray start`` on this machine). ``RAY_ADDRESS`` is never consulted.
    ``resources`` holds custom/accelerator resources such as ``{"TPU": 4}``; CPUs and GPUs go in
    ``num_cpus``/``num_gpus``. ``head_num_cpus``: CPUs a locally started head advertises
    (``None``: this machine's count, at least ``num_cpus``). ``runtime_env``: passed to the
    actor, e.g. ``{"py_modules": [...]}`` when the cluster does not have ndcl installed.
    """

    address: str | None = None
    namespace: str = "ndcl"
    name: str = "ndcl-kmeans"
    num_cpus: float = 1
    num_gpus: float = 0
    resources: dict[str, float] = field(default_factory=dict)
    max_restarts: int = 3
    max_task_retries: int = 3
    max_concurrency: int = 4
    model_dir: str | None = None
    head_num_cpus: int | None = None
    runtime_env: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.namespace:
            raise ValueError("ServiceConfig.name and .namespace must be non-empty")
        if self.num_cpus < 0 or self.num_gpus < 0:
            raise ValueError("ServiceConfig.num_cpus and .num_gpus must be >= 0")
        bad = {"CPU", "GPU"} & set(self.resources)
        if bad:
            raise ValueError(f"put {sorted(bad)} in num_cpus/num_gpus, not in resources")
        if any(v < 0 for v in self.resources.values()):
            raise ValueError(f"resource amounts must be >= 0: {self.resources}")
        if self.max_concurrency < 1:
            raise ValueError("ServiceConfig.max_concurrency must be >= 1")


# ---------------------------------------------------------------------------------------------
# The actor
# ---------------------------------------------------------------------------------------------


def model_path(model_dir: str | os.PathLike[str], model_id: str) -> Path:
    """File of a persisted model: the id percent-quoted, so ``"run/B/3"`` stays one flat file
    and no id can escape ``model_dir``."""
    return Path(model_dir) / (quote(model_id, safe="") + MODEL_SUFFIX)


def _check_model_id(model_id: str) -> None:
    if not isinstance(model_id, str) or not model_id or len(model_id) > 400:
        raise ValueError(f"model_id must be a non-empty string of at most 400 characters, "
                         f"got {model_id!r}")


def _check_points(x: Any, what: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{what}: expected a non-empty 2-D array (n, d), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{what}: expected numbers, got dtype {arr.dtype}")
    return arr


def _model_summary(model: Any, config: Any, x: np.ndarray) -> dict[str, Any]:
    """k, inertia and iteration count, read from the model whatever it calls them."""

    def first(*names: str) -> Any:
        for name in names:
            value = getattr(model, name, None)
            if value is not None:
                return value
        return None

    centres = first("centres", "centroids", "centers")
    k = int(np.shape(centres)[0]) if centres is not None else int(config.k)
    inertia = first("inertia", "inertia_")
    n_iter = first("n_iter", "n_iter_", "iterations")
    return {
        "k": k,
        "inertia": None if inertia is None else float(np.asarray(inertia)),
        "n_iter": None if n_iter is None else int(np.asarray(n_iter)),
        "n": int(x.shape[0]),
        "d": int(x.shape[1]),
    }


@ray.remote
class KMeansService:
    """Ray actor holding fitted K-Means models by id (create it with ``start_service``).

    Threaded (``max_concurrency`` > 1): fits of different ids run at the same time. The model
    table is guarded by a lock; fits themselves run outside it.
    """

    def __init__(self, model_dir: str | None = None, token: str = "",
                 name: str = "", namespace: str = "") -> None:
        import jax  # imported here: the actor's process is the one that owns the accelerator

        self._jax = jax
        self._models: dict[str, tuple[Any, Any, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._model_dir = Path(model_dir) if model_dir else None
        if self._model_dir is not None:
            self._model_dir.mkdir(parents=True, exist_ok=True)
        # `token` identifies the process that created this actor (see _create_or_get_actor).
        self._token = token
        self._name = name
        self._namespace = namespace
        self._started = time.time()
        # Touch the devices now so a broken accelerator fails the actor at start, not at fit.
        self._devices = [str(d) for d in jax.devices()]

    # -- persistence ---------------------------------------------------------------------------
    def _persist(self, model_id: str, entry: tuple[Any, Any, dict[str, Any]]) -> bool:
        if self._model_dir is None:
            return False
        path = model_path(self._model_dir, model_id)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        payload = {"format": 1, "model_id": model_id, "model": entry[0], "config": entry[1],
                   "summary": entry[2]}
        with open(tmp, "wb") as fh:
            pickle.dump(payload, fh, protocol=pickle.HIGHEST_PROTOCOL)
        # Atomic rename: a reader (or a restart after a crash mid-write) sees old or new, whole.
        os.replace(tmp, path)
        return True

    def _entry(self, model_id: str) -> tuple[Any, Any, dict[str, Any]]:
        with self._lock:
            entry = self._models.get(model_id)
        if entry is not None:
            return entry
        # Not in memory: after a restart the table is empty, so reload from model_dir.
        path = model_path(self._model_dir, model_id) if self._model_dir else None
        if path is None or not path.is_file():
            where = f" nor in {self._model_dir}" if self._model_dir else " (no model_dir)"
            raise ModelNotFoundError(f"no model {model_id!r} in the K-Means service{where}; "
                                     f"fit it first")
        with open(path, "rb") as fh:
            payload = pickle.load(fh)
        entry = (payload["model"], payload["config"], dict(payload["summary"], reloaded=True))
        with self._lock:
            # Another thread may have reloaded or refitted it meanwhile; keep the table's one.
            entry = self._models.setdefault(model_id, entry)
        return entry

    def _persisted_ids(self) -> list[str]:
        if self._model_dir is None or not self._model_dir.is_dir():
            return []
        return [unquote(p.name[: -len(MODEL_SUFFIX)])
                for p in self._model_dir.iterdir()
                if p.name.endswith(MODEL_SUFFIX) and not p.name.startswith(".")]

    # -- API -----------------------------------------------------------------------------------
    def fit(self, model_id: str, x: np.ndarray, config: KMeansConfig) -> dict[str, Any]:
        """Fit a model on ``x`` and keep it under ``model_id`` (replacing any previous one)."""
        from runners.kmeans import jax_kmeans

        _check_model_id(model_id)
        x = _check_points(x, f"fit({model_id!r})")
        started_at = time.time()
        t0 = time.perf_counter()
        model = jax_kmeans.fit(x, config)
        seconds = time.perf_counter() - t0
        summary = {"model_id": model_id, **_model_summary(model, config, x),
                   "seconds": seconds, "started_at": started_at, "finished_at": time.time(),
                   "pid": os.getpid()}
        entry = (model, config, summary)
        summary["persisted"] = self._persist(model_id, entry)
        with self._lock:
            self._models[model_id] = entry
        return summary

    def predict(self, model_id: str, x: np.ndarray,
                balanced: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Labels (int) and squared distances to the assigned centre for each row of ``x``
        (``balanced``: the capacity-constrained assignment of the whole batch)."""
        from runners.kmeans import jax_kmeans

        x = _check_points(x, f"predict({model_id!r})")
        model = self._entry(model_id)[0]
        if balanced:
            labels, dist = jax_kmeans.predict(model, x, balanced=True)
        else:
            labels, dist = jax_kmeans.predict(model, x)
        return np.asarray(labels), np.asarray(dist)

    def get_model(self, model_id: str) -> Any:
        """The fitted ``KMeansModel`` (reloaded from ``model_dir`` if needed)."""
        return self._entry(model_id)[0]

    def get_summary(self, model_id: str) -> dict[str, Any]:
        """The fit summary of a model (``reloaded: True`` when it came back from disk)."""
        return dict(self._entry(model_id)[2])

    def has_model(self, model_id: str) -> bool:
        """True when the model is in memory or persisted in ``model_dir``."""
        with self._lock:
            if model_id in self._models:
                return True
        return bool(self._model_dir) and model_path(self._model_dir, model_id).is_file()

    def list_models(self) -> list[str]:
        """Ids of the models in memory and in ``model_dir``, sorted."""
        with self._lock:
            ids = set(self._models)
        return sorted(ids | set(self._persisted_ids()))

    def drop(self, model_id: str) -> bool:
        """Forget a model (memory and ``model_dir``); False when there was none."""
        with self._lock:
            found = self._models.pop(model_id, None) is not None
        if self._model_dir is not None:
            path = model_path(self._model_dir, model_id)
            if path.is_file():
                path.unlink()
                found = True
        return found

    def health(self) -> dict[str, Any]:
        """Liveness and what the service holds; cheap, used as the readiness probe."""
        context = ray.get_runtime_context()
        with self._lock:
            in_memory = sorted(self._models)
        return {
            "ok": True,
            "name": self._name,
            "namespace": self._namespace,
            "pid": os.getpid(),
            "node_id": context.get_node_id(),
            "uptime_s": time.time() - self._started,
            "started_at": self._started,
            "restarted": bool(context.was_current_actor_reconstructed),
            "jax_backend": self._jax.default_backend(),
            "jax_devices": list(self._devices),
            "models_in_memory": len(in_memory),
            "model_ids": in_memory,
            "models_persisted": len(self._persisted_ids()),
            "model_dir": str(self._model_dir) if self._model_dir else None,
            "token": self._token,
        }


# ---------------------------------------------------------------------------------------------
# Connecting
# ---------------------------------------------------------------------------------------------

_CONNECT_LOCK = threading.RLock()
# Address this module passed to ray.init, to tell whether an existing connection is the one
# asked for (a Ray Client connection cannot report its address back).
_CONNECTED_ADDRESS: list[str] = []


def _split_host_port(address: str) -> tuple[str, int] | None:
    rest = address.split("://", 1)[1] if "://" in address else address
    rest = rest.split("/", 1)[0]
    host, sep, port = rest.rpartition(":")
    if not sep:
        # "ray://host" means the Ray Client default port.
        return (rest, 10001) if address.startswith("ray://") and rest else None
    if not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def _tcp_reachable(address: str, timeout_s: float) -> str | None:
    """None when something accepts TCP connections at the address, else the reason."""
    hp = _split_host_port(address)
    if hp is None:
        return None  # not a host:port form; let Ray judge it
    try:
        with socket.create_connection(hp, timeout=max(timeout_s, 0.05)):
            return None
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def _gcs_reachable(address: str, timeout_s: float) -> str | None:
    """None when a Ray GCS answers at ``host:port``, else the reason.

    ``ray.init`` waits minutes on an address that accepts TCP but is no GCS (another service,
    a wedged head); one bounded gRPC call (GetClusterId, what a driver asks first) tells."""
    try:
        import grpc
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:  # Ray's generated stubs moved: skip the check rather than fail
        return None
    with grpc.insecure_channel(address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(),
                              timeout=max(timeout_s, 0.5))
        except grpc.RpcError as exc:
            code = exc.code()
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                return None  # a GCS with token auth: it is one; ray.init will authenticate
            return f"no Ray GCS answers there: {code.name} {exc.details()}"
    return None


def _cluster_alive(address: str, timeout_s: float = 2.0) -> bool:
    if _tcp_reachable(address, timeout_s) is not None:
        return False
    return "://" in address or _gcs_reachable(address, timeout_s) is None


def _local_hosts() -> set[str]:
    """Names and addresses of this machine (loopback and every interface)."""
    hosts = {"localhost", "127.0.0.1", "::1", "0.0.0.0", socket.gethostname()}
    with contextlib.suppress(Exception):
        import psutil

        for addrs in psutil.net_if_addrs().values():
            hosts.update(a.address.split("%", 1)[0] for a in addrs
                         if a.family in (socket.AF_INET, socket.AF_INET6))
    return hosts


def same_address(a: str | None, b: str | None) -> bool:
    """Whether two addresses name the same cluster endpoint. On Linux a local head advertises
    the host's routable IP (``10.1.2.3:6379``) while drivers here reach it at
    ``127.0.0.1:6379``: any two local names with the same port and scheme are the same."""
    if a is None or b is None:
        return False
    if a == b:
        return True
    ha, hb = _split_host_port(a), _split_host_port(b)
    scheme_a = a.split("://", 1)[0] if "://" in a else ""
    scheme_b = b.split("://", 1)[0] if "://" in b else ""
    if ha is None or hb is None or scheme_a != scheme_b or ha[1] != hb[1]:
        return False
    hosts = []
    for host in (ha[0], hb[0]):
        with contextlib.suppress(OSError):
            host = socket.gethostbyname(host)
        hosts.append(host)
    if hosts[0] == hosts[1]:
        return True
    local = _local_hosts()
    return hosts[0] in local and hosts[1] in local


def _find_auto_address() -> str | None:
    """The cluster of the last default ``ray start`` here (what ``"auto"`` means to Ray),
    without looking at ``RAY_ADDRESS``."""
    try:
        from ray._private.utils import read_ray_address  # private, hence the fallback below

        return read_ray_address(None)
    except Exception:
        path = Path("/tmp/ray/ray_current_cluster")
        if not path.is_file():
            return None
        return path.read_text().strip() or None


def read_state(state_file: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """The state ``start_service`` recorded, or None when there is none (or it is unreadable)."""
    path = Path(state_file) if state_file is not None else DEFAULT_STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and state.get("address") else None


def _write_state(state_file: Path, state: dict[str, Any]) -> None:
    state_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_file.with_name(state_file.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, state_file)


def resolve_address(address: str | None,
                    state_file: str | os.PathLike[str] | None = None) -> str:
    """An explicit address for ``address`` (None: the state file's; "auto": see above)."""
    if address is None:
        state = read_state(state_file)
        if state is None:
            path = state_file if state_file is not None else DEFAULT_STATE_FILE
            raise ServiceUnavailableError(
                f"no K-Means service address given and none recorded in {path}; {START_HINT}")
        return str(state["address"])
    if address == "auto":
        found = _find_auto_address()
        if not found:
            raise ServiceUnavailableError(
                f"address 'auto': no running Ray cluster recorded on this machine; {START_HINT}")
        return found
    return address


def _current_address() -> str | None:
    """The address this process is connected to (None if it cannot tell)."""
    recorded = _CONNECTED_ADDRESS[0] if _CONNECTED_ADDRESS else None
    try:
        from ray.util.client import ray as client_ray

        if client_ray.is_connected():
            return recorded  # a Ray Client connection cannot report its address
    except ImportError:
        pass
    try:
        return ray.get_runtime_context().gcs_address or recorded
    except Exception:
        return recorded


def _connected_to(address: str) -> bool:
    recorded = _CONNECTED_ADDRESS[0] if _CONNECTED_ADDRESS else None
    return same_address(address, _current_address()) or same_address(address, recorded)


def ensure_ray(address: str, namespace: str, timeout_s: float = 30.0) -> None:
    """Connect this process to the Ray cluster at ``address`` (a no-op when it already is).

    Probes the address first (TCP, then one bounded gRPC call to the GCS), so a dead or wrong
    address fails in seconds instead of in Ray's own, minutes-long, GCS reconnection loop.
    """
    with _CONNECT_LOCK:
        current = _current_address() if ray.is_initialized() else None
        if ray.is_initialized() and (current is None or _connected_to(address)):
            return
        deadline = time.monotonic() + timeout_s
        delay = 0.1
        while True:
            reason = _tcp_reachable(address, min(2.0, max(deadline - time.monotonic(), 0.05)))
            if reason is None:
                break
            # A head that is still starting refuses connections for a moment: retry a little,
            # but never for long (3 quick tries), because a dead address should fail fast.
            if delay > 0.4 or time.monotonic() + delay > deadline:
                raise ServiceUnavailableError(
                    f"cannot reach a Ray cluster at {address} ({reason}); {START_HINT}")
            time.sleep(delay)
            delay *= 2
        if "://" not in address:
            reason = _gcs_reachable(address, min(5.0, max(deadline - time.monotonic(), 0.5)))
            if reason is not None:
                raise ServiceUnavailableError(
                    f"cannot reach a Ray cluster at {address} ({reason}); {START_HINT}")
        if ray.is_initialized():
            # Checked after the probes: for a dead address "unreachable" is the useful answer.
            raise ServiceError(
                f"this process is already connected to the Ray cluster at {current}; it cannot "
                f"also connect to {address} (call ray.shutdown() first)")
        try:
            if "://" in address:
                # Ray Client: other non-default ray.init arguments would be forwarded to a
                # ray.init on the server side; the namespace is all that matters there. Its
                # builder logs at INFO what it forwards; that is noise here.
                logging.getLogger("ray.client_builder").setLevel(logging.WARNING)
                ray.init(address=address, namespace=namespace)
            else:
                ray.init(address=address, namespace=namespace, ignore_reinit_error=True,
                         logging_level=logging.WARNING, log_to_driver=False)
        except Exception as exc:
            raise ServiceUnavailableError(
                f"cannot connect to the Ray cluster at {address} "
                f"({type(exc).__name__}: {exc}); {START_HINT}") from exc
        _CONNECTED_ADDRESS[:] = [address]


def disconnect() -> None:
    """``ray.shutdown()`` this process's connection (the cluster and service keep running)."""
    with _CONNECT_LOCK:
        if ray.is_initialized():
            ray.shutdown()
        _CONNECTED_ADDRESS.clear()


def _lookup_actor(name: str, namespace: str, address: str) -> Any:
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError as exc:  # Ray's "Failed to look up actor with name ..."
        raise ServiceUnavailableError(
            f"no K-Means service actor {name!r} in namespace {namespace!r} on the Ray cluster "
            f"at {address}; {START_HINT}") from exc


class KMeansClient:
    """Calls the service actor with retries: what Beam workers and the CLI use.

    Every call retries transient failures (actor restarting or unreachable, dropped
    connection) with exponential backoff until ``timeout_s`` has passed, then raises
    ``ServiceUnavailableError``. Errors raised by the service's own code (a bad array,
    ``ModelNotFoundError``) are raised at once, as their own type.

    Make one per process (a Beam ``ModelHandler.load_model`` is the place): ``connect``
    connects the process to Ray, and the actor handle is only valid while it stays connected.
    Thread-safe: Beam's DoFn threads may share it.
    """

    def __init__(self, actor: Any, config: ServiceConfig, address: str,
                 timeout_s: float = 60.0, backoff_s: float = 0.2,
                 max_backoff_s: float = 5.0, fit_timeout_s: float = 3600.0) -> None:
        self._actor = actor
        self.config = config
        self.address = address
        self.timeout_s = timeout_s
        # Fitting a large level-1 sample legitimately takes minutes: its own, longer bound.
        self.fit_timeout_s = fit_timeout_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s

    @classmethod
    def connect(cls, config: ServiceConfig | None = None, timeout_s: float = 30.0, *,
                state_file: str | os.PathLike[str] | None = None,
                call_timeout_s: float | None = None,
                fit_timeout_s: float = 3600.0) -> KMeansClient:
        """Connect to the cluster and look the actor up; ``ServiceUnavailableError`` if either
        cannot be reached within ``timeout_s``. ``call_timeout_s`` (default ``timeout_s``,
        at least 60 s) bounds each later call, ``fit_timeout_s`` each fit (retries
        included); a call's own ``timeout_s`` argument overrides both."""
        config = config or ServiceConfig()
        address = resolve_address(config.address, state_file)
        ensure_ray(address, config.namespace, timeout_s)
        actor = _lookup_actor(config.name, config.namespace, address)
        return cls(actor, config, address,
                   timeout_s=call_timeout_s if call_timeout_s is not None else max(timeout_s, 60),
                   fit_timeout_s=fit_timeout_s)

    @property
    def actor(self) -> Any:
        """The Ray actor handle (for ``ray.kill`` in tests, or custom calls)."""
        return self._actor

    def _unavailable(self, what: str, attempts: int, exc: BaseException | None,
                     timeout_s: float) -> ServiceUnavailableError:
        cause = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        return ServiceUnavailableError(
            f"K-Means service {self.config.name!r} at {self.address} did not complete {what} "
            f"within {timeout_s:.0f} s ({attempts} attempt(s)){cause}; is it running? "
            f"`ndcl service status` tells; {START_HINT}")

    def _call(self, method: str, *args: Any, timeout_s: float | None = None) -> Any:
        return self._gather([(method, args)], timeout_s, what=method)[0]

    def _gather(self, calls: list[tuple[str, tuple[Any, ...]]], timeout_s: float | None,
                what: str) -> list[Any]:
        """Run actor calls concurrently; retry the ones that failed transiently."""
        total = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + total
        delay = self.backoff_s
        results: list[Any] = [None] * len(calls)
        pending = list(range(len(calls)))
        attempts = 0
        last: BaseException | None = None
        while pending:
            attempts += 1
            refs = {}
            failed: list[int] = []
            for i in pending:
                method, args = calls[i]
                try:
                    refs[i] = getattr(self._actor, method).remote(*args)
                except TRANSIENT_ERRORS as exc:  # Ray Client raises ConnectionError here
                    last = exc
                    failed.append(i)
            for i, ref in refs.items():
                try:
                    remaining = deadline - time.monotonic()
                    results[i] = ray.get(ref, timeout=max(remaining, 0.01))
                except TRANSIENT_ERRORS as exc:
                    last = exc
                    failed.append(i)
            pending = sorted(failed)
            if not pending:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._unavailable(what, attempts, last, total) from last
            LOG.warning("K-Means service %s: %s failed (%s), retrying in %.1f s", self.address,
                        what, type(last).__name__, min(delay, remaining))
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, self.max_backoff_s)
            if isinstance(last, ray.exceptions.ActorDiedError):
                # Restarts exhausted or killed for good: someone may have started a new
                # service under the same name; if not, say so now rather than at the deadline.
                self._actor = _lookup_actor(self.config.name, self.config.namespace,
                                            self.address)
        return results

    # -- wrappers ------------------------------------------------------------------------------
    def fit(self, model_id: str, x: np.ndarray, config: KMeansConfig,
            timeout_s: float | None = None) -> dict[str, Any]:
        """Fit and keep a model; returns its summary (k, inertia, n_iter, n, d, seconds, ...)."""
        return self._call("fit", model_id, x, config,
                          timeout_s=self.fit_timeout_s if timeout_s is None else timeout_s)

    def fit_many(self, jobs: Iterable[tuple[str, np.ndarray, KMeansConfig]],
                 timeout_s: float | None = None) -> dict[str, dict[str, Any]]:
        """Submit several fits at once (e.g. one level-2 model per level-1 cluster); the actor
        runs them concurrently. Returns the summaries by model id."""
        calls = [("fit", (mid, x, cfg)) for mid, x, cfg in jobs]
        ids = [c[1][0] for c in calls]
        if len(set(ids)) != len(ids):
            raise ValueError("fit_many: model ids must be distinct")
        bound = self.fit_timeout_s if timeout_s is None else timeout_s
        return dict(zip(ids, self._gather(calls, bound, what=f"{len(calls)} fits")))

    def predict(self, model_id: str, x: np.ndarray, timeout_s: float | None = None, *,
                balanced: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Labels (int32) and squared distances (float32) for the rows of ``x`` under model
        ``model_id``; ``balanced``: capacity-constrained assignment of the whole batch."""
        labels, dist = self._call("predict", model_id, x, balanced, timeout_s=timeout_s)
        return labels, dist

    def health(self, timeout_s: float | None = None) -> dict[str, Any]:
        return self._call("health", timeout_s=timeout_s)

    def get_model(self, model_id: str, timeout_s: float | None = None) -> KMeansModel:
        return self._call("get_model", model_id, timeout_s=timeout_s)

    def get_summary(self, model_id: str, timeout_s: float | None = None) -> dict[str, Any]:
        return self._call("get_summary", model_id, timeout_s=timeout_s)

    def has_model(self, model_id: str, timeout_s: float | None = None) -> bool:
        return self._call("has_model", model_id, timeout_s=timeout_s)

    def list_models(self, timeout_s: float | None = None) -> list[str]:
        return self._call("list_models", timeout_s=timeout_s)

    def drop(self, model_id: str, timeout_s: float | None = None) -> bool:
        return self._call("drop", model_id, timeout_s=timeout_s)


# ---------------------------------------------------------------------------------------------
# Starting and stopping
# ---------------------------------------------------------------------------------------------


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

    if config.address is None and previous and _cluster_alive(previous["address"]):
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
            _write_state(state_path, {**state, "format": STATE_FORMAT})
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
    _write_state(state_path, state)
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
        client = KMeansClient(_lookup_actor(config.name, config.namespace, address), config,
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
    reachable = _tcp_reachable(address, 2.0) is None

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
        if ray.is_initialized() and _connected_to(address):
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


def merge_resources(text: str | None) -> dict[str, float]:
    """Parse ``--resources '{"TPU": 4}'`` (JSON object of numbers)."""
    if not text:
        return {}
    value = json.loads(text)
    if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, int | float) for k, v in value.items()):
        raise ValueError(f"--resources must be a JSON object of numbers, got {text!r}")
    return {k: float(v) for k, v in value.items()}
