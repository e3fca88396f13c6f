/* x86 Hamming kernels: AVX-512 VPOPCNTDQ (row-major and transposed) and AVX2 (transposed,
 * nibble-table popcount). Each function carries its own target attribute; nothing here runs unless
 * qs_isa_supported() said the CPU has the instructions. */
#include "qs_kernels.h"

#if QS_X86
#include <immintrin.h>

#include "simd_x86.h"


/* ================================================================ AVX-512, row-major ("direct")
 * One code = nz zmm loads; eight codes' per-lane popcounts are reduced to one vector of eight
 * distances by a transposing add tree, compared with the heap threshold in one instruction. Used
 * for one to a few queries, where the scan is bound by memory bandwidth.
 * Byte-masked loads are slow here (measured 1.5x slower on 64-byte rows on Zen 5), so a row is read
 * with plain loads and its bytes beyond nb are cleared with an AND; only the last rows of the array,
 * where a full-width read could cross its end, use masked loads. */

#define NZ_MAX 32 /* codes up to 2048 bytes stay in registers / L1; wider ones use the scalar kernel */

/* Per-lane popcounts of one code against the query. `safe`: the full nz * 64 bytes may be read. */
QS_TARGET_AVX512 INLINE __m512i code_popcounts(const uint8_t *p, const __m512i *qv, const int64_t nz,
                                               __mmask64 tail, __m512i tailvec, const int full,
                                               const int safe) {
    __m512i acc = _mm512_setzero_si512();
    for (int64_t z = 0; z < nz; z++) {
        __m512i v;
        if (z == nz - 1 && !full)
            v = safe ? _mm512_and_si512(_mm512_loadu_si512(p + 64 * z), tailvec)
                     : _mm512_maskz_loadu_epi8(tail, p + 64 * z);
        else
            v = _mm512_loadu_si512(p + 64 * z);
        acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(v, qv[z])));
    }
    return acc;
}

QS_TARGET_AVX512 INLINE void direct_query(const qs_scan *s, int64_t b0, int64_t nblk, int64_t q, qs_heaps *h,
                                          const int64_t nz, const int full) {
    const int64_t nb = s->nb;
    const int64_t rest = nb - 64 * (nz - 1);
    const __mmask64 tail = rest == 64 ? ~(__mmask64)0 : (((__mmask64)1 << rest) - 1);
    const __m512i tailvec = _mm512_maskz_mov_epi8(tail, _mm512_set1_epi8(-1));
    /* rows whose full-width read ends inside the array */
    const int64_t span = 64 * nz, total = s->n * nb;
    const int64_t safe_rows = total >= span ? (total - span) / nb + 1 : 0;
    __m512i qv[NZ_MAX];
    const uint8_t *qp = s->qbytes + q * nb;
    for (int64_t z = 0; z < nz; z++)
        qv[z] = z == nz - 1 ? _mm512_maskz_loadu_epi8(tail, qp + 64 * z) : _mm512_loadu_si512(qp + 64 * z);
    uint64_t thr = h->thr[q];
    const uint8_t *p = s->codes + b0 * nb;
    int64_t i = 0;
    for (; i + 8 <= nblk && b0 + i + 8 <= safe_rows; i += 8, p += 8 * nb) {
        __m512i d = reduce8(code_popcounts(p, qv, nz, tail, tailvec, full, 1),
                            code_popcounts(p + nb, qv, nz, tail, tailvec, full, 1),
                            code_popcounts(p + 2 * nb, qv, nz, tail, tailvec, full, 1),
                            code_popcounts(p + 3 * nb, qv, nz, tail, tailvec, full, 1),
                            code_popcounts(p + 4 * nb, qv, nz, tail, tailvec, full, 1),
                            code_popcounts(p + 5 * nb, qv, nz, tail, tailvec, full, 1),
                            code_popcounts(p + 6 * nb, qv, nz, tail, tailvec, full, 1),
                            code_popcounts(p + 7 * nb, qv, nz, tail, tailvec, full, 1));
        __mmask8 m = _mm512_cmplt_epu64_mask(d, _mm512_set1_epi64((long long)thr));
        if (m) {
            uint64_t buf[8];
            _mm512_storeu_si512(buf, d);
            qs_offer(h, s, q, m, buf, b0 + i);
            thr = h->thr[q];
        }
    }
    for (; i < nblk; i += 8, p += 8 * nb) { /* the last rows: masked loads, partial groups */
        const int64_t left = nblk - i < 8 ? nblk - i : 8;
        __m512i v[8];
        for (int l = 0; l < 8; l++)
            v[l] = l < left ? code_popcounts(p + l * nb, qv, nz, tail, tailvec, 0, 0) : _mm512_setzero_si512();
        __m512i d = reduce8(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
        __mmask8 m = _mm512_mask_cmplt_epu64_mask((__mmask8)((1u << left) - 1), d,
                                                  _mm512_set1_epi64((long long)thr));
        if (m) {
            uint64_t buf[8];
            _mm512_storeu_si512(buf, d);
            qs_offer(h, s, q, m, buf, b0 + i);
            thr = h->thr[q];
        }
    }
}

QS_TARGET_AVX512 void qs_direct_avx512(const qs_scan *s, int64_t b0, int64_t nblk, int64_t q0, int64_t q1,
                                       qs_heaps *h) {
    const int64_t nz = (s->nb + 63) / 64;
    const int full = s->nb % 64 == 0;
    if (nz > NZ_MAX) {
        qs_direct_popcnt(s, b0, nblk, q0, q1, h);
        return;
    }
    /* constant nz for the common widths (<= 512 and <= 1024 bits) so the loops unroll */
    for (int64_t q = q0; q < q1; q++) {
        if (nz == 1 && full)
            direct_query(s, b0, nblk, q, h, 1, 1);
        else if (nz == 1)
            direct_query(s, b0, nblk, q, h, 1, 0);
        else if (nz == 2 && full)
            direct_query(s, b0, nblk, q, h, 2, 1);
        else if (nz == 2)
            direct_query(s, b0, nblk, q, h, 2, 0);
        else
            direct_query(s, b0, nblk, q, h, nz, 0);
    }
}

/* ================================================================ AVX-512, transposed ("blocked")
 * The block is word-major, so one zmm holds word w of eight consecutive codes and a query word is
 * a broadcast: distances of eight codes accumulate lane-wise with no horizontal reduction, for any
 * number of words per code (6 at 384 bits, 16 at 1024). Q queries share every code load. */

QS_TARGET_AVX512 INLINE void blocked_queries(const qs_scan *s, int64_t b0, int64_t nblk, const uint64_t *T,
                                             int64_t bpad, int64_t q0, qs_heaps *h, const int Q) {
    const int64_t W = s->W;
    const uint64_t *qw = s->qwords + q0 * W;
    for (int64_t c = 0; c < nblk; c += 8) {
        __m512i acc[8];
        for (int j = 0; j < Q; j++) acc[j] = _mm512_setzero_si512();
        const uint64_t *col = T + c;
        for (int64_t w = 0; w < W; w++) {
            const __m512i v = _mm512_loadu_si512(col + w * bpad);
            for (int j = 0; j < Q; j++)
                acc[j] = _mm512_add_epi64(
                    acc[j], _mm512_popcnt_epi64(_mm512_xor_si512(v, _mm512_set1_epi64((long long)qw[j * W + w]))));
        }
        const int64_t left = nblk - c;
        const __mmask8 lanes = left >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << left) - 1);
        for (int j = 0; j < Q; j++) {
            __mmask8 m = _mm512_mask_cmplt_epu64_mask(lanes, acc[j], _mm512_set1_epi64((long long)h->thr[q0 + j]));
            if (m) {
                uint64_t buf[8];
                _mm512_storeu_si512(buf, acc[j]);
                qs_offer(h, s, q0 + j, m, buf, b0 + c);
            }
        }
    }
}

QS_TARGET_AVX512 void qs_blocked_avx512(const qs_scan *s, int64_t b0, int64_t nblk, const uint64_t *T,
                                        int64_t bpad, int64_t q0, int64_t q1, qs_heaps *h) {
    int64_t q = q0;
    for (; q + 8 <= q1; q += 8) blocked_queries(s, b0, nblk, T, bpad, q, h, 8);
    if (q + 4 <= q1) {
        blocked_queries(s, b0, nblk, T, bpad, q, h, 4);
        q += 4;
    }
    if (q + 2 <= q1) {
        blocked_queries(s, b0, nblk, T, bpad, q, h, 2);
        q += 2;
    }
    if (q < q1) blocked_queries(s, b0, nblk, T, bpad, q, h, 1);
}

/* ================================================================ memory read probe
 * XOR of every 64-byte line, four independent accumulators: one sequential read of a buffer as
 * fast as one core can stream it (benchmarks/kernels.py compares the single-query scan with it). */

QS_TARGET_AVX512 uint64_t qs_stream_xor_avx512(const uint8_t *p, size_t bytes) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 256 <= bytes; i += 256) {
        a0 = _mm512_xor_si512(a0, _mm512_loadu_si512(p + i));
        a1 = _mm512_xor_si512(a1, _mm512_loadu_si512(p + i + 64));
        a2 = _mm512_xor_si512(a2, _mm512_loadu_si512(p + i + 128));
        a3 = _mm512_xor_si512(a3, _mm512_loadu_si512(p + i + 192));
    }
    __m512i a = _mm512_xor_si512(_mm512_xor_si512(a0, a1), _mm512_xor_si512(a2, a3));
    uint64_t lanes[8], x = 0;
    _mm512_storeu_si512(lanes, a);
    for (int l = 0; l < 8; l++) x ^= lanes[l];
    for (; i < bytes; i++) x ^= p[i];
    return x;
}

/* ================================================================ AVX2, row-major ("direct")
 * One query over rows as stored, the single-query path of CPUs without AVX-512. The scan must keep
 * up with memory (one core streams ~13-20 GB/s here, a 128-byte code every ~7-10 ns), so the work
 * per row is split between the two kinds of execution unit, which run in parallel: the first
 * ~half of a code's words are counted as ymm vectors (nibble-table popcount, vpshufb, on the
 * vector pipes), the rest with scalar POPCNT (on the integer pipes), the query held in registers
 * for both. Four rows at a time; their four distances meet the heap threshold in one compare.
 * Measured (1M x 1024 bits, one thread, CPU time, Zen 3): all-scalar 9.5 ms, all-vector 8.2 ms,
 * split 8.1 ms, split + software prefetch 6.9 ms against 6.5 ms for reading the codes once. */

#define PREFETCH_AHEAD 4096 /* bytes ahead of the row being counted */

QS_TARGET_AVX2 INLINE __m256i nibble_popcount(__m256i x, __m256i lut, __m256i low) {
    return _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(x, low)),
                           _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(x, 4), low)));
}

/* Vector part: words [0, 4 V) as V ymm; scalar part: words [4 V, W), the last one zero padded
 * when nb % 8 != 0 (qs_word), so no load reaches past a row. Byte counters hold at most 8 V. */
QS_TARGET_AVX2 INLINE void direct2_query(const qs_scan *s, int64_t b0, int64_t nblk, int64_t q, qs_heaps *h,
                                         const int64_t W, const int64_t V, const int full) {
    const int64_t nb = s->nb, nfull = nb / 8;
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3,
                                         1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f), zero = _mm256_setzero_si256();
    const uint8_t *qp = s->qbytes + q * nb;
    const uint64_t *qw = s->qwords + q * W;
    __m256i qv[8];
    for (int64_t z = 0; z < V; z++) qv[z] = _mm256_loadu_si256((const __m256i *)(qp + 32 * z));
    uint64_t thr = h->thr[q];
    const uint8_t *p = s->codes + b0 * nb;
    for (int64_t i = 0; i < nblk; i += 4, p += 4 * nb) {
        const int64_t left = nblk - i < 4 ? nblk - i : 4;
        /* a prefetch never faults, past the array included; 32 W bytes >= 4 rows, a constant trip
         * count for the common widths (unrolled: no loop or bounds test per line) */
        for (int64_t o = 0; o < 32 * W; o += 64) _mm_prefetch((const char *)(p + PREFETCH_AHEAD + o), _MM_HINT_T0);
        __m256i sad[4];
        uint64_t sc[4];
        for (int r = 0; r < 4; r++) {
            sad[r] = zero;
            sc[r] = 0;
            if (r >= left) continue;
            const uint8_t *row = p + r * nb;
            if (V > 0) {
                __m256i acc = zero;
                for (int64_t z = 0; z < V; z++)
                    acc = _mm256_add_epi8(
                        acc, nibble_popcount(_mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(row + 32 * z)),
                                                              qv[z]),
                                             lut, low));
                sad[r] = _mm256_sad_epu8(acc, zero);
            }
            uint64_t d = 0;
            for (int64_t w = 4 * V; w < W; w++)
                d += (uint64_t)__builtin_popcountll((full || w < nfull ? qs_load64(row + 8 * w) : qs_word(row, nb, w)) ^
                                                    qw[w]);
            sc[r] = d;
        }
        /* lane r of d: row r's vector sum (four 64-bit partial sums) + its scalar sum */
        const __m256i t01 = _mm256_add_epi64(_mm256_unpacklo_epi64(sad[0], sad[1]), _mm256_unpackhi_epi64(sad[0], sad[1]));
        const __m256i t23 = _mm256_add_epi64(_mm256_unpacklo_epi64(sad[2], sad[3]), _mm256_unpackhi_epi64(sad[2], sad[3]));
        __m256i d = _mm256_add_epi64(_mm256_permute2x128_si256(t01, t23, 0x20), _mm256_permute2x128_si256(t01, t23, 0x31));
        d = _mm256_add_epi64(d, _mm256_loadu_si256((const __m256i *)sc));
        /* distances < 2^31 and thr <= UINT32_MAX: the signed 64-bit compare is exact */
        const __m256i below = _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)thr), d);
        const unsigned m = (unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(below)) & ((1u << left) - 1);
        if (m) {
            uint64_t buf[4];
            _mm256_storeu_si256((__m256i *)buf, d);
            qs_offer(h, s, q, m, buf, b0 + i);
            thr = h->thr[q];
        }
    }
}

QS_TARGET_AVX2 void qs_direct_avx2(const qs_scan *s, int64_t b0, int64_t nblk, int64_t q0, int64_t q1,
                                   qs_heaps *h) {
    const int64_t W = s->W, nfull = s->nb / 8;
    /* about half the words as vectors, all of them full words; at most 8 ymm (2048 bits) */
    int64_t V = (W + 2) / 8;
    if (4 * V > nfull) V = nfull / 4;
    if (V > 8) V = 8;
    /* constant W and V for the common widths so that the loops unroll and the query stays in
     * registers */
    const int full = s->nb == 8 * W; /* every word whole: no tail test per word */
    for (int64_t q = q0; q < q1; q++) {
        if (full && W == 16 && V == 2)
            direct2_query(s, b0, nblk, q, h, 16, 2, 1);
        else if (full && W == 12 && V == 1)
            direct2_query(s, b0, nblk, q, h, 12, 1, 1);
        else if (full && W == 8 && V == 1)
            direct2_query(s, b0, nblk, q, h, 8, 1, 1);
        else if (full && W == 6 && V == 1)
            direct2_query(s, b0, nblk, q, h, 6, 1, 1);
        else if (full && W == 4 && V == 0)
            direct2_query(s, b0, nblk, q, h, 4, 0, 1);
        else if (full && W == 2 && V == 0)
            direct2_query(s, b0, nblk, q, h, 2, 0, 1);
        else
            direct2_query(s, b0, nblk, q, h, W, V, 0);
    }
}

/* ================================================================ AVX2 memory read probe */

QS_TARGET_AVX2 uint64_t qs_stream_xor_avx2(const uint8_t *p, size_t bytes) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 128 <= bytes; i += 128) {
        a0 = _mm256_xor_si256(a0, _mm256_loadu_si256((const __m256i *)(p + i)));
        a1 = _mm256_xor_si256(a1, _mm256_loadu_si256((const __m256i *)(p + i + 32)));
        a2 = _mm256_xor_si256(a2, _mm256_loadu_si256((const __m256i *)(p + i + 64)));
        a3 = _mm256_xor_si256(a3, _mm256_loadu_si256((const __m256i *)(p + i + 96)));
    }
    __m256i a = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
    uint64_t lanes[4], x = 0;
    _mm256_storeu_si256((__m256i *)lanes, a);
    for (int l = 0; l < 4; l++) x ^= lanes[l];
    for (; i < bytes; i++) x ^= p[i];
    return x;
}


/* ================================================================ AVX2, transposed
 * No vector popcount: count nibbles with a vpshufb table into byte counters (at most 8 per word,
 * so 31 words fit in a byte) and widen them with vpsadbw. Four codes per ymm. */

QS_TARGET_AVX2 INLINE void blocked2_queries(const qs_scan *s, int64_t b0, int64_t nblk, const uint64_t *T,
                                            int64_t bpad, int64_t q0, qs_heaps *h, const int Q) {
    const int64_t W = s->W;
    const uint64_t *qw = s->qwords + q0 * W;
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3,
                                         1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    const __m256i zero = _mm256_setzero_si256();
    /* The nibbles of (code ^ query) are the code's nibbles ^ the query's: the code word is split
     * into its low and high nibbles once, shared by the Q queries, each of which then costs two
     * XORs, two table lookups and two adds (6 vector ops instead of 8). qn[(w * Q + j) * 2 + 0/1]:
     * the low / high nibbles of query j's word w. */
    /* already broadcast to whole vectors: a broadcast from memory in the inner loop costs a
     * shuffle uop on the two pipes that also run the table lookups; a plain load does not */
    __m256i qn[2 * QS_BLOCKED_WMAX * 4];
    for (int64_t w = 0; w < W; w++)
        for (int j = 0; j < Q; j++) {
            qn[(w * Q + j) * 2] = _mm256_set1_epi64x((long long)(qw[j * W + w] & 0x0f0f0f0f0f0f0f0full));
            qn[(w * Q + j) * 2 + 1] = _mm256_set1_epi64x((long long)((qw[j * W + w] >> 4) & 0x0f0f0f0f0f0f0f0full));
        }
    for (int64_t c = 0; c < nblk; c += 4) {
        __m256i tot[4];
        for (int j = 0; j < Q; j++) tot[j] = zero;
        const uint64_t *col = T + c;
        for (int64_t w = 0; w < W;) {
            const int64_t wend = W - w > 31 ? w + 31 : W;
            __m256i acc[4];
            for (int j = 0; j < Q; j++) acc[j] = zero;
            for (; w < wend; w++) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(col + w * bpad));
                const __m256i vlo = _mm256_and_si256(v, low);
                const __m256i vhi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
                const __m256i *qp = qn + w * Q * 2;
                for (int j = 0; j < Q; j++) {
                    __m256i lo = _mm256_xor_si256(vlo, _mm256_load_si256(qp + 2 * j));
                    __m256i hi = _mm256_xor_si256(vhi, _mm256_load_si256(qp + 2 * j + 1));
                    acc[j] = _mm256_add_epi8(
                        acc[j], _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi)));
                }
            }
            for (int j = 0; j < Q; j++) tot[j] = _mm256_add_epi64(tot[j], _mm256_sad_epu8(acc[j], zero));
        }
        const int64_t left = nblk - c;
        const unsigned lanes = left >= 4 ? 0xFu : (1u << left) - 1;
        for (int j = 0; j < Q; j++) {
            __m256i below = _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)h->thr[q0 + j]), tot[j]);
            unsigned m = (unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(below)) & lanes;
            if (m) {
                uint64_t buf[4];
                _mm256_storeu_si256((__m256i *)buf, tot[j]);
                qs_offer(h, s, q0 + j, m, buf, b0 + c);
            }
        }
    }
}

QS_TARGET_AVX2 void qs_blocked_avx2(const qs_scan *s, int64_t b0, int64_t nblk, const uint64_t *T, int64_t bpad,
                                    int64_t q0, int64_t q1, qs_heaps *h) {
    if (s->W > QS_BLOCKED_WMAX) { /* very wide codes: row-major (qs_hamming_topk does not get here) */
        qs_direct_avx2(s, b0, nblk, q0, q1, h);
        return;
    }
    int64_t q = q0;
    for (; q + 4 <= q1; q += 4) blocked2_queries(s, b0, nblk, T, bpad, q, h, 4);
    if (q + 2 <= q1) {
        blocked2_queries(s, b0, nblk, T, bpad, q, h, 2);
        q += 2;
    }
    if (q < q1) blocked2_queries(s, b0, nblk, T, bpad, q, h, 1);
}

#endif
