/* Fused gather + dot for rescoring: each candidate's code row is read straight from its segment
 * (a memory map) and dotted with the query's weights, so no (nq, c, dim) array is ever built.
 *
 * score = sum_j (code_j + offset) * weight_j, with code_j the stored value (int8, uint8, a 4-bit
 * level, float16 or float32) and the calibration folded into the weights by the caller. */
#include <math.h>
#include <stdlib.h>

#include "qs_kernels.h"

#if QS_X86
#include <immintrin.h>
#endif

int64_t qs_row_bytes(int kind, int64_t dim) {
    switch (kind) {
    case QS_KIND_INT8:
    case QS_KIND_UINT8: return dim;
    case QS_KIND_INT4: return (dim + 1) / 2;
    case QS_KIND_FLOAT16: return 2 * dim;
    case QS_KIND_FLOAT32: return 4 * dim;
    case QS_KIND_Q8_0: return dim % 32 ? -1 : dim / 32 * 34;
    case QS_KIND_Q4_0: return dim % 32 ? -1 : dim / 32 * 18;
    case QS_KIND_Q4_1: return dim % 32 ? -1 : dim / 32 * 20;
    default: return -1;
    }
}

float qs_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13); /* inf / nan */
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else { /* subnormal: normalise the mantissa */
        exp = 113;
        while (!(man & 0x400u)) {
            man <<= 1;
            exp--;
        }
        bits = sign | (exp << 23) | ((man & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* ---------------------------------------------------------------- portable */

static float dot_portable(const uint8_t *p, const float *w, int64_t dim, int kind, int32_t offset) {
    float acc = 0.0f;
    switch (kind) {
    case QS_KIND_INT8:
        for (int64_t j = 0; j < dim; j++) acc += (float)((int32_t)(int8_t)p[j] + offset) * w[j];
        break;
    case QS_KIND_UINT8:
        for (int64_t j = 0; j < dim; j++) acc += (float)((int32_t)p[j] + offset) * w[j];
        break;
    case QS_KIND_INT4:
        for (int64_t j = 0; j < dim; j++) {
            int32_t level = (j & 1) ? p[j >> 1] >> 4 : p[j >> 1] & 0x0f; /* even dim in the low nibble */
            acc += (float)(level + offset) * w[j];
        }
        break;
    case QS_KIND_FLOAT16:
        for (int64_t j = 0; j < dim; j++) {
            uint16_t h;
            memcpy(&h, p + 2 * j, 2);
            acc += qs_half_to_float(h) * w[j];
        }
        break;
    default:
        for (int64_t j = 0; j < dim; j++) {
            float f;
            memcpy(&f, p + 4 * j, 4);
            acc += f * w[j];
        }
    }
    return acc;
}

#if QS_X86
/* ---------------------------------------------------------------- AVX-512 (masked tails) */

QS_TARGET_AVX512 static float dot_avx512(const uint8_t *p, const float *w, int64_t dim, int kind, int32_t offset) {
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    const __m512i off = _mm512_set1_epi32(offset);
    if (kind == QS_KIND_INT4) {
        /* 16 levels from 8 bytes: interleave low and high nibbles back into dimension order */
        const __m128i low = _mm_set1_epi8(0x0f);
        for (int64_t j = 0; j < dim; j += 16) {
            const int64_t n = dim - j < 16 ? dim - j : 16;
            const __mmask16 m = (__mmask16)((1u << n) - 1);
            __m128i b = _mm_maskz_loadu_epi8((__mmask16)((1u << ((n + 1) / 2)) - 1), p + j / 2);
            __m128i lv = _mm_unpacklo_epi8(_mm_and_si128(b, low), _mm_and_si128(_mm_srli_epi16(b, 4), low));
            __m512 f = _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_cvtepu8_epi32(lv), off));
            acc0 = _mm512_fmadd_ps(f, _mm512_maskz_loadu_ps(m, w + j), acc0);
        }
        return _mm512_reduce_add_ps(acc0);
    }
    int64_t j = 0;
    for (; j + 32 <= dim; j += 32) {
        __m512 f0, f1;
        if (kind == QS_KIND_INT8 || kind == QS_KIND_UINT8) {
            __m128i b0 = _mm_loadu_si128((const __m128i *)(p + j));
            __m128i b1 = _mm_loadu_si128((const __m128i *)(p + j + 16));
            __m512i i0 = kind == QS_KIND_INT8 ? _mm512_cvtepi8_epi32(b0) : _mm512_cvtepu8_epi32(b0);
            __m512i i1 = kind == QS_KIND_INT8 ? _mm512_cvtepi8_epi32(b1) : _mm512_cvtepu8_epi32(b1);
            f0 = _mm512_cvtepi32_ps(_mm512_add_epi32(i0, off));
            f1 = _mm512_cvtepi32_ps(_mm512_add_epi32(i1, off));
        } else if (kind == QS_KIND_FLOAT16) {
            f0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + 2 * j)));
            f1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + 2 * j + 32)));
        } else {
            f0 = _mm512_loadu_ps(p + 4 * j);
            f1 = _mm512_loadu_ps(p + 4 * j + 64);
        }
        acc0 = _mm512_fmadd_ps(f0, _mm512_loadu_ps(w + j), acc0);
        acc1 = _mm512_fmadd_ps(f1, _mm512_loadu_ps(w + j + 16), acc1);
    }
    for (; j < dim; j += 16) {
        const int64_t n = dim - j < 16 ? dim - j : 16;
        const __mmask16 m = (__mmask16)((1u << n) - 1);
        __m512 f;
        if (kind == QS_KIND_INT8 || kind == QS_KIND_UINT8) {
            __m128i b = _mm_maskz_loadu_epi8(m, p + j);
            __m512i i = kind == QS_KIND_INT8 ? _mm512_cvtepi8_epi32(b) : _mm512_cvtepu8_epi32(b);
            f = _mm512_cvtepi32_ps(_mm512_add_epi32(i, off));
        } else if (kind == QS_KIND_FLOAT16) {
            f = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p + 2 * j));
        } else {
            f = _mm512_maskz_loadu_ps(m, p + 4 * j);
        }
        /* masked-off weights are zero and masked-off codes are zero: 0 * 0 adds nothing */
        acc0 = _mm512_fmadd_ps(f, _mm512_maskz_loadu_ps(m, w + j), acc0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

/* ---------------------------------------------------------------- AVX2 + FMA + F16C */

QS_TARGET_AVX2 static float dot_avx2(const uint8_t *p, const float *w, int64_t dim, int kind, int32_t offset) {
    if (kind == QS_KIND_INT4) return dot_portable(p, w, dim, kind, offset);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    const __m256i off = _mm256_set1_epi32(offset);
    int64_t j = 0;
    for (; j + 16 <= dim; j += 16) {
        __m256 f0, f1;
        if (kind == QS_KIND_INT8 || kind == QS_KIND_UINT8) {
            __m128i b = _mm_loadu_si128((const __m128i *)(p + j));
            __m256i i0 = kind == QS_KIND_INT8 ? _mm256_cvtepi8_epi32(b) : _mm256_cvtepu8_epi32(b);
            __m256i i1 = kind == QS_KIND_INT8 ? _mm256_cvtepi8_epi32(_mm_srli_si128(b, 8))
                                              : _mm256_cvtepu8_epi32(_mm_srli_si128(b, 8));
            f0 = _mm256_cvtepi32_ps(_mm256_add_epi32(i0, off));
            f1 = _mm256_cvtepi32_ps(_mm256_add_epi32(i1, off));
        } else if (kind == QS_KIND_FLOAT16) {
            f0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 2 * j)));
            f1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 2 * j + 16)));
        } else {
            f0 = _mm256_loadu_ps((const float *)(p + 4 * j));
            f1 = _mm256_loadu_ps((const float *)(p + 4 * j + 32));
        }
        acc0 = _mm256_fmadd_ps(f0, _mm256_loadu_ps(w + j), acc0);
        acc1 = _mm256_fmadd_ps(f1, _mm256_loadu_ps(w + j + 8), acc1);
    }
    __m256 acc = _mm256_add_ps(acc0, acc1);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    float total = _mm_cvtss_f32(s);
    if (j < dim) {
        const int64_t bytes = qs_row_bytes(kind, j); /* offset of dimension j in the row */
        total += dot_portable(p + bytes, w + j, dim - j, kind, offset);
    }
    return total;
}
#endif

/* ---------------------------------------------------------------- driver */

/* ggml blocks: sum_b d_b * <values_b, w_b> (+ m_b * sum(w_b) for q4_1), each block's partial sum
 * in float32 over 32 products (eight lanes: the loops vectorise), the blocks summed in float32 */
static inline __attribute__((always_inline)) float dot_blocks_body(const uint8_t *p, const float *w, int64_t dim,
                                                                    int kind) {
    const int64_t blocks = dim / 32;
    float total = 0.0f;
    for (int64_t b = 0; b < blocks; b++, w += 32) {
        uint16_t hd;
        memcpy(&hd, p, 2);
        const float d = qs_half_to_float(hd);
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        if (kind == QS_KIND_Q8_0) {
            const int8_t *v = (const int8_t *)(p + 2);
            for (int i = 0; i < 32; i += 8)
                for (int l = 0; l < 8; l++) acc[l] += (float)v[i + l] * w[i + l];
            p += 34;
        } else {
            const int head = kind == QS_KIND_Q4_1 ? 4 : 2;
            const float shift = kind == QS_KIND_Q4_0 ? 8.0f : 0.0f;
            const uint8_t *v = p + head;
            for (int i = 0; i < 16; i += 8)
                for (int l = 0; l < 8; l++)
                    acc[l] += ((float)(v[i + l] & 0x0f) - shift) * w[i + l] + ((float)(v[i + l] >> 4) - shift) * w[16 + i + l];
            if (kind == QS_KIND_Q4_1) {
                uint16_t hm;
                memcpy(&hm, p + 2, 2);
                float ws = 0.0f;
                for (int i = 0; i < 32; i++) ws += w[i];
                total += qs_half_to_float(hm) * ws;
            }
            p += head + 16;
        }
        total += d * (((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])));
    }
    return total;
}

static float dot_blocks_portable(const uint8_t *p, const float *w, int64_t dim, int kind, int32_t offset) {
    (void)offset;
    return dot_blocks_body(p, w, dim, kind);
}

#if QS_X86
/* AVX2 + F16C: a block's 32 values widen to four float vectors against its 32 weights; the block
 * scale multiplies the block's vector of partial sums into the running total (q4_1: + m_b times the
 * block's weights); one horizontal sum per row. Within float32 rounding of the portable order. */
QS_TARGET_AVX2 static inline __m256 cvt8(__m128i b) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)); }
QS_TARGET_AVX2 static inline __m256 cvtu8(__m128i b) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)); }

QS_TARGET_AVX2 static float dot_blocks_avx2(const uint8_t *p, const float *w, int64_t dim, int kind, int32_t offset) {
    (void)offset;
    const int64_t blocks = dim / 32;
    __m256 total = _mm256_setzero_ps(), mtotal = _mm256_setzero_ps();
    uint16_t h;
    if (kind == QS_KIND_Q8_0) {
        for (int64_t b = 0; b < blocks; b++, w += 32, p += 34) {
            memcpy(&h, p, 2);
            const __m128i lo = _mm_loadu_si128((const __m128i *)(p + 2));
            const __m128i hi = _mm_loadu_si128((const __m128i *)(p + 18));
            __m256 acc = _mm256_mul_ps(cvt8(lo), _mm256_loadu_ps(w));
            acc = _mm256_fmadd_ps(cvt8(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(w + 8), acc);
            acc = _mm256_fmadd_ps(cvt8(hi), _mm256_loadu_ps(w + 16), acc);
            acc = _mm256_fmadd_ps(cvt8(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(w + 24), acc);
            total = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(h)), acc, total);
        }
    } else {
        const int head = kind == QS_KIND_Q4_1 ? 4 : 2;
        const __m256 shift = _mm256_set1_ps(kind == QS_KIND_Q4_0 ? 8.0f : 0.0f);
        const __m128i low = _mm_set1_epi8(0x0f);
        for (int64_t b = 0; b < blocks; b++, w += 32, p += head + 16) {
            memcpy(&h, p, 2);
            const __m128i v = _mm_loadu_si128((const __m128i *)(p + head));
            const __m128i lo = _mm_and_si128(v, low), hi = _mm_and_si128(_mm_srli_epi16(v, 4), low);
            const __m256 w0 = _mm256_loadu_ps(w), w1 = _mm256_loadu_ps(w + 8), w2 = _mm256_loadu_ps(w + 16),
                         w3 = _mm256_loadu_ps(w + 24);
            __m256 acc = _mm256_mul_ps(_mm256_sub_ps(cvtu8(lo), shift), w0);
            acc = _mm256_fmadd_ps(_mm256_sub_ps(cvtu8(_mm_srli_si128(lo, 8)), shift), w1, acc);
            acc = _mm256_fmadd_ps(_mm256_sub_ps(cvtu8(hi), shift), w2, acc);
            acc = _mm256_fmadd_ps(_mm256_sub_ps(cvtu8(_mm_srli_si128(hi, 8)), shift), w3, acc);
            total = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(h)), acc, total);
            if (kind == QS_KIND_Q4_1) {
                memcpy(&h, p + 2, 2);
                const __m256 ws = _mm256_add_ps(_mm256_add_ps(w0, w1), _mm256_add_ps(w2, w3));
                mtotal = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(h)), ws, mtotal);
            }
        }
    }
    total = _mm256_add_ps(total, mtotal);
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(total), _mm256_extractf128_ps(total, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    return _mm_cvtss_f32(s4);
}
#endif

typedef float (*dot_fn)(const uint8_t *, const float *, int64_t, int, int32_t);

typedef struct {
    const qs_segments *segs;
    const int64_t *rows;
    const float *weights;
    float *out;
    int64_t i0, i1, c, dim; /* a range of the flattened (query, candidate) index */
    int kind;
    int32_t offset;
    dot_fn dot;
} rescore_job;

static const uint8_t *row_ptr(const qs_segments *segs, int64_t row) {
    int64_t lo = 0, hi = segs->count; /* last segment with starts[i] <= row */
    while (hi - lo > 1) {
        int64_t mid = (lo + hi) / 2;
        if (segs->starts[mid] <= row)
            lo = mid;
        else
            hi = mid;
    }
    return segs->base[lo] + (row - segs->starts[lo]) * segs->row_bytes;
}

static void *rescore_main(void *arg) {
    const rescore_job *j = (const rescore_job *)arg;
    for (int64_t i = j->i0; i < j->i1; i++) {
        const int64_t row = j->rows[i];
        const float *w = j->weights + (i / j->c) * j->dim;
        j->out[i] = row < 0 ? NAN : j->dot(row_ptr(j->segs, row), w, j->dim, j->kind, j->offset);
    }
    return NULL;
}

int qs_rescore(const qs_segments *segs, const int64_t *rows, int64_t nq, int64_t c, const float *weights,
               int64_t dim, int kind, int32_t offset, int isa, int nthreads, float *out) {
    dot_fn dot = dot_portable;
#if QS_X86
    if (isa == QS_ISA_AVX512)
        dot = dot_avx512;
    else if (isa == QS_ISA_AVX2)
        dot = dot_avx2;
#else
    (void)isa;
#endif
    if (kind >= QS_KIND_Q8_0) {
        dot = dot_blocks_portable;
#if QS_X86
        if (isa == QS_ISA_AVX512 || isa == QS_ISA_AVX2) dot = dot_blocks_avx2;
#endif
    }
    /* threads: split the candidates, each thread getting at least ~256K multiply-adds and 64 rows
     * (measured: a second thread saves only ~15% of the page-fault time of one query's 100 rows) */
    const int64_t total = nq * c;
    const int64_t min_rows = dim > 4096 ? 64 : ((int64_t)256 << 10) / (dim > 0 ? dim : 1);
    int64_t by_rows = total / min_rows;
    int nt = nthreads < 1 ? 1 : nthreads > 64 ? 64 : nthreads;
    if (by_rows < nt) nt = by_rows > 1 ? (int)by_rows : 1;
    rescore_job *jobs = (rescore_job *)calloc((size_t)nt, sizeof(rescore_job));
    if (!jobs) return -1;
    for (int t = 0; t < nt; t++) {
        rescore_job j = {segs, rows, weights, out, total * t / nt, total * (t + 1) / nt, c, dim, kind, offset, dot};
        jobs[t] = j;
    }
    qs_parallel(rescore_main, jobs, sizeof(rescore_job), nt);
    free(jobs);
    return 0;
}

/* ---------------------------------------------------------------- block formats: candidate scan */

/* Top-k of ggml block rows by their dot product with each query's weights (nq, dim) float32 (dim a
 * multiple of 32): the scores of qs_rescore (the same per-row function), kept on the shared scan
 * driver's heaps (larger is better, ties to the smaller row), so a single query needs no (nq, n)
 * score array and no top-k outside. */
typedef struct {
    const float *weights;
    int64_t dim;
    int kind;
    dot_fn dot;
} blocks_ctx;

static void blocks_direct(const qs_scan *s, int64_t b0, int64_t nblk, int64_t q0, int64_t q1, qs_heaps *h) {
    const blocks_ctx *x = (const blocks_ctx *)s->ctx;
    for (int64_t q = q0; q < q1; q++) {
        const float *w = x->weights + (s->q0 + q) * x->dim;
        uint64_t thr = h->thr[q];
        const uint8_t *p = s->codes + b0 * s->stride;
        for (int64_t i = 0; i < nblk; i++, p += s->stride) {
            uint64_t key = qs_score_key(x->dot(p, w, x->dim, x->kind, 0) + 0.0f); /* + 0: -0 becomes +0 */
            if (key < thr) {
                qs_offer(h, s, q, 1u, &key, b0 + i);
                thr = h->thr[q];
            }
        }
    }
}

int qs_blocks_topk(const uint8_t *codes, const uint8_t *valid, int64_t n, int64_t stride, const float *weights,
                   int64_t nq, int64_t dim, int kind, int64_t k, int isa, int nthreads, float *out_scores,
                   int64_t *out_rows) {
    blocks_ctx ctx = {weights, dim, kind, dot_blocks_portable};
#if QS_X86
    if (isa == QS_ISA_AVX512 || isa == QS_ISA_AVX2) ctx.dot = dot_blocks_avx2;
#else
    (void)isa;
#endif
    qs_scan s = {codes, valid, NULL, NULL, n, nq, stride, (stride + 7) / 8, k, stride, 1, ~(uint64_t)0, 0, &ctx};
    uint32_t *keys = (uint32_t *)out_scores;
    /* work per row for the thread count: ~2 popcount bytes per multiply-add */
    const int status = qs_scan_topk(&s, blocks_direct, NULL, nthreads, 0, 2 * dim, keys, out_rows);
    for (int64_t i = 0; i < nq * k; i++) {
        uint32_t key;
        memcpy(&key, out_scores + i, 4);
        out_scores[i] = key == QS_SENTINEL_DIST ? NAN : qs_key_score(key);
    }
    return status;
}
