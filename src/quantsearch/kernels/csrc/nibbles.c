/* Top-k of 2-bit plane codes from per-query nibble lookup tables (fast-scan style).
 *
 * A code row begins with two bit planes of nb bytes (np.packbits order: dimension 8j + t is bit
 * 7 - t of byte j). Byte j of plane 0 (p0) and of plane 1 (p1) give four nibbles, each the two
 * bits of two dimensions:
 *     X = (p0 & 0x33) | ((p1 << 2) & 0xcc),  Y = ((p0 >> 2) & 0x33) | (p1 & 0xcc)
 *     group 4j + 0: X & 15,  4j + 1: X >> 4,  4j + 2: Y & 15,  4j + 3: Y >> 4
 * and the query gives a table of 16 uint8 values per group (numpy_backend.nibble_luts). With
 * S = sum_g lut[g][nibble_g] (an exact integer):
 *     score = row_scale * ((lo + delta * S) + qoff) + row_bias     (double, rounded to float32 once)
 * the arithmetic of the numpy reference (numpy_backend.nibble_topk). Larger is better; keys for
 * the shared driver as in planes.c.
 *
 * Layout "bits" (1-bit codes, one plane): byte j gives two groups, b & 15 (bit i = dimension
 * 8j + 7 - i) and b >> 4 (bit i = dimension 8j + 3 - i), four dimensions a table.
 *
 * AVX2 kernel: 32 rows per tile. A ymm holds 16 bytes of one plane of row i (low lane) and of row
 * 16 + i (high lane); a 16 x 16 byte transpose in each lane (4 unpack stages) turns 16 of them
 * into byte j of 32 rows per ymm, and vpshufb looks up 32 rows at once in the group's table
 * (broadcast to both lanes). Byte sums go to 16-bit counters (even rows: all - (odd << 8)), to
 * 32 bits every 4 chunks of 16 bytes (4 * 16 * 4 * 255 < 65536).
 */
#include <math.h>
#include <stdlib.h>

#include "qs_kernels.h"

#define INLINE static inline __attribute__((always_inline))

typedef struct {
    int layout;           /* QS_NIB_PLANES, QS_NIB_BASE3 or QS_NIB_BITS */
    int64_t gpb;          /* groups per byte position: 4 (planes), 3 (base 3), 2 (bits) */
    const uint8_t *luts;  /* (nq, gpb nb, 16) */
    const uint8_t *bcast; /* AVX2: (nq, chunks, 16, gpb, 32) tables broadcast to both lanes, zero past nb */
    int64_t chunks;
    const double *lo, *delta, *qoff; /* (nq,) */
    const float *row_scale, *row_bias;
    int64_t scale_at; /* >= 0: the row scale is the little-endian float32 at this byte of the row */
} nib_ctx;

INLINE float row_scale_of(const nib_ctx *x, const qs_scan *s, int64_t row) {
    if (x->row_scale) return x->row_scale[row];
    if (x->scale_at < 0) return 1.0f;
    float f;
    memcpy(&f, s->codes + row * s->stride + x->scale_at, 4);
    return f;
}

INLINE uint32_t nib_key(const nib_ctx *x, const qs_scan *s, int64_t row, int64_t qa, uint32_t sum) {
    const double ip = x->lo[qa] + x->delta[qa] * (double)sum;
    const double scale = (double)row_scale_of(x, s, row);
    const double bias = x->row_bias ? (double)x->row_bias[row] : 0.0;
    const float f = (float)(scale * (ip + x->qoff[qa]) + bias) + 0.0f; /* + 0: -0 becomes +0 */
    return qs_score_key(f);
}

/* ---------------------------------------------------------------- portable */

/* the group indices of byte position j of a row (see the top of the file and base3_digits) */
INLINE int row_groups(const nib_ctx *x, const uint8_t *p, int64_t nb, int64_t j, unsigned *g) {
    if (x->layout == QS_NIB_BITS) {
        g[0] = p[j] & 15u;
        g[1] = p[j] >> 4;
        return 2;
    }
    if (x->layout == QS_NIB_BASE3) {
        const unsigned b = p[j], q = (b * 7282u) >> 16, t4 = (q > 8) + (q > 17);
        g[0] = b - 9 * q;
        g[1] = q - 9 * t4;
        g[2] = t4;
        return 3;
    }
    const unsigned p0 = p[j], p1 = p[nb + j];
    const unsigned X = (p0 & 0x33u) | ((p1 << 2) & 0xccu), Y = ((p0 >> 2) & 0x33u) | (p1 & 0xccu);
    g[0] = X & 15;
    g[1] = X >> 4;
    g[2] = Y & 15;
    g[3] = Y >> 4;
    return 4;
}

static void nib_direct_portable(const qs_scan *s, int64_t b0, int64_t nblk, int64_t q0, int64_t q1, qs_heaps *h) {
    const nib_ctx *x = (const nib_ctx *)s->ctx;
    const int64_t nb = s->nb, gpb = x->gpb;
    for (int64_t q = q0; q < q1; q++) {
        const int64_t qa = s->q0 + q;
        const uint8_t *lut = x->luts + qa * nb * gpb * 16;
        uint64_t thr = h->thr[q];
        const uint8_t *p = s->codes + b0 * s->stride;
        for (int64_t i = 0; i < nblk; i++, p += s->stride) {
            uint32_t sum = 0;
            for (int64_t j = 0; j < nb; j++) {
                unsigned g[4];
                const int count = row_groups(x, p, nb, j, g);
                for (int t = 0; t < count; t++) sum += lut[(j * gpb + t) * 16 + g[t]];
            }
            uint64_t key = nib_key(x, s, b0 + i, qa, sum);
            if (key < thr) {
                qs_offer(h, s, q, 1u, &key, b0 + i);
                thr = h->thr[q];
            }
        }
    }
}

/* ---------------------------------------------------------------- AVX2 */
#if QS_X86
#include <immintrin.h>

#include "simd_x86.h"

#define NIB_TILE 32
#define NIB_CHUNKS_MAX 16 /* nb <= 256 bytes per plane (2048 dimensions) */

/* a[i]: 16 bytes of row i (low lane) and of row 16 + i (high lane) -> a[t]: byte t of the 32 rows */
QS_TARGET_AVX2 INLINE void transpose16(__m256i *a) {
    __m256i b[16], c[16], d[16];
    for (int i = 0; i < 8; i++) {
        b[i] = _mm256_unpacklo_epi8(a[2 * i], a[2 * i + 1]);
        b[8 + i] = _mm256_unpackhi_epi8(a[2 * i], a[2 * i + 1]);
    }
    for (int h = 0; h < 2; h++)
        for (int m = 0; m < 4; m++) {
            c[8 * h + m] = _mm256_unpacklo_epi16(b[8 * h + 2 * m], b[8 * h + 2 * m + 1]);
            c[8 * h + 4 + m] = _mm256_unpackhi_epi16(b[8 * h + 2 * m], b[8 * h + 2 * m + 1]);
        }
    for (int u = 0; u < 4; u++)
        for (int m = 0; m < 2; m++) {
            d[4 * u + m] = _mm256_unpacklo_epi32(c[4 * u + 2 * m], c[4 * u + 2 * m + 1]);
            d[4 * u + 2 + m] = _mm256_unpackhi_epi32(c[4 * u + 2 * m], c[4 * u + 2 * m + 1]);
        }
    for (int v = 0; v < 8; v++) {
        a[2 * v] = _mm256_unpacklo_epi64(d[2 * v], d[2 * v + 1]);
        a[2 * v + 1] = _mm256_unpackhi_epi64(d[2 * v], d[2 * v + 1]);
    }
}

/* 16-bit shifts as multiplies: Zen 3 runs shifts on the two pipes the unpacks and table lookups
 * need, multiplies on the others */
#define SHL2(v) _mm256_mullo_epi16((v), _mm256_set1_epi16(4))
#define SHR2(v) _mm256_mulhi_epu16((v), _mm256_set1_epi16(1 << 14))
#define SHR4(v) _mm256_mulhi_epu16((v), _mm256_set1_epi16(1 << 12))

/* the nibbles of one tile: idx[(c * 16 + t) * 4 + g] for chunk c, byte 16 c + t, group g. X and Y
 * are formed per row before the transposes (the bytes keep their places), so that only one set of
 * 16 vectors is live at a time. */
QS_TARGET_AVX2 INLINE void tile_nibbles(const uint8_t *p, int64_t stride, int64_t off1, int64_t chunks, __m256i *idx) {
    const __m256i m33 = _mm256_set1_epi8(0x33), mcc = _mm256_set1_epi8((char)0xcc), m0f = _mm256_set1_epi8(0x0f);
    for (int64_t c = 0; c < chunks; c++) {
        __m256i xs[16], ys[16];
        for (int i = 0; i < 16; i++) {
            const uint8_t *r = p + i * stride + 16 * c, *r16 = p + (16 + i) * stride + 16 * c;
            const __m256i a0 = _mm256_loadu2_m128i((const __m128i *)r16, (const __m128i *)r);
            const __m256i a1 = _mm256_loadu2_m128i((const __m128i *)(r16 + off1), (const __m128i *)(r + off1));
            xs[i] = _mm256_or_si256(_mm256_and_si256(a0, m33), _mm256_and_si256(SHL2(a1), mcc));
            ys[i] = _mm256_or_si256(_mm256_and_si256(SHR2(a0), m33), _mm256_and_si256(a1, mcc));
        }
        __m256i *o = idx + c * 64;
        transpose16(xs);
        for (int t = 0; t < 16; t++) {
            o[4 * t] = _mm256_and_si256(xs[t], m0f);
            o[4 * t + 1] = _mm256_and_si256(SHR4(xs[t]), m0f);
        }
        transpose16(ys);
        for (int t = 0; t < 16; t++) {
            o[4 * t + 2] = _mm256_and_si256(ys[t], m0f);
            o[4 * t + 3] = _mm256_and_si256(SHR4(ys[t]), m0f);
        }
    }
}

/* a[t] = byte 16 c + t of the tile's 32 rows (p already at byte 16 c) */
QS_TARGET_AVX2 INLINE void load_tile(const uint8_t *p, int64_t stride, __m256i *a) {
    for (int i = 0; i < 16; i++)
        a[i] = _mm256_loadu2_m128i((const __m128i *)(p + (16 + i) * stride), (const __m128i *)(p + i * stride));
    transpose16(a);
}

/* base 3: byte b = d0 + 3 d1 + 9 d2 + 27 d3 + 81 d4 (digits 0..2) gives the groups d0 + 3 d1,
 * d2 + 3 d3 and d4: q = b / 9 = (b * 7282) >> 16 (exact for b < 256), t4 = (q > 8) + (q > 17) */
QS_TARGET_AVX2 INLINE void tile_trits(const uint8_t *p, int64_t stride, int64_t chunks, __m256i *idx) {
    const __m256i zero = _mm256_setzero_si256(), magic = _mm256_set1_epi16(7282);
    const __m256i eight = _mm256_set1_epi8(8), seventeen = _mm256_set1_epi8(17);
    for (int64_t c = 0; c < chunks; c++) {
        __m256i a[16];
        load_tile(p + 16 * c, stride, a);
        __m256i *o = idx + c * 48;
        for (int t = 0; t < 16; t++) {
            const __m256i b = a[t];
            const __m256i q = _mm256_packus_epi16(_mm256_mulhi_epu16(_mm256_unpacklo_epi8(b, zero), magic),
                                                  _mm256_mulhi_epu16(_mm256_unpackhi_epi8(b, zero), magic));
            /* 9 q and 9 t4 stay below 256 in every byte, so 16-bit shifts do not carry across bytes */
            const __m256i q9 = _mm256_add_epi8(_mm256_slli_epi16(q, 3), q);
            const __m256i t4 = _mm256_sub_epi8(zero, _mm256_add_epi8(_mm256_cmpgt_epi8(q, eight),
                                                                     _mm256_cmpgt_epi8(q, seventeen)));
            const __m256i t9 = _mm256_add_epi8(_mm256_slli_epi16(t4, 3), t4);
            o[3 * t] = _mm256_sub_epi8(b, q9);
            o[3 * t + 1] = _mm256_sub_epi8(q, t9);
            o[3 * t + 2] = t4;
        }
    }
}

/* one plane of 1-bit codes: byte t of the 32 rows gives the groups low nibble, high nibble */
QS_TARGET_AVX2 INLINE void tile_bits(const uint8_t *p, int64_t stride, int64_t chunks, __m256i *idx) {
    const __m256i m0f = _mm256_set1_epi8(0x0f);
    for (int64_t c = 0; c < chunks; c++) {
        __m256i a[16];
        load_tile(p + 16 * c, stride, a);
        __m256i *o = idx + c * 32;
        for (int t = 0; t < 16; t++) {
            o[2 * t] = _mm256_and_si256(a[t], m0f);
            o[2 * t + 1] = _mm256_and_si256(_mm256_srli_epi16(a[t], 4), m0f);
        }
    }
}

/* sums[32] += the tile's table sums over groups [g0, g1) (at most 256, a multiple of 4) */
QS_TARGET_AVX2 INLINE void tile_sums(const __m256i *idx, const __m256i *lut, int64_t g0, int64_t g1, uint32_t *sums) {
    /* even and odd bytes (rows) to 16 bits by vpmaddubsw with 1, 0 / 0, 1 weights (multiply pipes) */
    const __m256i we = _mm256_set1_epi16(1), wo = _mm256_set1_epi16(1 << 8);
    __m256i even0 = _mm256_setzero_si256(), odd0 = even0, even1 = even0, odd1 = even0;
    for (int64_t j = g0; j < g1; j += 4) {
        const __m256i r0 = _mm256_shuffle_epi8(_mm256_load_si256(lut + j), _mm256_load_si256(idx + j));
        const __m256i r1 = _mm256_shuffle_epi8(_mm256_load_si256(lut + j + 1), _mm256_load_si256(idx + j + 1));
        const __m256i r2 = _mm256_shuffle_epi8(_mm256_load_si256(lut + j + 2), _mm256_load_si256(idx + j + 2));
        const __m256i r3 = _mm256_shuffle_epi8(_mm256_load_si256(lut + j + 3), _mm256_load_si256(idx + j + 3));
        even0 = _mm256_add_epi16(even0, _mm256_add_epi16(_mm256_maddubs_epi16(r0, we), _mm256_maddubs_epi16(r1, we)));
        odd0 = _mm256_add_epi16(odd0, _mm256_add_epi16(_mm256_maddubs_epi16(r0, wo), _mm256_maddubs_epi16(r1, wo)));
        even1 = _mm256_add_epi16(even1, _mm256_add_epi16(_mm256_maddubs_epi16(r2, we), _mm256_maddubs_epi16(r3, we)));
        odd1 = _mm256_add_epi16(odd1, _mm256_add_epi16(_mm256_maddubs_epi16(r2, wo), _mm256_maddubs_epi16(r3, wo)));
    }
    const __m256i even = _mm256_add_epi16(even0, even1), odd = _mm256_add_epi16(odd0, odd1);
    /* rows 2m (even) and 2m + 1 (odd) are 16-bit lane m: interleave them back into row order */
    const __m256i lo = _mm256_unpacklo_epi16(even, odd), hi = _mm256_unpackhi_epi16(even, odd);
    /* lo: rows 0-7 | 16-23, hi: rows 8-15 | 24-31 */
    __m256i *out = (__m256i *)sums;
    out[0] = _mm256_add_epi32(out[0], _mm256_cvtepu16_epi32(_mm256_castsi256_si128(lo)));
    out[1] = _mm256_add_epi32(out[1], _mm256_cvtepu16_epi32(_mm256_castsi256_si128(hi)));
    out[2] = _mm256_add_epi32(out[2], _mm256_cvtepu16_epi32(_mm256_extracti128_si256(lo, 1)));
    out[3] = _mm256_add_epi32(out[3], _mm256_cvtepu16_epi32(_mm256_extracti128_si256(hi, 1)));
}

/* scores of the tile's rows, 4 at a time in double (the arithmetic of nib_key), offered where the
 * key is below the heap's threshold */
QS_TARGET_AVX2 INLINE void offer_tile(const qs_scan *s, const nib_ctx *x, qs_heaps *h, int64_t q, int64_t qa,
                                      const uint32_t *sums, int64_t r0, int64_t left) {
    const __m256d lo = _mm256_set1_pd(x->lo[qa]), delta = _mm256_set1_pd(x->delta[qa]);
    const __m256d qoff = _mm256_set1_pd(x->qoff[qa]);
    for (int64_t c = 0; c < left; c += 4) {
        const unsigned lanes = left - c >= 4 ? 15u : (1u << (left - c)) - 1;
        const __m256d sum = _mm256_cvtepi32_pd(_mm_load_si128((const __m128i *)(sums + c)));
        const __m256d ip = _mm256_add_pd(lo, _mm256_mul_pd(delta, sum));
        __m256d score = _mm256_add_pd(ip, qoff);
        if (x->row_scale || x->scale_at >= 0 || x->row_bias) {
            float sc[4] = {1.0f, 1.0f, 1.0f, 1.0f}, bi[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            for (int64_t l = 0; l < 4 && c + l < left; l++) {
                sc[l] = row_scale_of(x, s, r0 + c + l);
                if (x->row_bias) bi[l] = x->row_bias[r0 + c + l];
            }
            score = _mm256_add_pd(_mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(sc)), score),
                                  _mm256_cvtps_pd(_mm_loadu_ps(bi)));
        }
        offer_pd4(h, s, q, score, lanes, r0 + c);
    }
}

QS_TARGET_AVX2 static void nib_direct_avx2(const qs_scan *s, int64_t b0, int64_t nblk, int64_t q0, int64_t q1,
                                           qs_heaps *h) {
    const nib_ctx *x = (const nib_ctx *)s->ctx;
    const int64_t nb = s->nb, chunks = x->chunks, stride = s->stride;
    __m256i idx[NIB_CHUNKS_MAX * 64] __attribute__((aligned(32)));
    const int64_t planes = qs_nib_planes(x->layout), groups = 16 * x->gpb * chunks;
    /* 16-bit counters take at most 257 tables of 255 (a multiple of 4 groups per pass) */
    const int64_t pass = x->gpb == 3 ? 240 : 256;
    /* a tile reads 16 * chunks bytes of each plane of 32 rows: past the end of the array for the
     * last rows, so those tiles read a zero-padded copy */
    const int64_t reach = (planes - 1) * nb + 16 * chunks, total = s->n * stride;
    for (int64_t c = 0; c < nblk; c += NIB_TILE) {
        const int64_t left = nblk - c < NIB_TILE ? nblk - c : NIB_TILE;
        const int64_t r0 = b0 + c;
        const int64_t last = r0 + NIB_TILE - 1; /* the tile reads 32 rows, whether or not they are in the block */
        const uint8_t *base = s->codes + r0 * stride;
        int64_t w = stride, off1 = nb;
        uint8_t pad[NIB_TILE * 2 * 16 * NIB_CHUNKS_MAX];
        if (last < s->n && last * stride + reach <= total) {
            /* the tile reads its rows out of order (row i, then 16 + i): prefetch the one after next */
            if (r0 + 3 * NIB_TILE <= s->n) {
                const uint8_t *ahead = s->codes + (r0 + 2 * NIB_TILE) * stride;
                for (int64_t b = 0; b < NIB_TILE * stride; b += 64) _mm_prefetch((const char *)(ahead + b), _MM_HINT_T0);
            }
        } else {
            w = planes * 16 * chunks;
            off1 = 16 * chunks;
            memset(pad, 0, (size_t)(NIB_TILE * w));
            for (int64_t i = 0; i < NIB_TILE && r0 + i < s->n; i++)
                for (int64_t pl = 0; pl < planes; pl++)
                    memcpy(pad + i * w + pl * off1, s->codes + (r0 + i) * stride + pl * nb, (size_t)nb);
            base = pad;
        }
        if (x->layout == QS_NIB_PLANES)
            tile_nibbles(base, w, off1, chunks, idx);
        else if (x->layout == QS_NIB_BASE3)
            tile_trits(base, w, chunks, idx);
        else
            tile_bits(base, w, chunks, idx);
        for (int64_t q = q0; q < q1; q++) {
            const int64_t qa = s->q0 + q;
            const __m256i *lut = (const __m256i *)(x->bcast + qa * groups * 32);
            uint32_t sums[NIB_TILE] __attribute__((aligned(32))) = {0};
            for (int64_t g0 = 0; g0 < groups; g0 += pass) tile_sums(idx, lut, g0, g0 + pass < groups ? g0 + pass : groups, sums);
            offer_tile(s, x, h, q, qa, sums, r0, left);
        }
    }
}
#endif

int qs_nibble_topk(const uint8_t *codes, const uint8_t *valid, int64_t n, int64_t stride, int64_t nb, int layout,
                   const uint8_t *luts, int64_t nq, const double *lo, const double *delta, const float *row_scale,
                   int64_t scale_at, const float *row_bias, const double *qoff, int64_t k, int isa, int nthreads,
                   int64_t block_bytes, float *out_scores, int64_t *out_rows) {
    const int64_t gpb = qs_nib_gpb(layout), planes = qs_nib_planes(layout);
    nib_ctx ctx = {layout, gpb, luts, NULL, (nb + 15) / 16, lo, delta, qoff, row_scale, row_bias, scale_at};
    qs_scan s = {codes, valid, NULL, NULL, n, nq, nb, (nb + 7) / 8, k, stride, planes, ~(uint64_t)0, 0, &ctx};
    qs_direct_fn direct = nib_direct_portable;
    uint8_t *bcast = NULL;
#if QS_X86
    if (isa != QS_ISA_PORTABLE && ctx.chunks <= NIB_CHUNKS_MAX) {
        const int64_t per_query = ctx.chunks * 16 * gpb * 32;
        bcast = (uint8_t *)aligned_alloc(32, (size_t)(nq * per_query > 0 ? nq * per_query : 32));
        if (!bcast) return -1;
        memset(bcast, 0, (size_t)(nq * per_query));
        for (int64_t q = 0; q < nq; q++)
            for (int64_t g = 0; g < nb * gpb; g++) {
                uint8_t *dst = bcast + q * per_query + g * 32;
                const uint8_t *src = luts + (q * nb * gpb + g) * 16;
                memcpy(dst, src, 16);
                memcpy(dst + 16, src, 16);
            }
        ctx.bcast = bcast;
        direct = nib_direct_avx2;
    }
#else
    (void)isa;
#endif
    uint32_t *keys = (uint32_t *)out_scores;
    const int status = qs_scan_topk(&s, direct, NULL, nthreads, block_bytes, 2 * planes * nb, keys, out_rows);
    free(bcast);
    for (int64_t i = 0; i < nq * k; i++) {
        uint32_t key;
        memcpy(&key, out_scores + i, 4);
        out_scores[i] = key == QS_SENTINEL_DIST ? NAN : qs_key_score(key);
    }
    return status;
}

/* ---------------------------------------------------------------- tables from the query */

/* entry e of a group: the levels of its first and second dimension (planes: bits 0, 2 and 1, 3;
 * base 3: e % 3 and e / 3 % 3; the single-trit group: min(e, 2)) */
static const uint8_t PLANE_FIRST[16] = {0, 1, 0, 1, 2, 3, 2, 3, 0, 1, 0, 1, 2, 3, 2, 3};
static const uint8_t PLANE_SECOND[16] = {0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 3, 3};

/* numpy_backend.nibble_luts: values[q, d, l] = (double)queries[q, d] * levels[d, l]; each group's
 * float64 table of its two contributions' sums (dimensions >= dim contribute 0; entries no code
 * produces take the group's minimum m_g); delta = max_g (max_g - m_g) / 255; lut = floor((table -
 * m_g) / delta + 0.5) capped at 255 (0 where delta == 0); lo = sum_g m_g in group order.
 * work: 17 groups + 4 (8 nb + 1) doubles. Returns -2 where a query or level is not finite. */
int qs_nibble_luts(const float *queries, int64_t nq, int64_t dim, const double *levels, int layout, int64_t nb,
                   double *work, uint8_t *luts, double *lo, double *delta) {
    const int base3 = layout == QS_NIB_BASE3;
    const int64_t gpb = qs_nib_gpb(layout), nlev = qs_nib_levels(layout), groups = gpb * nb;
    const int64_t padded = base3 ? 5 * nb : 8 * nb;
    for (int64_t i = 0; i < dim * nlev; i++)
        if (!isfinite(levels[i])) return -2;
    double *tab = work, *low = work + groups * 16, *val = low + groups; /* val: (padded + 1, nlev) */
    for (int64_t q = 0; q < nq; q++) {
        const float *r = queries + q * dim;
        for (int64_t d = 0; d < padded + 1; d++)
            for (int64_t l = 0; l < nlev; l++) {
                if (d < dim && !isfinite(r[d])) return -2;
                val[d * nlev + l] = d < dim ? (double)r[d] * levels[d * nlev + l] : 0.0;
            }
        double range = 0.0;
        for (int64_t g = 0; g < groups; g++) {
            const int64_t j = g / gpb, t = g % gpb;
            double *e = tab + g * 16, m = INFINITY, hi = -INFINITY;
            int used = 16;
            if (layout == QS_NIB_BITS) {
                /* bit i of the entry is dimension top - i; summed bit 0 first, as the reference */
                const double *a = val + (8 * j + (t ? 3 : 7)) * 2;
                for (int v = 0; v < 16; v++)
                    e[v] = ((a[v & 1] + a[-2 + (v >> 1 & 1)]) + a[-4 + (v >> 2 & 1)]) + a[-6 + (v >> 3 & 1)];
            } else if (!base3) {
                static const int first[4] = {7, 3, 5, 1};
                const double *a = val + (8 * j + first[t]) * 4, *b = a - 4;
                for (int v = 0; v < 16; v++) e[v] = a[PLANE_FIRST[v]] + b[PLANE_SECOND[v]];
            } else if (t < 2) {
                const double *a = val + (5 * j + 2 * t) * 3, *b = a + 3;
                for (int v = 0; v < 9; v++) e[v] = a[v % 3] + b[v / 3];
                used = 9;
            } else {
                const double *a = val + (5 * j + 4) * 3, *b = val + padded * 3; /* b: the padding zero */
                for (int v = 0; v < 3; v++) e[v] = a[v] + b[0];
                used = 3;
            }
            for (int v = 0; v < used; v++) {
                if (e[v] < m) m = e[v];
                if (e[v] > hi) hi = e[v];
            }
            for (int v = used; v < 16; v++) e[v] = m;
            low[g] = m;
            if (hi - m > range) range = hi - m;
        }
        const double step = range / 255.0, safe = step > 0 ? step : 1.0;
        double sum = 0.0;
        uint8_t *out = luts + q * groups * 16;
        for (int64_t g = 0; g < groups; g++) {
            for (int v = 0; v < 16; v++) {
                const double x = floor((tab[g * 16 + v] - low[g]) / safe + 0.5);
                out[g * 16 + v] = step > 0 ? (uint8_t)(x < 255.0 ? x : 255.0) : 0;
            }
            sum += low[g];
        }
        lo[q] = sum;
        delta[q] = step;
    }
    return 0;
}

int qs_nibble_scan(const uint8_t *codes, const uint8_t *valid, int64_t n, int64_t stride, int64_t nb, int layout,
                   const float *queries, int64_t nq, int64_t dim, const double *levels, const float *row_scale,
                   int64_t scale_at, const float *row_bias, const double *qoff, const float *score_bias, int64_t k,
                   int isa, int nthreads, int64_t block_bytes, float *out_scores, int64_t *out_rows) {
    const int64_t groups = qs_nib_gpb(layout) * nb, nwork = groups * 17 + (8 * nb + 1) * 4;
    uint8_t *luts = (uint8_t *)malloc((size_t)(nq * groups * 16));
    double *work = (double *)malloc(sizeof(double) * (size_t)(nwork + 3 * nq));
    if (!luts || !work) {
        free(luts);
        free(work);
        return -1;
    }
    double *lo = work + nwork, *delta = lo + nq, *zero = delta + nq;
    for (int64_t q = 0; q < nq; q++) zero[q] = 0.0;
    if (qs_nibble_luts(queries, nq, dim, levels, layout, nb, work, luts, lo, delta) < 0) {
        free(luts);
        free(work);
        return -2;
    }
    const int status = qs_nibble_topk(codes, valid, n, stride, nb, layout, luts, nq, lo, delta, row_scale, scale_at,
                                      row_bias, qoff ? qoff : zero, k, isa, nthreads, block_bytes, out_scores,
                                      out_rows);
    free(luts);
    free(work);
    if (score_bias)
        for (int64_t q = 0; q < nq; q++)
            for (int64_t i = 0; i < k; i++) out_scores[q * k + i] += score_bias[q];
    return status;
}
