"""Normalise, shingle and MinHash documents, vectorised over batches with numpy.

Normalisation: lowercase, then split on every character that is not a Unicode letter or digit
(``[^\\W_]+``); the normalised text is the tokens joined by single spaces. ``tokenizer: ascii``
keeps only ``[a-z0-9]`` runs instead, which is how some reference truth files were made, but
it reduces text in other scripts to its few ASCII words (a Persian post with one "urlLink"
becomes a duplicate of every other "urlLink" post), so Unicode is the default.

Shingles: word n-grams. A document with ``0 < tokens < n`` is one shingle made of all its
tokens (so short documents are still compared, as whole strings). A document with no token at
all (empty text, or only punctuation) has nothing to compare: it is kept, never marked a
duplicate, and counted as ``kept_untokenized`` in the summary.

Hashing, all seeded with the config's ``seed`` and identical in every process:
- each token is hashed with xxh3-64;
- an n-gram's hash folds its token hashes in order through the SplitMix64 mixer, so it
  depends on every token and on their order;
- the exact-duplicate key is xxh3-128 of the normalised text (UTF-8);
- ``num_perm`` universal hash permutations ``p_i(x) = (a_i * x + b_i) mod 2**64`` (``a_i`` odd,
  so each is a bijection of 64-bit values) are applied to every shingle hash; the signature
  keeps the top 32 bits of each minimum. ``>> 32`` is monotone, so taking it after the
  minimum gives the same value as before it, at a fraction of the cost.

Two implementations give identical features (same dtypes, same values; tested): the
compiled kernel of ``transforms.feature_kernel`` (C, built by ``pip install``), used whenever
it is built, and the numpy reference below, used otherwise (one log line says so). The
reference computes a whole batch at once: the permutation matrix is laid out
``(num_perm, shingles)`` so each document's minimum is a contiguous ``np.minimum.reduceat``.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import xxhash
from apache_beam.transforms.window import GlobalWindows

from transforms.batches import (
    DocBatch,
    FeatureBatch,
    splitmix64,
    stage_counter,
    stage_cpu_counter,
    timed,
    timed_process,
)
from transforms.lsh import band_hashes
from transforms.records import is_generated

LOG = logging.getLogger(__name__)
TOKEN_RE = re.compile(r"[^\W_]+")
NON_ASCII_RE = re.compile(r"[^\x00-\x7f]")
# Byte table: a-z and 0-9 kept, A-Z lowercased, everything else (incl. bytes >= 0x80) a space.
_ASCII_TABLE = bytes(
    c + 32 if 65 <= c <= 90 else c if (48 <= c <= 57 or 97 <= c <= 122) else 32
    for c in range(256)
)
ASCII_STR_TOKEN_RE = re.compile(r"[a-z0-9]+")
TOKENIZERS = ("unicode", "ascii")
KERNELS = ("auto", "compiled", "numpy")
# The compiled kernel reads each document through one of these byte tables: 0 is the ASCII
# table above; 1 keeps bytes >= 0x80 too, for lowercased UTF-8 whose non-ASCII characters
# are all Unicode token characters (``kernel_input`` makes it so with NON_ASCII_SEPARATOR_RE).
_KERNEL_ASCII, _KERNEL_WORDS = 0, 1
KERNEL_TABLES = np.stack([np.frombuffer(_ASCII_TABLE, dtype=np.uint8),
                          np.frombuffer(_ASCII_TABLE[:128] + bytes(range(128, 256)),
                                        dtype=np.uint8)])
# A non-ASCII character that is no part of a Unicode token: not ``\w`` (and not ASCII, so not
# ``_`` either, which TOKEN_RE also excludes).
NON_ASCII_SEPARATOR_RE = re.compile(r"[^\w\x00-\x7f]")
# Shingles per permutation block; 8192 (16 MiB of uint64 at 256 permutations) measured fastest
# on the 2-core benchmark machine, ahead of both smaller (more calls) and larger blocks.
CHUNK_SHINGLES = 8192
_MAX64 = 0xFFFFFFFFFFFFFFFF


def tokenize(text: str, tokenizer: str = "unicode") -> list[str]:
    """Lowercased letter/digit runs of ``text``: Unicode ones, or ``[a-z0-9]`` only when
    ``tokenizer`` is ``"ascii"``."""
    if tokenizer == "ascii":
        return ASCII_STR_TOKEN_RE.findall(text.lower())
    return TOKEN_RE.findall(text.lower())


def token_bytes(text: str, tokenizer: str = "unicode") -> list[bytes]:
    """UTF-8 tokens of ``text``, equal to encoding :func:`tokenize`'s tokens.

    Most web text is ASCII, where ``[^\\W_]`` after lowercasing is exactly ``[a-z0-9]``: one
    ``bytes.translate`` maps A-Z to a-z and every other byte to a space, and ``split`` cuts the
    tokens, three times faster than the regex and with no per-token encode.
    """
    if tokenizer == "ascii":
        # Bytes >= 0x80 become spaces, so this skips every non-ASCII character.
        return text.lower().encode("utf-8", errors="surrogatepass").translate(
            _ASCII_TABLE).split()
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_TABLE).split()
    return [token.encode("utf-8") for token in TOKEN_RE.findall(text.lower())]


def normalised_text(tokens: list[str]) -> str:
    return " ".join(tokens)


def token_hashes(tokens: list[str] | list[bytes], seed: int) -> np.ndarray:
    """Seeded xxh3-64 of each token (str tokens are UTF-8 encoded), as uint64."""
    encoded = [t.encode("utf-8") if isinstance(t, str) else t for t in tokens]
    return np.fromiter(map(xxhash.xxh3_64_intdigest, encoded, itertools.repeat(seed)),
                       dtype=np.uint64, count=len(encoded))


def _fold_seed(seed: int) -> np.uint64:
    return np.uint64(xxhash.xxh3_64_intdigest(b"ndcl-shingle", seed))


def shingle_hashes(hashes: np.ndarray, ngram: int, seed: int) -> np.ndarray:
    """Hashes of the word n-grams of one document, given its token hashes (uint64).

    ``0 < len < ngram`` gives one shingle of all tokens; no token gives an empty array.
    """
    count = len(hashes)
    if count == 0:
        return np.zeros(0, dtype=np.uint64)
    width = min(ngram, count)
    windows = count - width + 1
    acc = np.full(windows, _fold_seed(seed), dtype=np.uint64)
    for j in range(width):
        acc = splitmix64(acc ^ hashes[j : j + windows])
    return acc


def batch_shingle_hashes(
    token_hash_list: list[np.ndarray], ngram: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes of many documents at once: ``(flat_hashes, offsets)``.

    Equal to concatenating :func:`shingle_hashes` per document, but the n-gram folding runs once
    over the concatenated token hashes; windows that cross a document boundary are dropped.
    """
    lengths = np.array([len(h) for h in token_hash_list], dtype=np.int64)
    if len(lengths) == 0 or lengths.sum() == 0:
        return np.zeros(0, dtype=np.uint64), np.zeros(len(lengths) + 1, dtype=np.int64)
    flat = np.concatenate(token_hash_list)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    total = len(flat)
    windows = total - ngram + 1
    long_docs = lengths >= ngram
    if windows > 0:
        acc = np.full(windows, _fold_seed(seed), dtype=np.uint64)
        for j in range(ngram):
            acc = splitmix64(acc ^ flat[j : j + windows])
    else:
        acc = np.zeros(0, dtype=np.uint64)
    parts: list[np.ndarray] = []
    counts = np.zeros(len(lengths), dtype=np.int64)
    for i, (start, length) in enumerate(zip(starts.tolist(), lengths.tolist())):
        if length == 0:
            continue
        if long_docs[i]:
            parts.append(acc[start : start + length - ngram + 1])
            counts[i] = length - ngram + 1
        else:
            parts.append(shingle_hashes(flat[start : start + length], ngram, seed))
            counts[i] = 1
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return np.concatenate(parts), offsets


def document_shingles(text: str, ngram: int, seed: int, tokenizer: str = "unicode"
                      ) -> tuple[int, np.ndarray]:
    """``(normalised length, shingle hashes)`` of one document, as :func:`compute_features`
    computes them for a batch."""
    tokens = token_bytes(text, tokenizer)
    return len(b" ".join(tokens)), shingle_hashes(token_hashes(tokens, seed), ngram, seed)


def permutation_params(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``(a, b)`` coefficients of the permutations, from xxhash so that they never depend
    on a random-number generator's version; ``a`` is odd."""
    digest = xxhash.xxh3_64_intdigest
    a = np.array([digest(b"perm-a-%d" % i, seed) | 1 for i in range(num_perm)], dtype=np.uint64)
    b = np.array([digest(b"perm-b-%d" % i, seed) for i in range(num_perm)], dtype=np.uint64)
    return a, b


def minhash_signatures(
    flat: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray
) -> np.ndarray:
    """MinHash signatures ``uint32[docs, num_perm]`` from flat shingle hashes and offsets.

    Every document must have at least one shingle. Blocks of whole documents, about
    ``CHUNK_SHINGLES`` shingles wide, are computed in one reused buffer (allocating a fresh
    block per chunk costs page faults that showed up as a third of the time).
    """
    docs = len(offsets) - 1
    num_perm = len(a)
    out = np.empty((num_perm, docs), dtype=np.uint64)
    a_col = a[:, None]
    b_col = b[:, None]
    buffer = np.empty(num_perm * min(CHUNK_SHINGLES, len(flat)), dtype=np.uint64)
    first = 0
    while first < docs:
        # Take whole documents until the chunk is full (at least one document).
        last = int(np.searchsorted(offsets, offsets[first] + CHUNK_SHINGLES, side="right")) - 1
        last = min(max(last, first + 1), docs)
        lo, hi = int(offsets[first]), int(offsets[last])
        if num_perm * (hi - lo) <= len(buffer):
            block = buffer[: num_perm * (hi - lo)].reshape(num_perm, hi - lo)
            np.multiply(a_col, flat[None, lo:hi], out=block)
        else:
            block = a_col * flat[None, lo:hi]  # one document longer than a chunk
        np.add(block, b_col, out=block)
        out[:, first:last] = np.minimum.reduceat(block, offsets[first:last] - lo, axis=1)
        first = last
    return (out.T >> np.uint64(32)).astype(np.uint32)


def exact_hash(norm_text: bytes, seed: int) -> tuple[int, int]:
    """xxh3-128 of the UTF-8 normalised text as two 64-bit halves."""
    digest = xxhash.xxh3_128_intdigest(norm_text, seed)
    return digest >> 64, digest & _MAX64


@functools.lru_cache(maxsize=1 << 16)
def is_separator(char: str) -> bool:
    """Whether ``char`` never takes part in a Unicode token: its lowercase (one or more
    characters) holds no letter or digit. Python lowercases per character, except ``Σ``,
    which is a letter anyway."""
    return TOKEN_RE.search(char.lower()) is None


def only_ascii_tokens(text: str) -> bool:
    """Whether every non-ASCII character of ``text`` is a separator, so that its Unicode
    tokens are its ASCII letter/digit runs: true of most non-ASCII web text (curly quotes,
    dashes, emoji, no-break spaces), which then skips the regex."""
    return all(map(is_separator, set(NON_ASCII_RE.findall(text))))


def kernel_input(records: list[dict], tokenizer: str = "unicode"
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(text, offsets, modes)``: the batch's texts as the compiled kernel reads them.

    Document ``d`` is ``text[offsets[d]:offsets[d + 1]]`` (uint8), read through table
    ``modes[d]``. ASCII text goes as it is, through the ASCII table, as :func:`token_bytes`
    translates it; so does lowercased UTF-8 with the ``ascii`` tokenizer (Python lowercases:
    ``"K"``, the Kelvin sign, becomes an ASCII ``k``), and UTF-8 whose non-ASCII characters
    are all separators (:func:`only_ascii_tokens`; the table makes every byte >= 0x80 one).
    Other text with the Unicode tokenizer is lowercased here and its non-ASCII separators
    made spaces: its tokens are then its runs of ASCII letters and digits and bytes >= 0x80,
    which table 1 keeps. TOKEN_RE matches per character in the lowercased text, so these are
    its tokens, found by one substitution in C instead of a list of token strings (2.5x
    faster on such texts, measured on a blog shard).
    """
    pieces: list[bytes] = []
    modes = bytearray([_KERNEL_ASCII]) * len(records)
    for row, record in enumerate(records):
        text = record["text"]
        if text.isascii():
            pieces.append(text.encode("ascii"))
        elif tokenizer == "ascii":
            pieces.append(text.lower().encode("utf-8", errors="surrogatepass"))
        elif only_ascii_tokens(text):
            pieces.append(text.encode("utf-8", errors="surrogatepass"))
        else:
            # Lone surrogates are separators, made spaces: the text encodes strictly.
            pieces.append(NON_ASCII_SEPARATOR_RE.sub(" ", text.lower()).encode("utf-8"))
            modes[row] = _KERNEL_WORDS
    offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces)),
              out=offsets[1:])
    return (np.frombuffer(b"".join(pieces), dtype=np.uint8), offsets,
            np.frombuffer(bytes(modes), dtype=np.uint8))


@functools.cache
def compiled_kernel() -> ModuleType | None:
    """``transforms.feature_kernel``, or None when its C extension is not built (said once:
    a source tree used without ``pip install``, or a machine without a C compiler)."""
    try:
        from transforms import feature_kernel
    except ImportError as error:
        LOG.warning("the compiled feature kernel is not built (%s): features use the numpy "
                    "reference path; `pip install .` (or `make install`) builds it", error)
        return None
    return feature_kernel


def use_compiled(kernel: str) -> bool:
    """Whether ``kernel`` (one of ``KERNELS``) means the compiled path here."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown feature kernel {kernel!r}; expected one of {KERNELS}")
    if kernel == "numpy":
        return False
    if compiled_kernel() is None:
        if kernel == "compiled":
            raise RuntimeError("the compiled feature kernel is not built (pip install . "
                               "builds transforms/_feature_kernel.c)")
        return False
    return True


# (rows with a token, their normalised lengths, exact hashes uint64[m, 2], signatures)
RawFeatures = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def reference_features(records: list[dict], ngram: int, seed: int, a: np.ndarray,
                       b: np.ndarray, tokenizer: str = "unicode") -> RawFeatures:
    """:data:`RawFeatures` of ``records`` by the numpy reference path."""
    rows: list[int] = []
    hash_list: list[np.ndarray] = []
    norm_lengths: list[int] = []
    exact: list[tuple[int, int]] = []
    digest = xxhash.xxh3_64_intdigest
    seeds = itertools.repeat(seed)
    for row, record in enumerate(records):
        tokens = token_bytes(record["text"], tokenizer)
        if not tokens:
            continue
        norm = b" ".join(tokens)
        rows.append(row)
        norm_lengths.append(len(norm))
        exact.append(exact_hash(norm, seed))
        hash_list.append(np.fromiter(map(digest, tokens, seeds), dtype=np.uint64,
                                     count=len(tokens)))
    flat, offsets = batch_shingle_hashes(hash_list, ngram, seed)
    if rows:
        signatures = minhash_signatures(flat, offsets, a, b)
    else:
        signatures = np.zeros((0, len(a)), dtype=np.uint32)
    return (np.array(rows, dtype=np.int64), np.array(norm_lengths, dtype=np.int64),
            np.array(exact, dtype=np.uint64).reshape(-1, 2), signatures)


# The compiled kernel releases the GIL (nogil), so a batch is cut into this many parts of
# about equal text, hashed on as many threads: the cores this process may use, at most 4
# (beyond, parts get small and a runner's other worker processes want the cores too).
KERNEL_MAX_THREADS = 4
# A part under this many bytes of text is not worth a thread's hand-over.
KERNEL_MIN_PART_BYTES = 256 << 10


@functools.cache
def kernel_threads() -> int:
    """Threads for :func:`kernel_features`: the CPUs this process may run on, at most
    :data:`KERNEL_MAX_THREADS`."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, KERNEL_MAX_THREADS))


@functools.cache
def _kernel_pool(threads: int) -> ThreadPoolExecutor:
    """One pool per process (threads are daemon-like: the interpreter joins them at exit)."""
    return ThreadPoolExecutor(threads, thread_name_prefix="ndcl-features")


def kernel_parts(offsets: np.ndarray, parts: int, min_bytes: int = KERNEL_MIN_PART_BYTES
                 ) -> list[tuple[int, int]]:
    """``[(first doc, end doc), ...]``: up to ``parts`` consecutive runs of the documents
    ``offsets`` delimits, of about equal text (cut at the document nearest each share), none
    empty and none under ``min_bytes`` unless there is a single one."""
    docs, total = len(offsets) - 1, int(offsets[-1] - offsets[0])
    parts = max(1, min(parts, docs, total // max(min_bytes, 1)))
    cuts = np.searchsorted(offsets, offsets[0] + total * np.arange(1, parts) / parts)
    bounds = [0, *sorted({int(c) for c in cuts if 0 < c < docs}), docs]
    return list(itertools.pairwise(bounds))


def _start_kernel(kernel: ModuleType, text: np.ndarray, offsets: np.ndarray, modes: np.ndarray,
                  ngram: int, seed: int, a: np.ndarray, b: np.ndarray, threads: int,
                  helper_cpu: list[float] | None = None, background: bool = False
                  ) -> Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """``kernel.batch_features`` of the whole batch, its parts hashed on ``threads`` threads
    and joined back: documents are independent, so the result is the one-call result. Returns
    the function that waits for the parts and joins them. The CPU seconds of the pool's
    threads are appended to ``helper_cpu``. Without ``background`` a batch of one part is
    hashed on the calling thread at once; with it every part goes to the pool, so that the
    caller can go on (reading the next batch) while they are hashed."""
    constants = (KERNEL_TABLES, ngram, np.uint64(seed), _fold_seed(seed), _custom_secret(seed),
                 a, b)
    parts = kernel_parts(offsets, threads, KERNEL_MIN_PART_BYTES)
    if len(parts) == 1 and not background:
        result = kernel.batch_features(text, offsets, modes, *constants)
        return lambda: result

    def part(bounds: tuple[int, int]) -> tuple[np.ndarray, ...]:
        began = time.thread_time()
        first, end = bounds
        base = offsets[first]
        result = kernel.batch_features(text[base:offsets[end]], offsets[first:end + 1] - base,
                                       modes[first:end], *constants)
        if helper_cpu is not None:
            helper_cpu.append(time.thread_time() - began)
        return result

    pool = _kernel_pool(threads)
    futures = [pool.submit(part, bounds) for bounds in parts]

    def join() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        results = [future.result() for future in futures]
        if len(results) == 1:
            return results[0]
        norm = np.concatenate([r[0] for r in results])
        shifts = np.cumsum([0] + [len(r[0]) for r in results[:-1]])
        norm_offsets = np.concatenate([np.zeros(1, dtype=np.int64)]
                                      + [r[1][1:] + shift for r, shift in zip(results, shifts)])
        return (norm, norm_offsets, np.concatenate([r[2] for r in results]),
                np.concatenate([r[3] for r in results]))

    return join


def kernel_features(records: list[dict], ngram: int, seed: int, a: np.ndarray,
                    b: np.ndarray, tokenizer: str = "unicode", threads: int | None = None,
                    helper_cpu: list[float] | None = None) -> RawFeatures:
    """:data:`RawFeatures` of ``records`` by the compiled kernel (it must be built), on
    ``threads`` threads (default :func:`kernel_threads`; their CPU seconds go to
    ``helper_cpu``)."""
    return start_kernel_features(records, ngram, seed, a, b, tokenizer, threads, helper_cpu)()


def start_kernel_features(records: list[dict], ngram: int, seed: int, a: np.ndarray,
                          b: np.ndarray, tokenizer: str = "unicode", threads: int | None = None,
                          helper_cpu: list[float] | None = None, background: bool = False
                          ) -> Callable[[], RawFeatures]:
    """:func:`kernel_features` in two steps: the kernel's input is made and its parts are
    started now (``background``: see :func:`_start_kernel`); the function returned waits for
    them and gives the :data:`RawFeatures`."""
    text, offsets, modes = kernel_input(records, tokenizer)
    join = _start_kernel(compiled_kernel(), text, offsets, modes, ngram, seed, a, b,
                         kernel_threads() if threads is None else threads, helper_cpu,
                         background)

    def finish() -> RawFeatures:
        norm, norm_offsets, token_counts, signatures = join()
        rows = np.flatnonzero(token_counts)
        starts, ends = norm_offsets[rows], norm_offsets[rows + 1]
        # One xxh3-128 call per document on a view of the kernel's normalised text: ~12 ms
        # per 50k blog posts (measured), too little to compile, and xxhash stays the one
        # reference. The digests are big-endian (high half first), so one buffer read splits
        # them all.
        view = memoryview(norm)
        digest = xxhash.xxh3_128_digest
        digests = b"".join([digest(view[start:end], seed)
                            for start, end in zip(starts.tolist(), ends.tolist())])
        exact = np.frombuffer(digests, dtype=">u8").reshape(-1, 2).astype(np.uint64)
        return rows, ends - starts, exact, signatures[rows]

    return finish


def kernel_band_hashes(signatures: np.ndarray, bands: int, rows: int, seed: int
                       ) -> np.ndarray:
    """``transforms.lsh.band_hashes`` by the compiled kernel (it must be built)."""
    band_seeds = np.array([(seed * 1_000_003 + band) & _MAX64 for band in range(bands)],
                          dtype=np.uint64)
    return compiled_kernel().band_hashes(np.ascontiguousarray(signatures), rows,
                                         splitmix64(band_seeds))


@functools.cache
def _custom_secret(seed: int) -> np.ndarray:
    return compiled_kernel().custom_secret(seed)


def compute_features(
    batch: DocBatch, ngram: int, seed: int, a: np.ndarray, b: np.ndarray,
    tokenizer: str = "unicode", banding: tuple[int, int] | None = None, kernel: str = "auto",
    helper_cpu: list[float] | None = None,
) -> tuple[FeatureBatch, int]:
    """Features of the tokenised documents of ``batch`` and the number without any token.

    With ``banding = (bands, rows)`` the batch carries its LSH band hashes instead of the
    signatures (the compact form that leaves the stage); without, the signatures. ``kernel``
    picks the implementation (``KERNELS``; ``auto``: compiled when it is built); the
    compiled kernel's helper threads add their CPU seconds to ``helper_cpu``."""
    return start_compute_features(batch, ngram, seed, a, b, tokenizer, banding, kernel,
                                  helper_cpu)()


def _ready(value: RawFeatures) -> Callable[[], RawFeatures]:
    """A finished result in the shape of one still being hashed."""
    return lambda: value


def start_compute_features(
    batch: DocBatch, ngram: int, seed: int, a: np.ndarray, b: np.ndarray,
    tokenizer: str = "unicode", banding: tuple[int, int] | None = None, kernel: str = "auto",
    helper_cpu: list[float] | None = None, background: bool = False,
) -> Callable[[], tuple[FeatureBatch, int]]:
    """:func:`compute_features` in two steps: the compiled kernel starts hashing now (on its
    threads, with ``background`` even a one-part batch) and the function returned waits for
    it and builds the result; the numpy path computes everything now."""
    compiled = use_compiled(kernel)
    if compiled:
        raw = start_kernel_features(batch.records, ngram, seed, a, b, tokenizer,
                                    helper_cpu=helper_cpu, background=background)
    else:
        raw = _ready(reference_features(batch.records, ngram, seed, a, b, tokenizer))
    banded = kernel_band_hashes if compiled else band_hashes

    def finish() -> tuple[FeatureBatch, int]:
        rows, norm_lengths, exact, signatures = raw()
        row_list = rows.tolist()
        result = FeatureBatch(
            batch_key=batch.batch_key,
            uids=batch.uids[rows] if row_list else np.zeros(0, dtype=np.int64),
            ids=[batch.ids[r] for r in row_list],
            norm_lengths=norm_lengths,
            exact_hashes=exact,
            signatures=None if banding else signatures,
            derived=np.array([is_generated(batch.records[r]) for r in row_list], dtype=bool),
            band_hashes=banded(signatures, *banding, seed) if banding else None,
        )
        return result, len(batch.records) - len(row_list)

    return finish


@dataclass(frozen=True)
class FeatureParams:
    """What :class:`ComputeFeatures` computes: word ``ngram`` shingles, ``num_perm`` MinHash
    permutations from ``seed``; with ``banding = (bands, rows)`` the band hashes leave the
    stage instead of the signatures; ``kernel`` one of :data:`KERNELS`."""

    ngram: int
    num_perm: int
    seed: int
    tokenizer: str = "unicode"
    banding: tuple[int, int] | None = None
    kernel: str = "auto"


# Batches the kernel's threads may be hashing while the DoFn's thread reads and parses the
# next one (its input is made on the DoFn's thread, the hashing is not): two cores busy where
# one waited for the other. One is enough to overlap; each costs a batch of records in memory.
MAX_PENDING_BATCHES = 1


class ComputeFeaturesFn(beam.DoFn):
    """``(batch_key, DocBatch)`` → ``(batch_key, FeatureBatch)``; counts untokenised docs.

    The compiled kernel hashes a batch on its threads while ``process`` returns for the next
    one (:data:`MAX_PENDING_BATCHES`); a batch's outputs follow when the next batch arrives or
    at the bundle's end, in the batches' order. The outputs are those of one call per batch.
    """

    STATS_TAG = "stats"

    def __init__(self, params: FeatureParams) -> None:
        self.tokenizer = params.tokenizer
        self.ngram = params.ngram
        self.num_perm = params.num_perm
        self.seed = params.seed
        self.banding = params.banding
        self.kernel = params.kernel
        self.timer = stage_counter("compute_features")
        # CPU seconds, this thread's and the kernel's helper threads': the stage's wall time
        # no longer says its cores' work once the kernel runs on several threads.
        self.cpu_timer = stage_cpu_counter("compute_features")
        # (batch key, the function that finishes the batch, its helper threads' CPU seconds)
        self.pending: deque[tuple[int, Callable[[], tuple[FeatureBatch, int]], list[float]]] = (
            deque())

    def setup(self) -> None:
        self.a, self.b = permutation_params(self.num_perm, self.seed)
        self.kernel = "compiled" if use_compiled(self.kernel) else "numpy"

    def start_bundle(self) -> None:
        self.pending.clear()

    @timed_process
    def process(self, element: tuple[int, DocBatch]) -> Iterator[object]:
        key, batch = element
        began, helper_cpu = time.thread_time(), []
        finish = start_compute_features(
            batch, self.ngram, self.seed, self.a, self.b, self.tokenizer, self.banding,
            self.kernel, helper_cpu, background=True)
        self.cpu_timer.inc(round((time.thread_time() - began) * 1000))
        self.pending.append((key, finish, helper_cpu))
        while len(self.pending) > MAX_PENDING_BATCHES:
            yield from self._finish_oldest()

    def finish_bundle(self) -> Iterator[object]:
        # Outputs of finish_bundle carry their window: the global one, as every element's.
        for output in timed(self._finish_all(), self.timer):
            if isinstance(output, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(output.tag,
                                               GlobalWindows.windowed_value(output.value))
            else:
                yield GlobalWindows.windowed_value(output)

    def _finish_all(self) -> Iterator[object]:
        while self.pending:
            yield from self._finish_oldest()

    def _finish_oldest(self) -> Iterator[object]:
        key, finish, helper_cpu = self.pending.popleft()
        began = time.thread_time()
        features, untokenized = finish()
        self.cpu_timer.inc(round((time.thread_time() - began + sum(helper_cpu)) * 1000))
        yield key, features
        yield beam.pvalue.TaggedOutput(
            self.STATS_TAG, {"read_batches": 1, "kept_untokenized": untokenized}
        )


class Features(NamedTuple):
    """``features``: ``(batch_key, FeatureBatch)``, compact (band hashes with ``banding``,
    else signatures; exact keys; no text); ``stats``: batches and untokenised documents."""

    features: beam.PCollection
    stats: beam.PCollection


class ComputeFeatures(beam.PTransform):
    """Document batches → :class:`Features`."""

    def __init__(self, params: FeatureParams) -> None:
        super().__init__()
        self.fn = ComputeFeaturesFn(params)

    def expand(self, doc_batches: beam.PCollection) -> Features:
        hashed = doc_batches | "HashShingles" >> beam.ParDo(self.fn).with_output_types(
            tuple[int, FeatureBatch]).with_outputs(
            ComputeFeaturesFn.STATS_TAG, main="features"
        )
        return Features(hashed.features, hashed[ComputeFeaturesFn.STATS_TAG])
