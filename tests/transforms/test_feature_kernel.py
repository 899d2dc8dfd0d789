"""Tier 1: the compiled feature kernel (``transforms.feature_kernel``, C) against the numpy
reference path of ``transforms.minhash``, with plain asserts.

Both paths must give identical features: same dtypes, same shapes, same values, for token
hashes, shingles, signatures, exact hashes, normalised lengths and band hashes. Outputs are
byte-compared end to end (``tests/end_to_end/test_output_digests.py``), so equivalence is not
enough.
"""

from __future__ import annotations

import gzip
import importlib.util
import itertools
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xxhash

import transforms
from tests.conftest import DEMO_CORPUS
from transforms.batches import DocBatch, FeatureBatch
from transforms.lsh import band_hashes
from transforms.minhash import (
    KERNEL_TABLES,
    KERNELS,
    compiled_kernel,
    compute_features,
    kernel_band_hashes,
    kernel_features,
    kernel_input,
    kernel_parts,
    only_ascii_tokens,
    permutation_params,
    reference_features,
    token_bytes,
    use_compiled,
)

# `make install` builds the extension; a source tree used without it skips these (and the
# fallback test below covers what such a tree does).
BUILT = importlib.util.find_spec("transforms._feature_kernel") is not None
needs_kernel = pytest.mark.skipif(not BUILT, reason="transforms._feature_kernel is not built")
FEATURE_ARRAYS = ("uids", "norm_lengths", "exact_hashes", "signatures", "derived",
                  "band_hashes", "scopes")


def assert_same_features(left: tuple[FeatureBatch, int], right: tuple[FeatureBatch, int]
                         ) -> None:
    (f, untokenized_f), (g, untokenized_g) = left, right
    assert untokenized_f == untokenized_g
    assert f.batch_key == g.batch_key and f.ids == g.ids
    for name in FEATURE_ARRAYS:
        x, y = getattr(f, name), getattr(g, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape, (name, x.dtype, y.dtype)
            assert np.array_equal(x, y), name


def both_paths(texts: list[str], ngram: int = 5, num_perm: int = 256, seed: int = 1,
               tokenizer: str = "unicode", banding: tuple[int, int] | None = None) -> None:
    """Asserts that both kernels give the same features for ``texts`` (one batch)."""
    records = [{"text": t} if i % 3 else {"text": t, "id": f"d{i}"} for i, t in enumerate(texts)]
    batch = DocBatch(7, np.arange(10, 10 + len(texts), dtype=np.int64),
                     [str(i) for i in range(len(texts))], records)
    a, b = permutation_params(num_perm, seed)
    assert_same_features(
        compute_features(batch, ngram, seed, a, b, tokenizer, banding, kernel="numpy"),
        compute_features(batch, ngram, seed, a, b, tokenizer, banding, kernel="compiled"))


# Every kind of character the tokenisers treat differently: ASCII letters, digits and
# separators, "_", Latin letters with case, Σ (final sigma), İ and ǅ (lowercase to two
# characters / titlecase), the Kelvin sign (lowercases to ASCII "k"), ß, CJK, Arabic digits,
# superscripts, combining marks, emoji, no-break and em spaces, curly quotes, a lone surrogate.
ALPHABET = (list("aZq09 _-.,!\t\n'") + list("éÀßΣσЖ日本٣²\u0301😀\u00a0\u2003“”—…İǅ")
            + ["\u212a", "\ud800"])


def random_texts(rng: np.random.Generator, count: int, alphabet: list[str], longest: int
                 ) -> list[str]:
    return ["".join(rng.choice(alphabet, size=int(rng.integers(0, longest))).tolist())
            for _ in range(count)]


# --------------------------------------------------------------------------------------------
# The compiled path is the one in use


@needs_kernel
def test_compiled_path_is_active_when_the_extension_is_built() -> None:
    assert compiled_kernel() is not None
    assert use_compiled("auto") and use_compiled("compiled") and not use_compiled("numpy")


def test_numpy_fallback_when_the_extension_is_not_built(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Without the extension the features come from the numpy path, said in one log line."""
    # None in sys.modules makes the import raise ImportError, as a missing .so does.
    monkeypatch.setitem(sys.modules, "transforms._feature_kernel", None)
    monkeypatch.delattr(transforms, "_feature_kernel", raising=False)
    monkeypatch.delitem(sys.modules, "transforms.feature_kernel", raising=False)
    monkeypatch.delattr(transforms, "feature_kernel", raising=False)
    compiled_kernel.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="transforms.minhash"):
            assert not use_compiled("auto")
            batch = DocBatch(0, np.arange(2, dtype=np.int64), ["a", "b"],
                             [{"text": "one two three"}, {"text": ""}])
            a, b = permutation_params(16, 3)
            features, untokenized = compute_features(batch, 2, 3, a, b)
            compute_features(batch, 2, 3, a, b)
            with pytest.raises(RuntimeError, match="kernel is not built"):
                use_compiled("compiled")
        assert untokenized == 1 and features.signatures.shape == (1, 16)
        warnings = [r for r in caplog.records if "kernel is not built" in r.getMessage()]
        assert len(warnings) == 1
    finally:
        compiled_kernel.cache_clear()


def test_unknown_kernel_is_an_error() -> None:
    assert KERNELS == ("auto", "compiled", "numpy")
    with pytest.raises(ValueError, match="unknown feature kernel"):
        use_compiled("fortran")


# --------------------------------------------------------------------------------------------
# Pieces: XXH3-64, tokens, band hashes


@needs_kernel
@pytest.mark.parametrize("seed", [0, 1, 7, 123456789, 2**63 - 1])
def test_xxh3_64_equals_xxhash_at_every_length(seed: int) -> None:
    """Every length class of XXH3 (0, 1-3, 4-8, 9-16, 17-128, 129-240, long: one and several
    1024-byte blocks, partial last stripes) at unaligned offsets."""
    kernel = compiled_kernel()
    rng = np.random.default_rng(seed % 1000)
    data = rng.integers(0, 256, 5000, dtype=np.uint8)
    secret = kernel.custom_secret(seed)
    lengths = [*range(0, 300), 1023, 1024, 1025, 1087, 1088, 1089, 2048, 2049, 4097]
    for length in lengths:
        start = int(rng.integers(0, len(data) - length + 1))
        got = kernel.xxh3_64(data, start, start + length, np.uint64(seed), secret)
        want = xxhash.xxh3_64_intdigest(data[start : start + length].tobytes(), seed)
        assert int(got) == want, (seed, length)


@needs_kernel
@pytest.mark.parametrize("tokenizer", ["unicode", "ascii"])
def test_kernel_normalised_text_is_the_joined_token_bytes(tokenizer: str) -> None:
    """Whichever table ``kernel_input`` chose for a document, the kernel's normalised text is
    ``b" ".join(token_bytes(text))`` and its token count ``len(token_bytes(text))``."""
    rng = np.random.default_rng(3)
    texts = [*random_texts(rng, 400, ALPHABET, 40), "", " ", "--", "A", "ÀB  cd_ ", "x" * 300,
             "ΟΔΟΣ_Σ", "İstanbul\u212aelvin", "x²\ud800日本—a\u0301b", "ǅ\u00a0ß…٣"]
    kernel = compiled_kernel()
    a, b = permutation_params(4, 1)
    text, offsets, modes = kernel_input([{"text": t} for t in texts], tokenizer)
    norm, norm_offsets, counts, _ = kernel.batch_features(
        text, offsets, modes, KERNEL_TABLES, 3, np.uint64(1), np.uint64(5),
        kernel.custom_secret(1), a, b)
    for row, source in enumerate(texts):
        tokens = token_bytes(source, tokenizer)
        assert norm[norm_offsets[row] : norm_offsets[row + 1]].tobytes() == b" ".join(tokens)
        assert counts[row] == len(tokens)
    assert len(norm) == norm_offsets[-1]


def test_only_ascii_tokens() -> None:
    """Text whose non-ASCII characters are all separators (lowercased too) takes the ASCII
    table; any non-ASCII letter or digit, or one lowercasing to one, does not. A combining
    accent is no letter to Python's ``\\w``: ``"a\\u0301"`` is the token ``a``."""
    for text in ("plain", "“quoted” — text…\u00a0😀", "a\u2003b", "\ud800 lone", "a\u0301"):
        assert only_ascii_tokens(text), text
    assert token_bytes("a\u0301") == [b"a"]
    for text in ("café", "Σ", "\u212a", "x²", "日本", "٣"):
        assert not only_ascii_tokens(text), text


@needs_kernel
@pytest.mark.parametrize("bands,rows", [(25, 10), (32, 8), (5, 3), (1, 1)])
def test_kernel_band_hashes_equal_reference(bands: int, rows: int) -> None:
    rng = np.random.default_rng(bands)
    signatures = rng.integers(0, 2**32, (300, 256), dtype=np.uint32)
    for seed in (1, 2**63 - 1):
        want = band_hashes(signatures, bands, rows, seed)
        got = kernel_band_hashes(signatures, bands, rows, seed)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got, want)
    empty = np.zeros((0, 256), dtype=np.uint32)
    assert kernel_band_hashes(empty, bands, rows, 1).shape == band_hashes(empty, bands, rows,
                                                                          1).shape


# --------------------------------------------------------------------------------------------
# Whole batches: both paths identical


@needs_kernel
@pytest.mark.parametrize("tokenizer", ["unicode", "ascii"])
@pytest.mark.parametrize("ngram", [1, 3, 5])
def test_paths_identical_on_random_unicode_text(tokenizer: str, ngram: int) -> None:
    rng = np.random.default_rng(ngram)
    both_paths(random_texts(rng, 300, ALPHABET, 60), ngram=ngram, tokenizer=tokenizer)
    ascii_words = ["the", "cat", "Sat", "on", "a", "mat", "x" * 250, "42", "--", " ", "\n"]
    both_paths(random_texts(rng, 300, ascii_words, 80), ngram=ngram, tokenizer=tokenizer,
               banding=(25, 10))


@needs_kernel
@pytest.mark.parametrize("tokenizer", ["unicode", "ascii"])
def test_paths_identical_on_edge_cases(tokenizer: str) -> None:
    """Empty documents, no token, fewer tokens than n, one token, tokens past XXH3's
    240-byte boundary, documents longer than a MinHash chunk, an empty batch."""
    rng = np.random.default_rng(11)
    texts = ["", "!!! --- ...", "😀🎉", "one", "one two", "a b c d", "a b c d e",
             "Größe Übung: naïve CAFÉ façade 123 ÉCOLE", "سلام دنیا ۱۲۳", "snake_case",
             "y" * 241 + " " + "Z" * 1500, "“smart quotes” — and dashes…",
             " ".join(f"w{rng.integers(5000)}" for _ in range(9000)), "İstanbul \u212a ǅ ß"]
    for seed, num_perm, banding in [(1, 256, None), (7, 16, (4, 4)), (2**63 - 1, 2, (1, 2))]:
        both_paths(texts, ngram=5, num_perm=num_perm, seed=seed, tokenizer=tokenizer,
                   banding=banding)
        both_paths([], num_perm=num_perm, seed=seed, tokenizer=tokenizer, banding=banding)
        both_paths(["", "?"], num_perm=num_perm, seed=seed, tokenizer=tokenizer,
                   banding=banding)


def corpus_records(path: Path, limit: int) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in itertools.islice(lines, limit)]


def assert_paths_identical_on(records: list[dict], tokenizer: str) -> None:
    a, b = permutation_params(256, 1)
    for start in range(0, len(records), 1000):
        part = records[start : start + 1000]
        want = reference_features(part, 5, 1, a, b, tokenizer)
        got = kernel_features(part, 5, 1, a, b, tokenizer)
        for x, y in zip(want, got, strict=True):
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)


def test_kernel_parts_cut_at_documents_by_text() -> None:
    offsets = np.array([0, 10, 20, 30, 1000, 1010])
    assert kernel_parts(offsets, 1, 1) == [(0, 5)]
    assert kernel_parts(offsets, 2, 1) == [(0, 4), (4, 5)]
    assert kernel_parts(np.arange(0, 101, 10), 4, 1) == [(0, 3), (3, 5), (5, 8), (8, 10)]
    assert kernel_parts(offsets, 4, 600) == [(0, 5)]  # 1,010 bytes: one part of >= 600
    assert kernel_parts(np.array([0, 5]), 4, 1) == [(0, 1)]
    assert kernel_parts(np.array([0]), 2, 1) == [(0, 0)]


@needs_kernel
@pytest.mark.parametrize("threads", [2, 3, 4])
def test_threaded_kernel_equals_one_call(monkeypatch: pytest.MonkeyPatch, threads: int) -> None:
    import transforms.minhash as minhash

    monkeypatch.setattr(minhash, "KERNEL_MIN_PART_BYTES", 1)
    records = [*corpus_records(DEMO_CORPUS, 700), {"text": ""}, {"text": "…"}]
    a, b = permutation_params(256, 1)
    one = kernel_features(records, 5, 1, a, b, threads=1)
    helper_cpu: list[float] = []
    several = kernel_features(records, 5, 1, a, b, threads=threads, helper_cpu=helper_cpu)
    assert len(helper_cpu) == threads and all(t >= 0 for t in helper_cpu)
    for x, y in zip(one, several, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)


@needs_kernel
@pytest.mark.parametrize("tokenizer", ["unicode", "ascii"])
def test_paths_identical_on_the_demo_corpus(tokenizer: str) -> None:
    assert_paths_identical_on(corpus_records(DEMO_CORPUS, 10_000), tokenizer)


@needs_kernel
@pytest.mark.shared_data
def test_paths_identical_on_a_blog_shard(shared_data: Path) -> None:
    """5,000 real blog posts (about 6 % with non-ASCII text)."""
    records = corpus_records(shared_data / "blogs" / "blogs.00000.json.gz", 5000)
    assert_paths_identical_on(records, "unicode")


@needs_kernel
def test_kernel_refuses_arguments_that_would_read_outside_its_buffers() -> None:
    """The C loops index by offsets, modes and shapes: each is checked before them."""
    kernel = compiled_kernel()
    a, b = permutation_params(4, 1)
    text = np.frombuffer(b"one two three", dtype=np.uint8)
    good = (np.array([0, 3, 13]), np.zeros(2, dtype=np.uint8))
    constants = (5, np.uint64(1), np.uint64(2), kernel.custom_secret(1))
    assert kernel.batch_features(text, *good, KERNEL_TABLES, *constants, a, b)[2].tolist() == [
        1, 2]
    bad_inputs = {
        "offsets must be non-decreasing and within text": (np.array([0, 3, 14]), good[1]),
        "offsets must start at 0": (np.array([1, 3, 13]), good[1]),
        "a mode names a table": (good[0], np.array([0, len(KERNEL_TABLES)], dtype=np.uint8)),
        "do not match offsets": (good[0], np.zeros(3, dtype=np.uint8)),
    }
    for message, (offsets, modes) in bad_inputs.items():
        with pytest.raises(ValueError, match=message):
            kernel.batch_features(text, offsets, modes, KERNEL_TABLES, *constants, a, b)
    with pytest.raises(ValueError, match="same length"):
        kernel.batch_features(text, *good, KERNEL_TABLES, *constants, a, b[:3])
    with pytest.raises(ValueError, match="start and end"):
        kernel.xxh3_64(text, 5, 14, np.uint64(1), kernel.custom_secret(1))
    with pytest.raises(ValueError, match="do not fit rows"):
        kernel.band_hashes(np.zeros((2, 8), dtype=np.uint32), 3, np.zeros(3, dtype=np.uint64))


@needs_kernel
@pytest.mark.parametrize("num_perm", [1, 7, 8, 13, 64])
def test_signature_blocks_of_eight_and_their_tail_equal_reference(num_perm: int) -> None:
    """The AVX2 signature loop takes permutations eight at a time, the rest one by one."""
    rng = np.random.default_rng(num_perm)
    words = ["the", "cat", "Sat", "on", "a", "mat", "x" * 30, "42"]
    both_paths(random_texts(rng, 200, words, 120), num_perm=num_perm, seed=num_perm * 7919)


@needs_kernel
def test_generic_signature_loop_equals_the_avx2_one(tmp_path: Path) -> None:
    """NDCL_KERNEL_NO_AVX2 makes the extension use its generic loop (the one a CPU without
    AVX2 runs): same signatures on the demo corpus, computed in another process."""
    script = ("import sys, numpy as np\n"
              "from tests.transforms.test_feature_kernel import corpus_records\n"
              "from tests.conftest import DEMO_CORPUS\n"
              "from transforms.minhash import kernel_features, permutation_params\n"
              "a, b = permutation_params(256, 1)\n"
              "np.save(sys.argv[1], kernel_features(corpus_records(DEMO_CORPUS, 2000), 5, 1,"
              " a, b)[3])\n")
    out = {}
    for name, extra in (("avx2", {}), ("generic", {"NDCL_KERNEL_NO_AVX2": "1"})):
        path = tmp_path / f"{name}.npy"
        subprocess.run([sys.executable, "-c", script, str(path)], check=True,
                       cwd=Path(__file__).parents[2], env={**os.environ, **extra})
        out[name] = np.load(path)
    assert out["avx2"].shape[1] == 256 and len(out["avx2"]) > 1200  # 1,308 documents
    assert np.array_equal(out["avx2"], out["generic"])
