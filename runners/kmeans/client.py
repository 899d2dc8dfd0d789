"""The K-Means service's client, :class:`KMeansClient`: actor calls with retries of transient
failures (exponential backoff, a total timeout) and clear errors for the rest.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import ray
import ray.exceptions

from runners.kmeans.connection import ensure_ray, lookup_actor, resolve_address
from runners.kmeans.errors import ServiceCallFailedError, ServiceUnavailableError
from runners.kmeans.service_config import START_HINT, ServiceConfig

if TYPE_CHECKING:
    from runners.kmeans.jax_kmeans import KMeansConfig, KMeansModel

LOG = logging.getLogger("ndcl.service")


# Errors worth retrying: the actor is restarting or unreachable, or the connection dropped.
# RayTaskError (an exception raised by the service's own code) is deliberately not here.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ray.exceptions.RayActorError,  # includes ActorDiedError and ActorUnavailableError
    ray.exceptions.GetTimeoutError,
    ConnectionError,
)


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
        actor = lookup_actor(config.name, config.namespace, address)
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

    def _call(self, method: str, *args: Any, timeout_s: float | None = None,
              attempts: int | None = None) -> Any:
        return self._gather([(method, args)], timeout_s, what=method, max_attempts=attempts)[0]

    def _gather(self, calls: list[tuple[str, tuple[Any, ...]]], timeout_s: float | None,
                what: str, max_attempts: int | None = None) -> list[Any]:
        """Run actor calls concurrently; retry the ones that failed transiently (until the
        timeout, or ``max_attempts``: then :class:`ServiceCallFailedError`, for a caller that
        retries itself, as Beam's RemoteModelHandler does)."""
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
            if max_attempts is not None and attempts >= max_attempts:
                if isinstance(last, ray.exceptions.ActorDiedError):
                    # Gone for good unless a new service runs under the name: if none does,
                    # that is the answer now, not after the caller's retries.
                    self._actor = lookup_actor(self.config.name, self.config.namespace,
                                                self.address)
                raise ServiceCallFailedError(
                    f"K-Means service {self.config.name!r} at {self.address}: {what} failed "
                    f"({type(last).__name__}: {last})") from last
            if remaining <= 0:
                raise self._unavailable(what, attempts, last, total) from last
            LOG.warning("K-Means service %s: %s failed (%s), retrying in %.1f s", self.address,
                        what, type(last).__name__, min(delay, remaining))
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, self.max_backoff_s)
            if isinstance(last, ray.exceptions.ActorDiedError):
                # Restarts exhausted or killed for good: someone may have started a new
                # service under the same name; if not, say so now rather than at the deadline.
                self._actor = lookup_actor(self.config.name, self.config.namespace,
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
                balanced: bool = False, attempts: int | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """Labels (int32) and squared distances (float32) for the rows of ``x`` under model
        ``model_id``; ``balanced``: capacity-constrained assignment of the whole batch;
        ``attempts``: at most that many tries (default: retry until the timeout)."""
        labels, dist = self._call("predict", model_id, x, balanced, timeout_s=timeout_s,
                                  attempts=attempts)
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
