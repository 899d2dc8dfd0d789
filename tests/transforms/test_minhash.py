"""``transforms.minhash``: tokenisation, shingling, token and shingle hashes, MinHash
signatures (and how well they estimate Jaccard), ``compute_features`` with plain asserts, and
the ``ComputeFeatures`` transform in a TestPipeline against the per-document helpers."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from typing import Any

import apache_beam as beam
import numpy as np
import pytest
import xxhash
from apache_beam.testing.util import assert_that, equal_to

from tests.conftest import REPO
from tests.transforms.conftest import doc_batch, expected_signature, new_pipeline
from transforms.batches import DocBatch, FeatureBatch
from transforms.lsh import band_hashes
from transforms.minhash import (
    CHUNK_SHINGLES,
    MAX_PENDING_BATCHES,
    ComputeFeatures,
    ComputeFeaturesFn,
    FeatureParams,
    batch_shingle_hashes,
    compute_features,
    exact_hash,
    minhash_signatures,
    normalised_text,
    permutation_params,
    shingle_hashes,
    token_bytes,
    token_hashes,
    tokenize,
)
from transforms.verify import signature_similarity

U64 = np.uint64


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def naive_signature(shingles: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MinHash of one document, computed the obvious way (uint64 arithmetic wraps mod 2**64)."""
    x = shingles.astype(np.uint64)
    return ((a[:, None] * x[None, :] + b[:, None]).min(axis=1) >> U64(32)).astype(np.uint32)


def random_u64(rng: np.random.Generator, count: int) -> np.ndarray:
    return rng.integers(0, 2**64 - 1, size=count, dtype=np.uint64, endpoint=True)


def sets_with_jaccard(rng: np.random.Generator, size: int, target: float
                      ) -> tuple[np.ndarray, np.ndarray, float]:
    """Two sets of ``size`` distinct uint64 whose Jaccard is as close to ``target`` as integers
    allow; returns the sets and their exact Jaccard."""
    common = round(2 * size * target / (1 + target))
    pool = np.unique(random_u64(rng, 3 * size))
    rng.shuffle(pool)
    shared = pool[:common]
    left = np.concatenate([shared, pool[common:size]])
    right = np.concatenate([shared, pool[size : 2 * size - common]])
    truth = len(set(left.tolist()) & set(right.tolist())) / len(
        set(left.tolist()) | set(right.tolist()))
    return left, right, truth


# --------------------------------------------------------------------------------------------
# Tokenisation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Hello, World!", ["hello", "world"]),
        ("  MiXeD   CaSe\tand\nnewlines ", ["mixed", "case", "and", "newlines"]),
        ("foo_bar-baz.qux", ["foo", "bar", "baz", "qux"]),
        ("snake_case__double", ["snake", "case", "double"]),
        ("abc123 4,5 x9y", ["abc123", "4", "5", "x9y"]),
        ("Héllo wörld_x", ["héllo", "wörld", "x"]),
        ("ÀB", ["àb"]),
        ("Καλημέρα Κόσμε!", ["καλημέρα", "κόσμε"]),
        ("Привет, МИР", ["привет", "мир"]),
        ("日本語のテスト。東京", ["日本語のテスト", "東京"]),
        ("😀🎉 🚀", []),
        ("!!! --- ...", []),
        ("", []),
        ("___", []),
    ],
)
def test_tokenize(text: str, tokens: list[str]) -> None:
    assert tokenize(text) == tokens


TOKEN_TEXTS = [
    "Hello, World!",
    "foo_bar-baz 123",
    "Héllo wörld_x",
    "ÀB",
    "Καλημέρα Κόσμε",
    "日本語のテスト 東京",
    "😀🎉",
    "emoji😀between🎉words",
    "",
    "Straße ǅungla İstanbul",
    "ﬁne ligature and KELVIN sign",
]


@pytest.mark.parametrize("text", TOKEN_TEXTS)
def test_token_bytes_equals_encoded_tokenize(text: str) -> None:
    assert token_bytes(text) == [t.encode("utf-8") for t in tokenize(text)]


def test_token_bytes_fuzz_matches_tokenize() -> None:
    rng = np.random.default_rng(7)
    alphabet = list("aZ09 _-.,!\t\n") + list("éÀßΣσЖ日本😀\u00a0\u2003²İǅ")
    for _ in range(500):
        text = "".join(rng.choice(alphabet, size=int(rng.integers(0, 30))).tolist())
        assert token_bytes(text) == [t.encode("utf-8") for t in tokenize(text)], repr(text)
    for _ in range(200):  # pure ASCII, the fast path
        text = "".join(rng.choice(list("aBz09 _-.,!"), size=int(rng.integers(0, 30))).tolist())
        assert token_bytes(text) == [t.encode("utf-8") for t in tokenize(text)], repr(text)


def test_emoji_only_text_has_no_tokens_and_no_shingles() -> None:
    assert token_bytes("😀🎉🚀") == []
    assert len(shingle_hashes(token_hashes(token_bytes("😀🎉🚀"), 1), 5, 1)) == 0


# --------------------------------------------------------------------------------------------
# Hashing
# --------------------------------------------------------------------------------------------


def test_token_hashes_are_seeded_xxh3() -> None:
    tokens = ["hello", "héllo", "日本", "x"]
    got = token_hashes(tokens, 42)
    assert got.dtype == np.uint64
    assert got.tolist() == [xxhash.xxh3_64_intdigest(t.encode(), 42) for t in tokens]
    assert token_hashes(tokens, 42).tolist() == got.tolist()  # deterministic
    assert token_hashes([t.encode() for t in tokens], 42).tolist() == got.tolist()
    assert token_hashes(tokens, 43).tolist() != got.tolist()
    assert len(token_hashes([], 1)) == 0


HASH_SCRIPT = """
import hashlib
import numpy as np
from transforms.batches import DocBatch
from transforms.lsh import band_hashes
from transforms.minhash import compute_features, permutation_params

def digest():
    texts = ["The quick brown fox jumps over the lazy dog", "Héllo wörld, μια δοκιμή",
             "short", "one two three four five six seven"]
    a, b = permutation_params(64, 9)
    batch = DocBatch(1, np.arange(len(texts), dtype=np.int64), [str(i) for i in range(4)],
                     [{"text": t} for t in texts])
    features, _ = compute_features(batch, 3, 9, a, b)
    h = hashlib.sha256()
    for arr in (features.signatures, features.exact_hashes,
                band_hashes(features.signatures, 8, 8, 9)):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()

if __name__ == "__main__":
    print(digest())
"""


def test_hashes_do_not_depend_on_pythonhashseed() -> None:
    """Two interpreters with different PYTHONHASHSEED (and this one) agree bit for bit, so no
    salted ``hash()`` leaks into signatures, exact keys, shingles or band hashes."""

    def start(hash_seed: str) -> subprocess.Popen:
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        return subprocess.Popen([sys.executable, "-c", HASH_SCRIPT], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    procs = [start("0"), start("12345")]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(out.strip())
    assert len(outputs[0]) == 64
    assert outputs[0] == outputs[1]
    namespace: dict[str, object] = {"__name__": "hash_script"}
    exec(HASH_SCRIPT, namespace)
    assert namespace["digest"]() == outputs[0]


# --------------------------------------------------------------------------------------------
# Shingling
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ngram", [1, 3, 5])
def test_shingle_counts(ngram: int) -> None:
    rng = np.random.default_rng(ngram)
    for count in range(0, 15):
        hashes = random_u64(rng, count)
        got = shingle_hashes(hashes, ngram, 1)
        assert got.dtype == np.uint64
        if count == 0:
            assert len(got) == 0
        elif count < ngram:
            assert len(got) == 1
        else:
            assert len(got) == count - ngram + 1


def test_shingle_windows_are_local_and_order_sensitive() -> None:
    hashes = token_hashes(tokenize("a b c d e f g"), 1)
    full = shingle_hashes(hashes, 5, 1)
    assert len(full) == 3
    # Each window's hash is the hash of that slice alone.
    for i in range(3):
        assert shingle_hashes(hashes[i : i + 5], 5, 1).tolist() == [full[i]]
    # Swapping two tokens changes the windows that hold exactly one of them, not the others.
    swapped = hashes.copy()
    swapped[[5, 6]] = swapped[[6, 5]]
    got = shingle_hashes(swapped, 5, 1)
    assert got[0] == full[0]  # window a..e holds neither f nor g
    assert got[1] != full[1]  # b..f: f replaced by g
    assert got[2] != full[2]  # c..g: order of f, g swapped
    # A one-shingle document: any swap changes it.
    five = token_hashes(["w1", "w2", "w3", "w4", "w5"], 1)
    for i in range(4):
        other = five.copy()
        other[[i, i + 1]] = other[[i + 1, i]]
        assert shingle_hashes(other, 5, 1)[0] != shingle_hashes(five, 5, 1)[0]


def test_short_document_is_one_shingle_of_all_tokens() -> None:
    three = token_hashes(["one", "two", "three"], 1)
    got = shingle_hashes(three, 5, 1)
    assert len(got) == 1
    assert got[0] != shingle_hashes(three[:2], 5, 1)[0]
    assert got[0] != shingle_hashes(three[::-1], 5, 1)[0]
    # Same as the n-gram hash with n equal to its length.
    assert got[0] == shingle_hashes(three, 3, 1)[0]


def test_shingle_seed_changes_hashes() -> None:
    hashes = token_hashes(tokenize("a b c d e f g h"), 1)
    one = shingle_hashes(hashes, 3, 1)
    two = shingle_hashes(hashes, 3, 2)
    assert len(one) == len(two) == 6
    assert not np.any(one == two)
    assert shingle_hashes(hashes, 3, 1).tolist() == one.tolist()


@pytest.mark.parametrize("ngram", [1, 2, 5])
def test_batch_shingles_equal_per_document(ngram: int) -> None:
    rng = np.random.default_rng(100 + ngram)
    lengths = [0, 1, 0, ngram - 1, ngram, ngram + 1, 3, 0, 40, 2, 7, 0]
    lengths += rng.integers(0, 12, size=60).tolist()
    rng.shuffle(lengths)
    docs = [random_u64(rng, n) for n in lengths]
    flat, offsets = batch_shingle_hashes(docs, ngram, 5)
    expected = [shingle_hashes(d, ngram, 5) for d in docs]
    assert offsets.dtype == np.int64
    assert len(offsets) == len(docs) + 1
    assert offsets[0] == 0
    assert offsets[-1] == len(flat)
    for i, exp in enumerate(expected):
        assert flat[offsets[i] : offsets[i + 1]].tolist() == exp.tolist(), i
    assert flat.tolist() == np.concatenate(expected).tolist()


def test_batch_shingles_edge_cases() -> None:
    flat, offsets = batch_shingle_hashes([], 5, 1)
    assert len(flat) == 0 and offsets.tolist() == [0]
    empty = np.zeros(0, dtype=np.uint64)
    flat, offsets = batch_shingle_hashes([empty, empty], 5, 1)
    assert len(flat) == 0 and offsets.tolist() == [0, 0, 0]
    # Only short documents, fewer tokens in total than n.
    rng = np.random.default_rng(3)
    docs = [random_u64(rng, 2), empty, random_u64(rng, 1)]
    flat, offsets = batch_shingle_hashes(docs, 5, 1)
    assert offsets.tolist() == [0, 1, 1, 2]
    assert flat.tolist() == [shingle_hashes(docs[0], 5, 1)[0], shingle_hashes(docs[2], 5, 1)[0]]


# --------------------------------------------------------------------------------------------
# MinHash
# --------------------------------------------------------------------------------------------


def test_permutation_params() -> None:
    a, b = permutation_params(256, 1)
    assert a.dtype == np.uint64 and b.dtype == np.uint64
    assert a.shape == b.shape == (256,)
    assert np.all(a & U64(1) == U64(1))
    assert len(np.unique(a)) == 256 and len(np.unique(b)) == 256
    a2, b2 = permutation_params(256, 1)
    assert a.tolist() == a2.tolist() and b.tolist() == b2.tolist()
    a3, b3 = permutation_params(256, 2)
    assert not np.any(a == a3) and not np.any(b == b3)
    # A prefix of a longer parameter list is the shorter one.
    a4, b4 = permutation_params(16, 1)
    assert a4.tolist() == a[:16].tolist() and b4.tolist() == b[:16].tolist()


def test_minhash_signatures_match_naive_over_many_chunks() -> None:
    rng = np.random.default_rng(11)
    a, b = permutation_params(128, 3)
    lengths = rng.integers(1, 300, size=60).tolist()
    lengths += [1, CHUNK_SHINGLES, CHUNK_SHINGLES + 1, 3 * CHUNK_SHINGLES + 17, 1, 2]
    rng.shuffle(lengths)
    docs = [random_u64(rng, n) for n in lengths]
    # Repeated shingles inside a document do not matter.
    docs[0] = np.concatenate([docs[0], docs[0][:1]])
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
    assert offsets[-1] > 4 * CHUNK_SHINGLES
    sigs = minhash_signatures(np.concatenate(docs), offsets, a, b)
    assert sigs.dtype == np.uint32
    assert sigs.shape == (len(docs), 128)
    for i, doc in enumerate(docs):
        assert np.array_equal(sigs[i], naive_signature(doc, a, b)), i


def test_minhash_signature_is_a_set_function() -> None:
    rng = np.random.default_rng(12)
    a, b = permutation_params(64, 1)
    doc = random_u64(rng, 50)
    shuffled = rng.permutation(doc)
    repeated = np.concatenate([doc, doc[:20]])
    flat = np.concatenate([doc, shuffled, repeated])
    offsets = np.array([0, 50, 100, 170], dtype=np.int64)
    sigs = minhash_signatures(flat, offsets, a, b)
    assert np.array_equal(sigs[0], sigs[1]) and np.array_equal(sigs[0], sigs[2])


@pytest.mark.parametrize("target", [0.5, 0.8])
def test_signature_similarity_estimates_jaccard(target: float) -> None:
    a, b = permutation_params(256, 1)
    for seed in range(3):
        rng = np.random.default_rng(1000 * seed + int(target * 10))
        left, right, truth = sets_with_jaccard(rng, 2000, target)
        assert abs(truth - target) < 0.001
        sigs = minhash_signatures(np.concatenate([left, right]),
                                  np.array([0, len(left), len(left) + len(right)]), a, b)
        estimate = signature_similarity(sigs[0], sigs[1])
        assert abs(estimate - truth) <= 0.08, (seed, estimate, truth)


def test_signature_similarity_extremes() -> None:
    rng = np.random.default_rng(5)
    a, b = permutation_params(256, 1)
    left, right = random_u64(rng, 500), random_u64(rng, 500)
    sigs = minhash_signatures(np.concatenate([left, right, left]),
                              np.array([0, 500, 1000, 1500]), a, b)
    assert signature_similarity(sigs[0], sigs[2]) == 1.0
    assert signature_similarity(sigs[0], sigs[1]) < 0.03


# --------------------------------------------------------------------------------------------
# compute_features
# --------------------------------------------------------------------------------------------


FEATURE_TEXTS = [
    "Hello, World! The quick brown fox.",  # 0
    "hello world the QUICK brown---fox",  # 1: same tokens as 0
    "",  # 2: no token
    "!!! ... ---",  # 3: no token
    "Completely different words in this one",  # 4
    "Héllo wörld, Καλημέρα",  # 5: non-ASCII
    "HÉLLO  WÖRLD καλημέρα!!",  # 6: same tokens as 5
    "tiny",  # 7: fewer tokens than n
    "😀",  # 8: no token
]


def make_batch(texts: list[str]) -> DocBatch:
    uids = np.array([(3 << 40) | (i + 1) for i in range(len(texts))], dtype=np.int64)
    return DocBatch(batch_key=3 << 40, uids=uids, ids=[f"doc{i}" for i in range(len(texts))],
                    records=[{"text": t, "url": f"u{i}"} for i, t in enumerate(texts)])


def test_compute_features() -> None:
    batch = make_batch(FEATURE_TEXTS)
    a, b = permutation_params(128, 1)
    features, untokenized = compute_features(batch, 5, 1, a, b)
    kept = [0, 1, 4, 5, 6, 7]
    assert untokenized == 3
    assert len(features) == len(kept)
    assert features.batch_key == batch.batch_key
    assert features.uids.tolist() == batch.uids[kept].tolist()
    assert features.ids == [f"doc{i}" for i in kept]
    assert features.signatures.shape == (len(kept), 128)
    assert features.signatures.dtype == np.uint32
    assert features.exact_hashes.shape == (len(kept), 2)
    assert features.exact_hashes.dtype == np.uint64
    norm = [normalised_text(tokenize(FEATURE_TEXTS[i])) for i in kept]
    assert features.norm_lengths.tolist() == [len(n.encode()) for n in norm]
    for row, text in zip(range(len(kept)), norm):
        assert tuple(features.exact_hashes[row].tolist()) == exact_hash(text.encode(), 1)
    exact = [tuple(row) for row in features.exact_hashes.tolist()]
    # Rows: 0 ~ 1 (case/punctuation), 3 ~ 4 (non-ASCII case/punctuation); all others distinct.
    assert exact[0] == exact[1]
    assert exact[3] == exact[4]
    assert len({exact[0], exact[2], exact[3], exact[5]}) == 4
    assert np.array_equal(features.signatures[0], features.signatures[1])
    assert not np.array_equal(features.signatures[0], features.signatures[2])
    # Each signature is the MinHash of that document's shingles.
    for row, i in enumerate(kept):
        shingles = shingle_hashes(token_hashes(tokenize(FEATURE_TEXTS[i]), 1), 5, 1)
        assert np.array_equal(features.signatures[row], naive_signature(shingles, a, b))


def test_compute_features_all_untokenized() -> None:
    batch = make_batch(["", "...", "😀"])
    a, b = permutation_params(32, 1)
    features, untokenized = compute_features(batch, 5, 1, a, b)
    assert untokenized == 3
    assert len(features) == 0
    assert features.signatures.shape == (0, 32)
    assert features.exact_hashes.shape == (0, 2)
    assert len(features.uids) == 0


@pytest.mark.parametrize("bands,rows", [(16, 8), (5, 3), (1, 1)])
def test_compute_features_with_banding_carries_band_hashes_only(bands: int, rows: int) -> None:
    """With ``banding`` the batch carries the band hashes of the signatures it would have
    carried without (and no signatures); everything else is the same."""
    batch = make_batch(FEATURE_TEXTS)
    a, b = permutation_params(128, 1)
    plain, untokenized = compute_features(batch, 5, 1, a, b)
    banded, untokenized_banded = compute_features(batch, 5, 1, a, b, banding=(bands, rows))
    assert plain.band_hashes is None and plain.signatures is not None
    assert banded.signatures is None
    assert banded.band_hashes.dtype == np.uint64
    assert banded.band_hashes.shape == (len(plain), bands)
    assert np.array_equal(banded.band_hashes, band_hashes(plain.signatures, bands, rows, 1))
    assert untokenized_banded == untokenized
    assert banded.uids.tolist() == plain.uids.tolist() and banded.ids == plain.ids
    assert np.array_equal(banded.exact_hashes, plain.exact_hashes)
    assert np.array_equal(banded.norm_lengths, plain.norm_lengths)
    assert np.array_equal(banded.derived, plain.derived)
    # The compact form is what leaves the stage: far smaller than the signatures.
    assert banded.estimated_size() < plain.estimated_size()
    empty, _ = compute_features(make_batch(["", "😀"]), 5, 1, a, b, banding=(bands, rows))
    assert empty.signatures is None and empty.band_hashes.shape == (0, bands)


def dict_items(d: dict[str, Any]) -> tuple:
    """A dict as a sorted tuple of items, so ``equal_to`` can compare it."""
    return tuple(sorted(d.items()))


# --------------------------------------------------------------------------------------------
# ComputeFeatures

FEATURE_BATCH = 4
FEATURE_TEXTS_0 = [
    "The quick brown fox jumps over the lazy dog",
    "Hello, world!",
    "",
]
FEATURE_TEXTS_1 = [
    "!!! --- ...",
    "Größe Übung: naïve CAFÉ façade 123 ÉCOLE",
    "snake_case under_score words here and there",
    "one two three four five six seven",
]
FEATURE_TEXTS_2 = ["?", "x y z w", "سلام دنیا ۱۲۳"]  # no ASCII token in the last


def long_texts() -> list[str]:
    """Documents long enough that one batch spans several MinHash chunks (2048 shingles),
    one of them longer than a chunk on its own."""
    rng = random.Random(5)
    return [" ".join(f"w{rng.randrange(5000)}" for _ in range(count))
            for count in (900, 2500, 700)]


def feature_fixture() -> list[tuple[int, DocBatch]]:
    return [
        doc_batch(0, [1, 2, 3], FEATURE_TEXTS_0, FEATURE_BATCH),
        doc_batch(0, [4, 5, 6, 7], FEATURE_TEXTS_1, FEATURE_BATCH),
        doc_batch(1, [1, 2, 3], FEATURE_TEXTS_2, FEATURE_BATCH),
        doc_batch(1, [4, 6, 7], long_texts(), FEATURE_BATCH),
    ]


def describe_features(element: tuple[int, FeatureBatch]) -> tuple:
    """Rows of a feature batch; the LSH column is the band hashes when the batch carries
    them, else the signatures (exactly one of the two travels)."""
    key, f = element
    assert key == f.batch_key
    assert (f.signatures is None) != (f.band_hashes is None), "one LSH input per batch"
    if f.band_hashes is not None:
        assert f.band_hashes.dtype == np.uint64 and f.band_hashes.shape[0] == len(f)
        lsh = f.band_hashes
    else:
        assert f.signatures.dtype == np.uint32 and f.signatures.shape[0] == len(f)
        lsh = f.signatures
    rows = tuple(
        (int(f.uids[r]), f.ids[r], int(f.norm_lengths[r]), tuple(f.exact_hashes[r].tolist()),
         tuple(lsh[r].tolist()))
        for r in range(len(f))
    )
    return key, rows


@pytest.mark.parametrize("banding", [None, (4, 4), (5, 3)], ids=["signatures", "b4r4", "b5r3"])
@pytest.mark.parametrize("tokenizer,untokenized_per_batch",
                         [("unicode", [1, 1, 1, 0]), ("ascii", [1, 1, 2, 0])])
def test_compute_features_matches_direct_minhash(
        tokenizer: str, untokenized_per_batch: list[int], banding: tuple[int, int] | None
) -> None:
    """Without banding the batches carry the MinHash signatures; with ``(bands, rows)`` they
    carry ``band_hashes`` of those signatures instead (b * r may be below num_perm)."""
    ngram, num_perm, seed = 3, 16, 7

    def lsh_values(text: str) -> tuple:
        signature = expected_signature(text, ngram, seed, num_perm, tokenizer)
        if banding is None:
            return tuple(signature.tolist())
        return tuple(band_hashes(signature[None, :], *banding, seed)[0].tolist())

    batches = feature_fixture()
    expected = []
    untokenized = []
    for key, batch in batches:
        rows = []
        for uid, doc_id, record in zip(batch.uids.tolist(), batch.ids, batch.records):
            text = record["text"]
            tokens = tokenize(text, tokenizer)
            if not tokens:
                continue
            norm = normalised_text(tokens).encode("utf-8")
            rows.append((uid, doc_id, len(norm), exact_hash(norm, seed), lsh_values(text)))
        expected.append((key, tuple(rows)))
        untokenized.append(dict_items(
            {"read_batches": 1, "kept_untokenized": len(batch.records) - len(rows)}))
    assert [dict(u)["kept_untokenized"] for u in untokenized] == untokenized_per_batch

    with new_pipeline() as p:
        features = (
            p
            | "CreateDocBatches" >> beam.Create(batches)
            | "ComputeFeatures" >> ComputeFeatures(FeatureParams(
                ngram, num_perm, seed, tokenizer=tokenizer, banding=banding))
        )
        assert_that(features.features | "DescribeFeatures" >> beam.Map(describe_features),
                    equal_to(expected), label="CheckFeatures")
        assert_that(features.stats | "StatsAsItems" >> beam.Map(dict_items),
                    equal_to(untokenized), label="CheckStats")


@pytest.mark.parametrize("kernel", ["compiled", "numpy"])
def test_compute_features_fn_emits_each_batch_once_in_order_by_the_bundle_end(kernel: str
                                                                              ) -> None:
    """The kernel hashes a batch while the next is read: a batch's outputs come with the
    next batch's process call or from finish_bundle (in the global window), in order, and
    equal one compute_features call each."""
    batches = [doc_batch(0, list(range(start, start + 3)), [f"text {start} number {i} here"
                                                             for i in range(3)], 4096)
               for start in (0, 10, 20)]
    params = FeatureParams(ngram=2, num_perm=16, seed=5, banding=(4, 4), kernel=kernel)
    fn = ComputeFeaturesFn(params)
    fn.setup()
    fn.start_bundle()
    emitted = [list(fn.process(element)) for element in batches]
    assert [len(out) for out in emitted] == [0] * MAX_PENDING_BATCHES + [2] * (
        len(batches) - MAX_PENDING_BATCHES)
    last = list(fn.finish_bundle())
    assert len(last) == 2 * MAX_PENDING_BATCHES
    assert all(isinstance(v.value if isinstance(v, beam.pvalue.TaggedOutput) else v,
                          beam.utils.windowed_value.WindowedValue) for v in last)
    main = [out[0] for out in emitted if out] + [last[0].value]
    a, b = permutation_params(16, 5)
    for (key, features), (want_key, batch) in zip(main, batches, strict=True):
        want, _ = compute_features(batch, 2, 5, a, b, banding=(4, 4), kernel=kernel)
        assert key == want_key and features.ids == want.ids
        assert np.array_equal(features.band_hashes, want.band_hashes)
    fn.start_bundle()  # a new bundle starts with nothing pending
    assert list(fn.finish_bundle()) == []
