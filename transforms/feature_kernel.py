"""The compiled feature kernel: tokens, token hashes, shingle hashes and MinHash signatures of a
batch in one numba pass, bit for bit what ``transforms.minhash``'s numpy reference computes.

Why compiled: the numpy reference pays a Python call per document (tokenising, ``np.fromiter``
over xxhash calls) and materialises the ``(num_perm, shingles)`` permutation matrix in memory;
here each document is tokenised, hashed and folded into its 256 minima in cache, without the
interpreter. The functions are ``nogil``, so threads may run batches side by side.

What makes the results identical, not just equivalent:
- tokens: the caller (``transforms.minhash.kernel_input``) hands over bytes that one
  256-entry table per document turns into tokens. Text whose tokens are all ASCII goes
  through ``transforms.minhash``'s ``_ASCII_TABLE`` (A-Z lowercased, a-z and 0-9 kept, every
  other byte, >= 0x80 included, a separator), as ``token_bytes`` translates it. Other text is
  tokenised by the reference regex in Python and arrives as its tokens joined by single
  spaces, split here by the identity table: Unicode lowercasing and ``\\w`` stay in Python.
- token hashes: :func:`xxh3_64` below is XXH3-64 with a seed (xxHash 0.8 specification, all
  input lengths), the function ``xxhash.xxh3_64_intdigest`` computes; the tests compare them
  on every length from 0 to past the 240-byte long-input boundary.
- shingles and signatures: the SplitMix64 fold and ``(a * x + b) mod 2**64`` minima of the
  reference, in uint64 wrapping arithmetic, top 32 bits kept.

All integer maths is uint64 with uint64 constants: numba types ``uint64 op int64`` as float64.
"""

from __future__ import annotations

import numba
import numpy as np

U64 = np.uint64
_M32 = U64(0xFFFFFFFF)
_P32_1 = U64(0x9E3779B1)
_P32_2 = U64(0x85EBCA77)
_P32_3 = U64(0xC2B2AE3D)
_P64_1 = U64(0x9E3779B185EBCA87)
_P64_2 = U64(0xC2B2AE3D27D4EB4F)
_P64_3 = U64(0x165667B19E3779F9)
_P64_4 = U64(0x85EBCA77C2B2AE63)
_P64_5 = U64(0x27D4EB2F165667C5)
_PMX1 = U64(0x165667919E3779F9)
_PMX2 = U64(0x9FB21C651E98DF25)
_SM1 = U64(0xBF58476D1CE4E5B9)
_SM2 = U64(0x94D049BB133111EB)
_MAX64 = U64(0xFFFFFFFFFFFFFFFF)
_SEPARATOR = 32  # the space byte: what the tables map every non-token byte to

# XXH3's default 192-byte secret (xxhash.h, XXH3_kSecret).
K_SECRET = np.frombuffer(bytes.fromhex(
    "b8fe6c3923a44bbe7c01812cf721ad1cded46de9839097db7240a4a4b7b3671f"
    "cb79e64eccc0e578825ad07dccff7221b8084674f743248ee03590e6813a264c"
    "3c2852bb91c300cb88d0658b1b532ea371644897a20df94e3819ef46a9deacd8"
    "a8fa763fe39c343ff9dcbbc7c70b4f1d8a51e04bcdb45931c89f7ec9d9787364"
    "eac5ac8334d3ebc3c581a0fffa1363eb170ddd51b7f0da49d316552629d4689e"
    "2b16be587d47a1fc8ff8b8d17ad031ce45cb3a8f95160428afd7fbcabb4b407e"), dtype=np.uint8)
_SECRET_SIZE = 192
_STRIPE = 64
_STRIPES_PER_BLOCK = (_SECRET_SIZE - _STRIPE) // 8
_BLOCK = _STRIPE * _STRIPES_PER_BLOCK


def custom_secret(seed: int) -> np.ndarray:
    """XXH3's seeded secret (``XXH3_initCustomSecret``), used by inputs over 240 bytes."""
    words = K_SECRET.view("<u8").copy()
    words[0::2] += U64(seed)  # wrapping uint64 arithmetic, as in C
    words[1::2] -= U64(seed)
    return words.view(np.uint8)


# ---------------------------------------------------------------- XXH3-64 building blocks

@numba.njit
def _r64(p: np.ndarray, i: int) -> np.uint64:
    """Little-endian uint64 at byte ``i`` of ``p``."""
    return (U64(p[i]) | (U64(p[i + 1]) << U64(8)) | (U64(p[i + 2]) << U64(16))
            | (U64(p[i + 3]) << U64(24)) | (U64(p[i + 4]) << U64(32))
            | (U64(p[i + 5]) << U64(40)) | (U64(p[i + 6]) << U64(48))
            | (U64(p[i + 7]) << U64(56)))


@numba.njit
def _r32(p: np.ndarray, i: int) -> np.uint64:
    return (U64(p[i]) | (U64(p[i + 1]) << U64(8)) | (U64(p[i + 2]) << U64(16))
            | (U64(p[i + 3]) << U64(24)))


@numba.njit
def _rotl(x: np.uint64, r: int) -> np.uint64:
    return (x << U64(r)) | (x >> U64(64 - r))


@numba.njit
def _swap32(x: np.uint64) -> np.uint64:
    return (((x << U64(24)) & U64(0xFF000000)) | ((x << U64(8)) & U64(0x00FF0000))
            | ((x >> U64(8)) & U64(0x0000FF00)) | ((x >> U64(24)) & U64(0x000000FF)))


@numba.njit
def _swap64(x: np.uint64) -> np.uint64:
    return (_swap32(x & _M32) << U64(32)) | _swap32(x >> U64(32))


@numba.njit
def _mul128_fold64(a: np.uint64, b: np.uint64) -> np.uint64:
    """Low xor high half of the 128-bit product (XXH's portable 32x32 schoolbook)."""
    lo_lo = (a & _M32) * (b & _M32)
    hi_lo = (a >> U64(32)) * (b & _M32)
    lo_hi = (a & _M32) * (b >> U64(32))
    hi_hi = (a >> U64(32)) * (b >> U64(32))
    cross = (lo_lo >> U64(32)) + (hi_lo & _M32) + lo_hi
    upper = (hi_lo >> U64(32)) + (cross >> U64(32)) + hi_hi
    lower = (cross << U64(32)) | (lo_lo & _M32)
    return lower ^ upper


@numba.njit
def _xxh64_avalanche(h: np.uint64) -> np.uint64:
    h ^= h >> U64(33)
    h *= _P64_2
    h ^= h >> U64(29)
    h *= _P64_3
    return h ^ (h >> U64(32))


@numba.njit
def _xxh3_avalanche(h: np.uint64) -> np.uint64:
    h ^= h >> U64(37)
    h *= _PMX1
    return h ^ (h >> U64(32))


@numba.njit
def _mix16(p: np.ndarray, i: int, s: np.ndarray, j: int, seed: np.uint64) -> np.uint64:
    return _mul128_fold64(_r64(p, i) ^ (_r64(s, j) + seed),
                          _r64(p, i + 8) ^ (_r64(s, j + 8) - seed))


@numba.njit
def _accumulate(acc: np.ndarray, p: np.ndarray, i: int, secret: np.ndarray, j: int) -> None:
    for k in range(8):
        value = _r64(p, i + 8 * k)
        key = value ^ _r64(secret, j + 8 * k)
        acc[k ^ 1] += value
        acc[k] += (key & _M32) * (key >> U64(32))


@numba.njit
def _xxh3_long(p: np.ndarray, start: int, length: int, secret: np.ndarray) -> np.uint64:
    """Inputs over 240 bytes: stripes of 64 bytes into 8 accumulators, scrambled per block."""
    acc = np.array([_P32_3, _P64_1, _P64_2, _P64_3, _P64_4, _P32_2, _P64_5, _P32_1],
                   dtype=np.uint64)
    blocks = (length - 1) // _BLOCK
    for n in range(blocks + 1):
        stripes = _STRIPES_PER_BLOCK if n < blocks else (length - 1 - _BLOCK * blocks) // _STRIPE
        for s in range(stripes):
            _accumulate(acc, p, start + n * _BLOCK + s * _STRIPE, secret, s * 8)
        if n < blocks:  # scramble the accumulators with the secret's last 64 bytes
            for i in range(8):
                a = acc[i] ^ (acc[i] >> U64(47)) ^ _r64(secret, _SECRET_SIZE - _STRIPE + 8 * i)
                acc[i] = a * _P32_1
    # The last 64 bytes, at XXH_SECRET_LASTACC_START (7); merged from MERGEACCS_START (11).
    _accumulate(acc, p, start + length - _STRIPE, secret, _SECRET_SIZE - _STRIPE - 7)
    result = U64(length) * _P64_1
    for i in range(4):
        result += _mul128_fold64(acc[2 * i] ^ _r64(secret, 11 + 16 * i),
                                 acc[2 * i + 1] ^ _r64(secret, 11 + 16 * i + 8))
    return _xxh3_avalanche(result)


@numba.njit
def xxh3_64(p: np.ndarray, start: int, end: int, seed: np.uint64, secret: np.ndarray
            ) -> np.uint64:
    """XXH3-64 of ``p[start:end]`` with ``seed``; ``secret`` is :func:`custom_secret` of it."""
    k = K_SECRET
    n = end - start
    # The branches follow xxhash.h's XXH3_len_*_64b and XXH3_hashLong_64b_withSeed.
    if n <= 16:
        if n > 8:
            lo = _r64(p, start) ^ ((_r64(k, 24) ^ _r64(k, 32)) + seed)
            hi = _r64(p, end - 8) ^ ((_r64(k, 40) ^ _r64(k, 48)) - seed)
            acc = U64(n) + _swap64(lo) + hi + _mul128_fold64(lo, hi)
            return _xxh3_avalanche(acc)
        if n >= 4:
            seed ^= _swap32(seed & _M32) << U64(32)
            keyed = (_r32(p, end - 4) + (_r32(p, start) << U64(32))) ^ (
                (_r64(k, 8) ^ _r64(k, 16)) - seed)
            keyed ^= _rotl(keyed, 49) ^ _rotl(keyed, 24)
            keyed *= _PMX2
            keyed ^= (keyed >> U64(35)) + U64(n)
            keyed *= _PMX2
            return keyed ^ (keyed >> U64(28))
        if n > 0:
            combined = ((U64(p[start]) << U64(16)) | (U64(p[start + (n >> 1)]) << U64(24))
                        | U64(p[end - 1]) | (U64(n) << U64(8)))
            return _xxh64_avalanche(combined ^ ((_r32(k, 0) ^ _r32(k, 4)) + seed))
        return _xxh64_avalanche(seed ^ _r64(k, 56) ^ _r64(k, 64))
    if n <= 128:
        acc = U64(n) * _P64_1
        if n > 32:
            if n > 64:
                if n > 96:
                    acc += _mix16(p, start + 48, k, 96, seed)
                    acc += _mix16(p, end - 64, k, 112, seed)
                acc += _mix16(p, start + 32, k, 64, seed)
                acc += _mix16(p, end - 48, k, 80, seed)
            acc += _mix16(p, start + 16, k, 32, seed)
            acc += _mix16(p, end - 32, k, 48, seed)
        acc += _mix16(p, start, k, 0, seed)
        acc += _mix16(p, end - 16, k, 16, seed)
        return _xxh3_avalanche(acc)
    if n <= 240:
        acc = U64(n) * _P64_1
        for i in range(8):
            acc += _mix16(p, start + 16 * i, k, 16 * i, seed)
        acc = _xxh3_avalanche(acc)
        for i in range(8, n // 16):  # secret offset XXH3_MIDSIZE_STARTOFFSET = 3
            acc += _mix16(p, start + 16 * i, k, 16 * (i - 8) + 3, seed)
        # XXH3_SECRET_SIZE_MIN (136) - XXH3_MIDSIZE_LASTOFFSET (17)
        acc += _mix16(p, end - 16, k, 136 - 17, seed)
        return _xxh3_avalanche(acc)
    return _xxh3_long(p, start, n, secret)


# ---------------------------------------------------------------- shingles and MinHash

@numba.njit
def _splitmix64(x: np.uint64) -> np.uint64:
    x ^= x >> U64(30)
    x *= _SM1
    x ^= x >> U64(27)
    x *= _SM2
    return x ^ (x >> U64(31))


@numba.njit
def _fold_shingles(hashes: np.ndarray, count: int, ngram: int, fold_seed: np.uint64,
                   out: np.ndarray) -> int:
    """Shingle hashes of one document's ``count`` token hashes into ``out``; their number.

    Token by token over all windows at once (as the reference does), so the inner loop is a
    SIMD SplitMix64 over contiguous windows.
    """
    width = min(ngram, count)
    windows = count - width + 1
    for w in range(windows):
        out[w] = fold_seed
    for j in range(width):
        for w in range(windows):
            out[w] = _splitmix64(out[w] ^ hashes[w + j])
    return windows


@numba.njit
def _signature(shingles: np.ndarray, windows: int, a: np.ndarray, b: np.ndarray,
               mins: np.ndarray, out: np.ndarray) -> None:
    """``out[p] = min over shingles of (a[p] * x + b[p]) mod 2**64``, top 32 bits.

    Four shingles per pass over the permutations: the pass is bound by loading and storing
    ``mins``, not by the multiplies, so this is twice as fast as one shingle per pass (and
    faster than two or eight, measured); min is associative, so the values are unchanged.
    """
    num_perm = len(a)
    for p in range(num_perm):
        mins[p] = _MAX64
    s = 0
    while s + 4 <= windows:
        x0, x1, x2, x3 = shingles[s], shingles[s + 1], shingles[s + 2], shingles[s + 3]
        for p in range(num_perm):
            ap, bp = a[p], b[p]
            m01 = min(ap * x0 + bp, ap * x1 + bp)
            m23 = min(ap * x2 + bp, ap * x3 + bp)
            mins[p] = min(mins[p], min(m01, m23))
        s += 4
    while s < windows:
        x = shingles[s]
        for p in range(num_perm):
            mins[p] = min(mins[p], a[p] * x + b[p])
        s += 1
    for p in range(num_perm):
        out[p] = np.uint32(mins[p] >> U64(32))


@numba.njit
def _tokenize(text: np.ndarray, start: int, end: int, table: np.ndarray, norm: np.ndarray,
              pos: int, token_starts: np.ndarray) -> tuple[int, int]:
    """Writes ``text[start:end]``'s tokens (read through ``table``) joined by single spaces
    at ``norm[pos:]``; returns the new ``pos`` and the number of tokens, whose first bytes'
    positions in ``norm`` go to ``token_starts`` (a token ends one byte before the next
    starts, the last at the new ``pos``).

    Branch-free per byte (every byte is written, the position advances unless it repeats a
    separator): the branchy loop mispredicted at every token edge and ran at half the speed.
    """
    previous_separator = True  # collapses leading separators
    count = 0
    for i in range(start, end):
        c = table[text[i]]
        separator = c == _SEPARATOR
        norm[pos] = c
        token_starts[count] = pos
        count += (not separator) and previous_separator
        pos += not (separator and previous_separator)
        previous_separator = separator
    if count and previous_separator:
        pos -= 1  # the one trailing separator written
    return pos, count


@numba.njit(nogil=True, cache=True)
def batch_features(text: np.ndarray, offsets: np.ndarray, modes: np.ndarray,
                   tables: np.ndarray, ngram: int, seed: np.uint64, fold_seed: np.uint64,
                   secret: np.ndarray, a: np.ndarray, b: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(norm, norm_offsets, token_counts, signatures)`` of the documents ``text[offsets[d]:
    offsets[d + 1]]``, each read through ``tables[modes[d]]``.

    ``norm[norm_offsets[d]:norm_offsets[d + 1]]`` is document ``d``'s tokens joined by single
    spaces (its exact-hash input); ``signatures[d]`` (uint32) is meaningful only where
    ``token_counts[d] > 0``. Scratch space is per document (a document of n bytes has at
    most n // 2 + 1 tokens), so memory stays about the batch's text size.
    """
    docs = len(offsets) - 1
    num_perm = len(a)
    norm = np.empty(len(text), dtype=np.uint8)
    norm_offsets = np.zeros(docs + 1, dtype=np.int64)
    token_counts = np.zeros(docs, dtype=np.int64)
    signatures = np.zeros((docs, num_perm), dtype=np.uint32)
    capacity = 0
    token_starts = np.empty(0, dtype=np.int64)
    hashes = shingles = np.empty(0, dtype=np.uint64)
    mins = np.empty(num_perm, dtype=np.uint64)
    pos = 0
    for d in range(docs):
        start, end = offsets[d], offsets[d + 1]
        if (end - start) // 2 + 1 > capacity:
            capacity = max(2 * capacity, (end - start) // 2 + 1)
            token_starts = np.empty(capacity + 1, dtype=np.int64)
            hashes = np.empty(capacity, dtype=np.uint64)
            shingles = np.empty(capacity, dtype=np.uint64)
        pos, count = _tokenize(text, start, end, tables[modes[d]], norm, pos, token_starts)
        norm_offsets[d + 1] = pos
        token_counts[d] = count
        if count:
            token_starts[count] = pos + 1  # so that every token ends at the next start - 1
            for k in range(count):
                hashes[k] = xxh3_64(norm, token_starts[k], token_starts[k + 1] - 1, seed,
                                    secret)
            windows = _fold_shingles(hashes, count, ngram, fold_seed, shingles)
            _signature(shingles, windows, a, b, mins, signatures[d])
    return norm[:pos], norm_offsets, token_counts, signatures


@numba.njit(nogil=True, cache=True)
def band_hashes(signatures: np.ndarray, rows: int, band_seeds: np.ndarray) -> np.ndarray:
    """``uint64[docs, bands]`` as ``transforms.lsh.band_hashes`` computes them: band ``k``
    folds its ``rows`` signature values in order through SplitMix64 from ``band_seeds[k]``
    (that band's already mixed seed). Within a document the bands advance together, one
    row at a time: independent chains, where one band at a time waits on each multiply."""
    docs, bands = signatures.shape[0], len(band_seeds)
    out = np.empty((docs, bands), dtype=np.uint64)
    for d in range(docs):
        for band in range(bands):
            out[d, band] = band_seeds[band]
        for r in range(rows):
            for band in range(bands):
                out[d, band] = _splitmix64(out[d, band] ^ U64(signatures[d, band * rows + r]))
    return out
