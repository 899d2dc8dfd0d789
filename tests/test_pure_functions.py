"""Tier 1: the pure numeric functions of the engine, tested with plain asserts (no Beam runs).

Covers tokenisation, shingling, hashing, MinHash, feature batches, LSH banding and bucket
stars, exact-duplicate groups, the large-star / small-star connected-components steps (against
a union-find oracle) and the verification similarities.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xxhash

from beam_pipeline.config import DedupConfig
from beam_pipeline.pipeline import Banding, choose_banding
from tests.reference import UnionFind
from transforms.batches import LINE_MASK, DocBatch, FeatureBatch, UidSetFn, make_uid, rows_by_part
from transforms.components import components_of, large_star, small_star, star_labels
from transforms.exact import exact_groups, rank_key
from transforms.lsh import (
    RECALL_FLOOR,
    band_hashes,
    detection_probability,
    optimal_param,
    recall_floor_param,
    star_edges,
    unique_pairs,
)
from transforms.minhash import (
    CHUNK_SHINGLES,
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
from transforms.read import LineFilter, Selection
from transforms.verify import jaccard, signature_similarity

REPO = Path(__file__).resolve().parents[1]
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


def objective(bands: int, rows: int, threshold: float, fp_w: float, fn_w: float) -> float:
    """The weighted false-positive + false-negative areas, integrated independently of
    ``transforms.lsh`` (finer grid, explicit trapezoid rule)."""
    lower = np.linspace(0.0, threshold, 20001)
    upper = np.linspace(threshold, 1.0, 20001)

    def trap(y: np.ndarray, x: np.ndarray) -> float:
        return float(((y[1:] + y[:-1]) * np.diff(x)).sum() / 2)

    def prob(s: np.ndarray) -> np.ndarray:
        return 1.0 - (1.0 - s**rows) ** bands

    return fp_w * trap(prob(lower), lower) + fn_w * trap(1.0 - prob(upper), upper)


def oracle_labels(a: np.ndarray, b: np.ndarray) -> dict[int, int]:
    uf = UnionFind()
    for x, y in zip(a.tolist(), b.tolist()):
        uf.union(x, y)
    return uf.min_labels()


def is_star_forest(leaves: np.ndarray, centres: np.ndarray) -> bool:
    """Every edge goes leaf → smaller centre, each leaf has one centre, no centre is a leaf."""
    if not np.all(centres < leaves):
        return False
    if len(np.unique(leaves)) != len(leaves):
        return False
    return not set(centres.tolist()) & set(leaves.tolist())


def run_components(a: np.ndarray, b: np.ndarray, max_rounds: int = 64
                   ) -> tuple[np.ndarray, np.ndarray, int]:
    """The module's driver loop: large-star over both directions, then small-star over
    ``(max, min)``, until a round changes nothing. Returns the final edges and the rounds run
    (the last, change-free round included)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    for rounds in range(1, max_rounds + 1):
        v, m, changed_large = large_star(np.concatenate([a, b]), np.concatenate([b, a]))
        a, b, changed_small = small_star(np.maximum(v, m), np.minimum(v, m))
        if changed_large == 0 and changed_small == 0:
            assert is_star_forest(a, b), "zero changes but the edges are not a star forest"
            return a, b, rounds
    raise AssertionError(f"no convergence within {max_rounds} rounds")


def check_components(a: np.ndarray, b: np.ndarray) -> int:
    """Run the driver loop and compare labels with the union-find oracle; returns rounds."""
    leaves, centres, rounds = run_components(a, b)
    nodes, labels = star_labels(leaves, centres)
    got = dict(zip(nodes.tolist(), labels.tolist()))
    assert len(nodes) == len(got), "star_labels gave a node two labels"
    assert got == oracle_labels(np.asarray(a), np.asarray(b))
    return rounds


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


def test_feature_batch_select_keeps_absent_parts_absent() -> None:
    hashes = np.arange(12, dtype=np.uint64).reshape(4, 3)
    batch = FeatureBatch(batch_key=7, uids=np.array([10, 11, 12, 13], dtype=np.int64),
                         ids=["a", "b", "c", "d"], norm_lengths=np.arange(4, dtype=np.int64),
                         exact_hashes=np.zeros((4, 2), dtype=np.uint64), signatures=None,
                         band_hashes=hashes)
    picked = batch.select(np.array([1, 3]))
    assert picked.uids.tolist() == [11, 13] and picked.ids == ["b", "d"]
    assert picked.signatures is None and picked.scopes is None and picked.derived is None
    assert picked.band_hashes.tolist() == [[3, 4, 5], [9, 10, 11]]


# --------------------------------------------------------------------------------------------
# Re-read selections (transforms.read.Selection) and uid sets (transforms.batches.UidSetFn)
# --------------------------------------------------------------------------------------------


def test_line_filter_only_and_except() -> None:
    only = LineFilter("only", frozenset({1, 3}))
    assert [line for line in range(1, 6) if only.wanted(line)] == [1, 3]
    excluded = LineFilter("except", frozenset({1, 3}))
    assert [line for line in range(1, 6) if excluded.wanted(line)] == [2, 4, 5]
    assert not any(LineFilter("only", frozenset()).wanted(line) for line in range(1, 100))
    assert all(LineFilter("except", frozenset()).wanted(line) for line in range(1, 100))


def test_selection_lines_of_each_file() -> None:
    uids = np.array(sorted([make_uid(0, 1), make_uid(0, 3), make_uid(2, 5), make_uid(2, 7),
                            make_uid(2, LINE_MASK), make_uid(4, 1)]), dtype=np.int64)
    assert Selection().mode == "all" and len(Selection().uids) == 0
    assert all(Selection().lines_of(f) is None for f in range(5))  # all: no filter at all
    only = Selection("only", uids)
    assert only.lines_of(0) == LineFilter("only", frozenset({1, 3}))
    # A file with nothing selected: an empty "only" filter (the re-read skips the file).
    assert only.lines_of(1) == LineFilter("only", frozenset())
    # The largest line number of file 2 belongs to file 2, not to file 3.
    assert only.lines_of(2) == LineFilter("only", frozenset({5, 7, LINE_MASK}))
    assert only.lines_of(3) == LineFilter("only", frozenset())
    assert only.lines_of(4) == LineFilter("only", frozenset({1}))
    assert only.lines_of(5) == LineFilter("only", frozenset())
    excluded = Selection("except", uids)
    assert excluded.lines_of(0) == LineFilter("except", frozenset({1, 3}))
    assert excluded.lines_of(2) == LineFilter("except", frozenset({5, 7, LINE_MASK}))
    # Nothing excepted from a file: no filter (every line wanted).
    assert excluded.lines_of(1) is None and excluded.lines_of(3) is None
    nothing = Selection("only", np.zeros(0, dtype=np.int64))
    assert nothing.lines_of(0) == LineFilter("only", frozenset())
    assert Selection("except", np.zeros(0, dtype=np.int64)).lines_of(0) is None
    # The filter's lines are plain ints (hashable, comparable with line counters).
    assert all(type(line) is int for line in only.lines_of(2).lines)


def test_uid_set_fn_methods() -> None:
    fn = UidSetFn()
    empty = fn.extract_output(fn.create_accumulator())
    assert empty.dtype == np.int64 and empty.tolist() == []
    acc = fn.create_accumulator()
    for uids in (np.array([9, 2], dtype=np.int64), [2, 5], np.array([], dtype=np.int64),
                 np.array([1 << 41], dtype=np.int64), np.array([7], dtype=np.int32)):
        acc = fn.add_input(acc, uids)
    out = fn.extract_output(acc)
    assert out.dtype == np.int64 and out.tolist() == [2, 5, 7, 9, 1 << 41]
    # Many small inputs: the accumulator is compacted, the result unchanged.
    big = fn.create_accumulator()
    for i in range(200):
        big = fn.add_input(big, np.array([i % 70, 1000 + i], dtype=np.int64))
    assert len(big) <= 65
    assert fn.extract_output(big).tolist() == list(range(70)) + list(range(1000, 1200))
    # Merging: empty accumulators are harmless; repeats across accumulators collapse.
    merged = fn.merge_accumulators([fn.create_accumulator(), acc, big,
                                    fn.create_accumulator()])
    assert fn.extract_output(merged).tolist() == sorted(
        set(out.tolist()) | set(range(70)) | set(range(1000, 1200)))
    nothing = fn.merge_accumulators([fn.create_accumulator(), fn.create_accumulator()])
    assert fn.extract_output(nothing).dtype == np.int64
    assert fn.extract_output(nothing).tolist() == []
    assert fn.extract_output(fn.merge_accumulators([])).tolist() == []
    # Sorted and unique: usable as a Selection at once.
    assert Selection("only", out).lines_of(0) == LineFilter("only", frozenset({2, 5, 7, 9}))


# --------------------------------------------------------------------------------------------
# LSH
# --------------------------------------------------------------------------------------------


def test_optimal_param_default() -> None:
    assert optimal_param(0.7, 256, 0.5, 0.5) == (25, 10)
    assert optimal_param(0.7, 256) == (25, 10)


@pytest.mark.parametrize(
    ("threshold", "num_perm", "fp_w", "fn_w"),
    [(0.7, 256, 0.5, 0.5), (0.7, 256, 0.1, 0.9), (0.5, 128, 0.5, 0.5), (0.9, 64, 0.3, 0.7)],
)
def test_optimal_param_minimises_objective(threshold: float, num_perm: int, fp_w: float,
                                           fn_w: float) -> None:
    bands, rows = optimal_param(threshold, num_perm, fp_w, fn_w)
    assert bands >= 1 and rows >= 1
    assert bands * rows <= num_perm
    best = objective(bands, rows, threshold, fp_w, fn_w)
    neighbours = [(bands + db, rows + dr) for db in (-2, -1, 0, 1, 2) for dr in (-1, 0, 1)
                  if (db, dr) != (0, 0)]
    for nb, nr in neighbours:
        if nb >= 1 and nr >= 1 and nb * nr <= num_perm:
            assert best <= objective(nb, nr, threshold, fp_w, fn_w) + 1e-9, (nb, nr)


def false_positive_area(bands: int, rows: int, threshold: float) -> float:
    return objective(bands, rows, threshold, 1.0, 0.0)


@pytest.mark.parametrize("threshold", [0.5, 0.6, 0.7, 0.8, 0.9])
def test_default_banding_reaches_the_recall_floor(threshold: float) -> None:
    """With verification the default b and r detect a pair at the threshold with probability
    at least the floor, and no banding that does has a smaller false-positive area."""
    cfg = DedupConfig(threshold=threshold)
    banding = choose_banding(cfg)
    assert cfg.recall_floor == RECALL_FLOOR == 0.995
    assert banding.bands * banding.rows <= cfg.num_perm
    assert float(detection_probability(threshold, banding.bands, banding.rows)) >= 0.995
    area = false_positive_area(banding.bands, banding.rows, threshold)
    for rows in range(1, cfg.num_perm + 1):
        for bands in range(1, cfg.num_perm // rows + 1):
            if float(detection_probability(threshold, bands, rows)) >= 0.995:
                assert area <= false_positive_area(bands, rows, threshold) + 1e-9, (bands, rows)


def test_banding_rules() -> None:
    assert choose_banding(DedupConfig()) == Banding(29, 5)
    # Without verification every candidate is reported: the weighted areas, 0.5 / 0.5.
    assert choose_banding(DedupConfig(verify="none")) == Banding(25, 10)
    # Explicit weights and explicit b, r still win (0.1 / 0.9 was the default before the floor).
    assert choose_banding(DedupConfig(fp_weight=0.1, fn_weight=0.9)) == Banding(32, 8)
    assert choose_banding(DedupConfig(bands=32, rows=8)) == Banding(32, 8)
    # A lower floor: a steeper curve (P(0.7) = 0.90), fewer candidates below the threshold.
    assert choose_banding(DedupConfig(recall_floor=0.9)) == Banding(27, 7)
    assert recall_floor_param(0.7, 64) == (13, 3)
    # A floor no banding reaches: the highest P(threshold).
    assert recall_floor_param(0.7, 2) == (2, 1)


def test_detection_probability() -> None:
    grid = np.linspace(0.0, 1.0, 501)
    for bands, rows in [(25, 10), (32, 8), (1, 1), (100, 2), (4, 64)]:
        p = detection_probability(grid, bands, rows)
        assert p[0] == 0.0
        assert p[-1] == 1.0
        assert np.all(np.diff(p) >= 0)
        assert np.all((p >= 0) & (p <= 1))
    assert float(detection_probability(0.5, 1, 1)) == pytest.approx(0.5)
    assert float(detection_probability(0.5, 2, 1)) == pytest.approx(0.75)
    assert float(detection_probability(0.5, 1, 2)) == pytest.approx(0.25)
    # More bands raise the curve, more rows lower it.
    assert float(detection_probability(0.6, 30, 10)) > float(detection_probability(0.6, 25, 10))
    assert float(detection_probability(0.6, 25, 11)) < float(detection_probability(0.6, 25, 10))


def test_band_hashes() -> None:
    rng = np.random.default_rng(21)
    bands, rows = 8, 4
    sigs = rng.integers(0, 2**32, size=(6, 32), dtype=np.uint32)
    sigs[3] = sigs[1]
    out = band_hashes(sigs, bands, rows, 1)
    assert out.shape == (6, bands) and out.dtype == np.uint64
    assert np.array_equal(out, band_hashes(sigs.copy(), bands, rows, 1))
    assert np.array_equal(out[1], out[3])
    assert not np.any(out == band_hashes(sigs, bands, rows, 2))
    for col in range(32):
        changed = sigs.copy()
        changed[1, col] ^= np.uint32(1)
        diff = band_hashes(changed, bands, rows, 1) != out
        assert np.flatnonzero(diff[1]).tolist() == [col // rows]
        assert not diff[[0, 2, 3, 4, 5]].any()
    # Equal values in two different bands still hash differently (band index is mixed in).
    same = np.zeros((1, 8), dtype=np.uint32)
    h = band_hashes(same, 2, 4, 1)
    assert h[0, 0] != h[0, 1]
    # Columns past bands * rows are ignored.
    wide = np.concatenate([sigs, sigs[:, :5]], axis=1)
    assert np.array_equal(band_hashes(wide, bands, rows, 1), out)


def test_band_hashes_accept_every_valid_seed() -> None:
    sigs = np.zeros((2, 8), dtype=np.uint32)
    out = band_hashes(sigs, 2, 4, 2**62)
    assert out.shape == (2, 2)


def bucket_keys(buckets: list[tuple[int, int, list[int]]]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(band, hash, [uids])`` buckets → the flat band-key arrays star_edges takes."""
    band_ids = np.array([band for band, _, uids in buckets for _ in uids], dtype=np.int32)
    hashes = np.array([h for _, h, uids in buckets for _ in uids], dtype=np.uint64)
    uids = np.array([u for _, _, us in buckets for u in us], dtype=np.int64)
    return band_ids, hashes, uids


def test_star_edges_planted_buckets() -> None:
    buckets = [
        (0, 100, [5, 3, 9]),  # → (5, 3), (9, 3)
        (1, 100, [7, 8]),  # same hash, other band: another bucket → (8, 7)
        (0, 200, [4]),  # singleton: no edge
        (2, 300, [5, 3]),  # repeats (5, 3)
        (3, 2**63 + 5, [20, 11, 15, 12, 30, 13]),  # star, not all pairs: 5 edges to 11
    ]
    band_ids, hashes, uids = bucket_keys(buckets)
    perm = np.random.default_rng(0).permutation(len(uids))
    members, centres, stats = star_edges(band_ids[perm], hashes[perm], uids[perm], 5000)
    expected = sorted([(5, 3), (9, 3), (8, 7), (12, 11), (13, 11), (15, 11), (20, 11),
                       (30, 11)])
    assert list(zip(members.tolist(), centres.tolist())) == expected
    assert stats == {"buckets_capped": 0, "bucket_members_dropped": 0, "buckets_multi": 4}


def test_star_edges_cap() -> None:
    buckets = [
        (0, 1, list(range(100, 110))),  # size 10, cap 4: keeps 100..103, drops 6
        (0, 2, [1, 2, 3, 4]),  # exactly the cap: kept whole
        (1, 1, [50, 51, 52, 53, 54]),  # size 5: drops 1 (54)
        (1, 9, [60, 61]),
    ]
    band_ids, hashes, uids = bucket_keys(buckets)
    perm = np.random.default_rng(1).permutation(len(uids))
    members, centres, stats = star_edges(band_ids[perm], hashes[perm], uids[perm], 4)
    expected = sorted([(101, 100), (102, 100), (103, 100), (2, 1), (3, 1), (4, 1),
                       (51, 50), (52, 50), (53, 50), (61, 60)])
    assert list(zip(members.tolist(), centres.tolist())) == expected
    assert stats["buckets_capped"] == 2
    assert stats["bucket_members_dropped"] == 6 + 1
    assert stats["buckets_multi"] == 4


def test_star_edges_empty() -> None:
    empty = np.zeros(0, dtype=np.int64)
    members, centres, stats = star_edges(empty.astype(np.int32), empty.astype(np.uint64),
                                         empty, 10)
    assert len(members) == len(centres) == 0
    assert stats["buckets_capped"] == 0 and stats["bucket_members_dropped"] == 0


def test_unique_pairs() -> None:
    left = np.array([3, 1, 3, 2, 1, 3], dtype=np.int64)
    right = np.array([1, 0, 1, 0, 0, 2], dtype=np.int64)
    got_l, got_r = unique_pairs(left, right)
    assert list(zip(got_l.tolist(), got_r.tolist())) == [(1, 0), (2, 0), (3, 1), (3, 2)]
    e_l, e_r = unique_pairs(np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert len(e_l) == len(e_r) == 0
    rng = np.random.default_rng(2)
    left, right = rng.integers(0, 20, 500), rng.integers(0, 20, 500)
    got_l, got_r = unique_pairs(left, right)
    assert list(zip(got_l.tolist(), got_r.tolist())) == sorted(set(zip(left.tolist(),
                                                                     right.tolist())))


# --------------------------------------------------------------------------------------------
# Exact groups
# --------------------------------------------------------------------------------------------


def exact_fixture() -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    h_a, h_b, h_c = (1, 10), (2, 20), (1, 11)  # h_c shares h_a's first half only
    # h_c sits between rows of h_a, so grouping on one half only would split group A.
    hashes = np.array([h_a, h_c, h_a, h_b, h_a, h_b, (3, 30)], dtype=np.uint64)
    uids = np.array([70, 20, 50, 60, 30, 40, 10], dtype=np.int64)
    ids = ["c", "zz", "10", "b9", "9", "b10", "solo"]
    norm_lengths = np.array([5, 1, 9, 7, 9, 7, 3], dtype=np.int64)
    return hashes, uids, ids, norm_lengths


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        # group A rows 0, 2, 4 (ids c, 10, 9); group B rows 3, 5 (ids b9, b10)
        ("smallest_id", {(70, "c", 50, "10"), (30, "9", 50, "10"), (60, "b9", 40, "b10")}),
        # longest: rows 2 and 4 tie at 9, smallest id "10" wins; B ties at 7 → "b10"
        ("longest", {(70, "c", 50, "10"), (30, "9", 50, "10"), (60, "b9", 40, "b10")}),
        ("first", {(70, "c", 30, "9"), (50, "10", 30, "9"), (60, "b9", 40, "b10")}),
    ],
)
def test_exact_groups(policy: str, expected: set[tuple[int, str, int, str]]) -> None:
    hashes, uids, ids, norm_lengths = exact_fixture()
    got = exact_groups(hashes, uids, ids, norm_lengths, policy)
    assert len(got) == len(expected)
    assert set(got) == expected


def test_exact_groups_longest_prefers_length() -> None:
    hashes = np.array([(5, 5)] * 3, dtype=np.uint64)
    uids = np.array([1, 2, 3], dtype=np.int64)
    ids = ["a", "b", "c"]
    got = exact_groups(hashes, uids, ids, np.array([3, 8, 8]), "longest")
    assert set(got) == {(1, "a", 2, "b"), (3, "c", 2, "b")}
    # Equal ids: the uid breaks the tie.
    got = exact_groups(hashes, uids, ["x", "x", "x"], np.array([1, 1, 1]), "smallest_id")
    assert set(got) == {(2, "x", 1, "x"), (3, "x", 1, "x")}


def test_exact_groups_edge_cases() -> None:
    empty = np.zeros((0, 2), dtype=np.uint64)
    assert exact_groups(empty, np.zeros(0, np.int64), [], np.zeros(0, np.int64), "first") == []
    distinct = np.array([(1, 1), (1, 2), (2, 1)], dtype=np.uint64)
    assert exact_groups(distinct, np.array([1, 2, 3]), ["a", "b", "c"], np.ones(3),
                        "smallest_id") == []
    with pytest.raises(ValueError, match="keep policy"):
        rank_key("random", "a", 1, 1)


# --------------------------------------------------------------------------------------------
# Connected components
# --------------------------------------------------------------------------------------------


def test_large_star_and_small_star_by_hand() -> None:
    # Path 1 - 3 - 2: large-star links 3 → 1 and 3 → 2 (nothing rewired) ...
    a, b = np.array([1, 3]), np.array([3, 2])
    v, m, changed = large_star(np.concatenate([a, b]), np.concatenate([b, a]))
    assert list(zip(v.tolist(), m.tolist())) == [(3, 1), (3, 2)]
    assert changed == 0
    # ... and small-star moves 2 under 1 (node 3 had two smaller neighbours).
    v, m, changed = small_star(np.maximum(v, m), np.minimum(v, m))
    assert list(zip(v.tolist(), m.tolist())) == [(2, 1), (3, 1)]
    assert changed == 1
    # Large-star: node 2 with neighbours {1, 4, 5} links 4 and 5 to 1 (two rewired edges).
    a, b = np.array([2, 2, 2]), np.array([1, 4, 5])
    v, m, changed = large_star(np.concatenate([a, b]), np.concatenate([b, a]))
    assert list(zip(v.tolist(), m.tolist())) == [(2, 1), (4, 1), (5, 1)]
    assert changed == 2
    empty = np.zeros(0, dtype=np.int64)
    assert large_star(empty, empty)[2] == 0 and small_star(empty, empty)[2] == 0


def random_graph(rng: np.random.Generator, nodes: int, edges: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    ids = rng.choice(2**40, size=nodes, replace=False).astype(np.int64)
    a = ids[rng.integers(0, nodes, edges)]
    b = ids[rng.integers(0, nodes, edges)]
    keep = a != b
    return a[keep], b[keep]


def chain(rng: np.random.Generator, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    ids = rng.choice(2**40, size=nodes, replace=False).astype(np.int64)
    return ids[:-1], ids[1:]


def star(rng: np.random.Generator, leaves: int) -> tuple[np.ndarray, np.ndarray]:
    ids = rng.choice(2**40, size=leaves + 1, replace=False).astype(np.int64)
    centre = ids[int(rng.integers(0, leaves + 1))]  # not necessarily the smallest
    others = ids[ids != centre]
    return np.full(leaves, centre), others


def clique(rng: np.random.Generator, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    ids = rng.choice(2**40, size=nodes, replace=False).astype(np.int64)
    i, j = np.triu_indices(nodes, 1)
    return ids[i], ids[j]


@pytest.mark.parametrize("seed", range(6))
def test_components_random_graphs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = random_graph(rng, 400, int(rng.integers(100, 600)))
    check_components(a, b)


@pytest.mark.parametrize("seed", range(3))
def test_components_long_chain_shuffled_ids(seed: int) -> None:
    rng = np.random.default_rng(50 + seed)
    a, b = chain(rng, 1500)
    # Mixed orientation and a few repeated edges.
    flip = rng.random(len(a)) < 0.5
    a, b = np.where(flip, b, a), np.where(flip, a, b)
    a, b = np.concatenate([a, b[:20]]), np.concatenate([b, a[:20]])
    rounds = check_components(a, b)
    # Star rounds alone need at most 16 rounds here (beyond cc_max_rounds the pipeline
    # finishes on one worker).
    assert rounds <= 16


@pytest.mark.parametrize("seed", range(3))
def test_components_of_finishes_exactly_on_one_worker(seed: int) -> None:
    # The finisher after the unrolled rounds: any graph, one call, the oracle's labels.
    rng = np.random.default_rng(70 + seed)
    parts = [chain(rng, 400), star(rng, 50), clique(rng, 12), random_graph(rng, 100, 80)]
    a = np.concatenate([p[0] for p in parts])
    b = np.concatenate([p[1] for p in parts])
    nodes, labels = components_of(a, b)
    assert len(np.unique(nodes)) == len(nodes)
    assert dict(zip(nodes.tolist(), labels.tolist())) == oracle_labels(a, b)
    empty = np.array([], dtype=np.int64)
    assert [len(x) for x in components_of(empty, empty)] == [0, 0]


def test_components_mixture() -> None:
    rng = np.random.default_rng(99)
    parts = [chain(rng, 300), star(rng, 200), clique(rng, 30), random_graph(rng, 200, 150)]
    pairs = rng.choice(2**40, size=(40, 2), replace=False).astype(np.int64)
    parts.append((pairs[:, 0], pairs[:, 1]))  # isolated pairs
    a = np.concatenate([p[0] for p in parts])
    b = np.concatenate([p[1] for p in parts])
    order = rng.permutation(len(a))
    check_components(a[order], b[order])


@pytest.mark.parametrize("shape", ["star", "clique", "pairs", "single_edge"])
def test_components_shapes(shape: str) -> None:
    rng = np.random.default_rng(7)
    if shape == "star":
        a, b = star(rng, 500)
    elif shape == "clique":
        a, b = clique(rng, 40)
    elif shape == "pairs":
        ids = rng.choice(2**40, size=(200, 2), replace=False).astype(np.int64)
        a, b = ids[:, 0], ids[:, 1]
    else:
        a, b = np.array([9]), np.array([4])
    check_components(a, b)


def test_converged_star_forest_is_a_fixed_point() -> None:
    rng = np.random.default_rng(8)
    leaves, centres, _ = run_components(*random_graph(rng, 300, 250))
    v, m, changed_large = large_star(np.concatenate([leaves, centres]),
                                     np.concatenate([centres, leaves]))
    v2, m2, changed_small = small_star(np.maximum(v, m), np.minimum(v, m))
    assert changed_large == 0 and changed_small == 0
    assert v2.tolist() == leaves.tolist() and m2.tolist() == centres.tolist()


def test_star_labels() -> None:
    nodes, labels = star_labels(np.array([5, 9, 7]), np.array([1, 1, 2]))
    assert dict(zip(nodes.tolist(), labels.tolist())) == {1: 1, 2: 2, 5: 1, 7: 2, 9: 1}
    assert nodes.tolist() == sorted(nodes.tolist())


# --------------------------------------------------------------------------------------------
# Verification similarities
# --------------------------------------------------------------------------------------------


def test_jaccard_known_sets() -> None:
    def arr(values: list[int]) -> np.ndarray:
        return np.array(sorted(values), dtype=np.uint64)

    assert jaccard(arr([1, 2, 3]), arr([2, 3, 4])) == pytest.approx(0.5)
    assert jaccard(arr([1, 2, 3]), arr([1, 2, 3])) == 1.0
    assert jaccard(arr([1, 2]), arr([3, 4])) == 0.0
    assert jaccard(arr([1, 2]), arr([])) == 0.0
    assert jaccard(arr([]), arr([])) == 1.0
    assert jaccard(arr([1, 2, 3, 4]), arr([4])) == pytest.approx(0.25)
    big = np.array([2**64 - 1, 2**63], dtype=np.uint64)
    assert jaccard(np.sort(big), np.sort(big[:1])) == pytest.approx(0.5)
    rng = np.random.default_rng(4)
    for _ in range(20):
        left = np.unique(rng.integers(0, 60, 30).astype(np.uint64))
        right = np.unique(rng.integers(0, 60, 30).astype(np.uint64))
        ls, rs = set(left.tolist()), set(right.tolist())
        assert jaccard(left, right) == pytest.approx(len(ls & rs) / len(ls | rs))


def test_signature_similarity() -> None:
    left = np.array([1, 2, 3, 4], dtype=np.uint32)
    assert signature_similarity(left, np.array([1, 2, 0, 4], dtype=np.uint32)) == 0.75
    assert signature_similarity(left, left.copy()) == 1.0
    assert signature_similarity(left, left + np.uint32(1)) == 0.0



def test_rows_by_part_matches_a_mask_per_partition() -> None:
    parts = np.random.default_rng(3).integers(0, 7, size=500)
    split = list(rows_by_part(parts))
    assert [part for part, _ in split] == sorted(set(parts.tolist()))
    for part, rows in split:
        assert np.array_equal(rows, np.flatnonzero(parts == part))
    assert list(rows_by_part(np.array([], dtype=np.int64))) == []


def test_sorted_runs_of_one_two_and_row_keys() -> None:
    from transforms.batches import sorted_runs

    a = np.array([1, 1, 2, 3, 3, 3])
    starts, sizes, run = sorted_runs(a)
    assert starts.tolist() == [0, 2, 3] and sizes.tolist() == [2, 1, 3]
    assert run.tolist() == [0, 0, 1, 2, 2, 2]
    b = np.array([5, 6, 6, 7, 7, 8])
    assert sorted_runs(a, b)[0].tolist() == [0, 1, 2, 3, 5]
    rows = np.array([[1, 2], [1, 2], [1, 3], [2, 3]])
    assert sorted_runs(rows)[1].tolist() == [2, 1, 1]
    empty = np.zeros(0, dtype=np.int64)
    assert [len(x) for x in sorted_runs(empty)] == [0, 0, 0]
    assert [x.tolist() for x in sorted_runs(np.array([4]))] == [[0], [1], [0]]
