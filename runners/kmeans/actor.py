"""The K-Means service's Ray actor, :class:`KMeansService`: fitted models kept by id, in memory
and (with ``model_dir``) on disk, so that a restarted actor reloads them.

Ray pickles the actor class by reference to this module, so it must stay importable on the
cluster's workers (``start_service`` puts this checkout on their ``PYTHONPATH``). JAX is
imported inside the actor only: the driver that creates it never initialises JAX.
"""

from __future__ import annotations

import os
import pickle
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import numpy as np
import ray

from runners.kmeans.errors import ModelNotFoundError

if TYPE_CHECKING:
    from runners.kmeans.jax_kmeans import KMeansConfig

MODEL_SUFFIX = ".pkl"


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
        # `token` identifies the process that created this actor (see
        # lifecycle._create_or_get_actor).
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
