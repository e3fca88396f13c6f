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

#endif
