"""``transforms.embed``: terms, TF-IDF and the SVD embedding against scikit-learn, the
bottom-k sample and the names of the hashed columns."""

from __future__ import annotations

import numpy as np
import xxhash
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from tests.fixtures import topic_records
from transforms.batches import make_uid
from transforms.embed import (
    NUMBER_TERM,
    TERM_SEPARATOR,
    BottomKSampleFn,
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
