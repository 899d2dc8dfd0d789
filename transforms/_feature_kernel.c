/* The compiled feature kernel: tokens, XXH3-64 token hashes, shingle hashes and MinHash
 * signatures of a batch in one pass per document, then band hashes; bit for bit what
 * transforms.minhash's numpy reference computes. transforms/feature_kernel.py is its Python
 * face (it allocates the outputs and checks nothing twice); its docstring says what makes the
 * results identical.
 *
 * Why C and not a JIT: a run imports this in about a millisecond, where loading a cached JIT
 * kernel cost about half a second of every run, and compiling it 7-12 s on each new machine
 * or worker. The GIL is released around every loop, so threads hash batches side by side.
 *
 * All integer maths is uint64_t, wrapping, as in C's xxhash.h. On a CPU with AVX2 the
 * signature minima run in signature_avx2 (see there); NDCL_KERNEL_NO_AVX2 in the environment
 * at import selects the generic loop instead (the tests compare the two).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t u64;

/* The hot loops (the minimum over permutations, the shingle fold) vectorise several times
 * better with AVX2 (measured 1.7x on the whole kernel) than with the x86-64 baseline, SSE2.
 * target_clones compiles batch_loop twice and picks at load time by the CPU it runs on, so
 * the built module still runs on any x86-64; ALWAYS_INLINE puts the loops inside each clone. */
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__)) && defined(__linux__) \
    && defined(__GLIBC__) /* target_clones needs the C library's ifunc (musl has none) */
#define CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CPU_CLONES
#endif
#define ALWAYS_INLINE inline __attribute__((always_inline))

#define P32_1 0x9E3779B1ULL
#define P32_2 0x85EBCA77ULL
#define P32_3 0xC2B2AE3DULL
#define P64_1 0x9E3779B185EBCA87ULL
#define P64_2 0xC2B2AE3D27D4EB4FULL
#define P64_3 0x165667B19E3779F9ULL
#define P64_4 0x85EBCA77C2B2AE63ULL
#define P64_5 0x27D4EB2F165667C5ULL
#define PMX1 0x165667919E3779F9ULL
#define PMX2 0x9FB21C651E98DF25ULL
#define SM1 0xBF58476D1CE4E5B9ULL
#define SM2 0x94D049BB133111EBULL
#define SEPARATOR 32 /* the space byte: what the tables map every non-token byte to */
#define SECRET_SIZE 192
#define STRIPE 64
#define STRIPES_PER_BLOCK ((SECRET_SIZE - STRIPE) / 8)
#define BLOCK (STRIPE * STRIPES_PER_BLOCK)

/* XXH3's default 192-byte secret (XXH3_kSecret). */
static const uint8_t K_SECRET[SECRET_SIZE] = {
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
    0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
    0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
    0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
    0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
    0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
    0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
    0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
    0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
    0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
    0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
};

/* ------------------------------------------------------------------ XXH3-64 building blocks */

static inline u64 r64(const uint8_t *p) { /* little-endian, whatever the host */
    return (u64)p[0] | ((u64)p[1] << 8) | ((u64)p[2] << 16) | ((u64)p[3] << 24)
           | ((u64)p[4] << 32) | ((u64)p[5] << 40) | ((u64)p[6] << 48) | ((u64)p[7] << 56);
}

static inline u64 r32(const uint8_t *p) {
    return (u64)p[0] | ((u64)p[1] << 8) | ((u64)p[2] << 16) | ((u64)p[3] << 24);
}

static inline u64 rotl64(u64 x, int r) { return (x << r) | (x >> (64 - r)); }

static inline u64 swap32(u64 x) {
    return ((x << 24) & 0xFF000000ULL) | ((x << 8) & 0x00FF0000ULL)
           | ((x >> 8) & 0x0000FF00ULL) | ((x >> 24) & 0x000000FFULL);
}

static inline u64 swap64(u64 x) { return (swap32(x & 0xFFFFFFFFULL) << 32) | swap32(x >> 32); }

static inline u64 mul128_fold64(u64 a, u64 b) { /* low xor high half of the 128-bit product */
    unsigned __int128 product = (unsigned __int128)a * b;
    return (u64)product ^ (u64)(product >> 64);
}

static inline u64 xxh64_avalanche(u64 h) {
    h ^= h >> 33;
    h *= P64_2;
    h ^= h >> 29;
    h *= P64_3;
    return h ^ (h >> 32);
}

static inline u64 xxh3_avalanche(u64 h) {
    h ^= h >> 37;
    h *= PMX1;
    return h ^ (h >> 32);
}

static inline u64 mix16(const uint8_t *p, const uint8_t *s, u64 seed) {
    return mul128_fold64(r64(p) ^ (r64(s) + seed), r64(p + 8) ^ (r64(s + 8) - seed));
}

static inline void accumulate(u64 *acc, const uint8_t *p, const uint8_t *secret) {
    for (int k = 0; k < 8; k++) {
        u64 value = r64(p + 8 * k);
        u64 key = value ^ r64(secret + 8 * k);
        acc[k ^ 1] += value;
        acc[k] += (key & 0xFFFFFFFFULL) * (key >> 32);
    }
}

/* Inputs over 240 bytes: stripes of 64 bytes into 8 accumulators, scrambled per block. */
static u64 xxh3_long(const uint8_t *p, size_t length, const uint8_t *secret) {
    u64 acc[8] = {P32_3, P64_1, P64_2, P64_3, P64_4, P32_2, P64_5, P32_1};
    size_t blocks = (length - 1) / BLOCK;
    for (size_t n = 0; n <= blocks; n++) {
        size_t stripes = n < blocks ? STRIPES_PER_BLOCK : (length - 1 - BLOCK * blocks) / STRIPE;
        for (size_t s = 0; s < stripes; s++)
            accumulate(acc, p + n * BLOCK + s * STRIPE, secret + s * 8);
        if (n < blocks) /* scramble the accumulators with the secret's last 64 bytes */
            for (int i = 0; i < 8; i++) {
                u64 a = acc[i] ^ (acc[i] >> 47) ^ r64(secret + SECRET_SIZE - STRIPE + 8 * i);
                acc[i] = a * P32_1;
            }
    }
    /* The last 64 bytes, at XXH_SECRET_LASTACC_START (7); merged from MERGEACCS_START (11). */
    accumulate(acc, p + length - STRIPE, secret + SECRET_SIZE - STRIPE - 7);
    u64 result = (u64)length * P64_1;
    for (int i = 0; i < 4; i++)
        result += mul128_fold64(acc[2 * i] ^ r64(secret + 11 + 16 * i),
                                acc[2 * i + 1] ^ r64(secret + 11 + 16 * i + 8));
    return xxh3_avalanche(result);
}

/* XXH3-64 of p[0:n] with seed; secret is XXH3_initCustomSecret(seed) (used over 240 bytes).
 * The branches follow xxhash.h's XXH3_len_*_64b and XXH3_hashLong_64b_withSeed. */
static u64 xxh3_64(const uint8_t *p, size_t n, u64 seed, const uint8_t *secret) {
    const uint8_t *k = K_SECRET;
    if (n <= 16) {
        if (n > 8) {
            u64 lo = r64(p) ^ ((r64(k + 24) ^ r64(k + 32)) + seed);
            u64 hi = r64(p + n - 8) ^ ((r64(k + 40) ^ r64(k + 48)) - seed);
            u64 acc = (u64)n + swap64(lo) + hi + mul128_fold64(lo, hi);
            return xxh3_avalanche(acc);
        }
        if (n >= 4) {
            seed ^= swap32(seed & 0xFFFFFFFFULL) << 32;
            u64 keyed = (r32(p + n - 4) + (r32(p) << 32)) ^ ((r64(k + 8) ^ r64(k + 16)) - seed);
            keyed ^= rotl64(keyed, 49) ^ rotl64(keyed, 24);
            keyed *= PMX2;
            keyed ^= (keyed >> 35) + (u64)n;
            keyed *= PMX2;
            return keyed ^ (keyed >> 28);
        }
        if (n > 0) {
            u64 combined = ((u64)p[0] << 16) | ((u64)p[n >> 1] << 24) | (u64)p[n - 1]
                           | ((u64)n << 8);
            return xxh64_avalanche(combined ^ ((r32(k) ^ r32(k + 4)) + seed));
        }
        return xxh64_avalanche(seed ^ r64(k + 56) ^ r64(k + 64));
    }
    if (n <= 128) {
        u64 acc = (u64)n * P64_1;
        if (n > 32) {
            if (n > 64) {
                if (n > 96) {
                    acc += mix16(p + 48, k + 96, seed);
                    acc += mix16(p + n - 64, k + 112, seed);
                }
                acc += mix16(p + 32, k + 64, seed);
                acc += mix16(p + n - 48, k + 80, seed);
            }
            acc += mix16(p + 16, k + 32, seed);
            acc += mix16(p + n - 32, k + 48, seed);
        }
        acc += mix16(p, k, seed);
        acc += mix16(p + n - 16, k + 16, seed);
        return xxh3_avalanche(acc);
    }
    if (n <= 240) {
        u64 acc = (u64)n * P64_1;
        for (int i = 0; i < 8; i++)
            acc += mix16(p + 16 * i, k + 16 * i, seed);
        acc = xxh3_avalanche(acc);
        for (size_t i = 8; i < n / 16; i++) /* XXH3_MIDSIZE_STARTOFFSET = 3 */
            acc += mix16(p + 16 * i, k + 16 * (i - 8) + 3, seed);
        /* XXH3_SECRET_SIZE_MIN (136) - XXH3_MIDSIZE_LASTOFFSET (17) */
        acc += mix16(p + n - 16, k + 136 - 17, seed);
        return xxh3_avalanche(acc);
    }
    return xxh3_long(p, n, secret);
}

/* ------------------------------------------------------------------ shingles and MinHash */

static inline u64 splitmix64(u64 x) {
    x ^= x >> 30;
    x *= SM1;
    x ^= x >> 27;
    x *= SM2;
    return x ^ (x >> 31);
}

/* Shingle hashes of one document's count token hashes into out; their number. Token by token
 * over all windows at once (as the reference does): the inner loop is a SplitMix64 over
 * contiguous windows, which the compiler vectorises. */
static ALWAYS_INLINE Py_ssize_t fold_shingles(const u64 *restrict hashes, Py_ssize_t count, Py_ssize_t ngram,
                                u64 fold_seed, u64 *restrict out) {
    Py_ssize_t width = ngram < count ? ngram : count;
    Py_ssize_t windows = count - width + 1;
    for (Py_ssize_t w = 0; w < windows; w++)
        out[w] = fold_seed;
    for (Py_ssize_t j = 0; j < width; j++)
        for (Py_ssize_t w = 0; w < windows; w++)
            out[w] = splitmix64(out[w] ^ hashes[w + j]);
    return windows;
}

static inline u64 min64(u64 x, u64 y) { return x < y ? x : y; }

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__)) && defined(__linux__)
#include <immintrin.h>
#define HAVE_AVX2_SIGNATURE 1

/* signature() for eight permutations at a time with AVX2 (chosen at load time when the CPU
 * has it). The compiler's own vectorisation of the generic loop pays for two things AVX2 does
 * not have: a 64-bit multiply (three 32-bit ones) and an unsigned 64-bit minimum (four steps).
 * Only the top 32 bits of each value are kept, and min commutes with >> 32, so it is enough
 * to compute hi32((a*x + b) mod 2^64) and take 32-bit minima. With a = aH:aL, x = xH:xL:
 *   aL*xL + b (a 64-bit add, wrapping) carries everything below bit 32 into the high half,
 *   and the cross terms aH*xL + aL*xH only reach the high half, mod 2^32,
 * so hi32 = hi32(aL*xL + b) + aH*xL + aL*xH (mod 2^32). Per shingle and eight permutations:
 * two widening multiplies and 64-bit adds give the first term of four permutations each, one
 * shuffle gathers their eight high halves into one register, and the cross terms are two
 * 32-bit multiplies of eight lanes each, by xL and xH broadcast: ten vector operations. The
 * halves of a are gathered by the same shuffle, once per block, so lanes line up. */
__attribute__((target("avx2"))) static void signature_avx2(
        const u64 *restrict shingles, Py_ssize_t windows, const u64 *restrict a,
        const u64 *restrict b, Py_ssize_t num_perm, uint32_t *restrict out) {
    const uint32_t *halves = (const uint32_t *)shingles; /* little-endian: xL, xH */
    Py_ssize_t p0 = 0;
    for (; p0 + 8 <= num_perm; p0 += 8) {
        const __m256i a0 = _mm256_loadu_si256((const __m256i *)(a + p0));
        const __m256i a1 = _mm256_loadu_si256((const __m256i *)(a + p0 + 4));
        const __m256i b0 = _mm256_loadu_si256((const __m256i *)(b + p0));
        const __m256i b1 = _mm256_loadu_si256((const __m256i *)(b + p0 + 4));
        /* Lanes in the order p0, p1, p4, p5, p2, p3, p6, p7: shufps picks the low (or high)
         * 32-bit halves of two 64-bit lanes of each source per 128-bit half. */
#define GATHER(lo, hi, pick) _mm256_castps_si256(_mm256_shuffle_ps( \
            _mm256_castsi256_ps(lo), _mm256_castsi256_ps(hi), pick))
        const __m256i a_low = GATHER(a0, a1, _MM_SHUFFLE(2, 0, 2, 0));
        const __m256i a_high = GATHER(a0, a1, _MM_SHUFFLE(3, 1, 3, 1));
        __m256i mins = _mm256_set1_epi32(-1);
        for (Py_ssize_t s = 0; s < windows; s++) {
            const __m256i x_low = _mm256_set1_epi32((int)halves[2 * s]);
            const __m256i x_high = _mm256_set1_epi32((int)halves[2 * s + 1]);
            const __m256i r0 = _mm256_add_epi64(_mm256_mul_epu32(a0, x_low), b0);
            const __m256i r1 = _mm256_add_epi64(_mm256_mul_epu32(a1, x_low), b1);
            const __m256i cross = _mm256_add_epi32(_mm256_mullo_epi32(a_high, x_low),
                                                   _mm256_mullo_epi32(a_low, x_high));
            const __m256i top = _mm256_add_epi32(GATHER(r0, r1, _MM_SHUFFLE(3, 1, 3, 1)), cross);
            mins = _mm256_min_epu32(mins, top);
        }
#undef GATHER
        uint32_t m[8];
        _mm256_storeu_si256((__m256i *)m, mins);
        static const int8_t lane_perm[8] = {0, 1, 4, 5, 2, 3, 6, 7};
        for (int k = 0; k < 8; k++)
            out[p0 + lane_perm[k]] = m[k];
    }
    for (; p0 < num_perm; p0++) {
        u64 m = UINT64_MAX;
        for (Py_ssize_t s = 0; s < windows; s++)
            m = min64(m, a[p0] * shingles[s] + b[p0]);
        out[p0] = (uint32_t)(m >> 32);
    }
}

/* Set once at import (PyInit): whether this CPU runs signature_avx2. */
static int use_avx2_signature;
#endif

/* out[p] = top 32 bits of min over shingles of (a[p] * x + b[p]) mod 2**64. Four shingles per
 * pass over the permutations: the pass is bound by loading and storing mins, not by the
 * multiplies; min is associative, so the values are those of one shingle per pass. */
static ALWAYS_INLINE void signature(const u64 *restrict shingles, Py_ssize_t windows, const u64 *restrict a,
                      const u64 *restrict b, Py_ssize_t num_perm, u64 *restrict mins,
                      uint32_t *restrict out) {
    for (Py_ssize_t p = 0; p < num_perm; p++)
        mins[p] = UINT64_MAX;
    Py_ssize_t s = 0;
    for (; s + 4 <= windows; s += 4) {
        u64 x0 = shingles[s], x1 = shingles[s + 1], x2 = shingles[s + 2], x3 = shingles[s + 3];
        for (Py_ssize_t p = 0; p < num_perm; p++) {
            u64 ap = a[p], bp = b[p];
            u64 m01 = min64(ap * x0 + bp, ap * x1 + bp);
            u64 m23 = min64(ap * x2 + bp, ap * x3 + bp);
            mins[p] = min64(mins[p], min64(m01, m23));
        }
    }
    for (; s < windows; s++) {
        u64 x = shingles[s];
        for (Py_ssize_t p = 0; p < num_perm; p++)
            mins[p] = min64(mins[p], a[p] * x + b[p]);
    }
    for (Py_ssize_t p = 0; p < num_perm; p++)
        out[p] = (uint32_t)(mins[p] >> 32);
}

/* Writes text[0:n]'s tokens (read through table) joined by single spaces at norm + pos;
 * returns the new pos and sets *count to the number of tokens, whose first bytes' positions
 * in norm go to token_starts (a token ends one byte before the next starts, the last at the
 * new pos). Branch-free per byte: every byte is written, the position advances unless it
 * repeats a separator (a branchy loop mispredicts at every token edge). */
static ALWAYS_INLINE Py_ssize_t tokenize(const uint8_t *text, Py_ssize_t n, const uint8_t *table,
                           uint8_t *norm, Py_ssize_t pos, int64_t *token_starts,
                           Py_ssize_t *count_out) {
    int previous_separator = 1; /* collapses leading separators */
    Py_ssize_t count = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint8_t c = table[text[i]];
        int separator = c == SEPARATOR;
        norm[pos] = c;
        token_starts[count] = pos;
        count += (!separator) & previous_separator;
        pos += !(separator & previous_separator);
        previous_separator = separator;
    }
    if (count && previous_separator)
        pos -= 1; /* the one trailing separator written */
    *count_out = count;
    return pos;
}

/* The batch, document by document (see transforms.feature_kernel.batch_features); the
 * arguments are checked by the caller. Returns the length of norm used. */
static CPU_CLONES Py_ssize_t batch_loop(
        const uint8_t *text, const int64_t *offsets, const uint8_t *modes,
        const uint8_t *tables, Py_ssize_t docs, Py_ssize_t ngram, u64 seed, u64 fold_seed,
        const uint8_t *secret, const u64 *a, const u64 *b, Py_ssize_t num_perm, uint8_t *norm,
        int64_t *norm_offsets, int64_t *token_counts, uint32_t *signatures,
        int64_t *token_starts, u64 *hashes, u64 *shingles, u64 *mins) {
    Py_ssize_t pos = 0;
    norm_offsets[0] = 0;
    memset(signatures, 0, (size_t)(docs * num_perm) * sizeof(uint32_t));
    for (Py_ssize_t d = 0; d < docs; d++) {
        Py_ssize_t count;
        pos = tokenize(text + offsets[d], offsets[d + 1] - offsets[d], tables + 256 * modes[d],
                       norm, pos, token_starts, &count);
        norm_offsets[d + 1] = pos;
        token_counts[d] = count;
        if (count) {
            token_starts[count] = pos + 1; /* so that every token ends at the next start - 1 */
            for (Py_ssize_t t = 0; t < count; t++)
                hashes[t] = xxh3_64(norm + token_starts[t],
                                    (size_t)(token_starts[t + 1] - 1 - token_starts[t]), seed,
                                    secret);
            Py_ssize_t windows = fold_shingles(hashes, count, ngram, fold_seed, shingles);
#ifdef HAVE_AVX2_SIGNATURE
            if (use_avx2_signature)
                signature_avx2(shingles, windows, a, b, num_perm, signatures + d * num_perm);
            else
#endif
                signature(shingles, windows, a, b, num_perm, mins, signatures + d * num_perm);
        }
    }
    return pos;
}

/* ------------------------------------------------------------------ Python functions */

typedef struct {
    Py_buffer view;
    int held;
} Buf;

static int get_buffer(PyObject *obj, Buf *buf, int writable, Py_ssize_t itemsize,
                      const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &buf->view, flags) < 0)
        return -1;
    buf->held = 1;
    if (buf->view.itemsize != itemsize || buf->view.len % itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: expected items of %zd bytes, got %zd", name,
                     itemsize, buf->view.itemsize);
        return -1;
    }
    return 0;
}

static void release(Buf *bufs, int n) {
    for (int i = 0; i < n; i++)
        if (bufs[i].held) {
            PyBuffer_Release(&bufs[i].view);
            bufs[i].held = 0;
        }
}

#define COUNT(buf, type) ((buf).view.len / (Py_ssize_t)sizeof(type))

PyDoc_STRVAR(xxh3_64_doc,
             "xxh3_64(data, start, end, seed, secret) -> int\n\n"
             "XXH3-64 of data[start:end] with seed; secret (192 bytes) is XXH3's custom secret "
             "of seed.");

static PyObject *py_xxh3_64(PyObject *self, PyObject *args) {
    Py_buffer data, secret;
    Py_ssize_t start, end;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "y*nnKy*", &data, &start, &end, &seed, &secret))
        return NULL;
    PyObject *result = NULL;
    if (start < 0 || end < start || end > data.len)
        PyErr_SetString(PyExc_ValueError, "xxh3_64: start and end must lie in data");
    else if (secret.len != SECRET_SIZE)
        PyErr_SetString(PyExc_ValueError, "xxh3_64: the secret must be 192 bytes");
    else
        result = PyLong_FromUnsignedLongLong(
            xxh3_64((const uint8_t *)data.buf + start, (size_t)(end - start), seed,
                    (const uint8_t *)secret.buf));
    PyBuffer_Release(&data);
    PyBuffer_Release(&secret);
    return result;
}

PyDoc_STRVAR(batch_features_doc,
             "batch_features(text, offsets, modes, tables, ngram, seed, fold_seed, secret, a, b,"
             " norm, norm_offsets, token_counts, signatures) -> int\n\n"
             "Fills the four outputs (see transforms.feature_kernel.batch_features) and returns "
             "the length of norm used. Releases the GIL.");

static PyObject *py_batch_features(PyObject *self, PyObject *args) {
    PyObject *objs[13];
    Py_ssize_t ngram;
    unsigned long long seed, fold_seed;
    if (!PyArg_ParseTuple(args, "OOOOnKKOOOOOOO", &objs[0], &objs[1], &objs[2], &objs[3],
                          &ngram, &seed, &fold_seed, &objs[4], &objs[5], &objs[6], &objs[7],
                          &objs[8], &objs[9], &objs[10]))
        return NULL;
    enum { TEXT, OFFSETS, MODES, TABLES, SECRET, A, B, NORM, NORM_OFFSETS, COUNTS, SIGS, N };
    static const Py_ssize_t sizes[N] = {1, 8, 1, 1, 1, 8, 8, 1, 8, 8, 4};
    static const int writable[N] = {0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1};
    static const char *names[N] = {"text", "offsets", "modes", "tables", "secret", "a", "b",
                                   "norm", "norm_offsets", "token_counts", "signatures"};
    Buf bufs[N];
    memset(bufs, 0, sizeof bufs);
    for (int i = 0; i < N; i++)
        if (get_buffer(objs[i], &bufs[i], writable[i], sizes[i], names[i]) < 0) {
            release(bufs, N);
            return NULL;
        }
    const uint8_t *text = bufs[TEXT].view.buf, *modes = bufs[MODES].view.buf;
    const uint8_t *tables = bufs[TABLES].view.buf, *secret = bufs[SECRET].view.buf;
    const int64_t *offsets = bufs[OFFSETS].view.buf;
    const u64 *a = bufs[A].view.buf, *b = bufs[B].view.buf;
    uint8_t *norm = bufs[NORM].view.buf;
    int64_t *norm_offsets = bufs[NORM_OFFSETS].view.buf, *token_counts = bufs[COUNTS].view.buf;
    uint32_t *signatures = bufs[SIGS].view.buf;
    Py_ssize_t docs = COUNT(bufs[OFFSETS], int64_t) - 1, num_perm = COUNT(bufs[A], u64);
    Py_ssize_t text_len = bufs[TEXT].view.len, tables_count = bufs[TABLES].view.len / 256;
    const char *error = NULL;
    /* Everything an index is read from is checked here, so the loops below cannot stray. */
    if (docs < 0)
        error = "offsets must hold at least one value";
    else if (ngram < 1)
        error = "ngram must be at least 1";
    else if (bufs[SECRET].view.len != SECRET_SIZE)
        error = "the secret must be 192 bytes";
    else if (COUNT(bufs[B], u64) != num_perm)
        error = "a and b must have the same length";
    else if (COUNT(bufs[MODES], uint8_t) != docs || COUNT(bufs[COUNTS], int64_t) != docs
             || COUNT(bufs[NORM_OFFSETS], int64_t) != docs + 1
             || COUNT(bufs[SIGS], uint32_t) != docs * num_perm)
        error = "modes, token_counts, norm_offsets or signatures do not match offsets";
    else if (bufs[NORM].view.len < text_len)
        error = "norm must be as long as text";
    else if (docs >= 0 && offsets[0] != 0)
        error = "offsets must start at 0";
    for (Py_ssize_t d = 0; !error && d < docs; d++) {
        if (offsets[d + 1] < offsets[d] || offsets[d + 1] > text_len)
            error = "offsets must be non-decreasing and within text";
        else if (modes[d] >= tables_count)
            error = "a mode names a table that tables does not hold";
    }
    if (error) {
        release(bufs, N);
        PyErr_Format(PyExc_ValueError, "batch_features: %s", error);
        return NULL;
    }
    /* Scratch space per document: a document of n bytes has at most n / 2 + 1 tokens. */
    Py_ssize_t longest = 0;
    for (Py_ssize_t d = 0; d < docs; d++)
        if (offsets[d + 1] - offsets[d] > longest)
            longest = offsets[d + 1] - offsets[d];
    Py_ssize_t capacity = longest / 2 + 1;
    int64_t *token_starts = malloc((capacity + 1) * sizeof(int64_t));
    u64 *hashes = malloc(capacity * sizeof(u64)), *shingles = malloc(capacity * sizeof(u64));
    u64 *mins = malloc((num_perm ? num_perm : 1) * sizeof(u64));
    if (!token_starts || !hashes || !shingles || !mins) {
        free(token_starts), free(hashes), free(shingles), free(mins);
        release(bufs, N);
        return PyErr_NoMemory();
    }
    Py_ssize_t pos;
    Py_BEGIN_ALLOW_THREADS
    pos = batch_loop(text, offsets, modes, tables, docs, ngram, seed, fold_seed, secret, a, b,
                     num_perm, norm, norm_offsets, token_counts, signatures, token_starts,
                     hashes, shingles, mins);
    Py_END_ALLOW_THREADS
    free(token_starts), free(hashes), free(shingles), free(mins);
    release(bufs, N);
    return PyLong_FromSsize_t(pos);
}

PyDoc_STRVAR(band_hashes_doc,
             "band_hashes(signatures, width, rows, band_seeds, out) -> None\n\n"
             "signatures: uint32[docs, width]; out[d, k] (uint64[docs, bands]): band k folds "
             "its rows signature values in order "
             "through SplitMix64 from band_seeds[k]. Releases the GIL.");

static PyObject *py_band_hashes(PyObject *self, PyObject *args) {
    PyObject *objs[3];
    Py_ssize_t width, rows;
    if (!PyArg_ParseTuple(args, "OnnOO", &objs[0], &width, &rows, &objs[1], &objs[2]))
        return NULL;
    Buf bufs[3];
    memset(bufs, 0, sizeof bufs);
    static const Py_ssize_t sizes[3] = {4, 8, 8};
    static const char *names[3] = {"signatures", "band_seeds", "out"};
    for (int i = 0; i < 3; i++)
        if (get_buffer(objs[i], &bufs[i], i == 2, sizes[i], names[i]) < 0) {
            release(bufs, 3);
            return NULL;
        }
    const uint32_t *sigs = bufs[0].view.buf;
    const u64 *band_seeds = bufs[1].view.buf;
    u64 *out = bufs[2].view.buf;
    Py_ssize_t bands = COUNT(bufs[1], u64), values = COUNT(bufs[0], uint32_t);
    Py_ssize_t docs = width > 0 ? values / width : 0;
    if (rows < 1 || width < 1 || values != docs * width || COUNT(bufs[2], u64) != docs * bands
        || bands * rows > width) {
        release(bufs, 3);
        PyErr_SetString(PyExc_ValueError,
                        "band_hashes: signatures, band_seeds and out do not fit rows");
        return NULL;
    }
    /* Within a document the bands advance together, one row at a time: independent chains,
     * where one band at a time would wait on each multiply. */
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t d = 0; d < docs; d++) {
        u64 *o = out + d * bands;
        const uint32_t *s = sigs + d * width;
        for (Py_ssize_t k = 0; k < bands; k++)
            o[k] = band_seeds[k];
        for (Py_ssize_t r = 0; r < rows; r++)
            for (Py_ssize_t k = 0; k < bands; k++)
                o[k] = splitmix64(o[k] ^ (u64)s[k * rows + r]);
    }
    Py_END_ALLOW_THREADS
    release(bufs, 3);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"xxh3_64", py_xxh3_64, METH_VARARGS, xxh3_64_doc},
    {"batch_features", py_batch_features, METH_VARARGS, batch_features_doc},
    {"band_hashes", py_band_hashes, METH_VARARGS, band_hashes_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_feature_kernel",
    "The compiled feature kernel (see transforms/feature_kernel.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__feature_kernel(void) {
#ifdef HAVE_AVX2_SIGNATURE
    __builtin_cpu_init();
    use_avx2_signature = __builtin_cpu_supports("avx2") && getenv("NDCL_KERNEL_NO_AVX2") == NULL;
#endif
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    /* The one copy of XXH3's default secret: the Python face derives seeded secrets from it. */
    PyObject *secret = PyBytes_FromStringAndSize((const char *)K_SECRET, SECRET_SIZE);
    if (secret == NULL || PyModule_AddObject(m, "K_SECRET", secret) < 0) {
        Py_XDECREF(secret);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
