"""Clustering (CL): embeddings against scikit-learn, the sample, the two K-Means levels in a
TestPipeline, and ``ndcl cluster`` end to end (local JAX backend and the Ray service)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
import xxhash
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import adjusted_rand_score

from beam_pipeline.cli import main
from runners.kmeans.backend import connect_backend
from tests.conftest import REPO
from tests.fixtures import TOPICS, topic_records, write_corpus
from transforms.batches import DocBatch, make_uid
from transforms.cluster import BackendSpec, ClusterDocuments, LevelsConfig
from transforms.embed import (
    NUMBER_TERM,
    TERM_SEPARATOR,
    BottomKSampleFn,
    EmbedConfig,
    EmbedDocuments,
    SampleTermsFn,
    SvdModel,
    TermBatch,
    column_names,
    counts_matrix,
    fit_svd,
    term_columns,
    term_columns_and_words,
    terms,
    tfidf,
)


def test_terms_fold_numbers_and_drop_stop_words() -> None:
    got = terms("The 3 cats and 42nd street, THE end 7x")
    assert got == [NUMBER_TERM, "cats", NUMBER_TERM, "street", "end", NUMBER_TERM]
    assert terms("") == [] and terms("the and of") == []


def test_tfidf_equals_scikit_learn() -> None:
    texts = [r["text"] for r in topic_records(5)] + ["Space 2024 launch at 10 am", "bake it"]
    vectorizer = TfidfVectorizer(analyzer=terms, smooth_idf=True, norm="l2")
    expected = vectorizer.fit_transform(texts).toarray()
    n_features, seed = 2**20, 7
    docs = [term_columns(terms(t), n_features, seed) for t in texts]
    counts = counts_matrix(docs, n_features)
    df = np.bincount(counts.indices, minlength=n_features)
    idf = (np.log((1.0 + len(texts)) / (1.0 + df)) + 1.0).astype(np.float32)
    ours = tfidf(counts, idf).tocsc()
    # Map sklearn's vocabulary to our hashed columns (no collisions at 2**20 for these terms).
    import xxhash

    columns = [xxhash.xxh3_64_intdigest(t.encode(), seed) % n_features
               for t in vectorizer.get_feature_names_out()]
    assert len(set(columns)) == len(columns)
    assert np.allclose(ours[:, columns].toarray(), expected, atol=1e-5)


def test_bottom_k_sample_is_order_independent() -> None:
    rng = np.random.default_rng(0)
    batches = []
    for b in range(6):
        uids = np.array([make_uid(b, i + 1) for i in range(20)], dtype=np.int64)
        docs = [(np.sort(rng.choice(1000, 5, replace=False)), np.ones(5, np.float32))
                for _ in uids]
        batches.append((b, TermBatch(b, uids, counts_matrix(docs, 1000))))
    fn = BottomKSampleFn(k=17, seed=3)

    def combine(order: list[int], split: int) -> list[int]:
        accs = []
        for part in (order[:split], order[split:]):
            acc = fn.create_accumulator()
            for i in part:
                acc = fn.add_input(acc, batches[i])
            accs.append(acc)
        return [c[1] for c in fn.extract_output(fn.merge_accumulators(accs))]

    first = combine([0, 1, 2, 3, 4, 5], 2)
    assert len(first) == 17
    assert first == combine([5, 3, 1, 0, 2, 4], 4)


def test_columns_are_named_by_the_sampled_words_that_hash_there() -> None:
    words = ["orbit", "rocket", "orbit", "moon"]
    cols, counts, named = term_columns_and_words(words, 2**18, 1)
    plain = term_columns(words, 2**18, 1)
    assert np.array_equal(cols, plain[0]) and np.array_equal(counts, plain[1])
    assert sorted(named) == ["moon", "orbit", "rocket"]
    assert [int(xxhash.xxh3_64_intdigest(w.encode(), 1) % 2**18) for w in named] == list(cols)
    # Two words on one column (a hash collision): the one in more sampled documents wins,
    # ties go to the smallest word.
    sample = [(0, 1, np.array([5, 9]), TERM_SEPARATOR.join(["apple", "pear"])),
              (1, 2, np.array([5]), "plum"),
              (2, 3, np.array([5, 7]), TERM_SEPARATOR.join(["plum", "kiwi"]))]
    assert column_names(sample, [5, 9, 11]) == {5: "plum", 9: "pear"}
    assert column_names(sample[:2], [5]) == {5: "apple"}


def test_top_columns_project_centres_back_onto_the_terms() -> None:
    model = SvdModel(columns=np.array([3, 8, 20]), components=np.array(
        [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], dtype=np.float32), idf=np.ones(32, np.float32),
        n_docs=1, explained_variance_ratio=1.0)
    assert model.top_columns(np.array([[1.0, 0.0], [0.2, 0.9], [-1.0, 0.0]]), 2) == [
        [3, 20], [8, 20], []]


def test_sample_terms_follow_the_sample() -> None:
    texts = [r["text"] for r in topic_records(5)]
    named = [term_columns_and_words(terms(t), 2**16, 1) for t in texts]
    uids = np.arange(1, len(texts) + 1, dtype=np.int64)
    batch = (0, TermBatch(0, uids, counts_matrix([(c, v) for c, v, _ in named], 2**16),
                          [TERM_SEPARATOR.join(w) for _, _, w in named]))
    sample = BottomKSampleFn(7, 3).extract_output(BottomKSampleFn(7, 3).add_input([], batch))
    words = SampleTermsFn(7, 3).extract_output(SampleTermsFn(7, 3).add_input([], batch))
    assert [s[1] for s in sample] == [w[1] for w in words]
    assert all(np.array_equal(s[2], w[2]) and len(w[3].split(TERM_SEPARATOR)) == len(w[2])
               for s, w in zip(sample, words))


def test_svd_embedding_matches_scikit_learn_on_the_sample() -> None:
    texts = [r["text"] for r in topic_records(10)]
    n_features = 2**18
    docs = [term_columns(terms(t), n_features, 1) for t in texts]
    counts = counts_matrix(docs, n_features)
    df = np.bincount(counts.indices, minlength=n_features)
    sample = [(i, i, cols, vals) for i, (cols, vals) in enumerate(docs)]
    model = fit_svd(sample, df, len(texts), n_features, 8, seed=1)
    ours = model.embed(counts)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    weights = tfidf(counts, model.idf)[:, model.columns]
    svd = TruncatedSVD(n_components=8, random_state=1, algorithm="randomized", n_iter=5)
    reference = svd.fit_transform(weights)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    assert np.allclose(ours, reference, atol=1e-4)


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
        embedded = inputs | "Embed" >> EmbedDocuments(EmbedConfig(n_features=2**16,
                                                                  n_components=16,
                                                                  sample_size=80, seed=2))
        clustered = embedded | "Cluster" >> ClusterDocuments(spec, "t", levels, 2**16)
        assert_that(clustered["labels"], check)
        assert_that(clustered["fit"], check_top_terms, label="CheckTopTerms")
    assert (tmp_path / "models" / "t__A.pkl").exists()


@pytest.fixture(scope="module")
def topic_corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_corpus(tmp_path_factory.mktemp("topics"), topic_records(), files=2)


def read_kept(out: Path) -> list[dict]:
    return sorted(pq.read_table(out / "kept").to_pylist(), key=lambda r: r["id"])


def test_cli_cluster_local_backend_is_deterministic(topic_corpus: list[Path],
                                                    tmp_path: Path) -> None:
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert main(["-q", "cluster", "--input", *map(str, topic_corpus), "--output", str(out),
                     "--kmeans-backend", "local", "--k1", "3", "--k2", "2"]) == 0
        outs.append(out)
    kept = read_kept(outs[0])
    assert len(kept) == 120 and list(kept[0])[:6] == ["id", "text", "url", "timestamp",
                                                      "cluster_A", "cluster_B"]
    assert adjusted_rand_score([r["topic"] for r in kept], [r["cluster_A"] for r in kept]) == 1.0
    assert kept == read_kept(outs[1])
    summary = json.loads((outs[0] / "summary.json").read_text())
    assert summary["read"] == summary["kept"] + summary["rejected"] == 120
    assert summary["cluster"]["k1"] == 3
    # Top terms are stored per cluster, the same for the same seed.
    again = json.loads((outs[1] / "summary.json").read_text())
    level_1 = summary["cluster"]["level_1"]["top_terms"]
    assert sorted(level_1) == ["0", "1", "2"] and level_1 == again["cluster"]["level_1"][
        "top_terms"]
    fits = summary["cluster"]["level_2"]["fits"]
    assert sorted(fits) == ["0", "1", "2"] and all(sorted(f["top_terms"]) == ["0", "1"]
                                                   for f in fits.values())
    assert {a: f["top_terms"] for a, f in fits.items()} == {
        a: f["top_terms"] for a, f in again["cluster"]["level_2"]["fits"].items()}
    fit_file = json.loads((outs[0] / "_cluster_fit.json").read_text())
    assert fit_file["A"]["top_terms"] == level_1


@pytest.mark.slow
def test_cli_cluster_starts_and_stops_its_own_ray_service(topic_corpus: list[Path],
                                                          tmp_path: Path) -> None:
    out = tmp_path / "ray"
    proc = subprocess.run(
        [sys.executable, "-m", "beam_pipeline.cli", "cluster", "--input",
         *map(str, topic_corpus), "--output", str(out), "--k1", "3", "--k2", "2"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "starting a local Ray head" in proc.stderr
    assert "stopped the run's K-Means service" in proc.stderr
    kept = read_kept(out)
    assert adjusted_rand_score([r["topic"] for r in kept], [r["cluster_A"] for r in kept]) == 1.0
    local = tmp_path / "local"
    assert main(["-q", "cluster", "--input", *map(str, topic_corpus), "--output", str(local),
                 "--kmeans-backend", "local", "--k1", "3", "--k2", "2"]) == 0
    # The Ray service runs the same JAX code: the same labels.
    assert [(r["cluster_A"], r["cluster_B"]) for r in kept] == [
        (r["cluster_A"], r["cluster_B"]) for r in read_kept(local)]


def test_cli_cluster_unreachable_service_is_a_clear_error(topic_corpus: list[Path],
                                                          tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "beam_pipeline.cli", "cluster", "--input", str(topic_corpus[0]),
         "--output", str(tmp_path / "out"), "--service-address", "127.0.0.1:1",
         "--k1", "2"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 3
    assert "K-Means service unavailable" in proc.stderr
    assert "127.0.0.1:1" in proc.stderr
    assert not (tmp_path / "out").exists()


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
