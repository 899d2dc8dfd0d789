"""The K-Means backends behind ``transforms.cluster``'s :class:`~transforms.cluster.KMeansBackend`
protocol: the Ray-hosted JAX service (:class:`RayBackend`, a thin adapter over
``runners.kmeans.service.KMeansClient``) and the same JAX code in-process
(:class:`LocalBackend`, ``--kmeans-backend local``).

``transforms`` never imports this module (the layers of issue 13): ``beam_pipeline`` puts
:func:`connect_backend` into the :class:`~transforms.cluster.BackendSpec` it builds, and the
workers call it from there (pickled by reference, so imported on the worker).
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
from apache_beam.io.filesystems import FileSystems

from transforms import faults
from transforms.cluster import BackendSpec, FitParams, KMeansBackend, model_path

LOG = logging.getLogger(__name__)


def kmeans_config(params: FitParams) -> Any:
    """The JAX implementation's config for ``params`` (imports JAX: called where it fits)."""
    from runners.kmeans.jax_kmeans import KMeansConfig

    return KMeansConfig(k=params.k, max_iter=params.max_iter, tol=params.tol,
                        seed=params.seed, mode=params.mode, balanced=params.balanced)


class LocalBackend:
    """The JAX K-Means in this process, with models persisted under ``model_dir``."""

    def __init__(self, model_dir: str) -> None:
        self.model_dir = model_dir
        self.models: dict[str, Any] = {}

    def fit(self, model_id: str, x: np.ndarray, params: FitParams) -> dict[str, Any]:
        from runners.kmeans.jax_kmeans import fit

        start = time.perf_counter()
        model = fit(x, kmeans_config(params))
        self.models[model_id] = model
        with FileSystems.create(model_path(self.model_dir, model_id)) as handle:
            handle.write(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
        return {"k": int(model.centres.shape[0]), "n": len(x), "inertia": float(model.inertia),
                "n_iter": int(model.n_iter), "seconds": time.perf_counter() - start}

    def fit_many(self, jobs: Iterable[tuple[str, np.ndarray, FitParams]]
                 ) -> dict[str, dict[str, Any]]:
        return {model_id: self.fit(model_id, x, params) for model_id, x, params in jobs}

    def predict(self, model_id: str, x: np.ndarray, *, retry: bool = True
                ) -> tuple[np.ndarray, np.ndarray]:
        from runners.kmeans.jax_kmeans import predict

        model = self.models.get(model_id)
        if model is None:
            with FileSystems.open(model_path(self.model_dir, model_id)) as handle:
                model = self.models[model_id] = pickle.loads(handle.read())
        return predict(model, x)

    def before_predictions(self) -> None:
        """Nothing to prepare in-process."""

    def close(self) -> None:
        self.models.clear()


class RayBackend:
    """The Ray-hosted service through its client, with :class:`FitParams` turned into the
    JAX config the service fits with."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def fit(self, model_id: str, x: np.ndarray, params: FitParams) -> dict[str, Any]:
        return self.client.fit(model_id, x, kmeans_config(params))

    def fit_many(self, jobs: Iterable[tuple[str, np.ndarray, FitParams]]
                 ) -> dict[str, dict[str, Any]]:
        return self.client.fit_many([(m, x, kmeans_config(p)) for m, x, p in jobs])

    def predict(self, model_id: str, x: np.ndarray, *, retry: bool = True
                ) -> tuple[np.ndarray, np.ndarray]:
        return self.client.predict(model_id, x, attempts=None if retry else 1)

    def before_predictions(self) -> None:
        kill_actor_if_asked(self.client)

    def close(self) -> None:
        close = getattr(self.client, "close", None)  # the client holds no resources today
        if close is not None:
            close()


def kill_actor_if_asked(client: Any) -> None:
    """Test hook (``transforms.faults``): kill the Ray K-Means actor between fit and predict,
    with (``kmeans_kill``) or without (``kmeans_kill_for_good``) a restart by Ray."""
    for point, restart in (("kmeans_kill", True), ("kmeans_kill_for_good", False)):
        actor = getattr(client, "actor", None)
        if actor is None or not faults.fires(point):
            continue
        import ray

        pid = client.health()["pid"]
        LOG.warning("fault injection: killing the K-Means actor (pid %d, restart: %s)", pid,
                    restart)
        ray.kill(actor, no_restart=not restart)
        if restart:
            # Wait for the new process, so that the predictions below really go to a
            # restarted actor (which must reload the models from its model folder).
            deadline = time.monotonic() + 120
            new_pid = pid
            while new_pid == pid and time.monotonic() < deadline:
                time.sleep(0.2)
                new_pid = client.health()["pid"]
            LOG.warning("fault injection: K-Means actor restarted (pid %d -> %d)", pid, new_pid)


def connect_backend(spec: BackendSpec) -> KMeansBackend:
    """A backend for ``spec``; raises a clear error when the service cannot be reached."""
    if spec.kind == "local":
        return LocalBackend(spec.model_dir)
    if spec.kind != "ray":
        raise ValueError(f"unknown K-Means backend {spec.kind!r} (expected ray or local)")
    from runners.kmeans.service import KMeansClient, ServiceConfig

    config = ServiceConfig(address=spec.address, namespace=spec.namespace, name=spec.name)
    return RayBackend(KMeansClient.connect(config, timeout_s=spec.timeout_s))
