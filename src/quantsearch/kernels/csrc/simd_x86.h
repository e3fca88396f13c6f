/* Helpers shared by the x86 kernels (included after immintrin.h, inside #if QS_X86). */
#ifndef QS_SIMD_X86_H
#define QS_SIMD_X86_H

#define INLINE static inline __attribute__((always_inline))

/* Eight vectors of per-lane counts -> one vector of their eight lane sums (lane i: sum of s_i). */
QS_TARGET_AVX512 INLINE __m512i reduce8(__m512i s0, __m512i s1, __m512i s2, __m512i s3, __m512i s4,
                                        __m512i s5, __m512i s6, __m512i s7) {
    /* within each 128-bit lane: (s_a pair sum, s_b pair sum) */
    __m512i a01 = _mm512_add_epi64(_mm512_unpacklo_epi64(s0, s1), _mm512_unpackhi_epi64(s0, s1));
    __m512i a23 = _mm512_add_epi64(_mm512_unpacklo_epi64(s2, s3), _mm512_unpackhi_epi64(s2, s3));
    __m512i a45 = _mm512_add_epi64(_mm512_unpacklo_epi64(s4, s5), _mm512_unpackhi_epi64(s4, s5));
    __m512i a67 = _mm512_add_epi64(_mm512_unpacklo_epi64(s6, s7), _mm512_unpackhi_epi64(s6, s7));
    /* fold 128-bit lanes pairwise: 0x88 picks lanes (0, 2 | 0, 2), 0xDD picks (1, 3 | 1, 3) */
    __m512i b0 = _mm512_add_epi64(_mm512_shuffle_i64x2(a01, a23, 0x88), _mm512_shuffle_i64x2(a01, a23, 0xDD));
    __m512i b1 = _mm512_add_epi64(_mm512_shuffle_i64x2(a45, a67, 0x88), _mm512_shuffle_i64x2(a45, a67, 0xDD));
    return _mm512_add_epi64(_mm512_shuffle_i64x2(b0, b1, 0x88), _mm512_shuffle_i64x2(b0, b1, 0xDD));
}

/* Four scores (double, rounded to float as the scalar paths do) offered to query q's heap where their
 * key is below its threshold; ``lanes`` masks the rows that exist, row0 is the first lane's row. The
 * key maps float order onto unsigned order (smaller key, better score); the unsigned compare is a signed one
 * with the top bits flipped. */
QS_TARGET_AVX2 INLINE void offer_pd4(qs_heaps *h, const qs_scan *s, int64_t q, __m256d score, unsigned lanes,
                                     int64_t row0) {
    const __m128i flip = _mm_set1_epi32((int)0x80000000u);
    const __m128i b = _mm_castps_si128(_mm_add_ps(_mm256_cvtpd_ps(score), _mm_setzero_ps()));
    const __m128i key = _mm_xor_si128(b, _mm_andnot_si128(_mm_srai_epi32(b, 31), _mm_set1_epi32(0x7fffffff)));
    const __m128i below = _mm_cmpgt_epi32(_mm_xor_si128(_mm_set1_epi32((int)(uint32_t)h->thr[q]), flip),
                                          _mm_xor_si128(key, flip));
    const unsigned m = (unsigned)_mm_movemask_ps(_mm_castsi128_ps(below)) & lanes;
    if (m) {
        uint32_t k32[4];
        uint64_t buf[4];
        _mm_storeu_si128((__m128i *)k32, key);
        for (int l = 0; l < 4; l++) buf[l] = k32[l];
        qs_offer(h, s, q, m, buf, row0);
    }
}

#endif
