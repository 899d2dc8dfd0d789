"""TF-IDF → TruncatedSVD → unit-length embeddings, fitted without collecting the corpus.

- Terms: lowercase letter/digit runs (the ND tokenizer); a token starting with a digit becomes
  the single term ``#NUMBER``; scikit-learn's English stop words are dropped.
- Columns: a term's column is ``xxh3_64(term, seed) % n_features`` (a hashing vectorizer), so
  no vocabulary has to be built or shipped.
- Document frequencies: every batch counts the documents holding each column and a
  CombineGlobally sums the counts: the corpus statistics are computed the Beam way, on all
  documents. IDF is scikit-learn's smooth form ``ln((1 + N) / (1 + df)) + 1``; TF-IDF rows are
  L2-normalised, as ``TfidfVectorizer`` does.
- Sample: the ``sample_size`` documents with the smallest ``xxh3_64(uid, seed)`` (a bottom-k
  sample, merged by a CombineGlobally), the same on every runner and worker count. Only the
  sample is fitted centrally: TruncatedSVD (``n_components``, seeded) on its TF-IDF rows.
- Top terms of a cluster (``transforms.cluster``): its centre projected back through the SVD
  onto the hashed columns (:meth:`SvdModel.top_columns`), each column named by the sampled
  documents' term that hashes there (:func:`column_names`; the statistics pass keeps each
  sampled document's terms per column in a second bottom-k combine, ``SampleTermsFn``).
- The fitted SVD reaches workers as a side input holding only the columns seen in the sample
  (every other column has a zero component), then each batch is projected and its rows scaled
  to unit length. With ``read`` the documents to project are read again in that same step
  (``transforms.reread.ReadThenFn``): Beam's portable fusion starts a stage at every step with a
  side input, and Flink would hold every batch's term counts there until the SVD exists.

Run: this module is used by ``beam_pipeline.pipeline``; ``ndcl cluster --help`` shows the flags.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import apache_beam as beam
import numpy as np
import xxhash

from transforms.batches import DocBatch, stage_counter, timed
from transforms.combine import CombineGloballyInBundles
from transforms.minhash import tokenize
from transforms.read import ReadParams
from transforms.reread import ReadSelected

# scipy.sparse is imported where it is used: it costs ~0.25 s, which `ndcl dedup` need not pay.
if TYPE_CHECKING:
    import scipy.sparse as sp

NUMBER_TERM = "#NUMBER"
# Joins a document's terms in :class:`TermBatch` ``words`` (no term holds it: tokens are
# letter/digit runs).
TERM_SEPARATOR = "\x00"


@functools.cache
def stop_words() -> frozenset[str]:
    """scikit-learn's English stop words, imported on first use: importing
    ``sklearn.feature_extraction`` takes about 0.9 s (scipy.stats, pandas), which a run that
    does not cluster (``ndcl dedup``) should not pay at start-up."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return ENGLISH_STOP_WORDS


def terms(text: str, tokenizer: str = "unicode") -> list[str]:
    """TF-IDF terms of a text: tokens, numbers folded to ``#NUMBER``, stop words dropped."""
    out = []
    stop = stop_words()
    for token in tokenize(text, tokenizer):
        if token[0].isdigit():
            out.append(NUMBER_TERM)
        elif token not in stop:
            out.append(token)
    return out


def term_columns(terms_of_doc: list[str], n_features: int, seed: int) -> tuple[np.ndarray,
                                                                                 np.ndarray]:
    """Sorted unique columns of a document's terms and their counts."""
    if not terms_of_doc:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    digest = xxhash.xxh3_64_intdigest
    cols = np.array([digest(t.encode("utf-8"), seed) % n_features for t in terms_of_doc],
                    dtype=np.int64)
    unique, counts = np.unique(cols, return_counts=True)
    return unique, counts.astype(np.float32)


def term_columns_and_words(terms_of_doc: list[str], n_features: int, seed: int
                           ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """:func:`term_columns` and, per column, the document's first term that hashes there."""
    if not terms_of_doc:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), []
    digest = xxhash.xxh3_64_intdigest
    cols = np.array([digest(t.encode("utf-8"), seed) % n_features for t in terms_of_doc],
                    dtype=np.int64)
    unique, first, counts = np.unique(cols, return_index=True, return_counts=True)
    return unique, counts.astype(np.float32), [terms_of_doc[i] for i in first.tolist()]


def column_names(sample_terms: list[tuple[int, int, np.ndarray, str]], wanted: Iterable[int]
                 ) -> dict[int, str]:
    """The word behind each ``wanted`` hashed column: of the sample's terms hashing there, the
    one in the most sampled documents (ties: the smallest). ``sample_terms`` holds
    :class:`SampleTermsFn`'s ``(hash, uid, columns, words joined by NUL)``."""
    wanted_cols = np.fromiter(sorted(set(wanted)), dtype=np.int64)
    found: dict[int, dict[str, int]] = {}
    for _, _, cols, joined in sample_terms:
        hits = np.flatnonzero(np.isin(cols, wanted_cols, assume_unique=True))
        if len(hits):
            words = joined.split(TERM_SEPARATOR)
            for i in hits.tolist():
                counts = found.setdefault(int(cols[i]), {})
                counts[words[i]] = counts.get(words[i], 0) + 1
    return {col: min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
            for col, counts in found.items()}


def counts_matrix(docs: list[tuple[np.ndarray, np.ndarray]], n_features: int) -> sp.csr_matrix:
    """CSR matrix of term counts from per-document ``(columns, counts)``."""
    import scipy.sparse as sp

    indptr = np.concatenate([[0], np.cumsum([len(c) for c, _ in docs])]).astype(np.int64)
    indices = np.concatenate([c for c, _ in docs]) if docs else np.zeros(0, np.int64)
    data = np.concatenate([v for _, v in docs]) if docs else np.zeros(0, np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=(len(docs), n_features))


def idf_from_df(df: np.ndarray, n_docs: int) -> np.ndarray:
    return (np.log((1.0 + n_docs) / (1.0 + df)) + 1.0).astype(np.float32)


def tfidf(counts: sp.csr_matrix, idf: np.ndarray) -> sp.csr_matrix:
    """Counts × IDF with rows scaled to unit L2 norm (empty rows stay zero)."""
    import scipy.sparse as sp

    weighted = counts.multiply(idf[None, :]).tocsr()
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.diags(1.0 / norms) @ weighted


def sample_hash(uid: int, seed: int) -> int:
    return xxhash.xxh3_64_intdigest(uid.to_bytes(8, "little"), seed)


def unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (x / norms).astype(np.float32)


@dataclass
class TermBatch:
    """Term counts of one document batch (rows in the batch's order)."""

    batch_key: int
    uids: np.ndarray  # int64[m]
    counts: sp.csr_matrix  # float32[m, n_features]
    # Per row, the term behind each of its columns (in column order) joined by
    # TERM_SEPARATOR: only in the statistics pass, to name the sample's columns.
    words: list[str] | None = None

    def estimated_size(self) -> int:
        words = sum(map(len, self.words)) if self.words is not None else 0
        return self.counts.data.nbytes * 2 + self.uids.nbytes + words


@dataclass
class SvdModel:
    """The fitted projection, restricted to the columns seen in the sample."""

    columns: np.ndarray  # int64[c], sorted
    components: np.ndarray  # float32[c, n_components]
    idf: np.ndarray  # float32[n_features]
    n_docs: int
    explained_variance_ratio: float

    def embed(self, counts: sp.csr_matrix) -> np.ndarray:
        """Unit-length embeddings of count rows."""
        import scipy.sparse as sp

        weights = tfidf(counts, self.idf).tocoo()
        position = np.searchsorted(self.columns, weights.col)
        position = np.minimum(position, len(self.columns) - 1)
        known = self.columns[position] == weights.col
        restricted = sp.csr_matrix(
            (weights.data[known], (weights.row[known], position[known])),
            shape=(counts.shape[0], len(self.columns)))
        return unit_rows(np.asarray(restricted @ self.components))

    def top_columns(self, centres: np.ndarray, n: int) -> list[list[int]]:
        """Per centre (a point of the embedding space, e.g. a K-Means centre), the ``n``
        hashed columns weighted most in its projection back onto the TF-IDF space
        (``centre @ componentsᵀ``), positive weights only; ties by column."""
        weights = np.atleast_2d(np.asarray(centres, dtype=np.float64)) @ (
            self.components.astype(np.float64).T)
        out = []
        for row in weights:
            order = np.lexsort((self.columns, -row))[:n]
            out.append([int(self.columns[i]) for i in order.tolist() if row[i] > 0])
        return out


def fit_svd(sample: list[tuple[int, int, np.ndarray, np.ndarray]], df: np.ndarray, n_docs: int,
            n_features: int, n_components: int, seed: int) -> SvdModel:
    """TruncatedSVD on the sample's TF-IDF rows."""
    from sklearn.decomposition import TruncatedSVD

    idf = idf_from_df(df, n_docs)
    counts = counts_matrix([(cols, vals) for _, _, cols, vals in sample], n_features)
    weights = tfidf(counts, idf).tocsc()
    columns = np.flatnonzero(np.diff(weights.indptr) > 0)
    restricted = weights[:, columns]
    components = min(n_components, max(1, min(restricted.shape) - 1))
    svd = TruncatedSVD(n_components=components, random_state=seed, algorithm="randomized",
                       n_iter=5)
    svd.fit(restricted)
    return SvdModel(columns=columns.astype(np.int64),
                    components=svd.components_.T.astype(np.float32), idf=idf, n_docs=n_docs,
                    explained_variance_ratio=float(svd.explained_variance_ratio_.sum()))


class CountTermsFn(beam.DoFn):
    """``(batch_key, DocBatch)`` → ``(batch_key, TermBatch)``."""

    timer = stage_counter("embed")

    def __init__(self, n_features: int, seed: int, tokenizer: str,
                 with_words: bool = False) -> None:
        self.n_features = n_features
        self.seed = seed
        self.tokenizer = tokenizer
        self.with_words = with_words

    def process(self, element: tuple[int, DocBatch]) -> Iterator[tuple[int, TermBatch]]:
        return timed(self._process(element), self.timer)

    def _process(self, element: tuple[int, DocBatch]) -> Iterator[tuple[int, TermBatch]]:
        key, batch = element
        if not self.with_words:
            docs = [term_columns(terms(r["text"], self.tokenizer), self.n_features, self.seed)
                    for r in batch.records]
            yield key, TermBatch(key, batch.uids, counts_matrix(docs, self.n_features))
            return
        named = [term_columns_and_words(terms(r["text"], self.tokenizer), self.n_features,
                                        self.seed) for r in batch.records]
        yield key, TermBatch(key, batch.uids,
                             counts_matrix([(c, v) for c, v, _ in named], self.n_features),
                             [TERM_SEPARATOR.join(w) for _, _, w in named])


class DocumentFrequencyFn(beam.CombineFn):
    """Sums ``(documents, per-column document counts)`` over all term batches."""

    def __init__(self, n_features: int) -> None:
        self.n_features = n_features

    def create_accumulator(self) -> tuple[int, np.ndarray]:
        return 0, np.zeros(self.n_features, dtype=np.int64)

    def add_input(self, acc: tuple[int, np.ndarray], element: tuple[int, TermBatch]
                  ) -> tuple[int, np.ndarray]:
        n, df = acc
        counts = element[1].counts
        df += np.bincount(counts.indices, minlength=self.n_features)
        return n + counts.shape[0], df

    def merge_accumulators(self, accs: Iterable[tuple[int, np.ndarray]]
                           ) -> tuple[int, np.ndarray]:
        n, df = 0, np.zeros(self.n_features, dtype=np.int64)
        for count, part in accs:
            n += count
            df += part
        return n, df

    def extract_output(self, acc: tuple[int, np.ndarray]) -> tuple[int, np.ndarray]:
        return acc


class BottomKSampleFn(beam.CombineFn):
    """The ``k`` documents with the smallest sample hash: ``[(hash, uid, cols, counts)]``."""

    def __init__(self, k: int, seed: int) -> None:
        self.k = k
        self.seed = seed

    def create_accumulator(self) -> list[tuple]:
        return []

    def add_input(self, acc: list[tuple], element: tuple[int, TermBatch]) -> list[tuple]:
        batch = element[1]
        counts = batch.counts
        candidates = []
        for row, uid in enumerate(batch.uids.tolist()):
            start, end = counts.indptr[row], counts.indptr[row + 1]
            if end > start:  # a document without any term has nothing to fit
                candidates.append((sample_hash(uid, self.seed), uid,
                                   counts.indices[start:end].astype(np.int64),
                                   self._values(batch, row, start, end)))
        return heapq.nsmallest(self.k, acc + candidates, key=lambda c: (c[0], c[1]))

    def _values(self, batch: TermBatch, row: int, start: int, end: int) -> Any:
        return batch.counts.data[start:end]

    def merge_accumulators(self, accs: Iterable[list[tuple]]) -> list[tuple]:
        merged = [c for acc in accs for c in acc]
        return heapq.nsmallest(self.k, merged, key=lambda c: (c[0], c[1]))

    def extract_output(self, acc: list[tuple]) -> list[tuple]:
        return sorted(acc, key=lambda c: (c[0], c[1]))


class SampleTermsFn(BottomKSampleFn):
    """The same bottom-k documents with the terms behind their columns: ``[(hash, uid, cols,
    words joined by TERM_SEPARATOR)]`` (needs ``TermBatch.words``). A combine of its own, so
    that the sample's tuples keep their shape; it is only read to name top terms."""

    def _values(self, batch: TermBatch, row: int, start: int, end: int) -> Any:
        return batch.words[row] if batch.words is not None else ""


class FitSvdFn(beam.DoFn):
    def __init__(self, n_features: int, n_components: int, seed: int) -> None:
        self.n_features = n_features
        self.n_components = n_components
        self.seed = seed

    def process(self, sample: list[tuple], df: tuple[int, np.ndarray]) -> Iterator[SvdModel]:
        if not sample:
            raise ValueError("clustering needs at least one document with a term; "
                             "the input has none")
        n_docs, counts = df
        yield fit_svd(sample, counts, n_docs, self.n_features, self.n_components, self.seed)


class EmbedFn(CountTermsFn):
    """``(batch_key, DocBatch)`` + fitted SVD → ``(batch_key, (uids, embeddings))``."""

    def process(self, element: tuple[int, DocBatch], model: SvdModel  # type: ignore[override]
                ) -> Iterator[Any]:
        return timed(self._embed(element, model), self.timer)

    def _embed(self, element: tuple[int, DocBatch], model: SvdModel) -> Iterator[Any]:
        for key, batch in self._process(element):
            yield key, (batch.uids, model.embed(batch.counts))


@dataclass(frozen=True)
class EmbedConfig:
    n_features: int = 2**18
    n_components: int = 128
    sample_size: int = 5000
    seed: int = 1
    tokenizer: str = "unicode"


@dataclass(frozen=True)
class EmbedParams:
    config: EmbedConfig
    read: ReadParams | None = None  # given: the projecting step reads its documents itself


class Embedded(NamedTuple):
    """``embeddings``: ``(batch_key, (uids, float32[m, d]))``; ``sample``: ``[(hash, uid, cols,
    counts)]``; ``sample_terms``: the sample's words per column (:class:`SampleTermsFn`);
    ``svd``: the :class:`SvdModel`."""

    embeddings: beam.PCollection
    sample: beam.PCollection
    sample_terms: beam.PCollection
    svd: beam.PCollection


class EmbedDocuments(beam.PTransform):
    """``{"statistics": doc batches, "documents": doc batches}`` or, with ``read``,
    ``{"statistics": doc batches, "repeats", "selection"}`` (what ``ReadSelected`` takes) →
    :class:`Embedded`.

    The document frequencies and the sample come from ``statistics``; the projection is
    applied to the documents again (with ``read``, read again by the projecting step itself),
    since the SVD exists only once all of them were counted, and keeping every document's term
    counts until then would hold about as much memory as the text. The term counts of
    ``statistics`` never leave its stage except as the two combines' accumulators (the
    column counts and the bottom-k sample)."""

    def __init__(self, params: EmbedParams) -> None:
        super().__init__()
        self.cfg = params.config
        self.read = params.read

    def expand(self, inputs: dict[str, beam.PCollection]) -> Embedded:
        cfg = self.cfg
        term_batches = inputs["statistics"] | "CountTerms" >> beam.ParDo(
            CountTermsFn(cfg.n_features, cfg.seed, cfg.tokenizer, with_words=True))
        df = term_batches | "SumDocumentFrequencies" >> CombineGloballyInBundles(
            DocumentFrequencyFn(cfg.n_features))
        sample = term_batches | "SampleDocuments" >> CombineGloballyInBundles(
            BottomKSampleFn(cfg.sample_size, cfg.seed))
        sample_terms = term_batches | "SampleTermNames" >> CombineGloballyInBundles(
            SampleTermsFn(cfg.sample_size, cfg.seed))
        svd = sample | "FitSvd" >> beam.ParDo(
            FitSvdFn(cfg.n_features, cfg.n_components, cfg.seed), beam.pvalue.AsSingleton(df))
        embed = EmbedFn(cfg.n_features, cfg.seed, cfg.tokenizer)
        if self.read is not None:
            embeddings = (
                {"repeats": inputs["repeats"], "selection": inputs["selection"]}
                | "ReadAndProject" >> ReadSelected(self.read, embed,
                                                   (beam.pvalue.AsSingleton(svd),)))
        else:
            embeddings = inputs["documents"] | "ProjectBatches" >> beam.ParDo(
                embed, beam.pvalue.AsSingleton(svd))
        return Embedded(embeddings, sample, sample_terms, svd)
