"""Connecting this process to the Ray cluster that hosts the K-Means service: addresses
(explicit, ``"auto"`` or the state file's), fast probes of a dead or wrong address, one
connection per process (``ensure_ray``/``disconnect``) and the actor lookup.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import ray

from runners.kmeans.errors import ServiceError, ServiceUnavailableError
from runners.kmeans.service_config import DEFAULT_STATE_FILE, START_HINT, read_state

_LOG = logging.getLogger(__name__)
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


def tcp_reachable(address: str, timeout_s: float) -> str | None:
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


def cluster_alive(address: str, timeout_s: float = 2.0) -> bool:
    if tcp_reachable(address, timeout_s) is not None:
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


def connected_to(address: str) -> bool:
    recorded = _CONNECTED_ADDRESS[0] if _CONNECTED_ADDRESS else None
    return same_address(address, _current_address()) or same_address(address, recorded)


def ensure_ray(address: str, namespace: str, timeout_s: float = 30.0) -> None:
    """Connect this process to the Ray cluster at ``address`` (a no-op when it already is).

    Probes the address first (TCP, then one bounded gRPC call to the GCS), so a dead or wrong
    address fails in seconds instead of in Ray's own, minutes-long, GCS reconnection loop.
    """
    with _CONNECT_LOCK:
        current = _current_address() if ray.is_initialized() else None
        if ray.is_initialized() and (current is None or connected_to(address)):
            return
        deadline = time.monotonic() + timeout_s
        delay = 0.1
        while True:
            reason = tcp_reachable(address, min(2.0, max(deadline - time.monotonic(), 0.05)))
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
        attempt = 1
        while True:
            try:
                _init(address, namespace)
                break
            except Exception as exc:
                if attempt < CLIENT_SERVER_ATTEMPTS and _client_server_start_failed(exc):
                    # The head's proxy spawns one server process per client and waits 30 s for
                    # it to answer; one that does not (seen on a loaded 2-core CI machine, its
                    # log still empty) is left behind and the next connection gets a new one on
                    # another port, so this failure alone is worth retrying. Each try has Ray's
                    # own bound, not what is left of ``timeout_s``: the first try alone uses
                    # all of that, which is why a shared deadline never retried.
                    _LOG.warning("the Ray Client server for this connection failed to start "
                                 "(try %d of %d); connecting again", attempt,
                                 CLIENT_SERVER_ATTEMPTS)
                    if ray.is_initialized():
                        ray.shutdown()
                    time.sleep(0.5 * attempt)
                    attempt += 1
                    continue
                raise ServiceUnavailableError(
                    f"cannot connect to the Ray cluster at {address} "
                    f"({type(exc).__name__}: {exc}); {START_HINT}") from exc
        _CONNECTED_ADDRESS[:] = [address]


# How many times a Ray Client connection is tried when the head reports that the server process
# it started for this client died (the only connection failure retried: others are permanent).
CLIENT_SERVER_ATTEMPTS = 3


def _client_server_start_failed(exc: BaseException) -> bool:
    text = str(exc)
    return ("Starting Ray client server failed" in text
            or "Proxy failed to Connect to backend" in text)


def _init(address: str, namespace: str) -> None:
    if "://" in address:
        # Ray Client: other non-default ray.init arguments would be forwarded to a ray.init on
        # the server side; the namespace is all that matters there. Its builder logs at INFO
        # what it forwards; that is noise here.
        logging.getLogger("ray.client_builder").setLevel(logging.WARNING)
        ray.init(address=address, namespace=namespace)
    else:
        ray.init(address=address, namespace=namespace, ignore_reinit_error=True,
                 logging_level=logging.WARNING, log_to_driver=False)


def disconnect() -> None:
    """``ray.shutdown()`` this process's connection (the cluster and service keep running)."""
    with _CONNECT_LOCK:
        if ray.is_initialized():
            ray.shutdown()
        _CONNECTED_ADDRESS.clear()


def lookup_actor(name: str, namespace: str, address: str) -> Any:
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError as exc:  # Ray's "Failed to look up actor with name ..."
        raise ServiceUnavailableError(
            f"no K-Means service actor {name!r} in namespace {namespace!r} on the Ray cluster "
            f"at {address}; {START_HINT}") from exc

