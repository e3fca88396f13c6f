/* Top-k of float query weights against bit-plane codes (asymmetric scoring of binary codes).
 *
 * A code row begins with `planes` bit planes of nb = ceil(dim / 8) bytes (np.packbits order). For
 * plane p, ip_p = <w, bits_p>; ip = sum_p coef[p] * ip_p; score = row_scale * (ip + qoff) +
 * row_bias; larger is better, ties to the smaller row. Keys for the shared heaps map the float32
 * score to a uint32 that orders the other way (qs_score_key), so the Hamming driver runs unchanged.
 *
 * Quantized mode (qbits 1..8): the caller quantizes each query, w ~ lo + delta * u with integer
 * levels u < 2^qbits, and passes the level bit planes U_j; then
 *     <w, b> ~ lo * popcount(b) + delta * sum_j 2^j popcount(U_j & b),
 * two integers per row and plane, combined in double and rounded to float32 once at the end, the
 * same arithmetic as the numpy reference. Exact mode (qbits 0): per-query tables of the sum of the
 * weights of every byte value, one lookup per code byte.
 */
#include <math.h>
#include <stdlib.h>

#include "qs_kernels.h"

#define INLINE static inline __attribute__((always_inline))

INLINE uint32_t row_key(const qs_planes_ctx *x, int64_t row, int64_t qa, double ip) {
    const double scale = x->row_scale ? (double)x->row_scale[row] : 1.0;
    const double bias = x->row_bias ? (double)x->row_bias[row] : 0.0;
    const float f = (float)(scale * (ip + x->qoff[qa]) + bias) + 0.0f; /* + 0: -0 becomes +0 */
    return qs_score_key(f);
}

/* Row-major scan with scalar popcounts (quantized mode); inlined into the portable and the
 * popcnt-targeted copies. */
INLINE void direct_scalar(const qs_scan *s, int64_t b0, int64_t nblk, int64_t q0, int64_t q1, qs_heaps *h) {
    const qs_planes_ctx *x = (const qs_planes_ctx *)s->ctx;
    const int64_t nb = s->nb, W = s->W, P = s->planes, nfull = nb / 8;
    const int B = x->qbits;
    for (int64_t q = q0; q < q1; q++) {
        const int64_t qa = s->q0 + q;
        const uint64_t *u = x->uwords + qa * B * W;
        const double lo = x->lo[qa], delta = x->delta[qa];
        uint64_t thr = h->thr[q];
        const uint8_t *p = s->codes + b0 * s->stride;
        for (int64_t i = 0; i < nblk; i++, p += s->stride) {
            double ip = 0.0;
            for (int64_t pl = 0; pl < P; pl++) {
                const uint8_t *row = p + pl * nb;
                uint64_t pop = 0, sum = 0;
                for (int64_t w = 0; w < W; w++) {
                    uint64_t word = w < nfull ? qs_load64(row + 8 * w) : qs_word(row, nb, w);
                    if (w == W - 1) word &= s->last_mask;
                    pop += (uint64_t)__builtin_popcountll(word);
                    uint64_t horner = 0; /* sum_j 2^j popcount(U_j & word) */
                    for (int j = B - 1; j >= 0; j--)
                        horner = 2 * horner + (uint64_t)__builtin_popcountll(word & u[j * W + w]);
                    sum += horner;
                }
                ip += x->coef[pl] * (lo * (double)pop + delta * (double)sum);
            }
            uint64_t key = row_key(x, b0 + i, qa, ip);
            if (key < thr) {
                qs_offer(h, s, q, 1u, &key, b0 + i);
                thr = h->thr[q];
            }
        }
    }
}

static void direct_portable(const qs_scan *s, int64_t b0, int64_t nblk, int64_t q0, int64_t q1, qs_heaps *h) {
    direct_scalar(s, b0, nblk, q0, q1, h);
}

#if QS_X86
__attribute__((target("popcnt"))) void qs_planes_direct_popcnt(const qs_scan *s, int64_t b0, int64_t nblk,
                                                                int64_t q0, int64_t q1, qs_heaps *h) {
    direct_scalar(s, b0, nblk, q0, q1, h);
}
#endif

/* Transposed block with scalar popcounts: the portable kernel of the AND-term layout (which has
 * no row-major kernel). Word w of plane p of row b0 + i at T[(p * W + w) * bpad + i]. */
static void blocked_portable(const qs_scan *s, int64_t b0, int64_t nblk, const uint64_t *T, int64_t bpad,
                             int64_t q0, int64_t q1, qs_heaps *h) {
    const qs_planes_ctx *x = (const qs_planes_ctx *)s->ctx;
    const int64_t W = s->W, P = s->planes;
    const int B = x->qbits;
    for (int64_t i = 0; i < nblk; i++) {
        for (int64_t q = q0; q < q1; q++) {
            const int64_t qa = s->q0 + q;
            const uint64_t *u = x->uwords + qa * B * W;
            double ip = 0.0;
            for (int64_t pl = 0; pl < P; pl++) {
                uint64_t pop = 0, sum = 0;
                for (int64_t w = 0; w < W; w++) {
                    const uint64_t word = T[(pl * W + w) * bpad + i];
                    pop += (uint64_t)__builtin_popcountll(word);
                    uint64_t horner = 0;
                    for (int j = B - 1; j >= 0; j--)
                        horner = 2 * horner + (uint64_t)__builtin_popcountll(word & u[j * W + w]);
                    sum += horner;
                }
                ip += x->coef[pl] * (x->lo[qa] * (double)pop + x->delta[qa] * (double)sum);
            }
            uint64_t key = row_key(x, b0 + i, qa, ip);
            if (key < h->thr[q]) qs_offer(h, s, q, 1u, &key, b0 + i);
        }
    }
}

/* Exact mode: one table lookup per code byte; bits past dim are not in the tables. */
static void direct_exact(const qs_scan *s, int64_t b0, int64_t nblk, int64_t q0, int64_t q1, qs_heaps *h) {
    const qs_planes_ctx *x = (const qs_planes_ctx *)s->ctx;
    const int64_t nb = s->nb, P = s->planes;
    for (int64_t q = q0; q < q1; q++) {
        const int64_t qa = s->q0 + q;
        const float *tab = x->tables + qa * nb * 256;
        uint64_t thr = h->thr[q];
        const uint8_t *p = s->codes + b0 * s->stride;
        for (int64_t i = 0; i < nblk; i++, p += s->stride) {
            double ip = 0.0;
            for (int64_t pl = 0; pl < P; pl++) {
                const uint8_t *row = p + pl * nb;
                double a = 0.0;
                for (int64_t j = 0; j < nb; j++) a += (double)tab[j * 256 + row[j]];
                ip += x->coef[pl] * a;
            }
            uint64_t key = row_key(x, b0 + i, qa, ip);
            if (key < thr) {
                qs_offer(h, s, q, 1u, &key, b0 + i);
                thr = h->thr[q];
            }
        }
    }
}

/* tables[j * 256 + v] = sum of w[8j + t] over the set bits of v (bit 7 - t is dimension 8j + t) */
static void build_tables(const float *w, int64_t dim, int64_t nb, float *tables) {
    double t[256];
    for (int64_t j = 0; j < nb; j++) {
        t[0] = 0.0;
        for (int v = 1; v < 256; v++) {
            const int bit = __builtin_ctz((unsigned)v);
            const int64_t d = 8 * j + 7 - bit;
            t[v] = t[v & (v - 1)] + (d < dim ? (double)w[d] : 0.0);
        }
        for (int v = 0; v < 256; v++) tables[j * 256 + v] = (float)t[v];
    }
}

/* bits of dim in the last little-endian word of a plane (packbits puts dimension 0 in bit 7) */
static uint64_t plane_last_mask(int64_t dim, int64_t nb, int64_t W) {
    const int64_t bytes = nb - 8 * (W - 1);
    uint64_t mask = bytes == 8 ? ~(uint64_t)0 : (((uint64_t)1 << (8 * bytes)) - 1);
    if (dim % 8) {
        const uint64_t keep = (0xffu << (8 - dim % 8)) & 0xffu;
        mask &= ~((uint64_t)0xff << (8 * (bytes - 1))) | (keep << (8 * (bytes - 1)));
    }
    return mask;
}

int qs_planes_topk(const uint8_t *codes, const uint8_t *valid, int64_t n, int64_t stride, int64_t planes,
                   int64_t dim, const float *weights, int64_t nq, int qbits, const uint8_t *uplanes,
                   const double *lo, const double *delta, const double *coef, const float *row_scale,
                   const float *row_bias, const double *qoff, int64_t k, int isa, int strategy, int nthreads,
                   int64_t block_bytes, int and_term, float *out_scores, int64_t *out_rows) {
    const int64_t nb = (dim + 7) / 8, W = (nb + 7) / 8;
    qs_planes_ctx ctx = {qbits, NULL, lo, delta, NULL, coef, row_scale, row_bias, qoff};
    qs_scan s = {codes, valid, NULL, NULL, n, nq, nb, W, k, stride, planes, plane_last_mask(dim, nb, W), 0, &ctx};
    /* AND-term layout: the kernels see one plane of the planes and their AND, side by side, scored
     * with one concatenated weight vector (the caller's uplanes, qbits > 0, coef of length 1) */
    const int64_t tW = and_term ? (planes + 1) * W : W;
    if (and_term) {
        s.and_term = 1;
        s.src_planes = planes;
        s.src_nb = nb;
        s.src_W = W;
        s.src_mask = s.last_mask;
        s.planes = 1;
        s.W = tW;
        s.nb = 8 * tW;
        s.last_mask = ~(uint64_t)0;
    }
    uint32_t *keys = (uint32_t *)out_scores; /* keys are written in place, then turned into scores */
    int status = 0;
    if (qbits > 0) {
        qs_direct_fn direct = direct_portable;
        qs_blocked_fn blocked = NULL;
#if QS_X86
        if (isa == QS_ISA_AVX512) {
            direct = qs_planes_direct_avx512;
            blocked = qs_planes_blocked_avx512;
        } else if (isa == QS_ISA_AVX2) {
            direct = qs_planes_direct_popcnt;
            blocked = qs_planes_blocked_avx2;
        }
#else
        (void)isa;
#endif
        /* the transposed layout pays off once a few queries share each block (AVX-512); with AVX2
         * the scalar popcounts of the row-major kernel lose to vector nibble tables even for one */
        if (strategy == QS_STRATEGY_DIRECT || (strategy == QS_STRATEGY_AUTO && isa == QS_ISA_AVX512 && nq < 4))
            blocked = NULL;
        if (and_term && !blocked) blocked = blocked_portable; /* only transposed kernels read the AND plane */
        const int64_t unb = and_term ? 8 * tW : nb; /* bytes per query level plane */
        uint64_t *uwords = (uint64_t *)malloc((size_t)(nq * qbits * tW > 0 ? nq * qbits * tW : 1) * 8);
        if (!uwords) return -1;
        for (int64_t i = 0; i < nq * qbits; i++)
            for (int64_t w = 0; w < tW; w++) uwords[i * tW + w] = qs_word(uplanes + i * unb, unb, w);
        ctx.uwords = uwords;
        status = qs_scan_topk(&s, direct, blocked, nthreads, block_bytes, (planes + and_term) * nb * (qbits + 1),
                              keys, out_rows);
        free(uwords);
    } else {
        /* tables for a chunk of queries at a time (32 MiB) */
        int64_t chunk = ((int64_t)32 << 20) / (nb * 256 * 4);
        if (chunk < 1) chunk = 1;
        if (chunk > nq) chunk = nq > 0 ? nq : 1;
        float *tables = (float *)malloc((size_t)(chunk * nb * 256) * 4);
        if (!tables) return -1;
        ctx.tables = tables;
        for (int64_t c0 = 0; c0 < nq && status == 0; c0 += chunk) {
            const int64_t m = nq - c0 < chunk ? nq - c0 : chunk;
            for (int64_t q = 0; q < m; q++) build_tables(weights + (c0 + q) * dim, dim, nb, tables + q * nb * 256);
            ctx.qoff = qoff + c0;
            s.nq = m;
            status = qs_scan_topk(&s, direct_exact, NULL, nthreads, block_bytes, planes * nb * 8, keys + c0 * k,
                                  out_rows + c0 * k);
        }
        free(tables);
    }
    for (int64_t i = 0; i < nq * k; i++) {
        uint32_t key;
        memcpy(&key, out_scores + i, 4);
        out_scores[i] = key == QS_SENTINEL_DIST ? NAN : qs_key_score(key);
    }
    return status;
}

/* ---------------------------------------------------------------- byte lookup tables
 * Any code whose score is a sum over its bytes (5 trits per byte, say): the caller gives each
 * query a table per byte position, score = row_scale * (sum_j tables[q, j, code[j]] + qoff) + bias.
 * Four accumulators break the dependency chain of the additions (order: j mod 4, then pairwise). */
static void direct_tables(const qs_scan *s, int64_t b0, int64_t nblk, int64_t q0, int64_t q1, qs_heaps *h) {
    const qs_planes_ctx *x = (const qs_planes_ctx *)s->ctx;
    const int64_t nb = s->nb;
    for (int64_t q = q0; q < q1; q++) {
        const int64_t qa = s->q0 + q;
        const float *tab = x->tables + qa * nb * 256;
        uint64_t thr = h->thr[q];
        const uint8_t *p = s->codes + b0 * s->stride;
        for (int64_t i = 0; i < nblk; i++, p += s->stride) {
            double a[4] = {0.0, 0.0, 0.0, 0.0};
            int64_t j = 0;
            for (; j + 4 <= nb; j += 4)
                for (int l = 0; l < 4; l++) a[l] += (double)tab[(j + l) * 256 + p[j + l]];
            for (; j < nb; j++) a[j % 4] += (double)tab[j * 256 + p[j]];
            uint64_t key = row_key(x, b0 + i, qa, (a[0] + a[1]) + (a[2] + a[3]));
            if (key < thr) {
                qs_offer(h, s, q, 1u, &key, b0 + i);
                thr = h->thr[q];
            }
        }
    }
}

int qs_table_topk(const uint8_t *codes, const uint8_t *valid, int64_t n, int64_t stride, int64_t nb,
                  const float *tables, int64_t nq, const float *row_scale, const float *row_bias, const double *qoff,
                  int64_t k, int nthreads, int64_t block_bytes, float *out_scores, int64_t *out_rows) {
    const double one = 1.0;
    qs_planes_ctx ctx = {0, NULL, NULL, NULL, tables, &one, row_scale, row_bias, qoff};
    qs_scan s = {codes, valid, NULL, NULL, n, nq, nb, (nb + 7) / 8, k, stride, 1, ~(uint64_t)0, 0, &ctx};
    uint32_t *keys = (uint32_t *)out_scores;
    int status = qs_scan_topk(&s, direct_tables, NULL, nthreads, block_bytes, nb * 8, keys, out_rows);
    for (int64_t i = 0; i < nq * k; i++) {
        uint32_t key;
        memcpy(&key, out_scores + i, 4);
        out_scores[i] = key == QS_SENTINEL_DIST ? NAN : qs_key_score(key);
    }
    return status;
}
