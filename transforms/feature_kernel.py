"""The compiled feature kernel: tokens, token hashes, shingle hashes and MinHash signatures of a
batch in one pass per document, bit for bit what ``transforms.minhash``'s numpy reference
computes. The loops are C (``transforms/_feature_kernel.c``, built by ``pip install``); this
module allocates their outputs and keeps the Python signatures the callers and tests use.

Why compiled: the numpy reference pays a Python call per document (tokenising, ``np.fromiter``
over xxhash calls) and materialises the ``(num_perm, shingles)`` permutation matrix in memory;
here each document is tokenised, hashed and folded into its 256 minima in cache, without the
interpreter. The C functions release the GIL, so threads may run batches side by side.

Why C and not numba (which this kernel was until 2026-12): the extension imports in about a
millisecond, where loading numba's cached kernel cost 0.45-0.55 s of every run (import,
typing context, linking) and compiling it 7-12 s on every new machine or worker; and with
its AVX2 minimum it hashes a blog shard in about 0.70 s on one thread where numba took about
1.0 s (README, "The kernel in C, not numba").

What makes the results identical, not just equivalent:
- tokens: the caller (``transforms.minhash.kernel_input``) hands over bytes that one
  256-entry table per document turns into tokens. Text whose tokens are all ASCII goes
  through ``transforms.minhash``'s ``_ASCII_TABLE`` (A-Z lowercased, a-z and 0-9 kept, every
  other byte, >= 0x80 included, a separator), as ``token_bytes`` translates it. Other text is
  lowercased in Python, its non-ASCII non-``\\w`` characters made spaces, and arrives as
  UTF-8 read through a table that keeps bytes >= 0x80 as token bytes: Unicode lowercasing and
  ``\\w`` stay in Python.
- token hashes: :func:`xxh3_64` (C) is XXH3-64 with a seed (xxHash 0.8 specification, all
  input lengths), the function ``xxhash.xxh3_64_intdigest`` computes; the tests compare them
  on every length from 0 to past the 240-byte long-input boundary.
- shingles and signatures: the SplitMix64 fold and ``(a * x + b) mod 2**64`` minima of the
  reference, in uint64 wrapping arithmetic, top 32 bits kept.

All integer maths is uint64_t, wrapping, as in xxhash.h.
"""

from __future__ import annotations

import numpy as np

from transforms import _feature_kernel as _c  # ImportError: not built (see setup.py)

U64 = np.uint64

# XXH3's default 192-byte secret (xxhash.h, XXH3_kSecret), as the C module holds it.
K_SECRET = np.frombuffer(_c.K_SECRET, dtype=np.uint8)


def custom_secret(seed: int) -> np.ndarray:
    """XXH3's seeded secret (``XXH3_initCustomSecret``), used by inputs over 240 bytes."""
    words = K_SECRET.view("<u8").copy()
    words[0::2] += U64(seed)  # wrapping uint64 arithmetic, as in C
    words[1::2] -= U64(seed)
    return words.view(np.uint8)


def xxh3_64(p: np.ndarray, start: int, end: int, seed: np.uint64, secret: np.ndarray
            ) -> np.uint64:
    """XXH3-64 of ``p[start:end]`` with ``seed``; ``secret`` is :func:`custom_secret` of it."""
    return U64(_c.xxh3_64(np.ascontiguousarray(p, dtype=np.uint8), start, end, int(seed),
                          secret))


def batch_features(text: np.ndarray, offsets: np.ndarray, modes: np.ndarray,
                   tables: np.ndarray, ngram: int, seed: np.uint64, fold_seed: np.uint64,
                   secret: np.ndarray, a: np.ndarray, b: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(norm, norm_offsets, token_counts, signatures)`` of the documents ``text[offsets[d]:
    offsets[d + 1]]`` (``offsets[0] == 0``), each read through ``tables[modes[d]]``.

    ``norm[norm_offsets[d]:norm_offsets[d + 1]]`` is document ``d``'s tokens joined by single
    spaces (its exact-hash input); ``signatures[d]`` (uint32) is meaningful only where
    ``token_counts[d] > 0`` (zero elsewhere). The C function checks every bound it reads by
    and releases the GIL; its scratch space is about the longest document's size."""
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    docs = len(offsets) - 1
    norm = np.empty(len(text), dtype=np.uint8)
    norm_offsets = np.empty(docs + 1, dtype=np.int64)
    token_counts = np.empty(docs, dtype=np.int64)
    signatures = np.empty((docs, len(a)), dtype=np.uint32)
    used = _c.batch_features(np.ascontiguousarray(text, dtype=np.uint8), offsets,
                             np.ascontiguousarray(modes, dtype=np.uint8),
                             np.ascontiguousarray(tables, dtype=np.uint8), ngram, int(seed),
                             int(fold_seed), np.ascontiguousarray(secret, dtype=np.uint8),
                             np.ascontiguousarray(a, dtype=np.uint64),
                             np.ascontiguousarray(b, dtype=np.uint64), norm, norm_offsets,
                             token_counts, signatures)
    return norm[:used], norm_offsets, token_counts, signatures


def band_hashes(signatures: np.ndarray, rows: int, band_seeds: np.ndarray) -> np.ndarray:
    """``uint64[docs, bands]`` as ``transforms.lsh.band_hashes`` computes them: band ``k``
    folds its ``rows`` signature values in order through SplitMix64 from ``band_seeds[k]``
    (that band's already mixed seed)."""
    signatures = np.ascontiguousarray(signatures, dtype=np.uint32)
    band_seeds = np.ascontiguousarray(band_seeds, dtype=np.uint64)
    out = np.empty((signatures.shape[0], len(band_seeds)), dtype=np.uint64)
    _c.band_hashes(signatures, signatures.shape[1], rows, band_seeds, out)
    return out
