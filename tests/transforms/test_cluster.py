"""``transforms.cluster``: the two K-Means levels in a TestPipeline on planted topics, the
sample silhouettes of a fit, and the model handler (retries, the dropped RunInference warning)."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that
from sklearn.metrics import adjusted_rand_score, silhouette_score

from runners.kmeans.backend import LocalBackend, connect_backend
from tests.fixtures import TOPICS, topic_records
from transforms.batches import DocBatch, make_uid
from transforms.cluster import (
    BackendSpec,
    ClusterDocuments,
    Clustered,
    ClusterModelHandler,
    ClusterParams,
    LevelsConfig,
    _DropNoResourceWarning,
    fit_levels,
    pair_labels,
    predict_levels,
    silhouette_rows,
)
from transforms.embed import EmbedConfig, Embedded, EmbedDocuments, EmbedParams


def test_cluster_transform_recovers_planted_topics(tmp_path: Path) -> None:
    records = topic_records()
    uids = np.array([make_uid(0, i + 1) for i in range(len(records))], dtype=np.int64)
    half = len(records) // 2
    batches = [(0, DocBatch(0, uids[:half], [str(u) for u in uids[:half]], records[:half])),
               (1, DocBatch(1, uids[half:], [str(u) for u in uids[half:]], records[half:]))]
    topic_of = {int(u): r["topic"] for u, r in zip(uids.tolist(), records)}
    spec = BackendSpec(kind="local", model_dir=str(tmp_path / "models"), connect=connect_backend)
    levels = LevelsConfig(k1=3, k2=2, seed=4)

    def check(labels: list[tuple]) -> None:
        got = {u: (a, b) for _, (us, la, lb) in labels
               for u, a, b in zip(us.tolist(), la.tolist(), lb.tolist())}
        assert set(got) == set(topic_of)
        truth = [topic_of[u] for u in sorted(got)]
        predicted = [got[u][0] for u in sorted(got)]
        assert adjusted_rand_score(truth, predicted) == 1.0
        assert {b for _, b in got.values()} <= {0, 1}

    def check_top_terms(fits: list[dict]) -> None:
        (fit,) = fits
        level_1 = fit["A"]["top_terms"]
        assert sorted(level_1) == ["0", "1", "2"]
        # Each cluster is named by its planted topic's words (the filler words are in every
        # topic, so weigh less), and the three clusters by the three topics.
        topics = [{t for t, words in TOPICS.items() if set(level_1[a][:5]) <= set(words)}
                  for a in sorted(level_1)]
        assert sorted(t for found in topics for t in found) == sorted(TOPICS)
        for sub in fit["B"].values():
            assert sorted(sub["top_terms"]) == ["0", "1"]
            assert all(0 < len(terms) <= 10 for terms in sub["top_terms"].values())

    with beam.Pipeline(runner=FnApiRunner()) as p:
        # Term statistics and the sample come from one read of the documents, the labels are
        # for a second one (in the pipeline a re-read of the input: ReadSelected).
        inputs = {"statistics": p | "CreateBatches" >> beam.Create(batches),
                  "documents": p | "CreateBatchesAgain" >> beam.Create(batches)}
        embedded = inputs | "Embed" >> EmbedDocuments(EmbedParams(EmbedConfig(
            n_features=2**16, n_components=16, sample_size=80, seed=2)))
        assert isinstance(embedded, Embedded)
        clustered = (embedded._asdict()
                     | "Cluster" >> ClusterDocuments(ClusterParams(spec, "t", levels, 2**16)))
        assert isinstance(clustered, Clustered)
        assert_that(clustered.labels, check)
        assert_that(clustered.fit, check_top_terms, label="CheckTopTerms")
    assert (tmp_path / "models" / "t__A.pkl").exists()


class FlakyBackend:
    """Predicts cluster 0 for everything; the first ``failures`` calls raise ``error``."""

    def __init__(self, failures: int, error: type[Exception]) -> None:
        self.failures = failures
        self.error = error
        self.calls: list[bool] = []

    def predict(self, model_id: str, x: np.ndarray, *, retry: bool = True
                ) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(retry)
        if self.failures:
            self.failures -= 1
            raise self.error("the actor is restarting")
        return np.zeros(len(x), dtype=np.int32), np.zeros(len(x), dtype=np.float32)

    def before_predictions(self) -> None:
        pass


class Transient(RuntimeError):
    retryable = True


def test_handler_retries_only_what_the_backend_marks_transient(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Beam's RemoteModelHandler does the retrying; the backend makes one attempt per call."""
    from apache_beam.utils import retry

    from transforms.cluster import ClusterModelHandler, retryable

    monkeypatch.setattr(retry.Clock, "sleep", lambda self, seconds: None)
    handler = ClusterModelHandler(BackendSpec(kind="local", model_dir="unused"), "run")
    batch = [(np.arange(3, dtype=np.uint64), np.ones((3, 2), dtype=np.float32))]

    backend = FlakyBackend(failures=2, error=Transient)
    (result,) = handler.run_inference(batch, backend)
    labels_a, labels_b = result.inference
    assert labels_a.tolist() == [0, 0, 0] and labels_b.tolist() == [0, 0, 0]
    assert backend.calls == [False] * 4  # two failures, then level A and level B once each

    backend = FlakyBackend(failures=1, error=LookupError)  # e.g. a model that is not there
    with pytest.raises(LookupError):
        handler.run_inference(batch, backend)
    assert len(backend.calls) == 1
    assert retryable(Transient()) and not retryable(LookupError())


def test_fit_summary_holds_sample_silhouettes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8))
    x = np.concatenate([c + 0.3 * rng.normal(size=(150, 8)) for c in centres])
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    backend = LocalBackend(str(tmp_path))
    summary = fit_levels(backend, "s", x, LevelsConfig(k1=3, k2=2, seed=4))
    scores = summary["silhouette"]
    assert scores["points"] == 450 and scores["metric"] == "euclidean"
    labels_a, labels_b = predict_levels(backend, "s", x)
    assert scores["A"] == pytest.approx(silhouette_score(x, labels_a), abs=1e-5)
    assert scores["B"] == pytest.approx(silhouette_score(x, pair_labels(labels_a, labels_b)),
                                        abs=1e-5)
    assert scores["A"] > 0.5 > scores["B"]  # three planted groups; halving them scores less
    # The subsample is seeded, sorted and at most 2,000 points.
    rows = silhouette_rows(5000, seed=1)
    assert len(rows) == 2000 and np.array_equal(rows, silhouette_rows(5000, seed=1))
    assert np.all(np.diff(rows) > 0) and not np.array_equal(rows, silhouette_rows(5000, 2))


def test_handler_unpickled_on_a_worker_drops_only_that_warning(tmp_path: Path) -> None:
    root = logging.getLogger()
    before = list(root.filters)
    try:
        for f in [f for f in root.filters if isinstance(f, _DropNoResourceWarning)]:
            root.removeFilter(f)
        spec = BackendSpec(kind="local", model_dir=str(tmp_path), connect=connect_backend)
        pickle.loads(pickle.dumps(ClusterModelHandler(spec, "run-x")))
        pickle.loads(pickle.dumps(ClusterModelHandler(spec, "run-y")))
        (drop,) = [f for f in root.filters if isinstance(f, _DropNoResourceWarning)]
        record = logging.LogRecord("root", logging.WARNING, __file__, 1,
                                   "Resource module is not available for current platform, "
                                   "memory usage cannot be fetched.", None, None)
        other = logging.LogRecord("root", logging.WARNING, __file__, 1, "something else",
                                  None, None)
        assert not drop.filter(record) and drop.filter(other)
    finally:
        root.filters[:] = before
