"""Two-level K-Means labels: ``cluster_A`` over the corpus, then ``cluster_B`` inside each
``cluster_A``, from a K-Means service called through Beam's RunInference.

Fitting happens once, centrally, on the deterministic embedding sample (``transforms.embed``):
level 1 fits ``k1`` clusters on the whole sample, level 2 fits ``k2`` clusters on the sample
members of each level-1 cluster (fewer when a cluster has fewer members). Models live in the
service by id (``<run>/A``, ``<run>/B/<a>``) and are also written under ``model_dir``, so a
restarted service or a worker in another process can load them again.

Predicting goes through ``RunInference`` with :class:`ClusterModelHandler`, a Beam
``RemoteModelHandler`` whose ``create_client`` connects to the backend: the Ray-hosted JAX
service or, with ``backend="local"``, the same JAX code in-process. Both live in the runner layer
(``runners.kmeans.backend``); this module knows them only through the :class:`KMeansBackend`
protocol and the ``connect`` function the caller puts into the :class:`BackendSpec`.
RunInference brings model sharing and inference metrics, and ``RemoteModelHandler`` the
retries (exponential backoff) and client-side throttling of the prediction requests: there the
backend makes one attempt per call and says, by the exception's ``retryable`` attribute,
whether a failure is worth another (:func:`retryable`). Elements are already batches of
thousands of documents, so the handler runs ``with_no_batching()``. The fit is not a
RunInference call and keeps the backend's own retries. The embeddings wait for the fit (a side
input), so no document is labelled before the models exist.

The fit summary also holds the silhouette of both levels on the fitted sample (at most
``SILHOUETTE_POINTS`` of its documents, drawn with the seed): scikit-learn's
``silhouette_score`` with the Euclidean distance, the geometry K-Means minimises (on the
unit-length embeddings it is a monotone function of the cosine distance, ``sqrt(2 - 2 cos)``);
level 2 scores each document's ``(cluster_A, cluster_B)`` pair as one cluster. With the
sample's words (``EmbedDocuments``' ``sample_terms``) it holds the top terms of every cluster
too (``top_terms`` in the level-1 fit and in each level-2 fit; see :func:`top_terms`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import (
    KeyedModelHandler,
    PredictionResult,
    RemoteModelHandler,
    RunInference,
)

from transforms.batches import stage_counter, timed_process
from transforms.embed import NUMBER_TERM, SvdModel, column_names, counts_matrix

LOG = logging.getLogger(__name__)
# Silhouette costs O(points²) distances: on 2,000 points one score takes ~50 ms.
SILHOUETTE_POINTS = 2000
SILHOUETTE_METRIC = "euclidean"
TOP_TERMS = 10


def silhouette_rows(n: int, seed: int, limit: int = SILHOUETTE_POINTS) -> np.ndarray:
    """Sorted rows of a deterministic sample of at most ``limit`` of ``n`` points."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def pair_labels(labels_a: np.ndarray, labels_b: np.ndarray) -> np.ndarray:
    """One id per ``(cluster_A, cluster_B)`` pair: the level-2 clusters as flat labels."""
    return labels_a.astype(np.int64) * (int(labels_b.max(initial=0)) + 1) + labels_b


def silhouette(x: np.ndarray, labels: np.ndarray) -> float | None:
    """Mean silhouette of ``labels`` on ``x``; None where it is undefined (fewer than 2
    clusters, or every point its own cluster)."""
    from sklearn.metrics import silhouette_score

    if not 2 <= len(np.unique(labels)) <= len(x) - 1:
        return None
    return float(silhouette_score(x, labels, metric=SILHOUETTE_METRIC))


@dataclass(frozen=True)
class FitParams:
    """One K-Means fit's parameters (the backend turns them into its own config)."""

    k: int
    max_iter: int
    tol: float
    seed: int
    mode: str
    balanced: bool


class KMeansBackend(Protocol):
    """What the clustering steps need of a K-Means backend."""

    def fit(self, model_id: str, x: np.ndarray, params: FitParams) -> dict[str, Any]: ...

    def fit_many(self, jobs: Iterable[tuple[str, np.ndarray, FitParams]]
                 ) -> dict[str, dict[str, Any]]: ...

    def predict(self, model_id: str, x: np.ndarray, *, retry: bool = True
                ) -> tuple[np.ndarray, np.ndarray]:
        """Labels and squared distances. ``retry=False``: one attempt, and a transient failure
        raises an exception whose ``retryable`` attribute is true (the caller retries)."""

    def before_predictions(self) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class BackendSpec:
    """Where the K-Means models are fitted and served; picklable, sent to workers.
    ``connect`` makes a :class:`KMeansBackend` of it (``runners.kmeans.backend.connect_backend``,
    set by ``beam_pipeline``: a module-level function, pickled by reference)."""

    kind: str  # "ray" | "local"
    model_dir: str
    address: str | None = None
    namespace: str = "ndcl"
    name: str = "ndcl-kmeans"
    timeout_s: float = 120.0
    connect: Callable[[BackendSpec], KMeansBackend] | None = None


def open_backend(spec: BackendSpec) -> KMeansBackend:
    if spec.connect is None:
        raise ValueError("BackendSpec.connect is not set (e.g. "
                         "runners.kmeans.backend.connect_backend)")
    return spec.connect(spec)


@dataclass(frozen=True)
class LevelsConfig:
    k1: int = 10
    k2: int = 10
    max_iter: int = 100
    tol: float = 1e-4
    mode: str = "full"
    balanced: bool = False
    seed: int = 1


def model_path(model_dir: str, model_id: str) -> str:
    return f"{model_dir.rstrip('/')}/{model_id.replace('/', '__')}.pkl"


def fit_params(levels: LevelsConfig, k: int, seed: int) -> FitParams:
    return FitParams(k=k, max_iter=levels.max_iter, tol=levels.tol, seed=seed,
                     mode=levels.mode, balanced=levels.balanced)


def fit_levels(backend: KMeansBackend, run_id: str, x: np.ndarray, levels: LevelsConfig
               ) -> dict[str, Any]:
    """Fit level 1 on ``x`` and level 2 inside each level-1 cluster; returns a summary."""
    k1 = min(levels.k1, len(x))
    summary: dict[str, Any] = {"run_id": run_id, "sample": len(x),
                               "A": backend.fit(f"{run_id}/A", x, fit_params(levels, k1,
                                                                                levels.seed))}
    labels_a, _ = backend.predict(f"{run_id}/A", x)
    jobs = []
    for a in range(k1):
        members = x[labels_a == a]
        if len(members) == 0:
            raise RuntimeError(f"level-1 cluster {a} has no sample member; K-Means must not "
                               "leave empty clusters")
        jobs.append((f"{run_id}/B/{a}", members,
                     fit_params(levels, min(levels.k2, len(members)), levels.seed + 1 + a)))
    # Level-2 fits are independent: the service runs them concurrently.
    fitted = backend.fit_many(jobs)
    summary["B"] = {a: fitted[f"{run_id}/B/{a}"] for a in range(k1)}
    summary["silhouette"] = sample_silhouettes(backend, run_id, x, levels.seed)
    return summary


def sample_silhouettes(backend: KMeansBackend, run_id: str, x: np.ndarray, seed: int
                       ) -> dict[str, Any]:
    """Silhouette of both fitted levels on a seeded subsample of the fitted sample ``x``."""
    start = time.perf_counter()
    points = x[silhouette_rows(len(x), seed)]
    labels_a, labels_b = predict_levels(backend, run_id, points)
    return {"A": silhouette(points, labels_a),
            "B": silhouette(points, pair_labels(labels_a, labels_b)),
            "points": len(points), "metric": SILHOUETTE_METRIC,
            "seconds": round(time.perf_counter() - start, 3)}


def predict_levels(backend: KMeansBackend, run_id: str, x: np.ndarray, *, retry: bool = True
                   ) -> tuple[np.ndarray, np.ndarray]:
    labels_a, _ = backend.predict(f"{run_id}/A", x, retry=retry)
    labels_b = np.zeros(len(x), dtype=np.int64)
    for a in np.unique(labels_a).tolist():
        mask = labels_a == a
        labels_b[mask], _ = backend.predict(f"{run_id}/B/{a}", x[mask], retry=retry)
    return labels_a.astype(np.int64), labels_b


def top_terms(backend: KMeansBackend, run_id: str, x: np.ndarray, svd: SvdModel,
              sample_terms: list[tuple], n: int = TOP_TERMS
              ) -> tuple[dict[str, list[str]], dict[int, dict[str, list[str]]]]:
    """Top terms of every fitted cluster: ``({a: terms}, {a: {b: terms}})``.

    A cluster's centre is the mean of its sample members' embeddings (K-Means' centre); what
    sets it apart is the centre minus the mean of the set it was split from (the sample for
    ``cluster_A``, its ``cluster_A`` for ``cluster_B``; the centre itself when it is the only
    cluster there), projected back onto the hashed TF-IDF columns
    (:meth:`SvdModel.top_columns`); each column is named by the sample's words
    (:func:`transforms.embed.column_names`). Terms that say nothing about a topic are left
    out (``#NUMBER``, one- and two-letter fragments such as the ``s`` of "it's").
    Deterministic: the sample, SVD and fits are seeded, ties are broken by column and word."""
    labels_a, labels_b = predict_levels(backend, run_id, x)
    keys, directions = [], []
    parts_a = np.unique(labels_a).tolist()
    for a in parts_a:
        members = labels_a == a
        centre = x[members].mean(axis=0)
        keys.append((a, None))
        directions.append(centre - x.mean(axis=0) if len(parts_a) > 1 else centre)
        parts_b = np.unique(labels_b[members]).tolist()
        for b in parts_b:
            sub = x[members & (labels_b == b)].mean(axis=0)
            keys.append((a, b))
            directions.append(sub - centre if len(parts_b) > 1 else sub)
    columns = svd.top_columns(np.array(directions), 4 * n) if directions else []
    names = column_names(sample_terms, (c for cols in columns for c in cols))
    level_1: dict[str, list[str]] = {}
    level_2: dict[int, dict[str, list[str]]] = {}
    for (a, b), cols in zip(keys, columns):
        terms = [names[c] for c in cols if c in names and _telling(names[c])][:n]
        if b is None:
            level_1[str(a)] = terms
        else:
            level_2.setdefault(a, {})[str(b)] = terms
    return level_1, level_2


def _telling(term: str) -> bool:
    return term != NUMBER_TERM and len(term) > 2


def add_top_terms(summary: dict[str, Any], terms: tuple[dict[str, list[str]],
                                                        dict[int, dict[str, list[str]]]]
                  ) -> dict[str, Any]:
    """The fit summary with ``top_terms`` in the level-1 fit and in each level-2 fit."""
    level_1, level_2 = terms
    return {**summary, "A": {**summary["A"], "top_terms": level_1},
            "B": {a: {**fit, "top_terms": level_2.get(a, {})}
                  for a, fit in summary["B"].items()}}


class FitLevelsFn(beam.DoFn):
    """The embedding sample + fitted SVD → fitted level-1 and level-2 models (a summary)."""

    timer = stage_counter("cluster_fit")

    def __init__(self, spec: BackendSpec, run_id: str, levels: LevelsConfig,
                 n_features: int) -> None:
        self.spec = spec
        self.run_id = run_id
        self.levels = levels
        self.n_features = n_features

    def setup(self) -> None:
        self.backend = open_backend(self.spec)

    @timed_process
    def process(self, sample: list[tuple], svd: SvdModel,
                sample_terms: list[tuple] | None = None) -> Iterator[dict[str, Any]]:
        x = svd.embed(counts_matrix([(cols, vals) for _, _, cols, vals in sample],
                                    self.n_features))
        summary = fit_levels(self.backend, self.run_id, x, self.levels)
        if sample_terms is not None:
            summary = add_top_terms(summary, top_terms(self.backend, self.run_id, x, svd,
                                                       sample_terms))
        LOG.info("fitted %d level-1 and %d level-2 K-Means models on %d sampled documents",
                 1, len(summary["B"]), len(x))
        yield summary

    def teardown(self) -> None:
        close = getattr(getattr(self, "backend", None), "close", None)
        if close is not None:
            close()


class _DropNoResourceWarning(logging.Filter):
    """Beam 2.77's RunInference imports ``resource`` together with its ModelManager, which
    needs torch; without torch it sets ``resource`` to None and warns "Resource module is not
    available" for every batch, although the module is there. This drops that line only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Resource module is not available")


def quiet_run_inference_memory_warning() -> None:
    """Install the filter once per process (on the root logger, where Beam logs it)."""
    root = logging.getLogger()
    if not any(isinstance(f, _DropNoResourceWarning) for f in root.filters):
        root.addFilter(_DropNoResourceWarning())


def retryable(exc: BaseException) -> bool:
    """RemoteModelHandler's retry filter: only what the backend marks as transient (an actor
    restarting, a dropped connection); a missing model or a bad array fails at once."""
    return getattr(exc, "retryable", False) is True


class ClusterModelHandler(RemoteModelHandler):
    """RunInference handler: ``(uids, embeddings)`` → ``(labels_A, labels_B)``."""

    def __init__(self, spec: BackendSpec, run_id: str, num_retries: int = 5) -> None:
        # Beam's backoff starts at 5 s and doubles: five retries wait about 2.5 min in all,
        # longer than Ray takes to restart the service actor.
        super().__init__(namespace="ndcl_kmeans", num_retries=num_retries,
                         throttle_delay_secs=1, retry_filter=retryable)
        self.spec = spec
        self.run_id = run_id

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Unpickled on a worker, before RunInference measures memory around load_model.
        self.__dict__.update(state)
        quiet_run_inference_memory_warning()

    def create_client(self) -> KMeansBackend:
        # Connect here, once per worker: RunInference shares the loaded model.
        return open_backend(self.spec)

    def request(self, batch: Sequence[tuple[np.ndarray, np.ndarray]], model: KMeansBackend,
                inference_args: dict[str, Any] | None = None) -> list[PredictionResult]:
        model.before_predictions()  # a test hook of the Ray backend (transforms.faults)
        return [PredictionResult((uids, x), predict_levels(model, self.run_id, x, retry=False))
                for uids, x in batch]

    def get_metrics_namespace(self) -> str:
        return "ndcl_kmeans"

    def get_num_bytes(self, batch: Sequence[tuple[np.ndarray, np.ndarray]]) -> int:
        # Beam's default pickles the whole batch only to measure it.
        return sum(uids.nbytes + x.nbytes for uids, x in batch)


def _wait_for_fit(element: Any, fitted: dict[str, Any]) -> list[Any]:
    # A list of one: RunInference runs with_no_batching(), so each element is one request.
    return [element]


def _labels(element: tuple[int, PredictionResult]) -> tuple[int, tuple]:
    key, result = element
    uids, _ = result.example
    labels_a, labels_b = result.inference
    return key, (uids, labels_a, labels_b)


@dataclass(frozen=True)
class ClusterParams:
    spec: BackendSpec  # where the models are fitted and served
    run_id: str  # names the run's models
    levels: LevelsConfig
    n_features: int  # the embedding's hashed term space (to name the top terms)


class Clustered(NamedTuple):
    """``labels``: ``(batch_key, (uids, cluster_A, cluster_B))``; ``fit``: the fit summary."""

    labels: beam.PCollection
    fit: beam.PCollection


class ClusterDocuments(beam.PTransform):
    """``{"embeddings", "sample", "svd"[, "sample_terms"]}`` (of ``EmbedDocuments``) →
    :class:`Clustered`."""

    def __init__(self, params: ClusterParams) -> None:
        super().__init__()
        self.spec = params.spec
        self.run_id = params.run_id
        self.levels = params.levels
        self.n_features = params.n_features

    def expand(self, embedded: dict[str, beam.PCollection]) -> Clustered:
        # The sample's words (to name the top terms) when EmbedDocuments gives them.
        named = ((beam.pvalue.AsSingleton(embedded["sample_terms"]),)
                 if "sample_terms" in embedded else ())
        fitted = embedded["sample"] | "FitLevels" >> beam.ParDo(
            FitLevelsFn(self.spec, self.run_id, self.levels, self.n_features),
            beam.pvalue.AsSingleton(embedded["svd"]), *named)
        labels = (
            embedded["embeddings"]
            | "WaitForModels" >> beam.Map(_wait_for_fit, beam.pvalue.AsSingleton(fitted))
            | "PredictClusters" >> RunInference(
                KeyedModelHandler(ClusterModelHandler(self.spec, self.run_id))
                .with_no_batching())
            | "ExtractLabels" >> beam.Map(_labels)
        )
        return Clustered(labels, fitted)
