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

The code lives in modules of one concern; this module gathers their public names, so that
``from runners.kmeans.service import ...`` is the one import callers need:

- :mod:`runners.kmeans.service_config`: ``ServiceConfig`` and the state file;
- :mod:`runners.kmeans.actor`: the Ray actor ``KMeansService`` and its model files;
- :mod:`runners.kmeans.connection`: addresses, probes, ``ensure_ray``/``disconnect``;
- :mod:`runners.kmeans.client`: ``KMeansClient`` (retries with backoff);
- :mod:`runners.kmeans.lifecycle`: ``start_service``, ``service_status``, ``stop_service``.
"""

from __future__ import annotations

from runners.kmeans.actor import MODEL_SUFFIX, KMeansService, model_path
from runners.kmeans.client import LOG, TRANSIENT_ERRORS, KMeansClient
from runners.kmeans.connection import disconnect, ensure_ray, resolve_address, same_address
from runners.kmeans.errors import ModelNotFoundError, ServiceError, ServiceUnavailableError
from runners.kmeans.lifecycle import (
    LOCAL_TEMP_ROOT,
    ServiceStatus,
    StartResult,
    StopResult,
    service_status,
    session_processes,
    start_service,
    stop_service,
)
from runners.kmeans.service_config import (
    DEFAULT_STATE_FILE,
    START_HINT,
    STATE_FORMAT,
    ServiceConfig,
    merge_resources,
    read_state,
)

__all__ = [
    "DEFAULT_STATE_FILE",
    "LOCAL_TEMP_ROOT",
    "LOG",
    "MODEL_SUFFIX",
    "START_HINT",
    "STATE_FORMAT",
    "TRANSIENT_ERRORS",
    "KMeansClient",
    "KMeansService",
    "ModelNotFoundError",
    "ServiceConfig",
    "ServiceError",
    "ServiceStatus",
    "ServiceUnavailableError",
    "StartResult",
    "StopResult",
    "disconnect",
    "ensure_ray",
    "merge_resources",
    "model_path",
    "read_state",
    "resolve_address",
    "same_address",
    "service_status",
    "session_processes",
    "start_service",
    "stop_service",
]
