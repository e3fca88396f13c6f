/* x86 kernels of the bit-plane scan (see planes.c), on the transposed block of the shared driver:
 * one vector holds word w of plane p of 8 (AVX-512) or 4 (AVX2) consecutive rows, a query word is
 * a broadcast, so every row's counts accumulate lane-wise with no horizontal reduction.
 *
 * Per row and plane: pop = popcount(b) (query independent: once per block column) and
 * sum = sum_j 2^j popcount(U_j & b), by Horner over j (sum = 2 sum + count_j), so no shifts. The
 * integers are converted to double, combined as in planes.c and rounded to float32 once. */
#include "qs_kernels.h"

#if QS_X86
#include <immintrin.h>

#include "simd_x86.h"

/* ================================================================ AVX-512 VPOPCNTDQ */

/* int64 lanes below 2^31 to double */
QS_TARGET_AVX512 INLINE __m512d to_pd512(__m512i v) { return _mm512_cvtepi32_pd(_mm512_cvtepi64_epi32(v)); }

/* score = scale * (ip + qoff) + bias for 8 rows, rounded to float32, keyed and offered to q's heap */
QS_TARGET_AVX512 INLINE void offer8(const qs_scan *s, const qs_planes_ctx *x, qs_heaps *h, int64_t q, __m512d ip,
                                    __m512d scale, __m512d bias, __mmask8 lanes, int64_t row0) {
    const __m512d score =
        _mm512_add_pd(_mm512_mul_pd(scale, _mm512_add_pd(ip, _mm512_set1_pd(x->qoff[s->q0 + q]))), bias);
    const __m256i b = _mm256_castps_si256(_mm256_add_ps(_mm512_cvtpd_ps(score), _mm256_setzero_ps()));
    const __m256i key =
        _mm256_xor_si256(b, _mm256_andnot_si256(_mm256_srai_epi32(b, 31), _mm256_set1_epi32(0x7fffffff)));
    const __mmask8 m = _mm256_mask_cmplt_epu32_mask(lanes, key, _mm256_set1_epi32((int)(uint32_t)h->thr[q]));
    if (m) {
        uint64_t buf[8];
        _mm512_storeu_si512(buf, _mm512_cvtepu32_epi64(key));
        qs_offer(h, s, q, m, buf, row0);
    }
}

QS_TARGET_AVX512 INLINE void row_factors(const qs_planes_ctx *x, int64_t row0, __mmask8 lanes, __m512d *scale,
                                         __m512d *bias) {
    *scale = x->row_scale ? _mm512_cvtps_pd(_mm256_maskz_loadu_ps(lanes, x->row_scale + row0)) : _mm512_set1_pd(1.0);
    *bias = x->row_bias ? _mm512_cvtps_pd(_mm256_maskz_loadu_ps(lanes, x->row_bias + row0)) : _mm512_setzero_pd();
}

/* ---------------------------------------------------------------- row-major ("direct")
 * For one to a few queries, where transposing each block would cost more than the scan: a zmm
 * holds 64 bytes of one row's plane, Horner over the query bits runs lane-wise, the row's popcount
 * rides in the high 32 bits of the same lanes, and one transposing add tree per 8 rows (reduce8)
 * gives every row's (sum, pop). Planes up to 128 bytes (1024 bits); wider ones use the scalar kernel. */

#define PLANE_NZ_MAX 2

QS_TARGET_AVX512 INLINE __m512i row_counts(const uint8_t *p, const __m512i *uv, const int B, const int64_t nz,
                                           __mmask64 tail, __m512i tailvec, const int safe) {
    __m512i acc = _mm512_setzero_si512();
    for (int64_t z = 0; z < nz; z++) {
        __m512i v;
        if (z < nz - 1)
            v = _mm512_loadu_si512(p + 64 * z);
        else /* a plain load where the full width is inside the array: byte-masked loads are slow */
            v = _mm512_and_si512(safe ? _mm512_loadu_si512(p + 64 * z) : _mm512_maskz_loadu_epi8(tail, p + 64 * z),
                                 tailvec);
        __m512i hz = _mm512_setzero_si512();
        for (int j = B - 1; j >= 0; j--)
            hz = _mm512_add_epi64(_mm512_add_epi64(hz, hz), _mm512_popcnt_epi64(_mm512_and_si512(v, uv[j * nz + z])));
        acc = _mm512_add_epi64(acc, _mm512_add_epi64(hz, _mm512_slli_epi64(_mm512_popcnt_epi64(v), 32)));
    }
    return acc;
}

QS_TARGET_AVX512 INLINE void direct512(const qs_scan *s, int64_t b0, int64_t nblk, int64_t q0, int64_t q1,
                                       qs_heaps *h, const int64_t nz) {
    const qs_planes_ctx *x = (const qs_planes_ctx *)s->ctx;
    const int64_t nb = s->nb, W = s->W, P = s->planes, stride = s->stride;
    const int B = x->qbits;
    const int64_t rest = nb - 64 * (nz - 1);
    const __mmask64 tail = rest == 64 ? ~(__mmask64)0 : (((__mmask64)1 << rest) - 1);
    /* the plane's bytes, less the padding bits of its last word */
    const int64_t last_lane = (W - 1) - 8 * (nz - 1);
    const __m512i tailvec = _mm512_mask_and_epi64(_mm512_maskz_mov_epi8(tail, _mm512_set1_epi8(-1)),
                                                  (__mmask8)(1u << last_lane),
                                                  _mm512_maskz_mov_epi8(tail, _mm512_set1_epi8(-1)),
                                                  _mm512_set1_epi64((long long)s->last_mask));
    /* rows whose every plane can be read at full width without passing the end of the array */
    const int64_t reach = (P - 1) * nb + 64 * nz, total = s->n * stride;
    const int64_t safe_rows = total >= reach ? (total - reach) / stride + 1 : 0;
    const __m512i low32 = _mm512_set1_epi64(0xffffffffLL);
    for (int64_t q = q0; q < q1; q++) {
        const int64_t qa = s->q0 + q;
        const uint64_t *u = x->uwords + qa * B * W;
        __m512i uv[QS_QUERY_BITS_MAX * PLANE_NZ_MAX];
        for (int j = 0; j < B; j++)
            for (int64_t z = 0; z < nz; z++) {
                const int64_t words = W - 8 * z < 8 ? W - 8 * z : 8;
                uv[j * nz + z] = _mm512_maskz_loadu_epi64((__mmask8)((1u << words) - 1), u + j * W + 8 * z);
            }
        const __m512d lo = _mm512_set1_pd(x->lo[qa]), delta = _mm512_set1_pd(x->delta[qa]);
        for (int64_t c = 0; c < nblk; c += 8) {
            const int64_t left = nblk - c < 8 ? nblk - c : 8;
            const __mmask8 lanes = (__mmask8)((1u << left) - 1);
            const uint8_t *p = s->codes + (b0 + c) * stride;
            __m512d ip = _mm512_setzero_pd();
            const int safe = left == 8 && b0 + c + 8 <= safe_rows;
            for (int64_t pl = 0; pl < P; pl++) {
                __m512i r[8];
                if (safe)
                    for (int l = 0; l < 8; l++) r[l] = row_counts(p + l * stride + pl * nb, uv, B, nz, tail, tailvec, 1);
                else
                    for (int l = 0; l < 8; l++)
                        r[l] = l < left ? row_counts(p + l * stride + pl * nb, uv, B, nz, tail, tailvec, 0)
                                        : _mm512_setzero_si512();
                const __m512i both = reduce8(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]);
                const __m512d sum = to_pd512(_mm512_and_si512(both, low32));
                const __m512d pop = to_pd512(_mm512_srli_epi64(both, 32));
                const __m512d est = _mm512_add_pd(_mm512_mul_pd(lo, pop), _mm512_mul_pd(delta, sum));
                ip = _mm512_add_pd(ip, _mm512_mul_pd(_mm512_set1_pd(x->coef[pl]), est));
            }
            __m512d scale, bias;
            row_factors(x, b0 + c, lanes, &scale, &bias);
            offer8(s, x, h, q, ip, scale, bias, lanes, b0 + c);
        }
    }
}

QS_TARGET_AVX512 void qs_planes_direct_avx512(const qs_scan *s, int64_t b0, int64_t nblk, int64_t q0, int64_t q1,
                                              qs_heaps *h) {
    const int64_t nz = (s->nb + 63) / 64;
    if (nz == 1)
        direct512(s, b0, nblk, q0, q1, h, 1);
    else if (nz == 2)
        direct512(s, b0, nblk, q0, q1, h, 2);
    else
        qs_planes_direct_popcnt(s, b0, nblk, q0, q1, h);
}

/* ---------------------------------------------------------------- transposed ("blocked") */

QS_TARGET_AVX512 INLINE __m512d plane_sum512(const uint64_t *base, int64_t bpad, const uint64_t *u, const int64_t W,
                                             const int B) {
    __m512i sum = _mm512_setzero_si512();
    for (int j = B - 1; j >= 0; j--) {
        const uint64_t *uj = u + j * W;
        __m512i cnt = _mm512_setzero_si512();
        for (int64_t w = 0; w < W; w++)
            cnt = _mm512_add_epi64(
                cnt, _mm512_popcnt_epi64(_mm512_and_si512(_mm512_loadu_si512(base + w * bpad),
                                                          _mm512_set1_epi64((long long)uj[w]))));
        sum = _mm512_add_epi64(_mm512_add_epi64(sum, sum), cnt);
    }
    return to_pd512(sum);
}

QS_TARGET_AVX512 INLINE void blocked512(const qs_scan *s, int64_t b0, int64_t nblk, const uint64_t *T, int64_t bpad,
                                        int64_t q0, int64_t q1, qs_heaps *h, const int64_t W) {
    const qs_planes_ctx *x = (const qs_planes_ctx *)s->ctx;
    const int64_t P = s->planes;
    const int B = x->qbits;
    for (int64_t c = 0; c < nblk; c += 8) {
        const int64_t left = nblk - c;
        const __mmask8 lanes = left >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << left) - 1);
        const uint64_t *col = T + c;
        __m512d pop[QS_PLANES_MAX];
        for (int64_t pl = 0; pl < P; pl++) {
            __m512i acc = _mm512_setzero_si512();
            for (int64_t w = 0; w < W; w++)
                acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_loadu_si512(col + (pl * W + w) * bpad)));
            pop[pl] = to_pd512(acc);
        }
        __m512d scale, bias;
        row_factors(x, b0 + c, lanes, &scale, &bias);
        for (int64_t q = q0; q < q1; q++) {
            const int64_t qa = s->q0 + q;
            const uint64_t *u = x->uwords + qa * B * W;
            const __m512d lo = _mm512_set1_pd(x->lo[qa]), delta = _mm512_set1_pd(x->delta[qa]);
            __m512d ip = _mm512_setzero_pd();
            for (int64_t pl = 0; pl < P; pl++) {
                const __m512d sum = plane_sum512(col + pl * W * bpad, bpad, u, W, B);
                const __m512d est = _mm512_add_pd(_mm512_mul_pd(lo, pop[pl]), _mm512_mul_pd(delta, sum));
                ip = _mm512_add_pd(ip, _mm512_mul_pd(_mm512_set1_pd(x->coef[pl]), est));
            }
            offer8(s, x, h, q, ip, scale, bias, lanes, b0 + c);
        }
    }
}

QS_TARGET_AVX512 void qs_planes_blocked_avx512(const qs_scan *s, int64_t b0, int64_t nblk, const uint64_t *T,
                                               int64_t bpad, int64_t q0, int64_t q1, qs_heaps *h) {
    /* constant word counts for the common widths (384 and 1024 bits) so the loops unroll */
    if (s->W == 6)
        blocked512(s, b0, nblk, T, bpad, q0, q1, h, 6);
    else if (s->W == 16)
        blocked512(s, b0, nblk, T, bpad, q0, q1, h, 16);
    else
        blocked512(s, b0, nblk, T, bpad, q0, q1, h, s->W);
}

/* ================================================================ AVX2
 * No vector popcount: nibble-table popcounts (vpshufb) into byte counters, at most 8 per word, so
 * 31 words fit in a byte before vpsadbw widens them. Four rows per ymm. */

QS_TARGET_AVX2 INLINE __m256i popcnt_bytes(__m256i v, __m256i lut, __m256i low) {
    const __m256i lo = _mm256_and_si256(v, low), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
    return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

/* sum over the words of popcount(word & mask_w) per lane (all_ones: no mask) */
QS_TARGET_AVX2 INLINE __m256i count256(const uint64_t *base, int64_t bpad, const uint64_t *u, int64_t W,
                                       __m256i lut, __m256i low) {
    const __m256i zero = _mm256_setzero_si256();
    __m256i cnt = zero;
    for (int64_t w = 0; w < W;) {
        const int64_t end = W - w > 31 ? w + 31 : W;
        __m256i bytes = zero;
        for (; w < end; w++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(base + w * bpad));
            if (u) v = _mm256_and_si256(v, _mm256_set1_epi64x((long long)u[w]));
            bytes = _mm256_add_epi8(bytes, popcnt_bytes(v, lut, low));
        }
        cnt = _mm256_add_epi64(cnt, _mm256_sad_epu8(bytes, zero));
    }
    return cnt;
}

/* int64 lanes below 2^31 to double */
QS_TARGET_AVX2 INLINE __m256d to_pd256(__m256i v) {
    const __m256i packed = _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
    return _mm256_cvtepi32_pd(_mm256_castsi256_si128(packed));
}

QS_TARGET_AVX2 void qs_planes_blocked_avx2(const qs_scan *s, int64_t b0, int64_t nblk, const uint64_t *T,
                                           int64_t bpad, int64_t q0, int64_t q1, qs_heaps *h) {
    const qs_planes_ctx *x = (const qs_planes_ctx *)s->ctx;
    const int64_t W = s->W, P = s->planes;
    const int B = x->qbits;
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3,
                                         1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    for (int64_t c = 0; c < nblk; c += 4) {
        const int64_t left = nblk - c < 4 ? nblk - c : 4;
        const unsigned lanes = (1u << left) - 1;
        const uint64_t *col = T + c;
        __m256d pop[QS_PLANES_MAX];
        for (int64_t pl = 0; pl < P; pl++) pop[pl] = to_pd256(count256(col + pl * W * bpad, bpad, NULL, W, lut, low));
        float sc[4] = {1.0f, 1.0f, 1.0f, 1.0f}, bi[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int64_t l = 0; l < left; l++) {
            if (x->row_scale) sc[l] = x->row_scale[b0 + c + l];
            if (x->row_bias) bi[l] = x->row_bias[b0 + c + l];
        }
        const __m256d scale = _mm256_cvtps_pd(_mm_loadu_ps(sc)), bias = _mm256_cvtps_pd(_mm_loadu_ps(bi));
        for (int64_t q = q0; q < q1; q++) {
            const int64_t qa = s->q0 + q;
            const uint64_t *u = x->uwords + qa * B * W;
            const __m256d lo = _mm256_set1_pd(x->lo[qa]), delta = _mm256_set1_pd(x->delta[qa]);
            __m256d ip = _mm256_setzero_pd();
            for (int64_t pl = 0; pl < P; pl++) {
                __m256i sum = _mm256_setzero_si256();
                for (int j = B - 1; j >= 0; j--)
                    sum = _mm256_add_epi64(_mm256_add_epi64(sum, sum),
                                           count256(col + pl * W * bpad, bpad, u + j * W, W, lut, low));
                const __m256d est = _mm256_add_pd(_mm256_mul_pd(lo, pop[pl]), _mm256_mul_pd(delta, to_pd256(sum)));
                ip = _mm256_add_pd(ip, _mm256_mul_pd(_mm256_set1_pd(x->coef[pl]), est));
            }
            const __m256d score =
                _mm256_add_pd(_mm256_mul_pd(scale, _mm256_add_pd(ip, _mm256_set1_pd(x->qoff[qa]))), bias);
            offer_pd4(h, s, q, score, lanes, b0 + c);
        }
    }
}

#endif
