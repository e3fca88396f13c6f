/* Exact Hamming top-k: the driver (threads, blocks, heaps, merge) and the portable kernel.
 *
 * The code rows are cut into cache-sized blocks; each thread takes the next block from a shared
 * counter (so a thread that the OS preempts does not hold the others up) and runs every query of
 * the chunk over it before taking another, so a block is read from memory once per chunk of
 * queries. Each thread keeps a max-heap of the k best (distance, row) pairs per query; only a
 * distance below the heap top can enter, so the common case is one compare per code. Ties go to
 * the smaller row: the counter only grows, so rows reach each heap in ascending order and an equal
 * distance never needs to replace the top; the final merge orders by (distance, row).
 */
#include <stdlib.h>

#include "qs_kernels.h"

#if QS_X86
#include <cpuid.h>
#endif

/* ---------------------------------------------------------------- CPU features */

int qs_isa_supported(int isa) {
    if (isa == QS_ISA_PORTABLE) return 1;
#if QS_X86
    __builtin_cpu_init();
    if (isa == QS_ISA_AVX2) {
        unsigned a, b, c, d;
        int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("popcnt") && f16c;
    }
    if (isa == QS_ISA_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vpopcntdq");
#endif
    return 0;
}

uint64_t qs_stream_xor(const uint8_t *p, size_t bytes, int isa) {
#if QS_X86
    if (isa == QS_ISA_AVX512) return qs_stream_xor_avx512(p, bytes);
    if (isa == QS_ISA_AVX2) return qs_stream_xor_avx2(p, bytes);
#else
    (void)isa;
#endif
    uint64_t a[8] = {0}, x = 0;
    size_t i = 0;
    for (; i + 64 <= bytes; i += 64)
        for (int l = 0; l < 8; l++) a[l] ^= qs_load64(p + i + 8 * l);
    for (int l = 0; l < 8; l++) x ^= a[l];
    for (; i < bytes; i++) x ^= p[i];
    return x;
}

/* ---------------------------------------------------------------- heaps */

static inline int worse(uint32_t da, int64_t ra, uint32_t db, int64_t rb) {
    return da > db || (da == db && ra > rb);
}

static void sift_down(uint32_t *hd, int64_t *hr, int64_t len, int64_t i, uint32_t d, int64_t r) {
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= len) break;
        if (c + 1 < len && worse(hd[c + 1], hr[c + 1], hd[c], hr[c])) c++;
        if (!worse(hd[c], hr[c], d, r)) break;
        hd[i] = hd[c];
        hr[i] = hr[c];
        i = c;
    }
    hd[i] = d;
    hr[i] = r;
}

void qs_offer(qs_heaps *h, const qs_scan *s, int64_t q, unsigned mask, const uint64_t *d, int64_t row0) {
    const int64_t k = h->k;
    uint32_t *hd = h->dist + q * k;
    int64_t *hr = h->rows + q * k;
    while (mask) {
        int lane = __builtin_ctz(mask);
        mask &= mask - 1;
        int64_t row = row0 + lane;
        if (s->valid && !s->valid[row]) continue;
        if (d[lane] >= hd[0]) continue; /* the top may have dropped since the vector compare */
        sift_down(hd, hr, k, 0, (uint32_t)d[lane], row);
    }
    h->thr[q] = hd[0];
}

static void heaps_init(qs_heaps *h, int64_t nq) {
    for (int64_t i = 0; i < nq * h->k; i++) {
        h->dist[i] = QS_SENTINEL_DIST;
        h->rows[i] = QS_SENTINEL_ROW;
    }
    for (int64_t q = 0; q < nq; q++) h->thr[q] = QS_SENTINEL_DIST;
}

/* In-place heapsort of every query's heap into ascending (dist, row). */
static void heaps_sort(qs_heaps *h, int64_t nq) {
    const int64_t k = h->k;
    for (int64_t q = 0; q < nq; q++) {
        uint32_t *hd = h->dist + q * k;
        int64_t *hr = h->rows + q * k;
        for (int64_t end = k - 1; end > 0; end--) {
            uint32_t d = hd[end];
            int64_t r = hr[end];
            hd[end] = hd[0];
            hr[end] = hr[0];
            sift_down(hd, hr, end, 0, d, r);
        }
    }
}

/* ---------------------------------------------------------------- portable kernel */

/* Row-major scan with scalar popcounts; inlined into the portable and the popcnt-targeted copy. */
static inline __attribute__((always_inline)) void direct_scalar(const qs_scan *s, int64_t b0, int64_t nblk,
                                                                int64_t q0, int64_t q1, qs_heaps *h) {
    const int64_t nb = s->nb, W = s->W, nfull = nb / 8;
    for (int64_t q = q0; q < q1; q++) {
        const uint64_t *qw = s->qwords + q * W;
        uint64_t thr = h->thr[q];
        const uint8_t *p = s->codes + b0 * nb;
        for (int64_t i = 0; i < nblk; i++, p += nb) {
            uint64_t d = 0;
            for (int64_t w = 0; w < nfull; w++) d += (uint64_t)__builtin_popcountll(qs_load64(p + 8 * w) ^ qw[w]);
            if (nfull < W) d += (uint64_t)__builtin_popcountll(qs_word(p, nb, nfull) ^ qw[nfull]);
            if (d < thr) {
                qs_offer(h, s, q, 1u, &d, b0 + i);
                thr = h->thr[q];
            }
        }
    }
}

static void direct_portable(const qs_scan *s, int64_t b0, int64_t nblk, int64_t q0, int64_t q1, qs_heaps *h) {
    direct_scalar(s, b0, nblk, q0, q1, h);
}

#if QS_X86
__attribute__((target("popcnt"))) void qs_direct_popcnt(const qs_scan *s, int64_t b0, int64_t nblk,
                                                         int64_t q0, int64_t q1, qs_heaps *h) {
    direct_scalar(s, b0, nblk, q0, q1, h);
}
#endif

/* Word-major copy of rows [b0, b0 + nblk): word w of plane p of row b0 + i at T[(p * W + w) * bpad + i];
 * rows up to bpad are zero. */
static void transpose_and_term(const qs_scan *s, int64_t b0, int64_t nblk, uint64_t *T, int64_t bpad) {
    const int64_t nb = s->src_nb, W = s->src_W, nfull = nb / 8, P = s->src_planes;
    const uint8_t *p = s->codes + b0 * s->stride;
    for (int64_t i = 0; i < nblk; i++, p += s->stride) {
        for (int64_t w = 0; w < W; w++) {
            uint64_t both = ~(uint64_t)0;
            for (int64_t pl = 0; pl < P; pl++) {
                const uint8_t *row = p + pl * nb;
                uint64_t word = w < nfull ? qs_load64(row + 8 * w) : qs_word(row, nb, w);
                if (w == W - 1) word &= s->src_mask;
                T[(pl * W + w) * bpad + i] = word;
                if (pl < 2) both &= word;
            }
            T[(P * W + w) * bpad + i] = both;
        }
    }
    for (int64_t w = 0; w < (P + 1) * W; w++)
        for (int64_t i = nblk; i < bpad; i++) T[w * bpad + i] = 0;
}

static void transpose_block(const qs_scan *s, int64_t b0, int64_t nblk, uint64_t *T, int64_t bpad) {
    if (s->and_term) {
        transpose_and_term(s, b0, nblk, T, bpad);
        return;
    }
    const int64_t nb = s->nb, W = s->W, nfull = nb / 8, P = s->planes;
    const uint64_t last = s->last_mask;
    const uint8_t *p = s->codes + b0 * s->stride;
    for (int64_t i = 0; i < nblk; i++, p += s->stride) {
        for (int64_t pl = 0; pl < P; pl++) {
            uint64_t *t = T + pl * W * bpad + i;
            const uint8_t *row = p + pl * nb;
            for (int64_t w = 0; w < nfull; w++) t[w * bpad] = qs_load64(row + 8 * w);
            if (nfull < W) t[nfull * bpad] = qs_word(row, nb, nfull);
            t[(W - 1) * bpad] &= last;
        }
    }
    for (int64_t w = 0; w < P * W; w++)
        for (int64_t i = nblk; i < bpad; i++) T[w * bpad + i] = 0;
}

/* ---------------------------------------------------------------- driver */

typedef struct {
    const qs_scan *s;
    qs_direct_fn direct;
    qs_blocked_fn blocked; /* NULL: scan row-major */
    int64_t block_rows;
    int64_t *next_block; /* shared by the workers of one pass */
    qs_heaps h;
    uint64_t *scratch;
} worker;

static void *worker_main(void *arg) {
    worker *w = (worker *)arg;
    const qs_scan *s = w->s;
    heaps_init(&w->h, s->nq);
    const int64_t bpad = (w->block_rows + 7) & ~(int64_t)7;
    for (;;) {
        const int64_t b0 = __atomic_fetch_add(w->next_block, 1, __ATOMIC_RELAXED) * w->block_rows;
        if (b0 >= s->n) break;
        const int64_t nblk = s->n - b0 < w->block_rows ? s->n - b0 : w->block_rows;
        if (w->blocked) {
            transpose_block(s, b0, nblk, w->scratch, bpad);
            w->blocked(s, b0, nblk, w->scratch, bpad, 0, s->nq, &w->h);
        } else {
            w->direct(s, b0, nblk, 0, s->nq, &w->h);
        }
    }
    heaps_sort(&w->h, s->nq);
    return NULL;
}

/* Merge the threads' sorted lists of each query into the output rows, padding with -1 / the sentinel. */
static void merge(const worker *ws, int nt, int64_t nq, int64_t k, uint32_t *out_d, int64_t *out_r) {
    int64_t head[64];
    for (int64_t q = 0; q < nq; q++) {
        for (int t = 0; t < nt; t++) head[t] = 0;
        for (int64_t i = 0; i < k; i++) {
            int best = 0;
            for (int t = 1; t < nt; t++) {
                const qs_heaps *a = &ws[t].h, *b = &ws[best].h;
                if (worse(b->dist[q * k + head[best]], b->rows[q * k + head[best]], a->dist[q * k + head[t]],
                          a->rows[q * k + head[t]]))
                    best = t;
            }
            const qs_heaps *hb = &ws[best].h;
            uint32_t d = hb->dist[q * k + head[best]];
            int64_t r = hb->rows[q * k + head[best]];
            head[best]++;
            out_d[q * k + i] = d;
            out_r[q * k + i] = d == QS_SENTINEL_DIST ? -1 : r;
        }
    }
}

/* Queries per pass: every thread holds (chunk, k) heaps, bounded to ~64 MiB in all. */
static int64_t query_chunk(int64_t nq, int64_t k, int nt) {
    int64_t per_query = k * 12 * nt + 8 * nt;
    int64_t chunk = ((int64_t)64 << 20) / per_query;
    if (chunk < 1) chunk = 1;
    return chunk < nq ? chunk : nq;
}

/* Bytes of popcount work below which a scan adds no thread (see qs_scan_topk); a variable so that
 * benchmarks/thread_crossover.py can measure the crossover. */
static int64_t thread_work_bytes = QS_THREAD_WORK_BYTES;

int64_t qs_thread_work_bytes(int64_t value) {
    int64_t old = __atomic_load_n(&thread_work_bytes, __ATOMIC_RELAXED);
    if (value >= 0) __atomic_store_n(&thread_work_bytes, value, __ATOMIC_RELAXED);
    return old;
}

int qs_scan_topk(const qs_scan *tmpl, qs_direct_fn direct, qs_blocked_fn blocked, int nthreads,
                 int64_t block_bytes, int64_t row_cost, uint32_t *out_keys, int64_t *out_rows) {
    const int64_t nq = tmpl->nq, n = tmpl->n, k = tmpl->k, W = tmpl->W, P = tmpl->planes;
    /* threads: each thread gets at least thread_work_bytes of work: rows x (row_cost + a fixed
     * QS_ROW_OVERHEAD per row, the threshold test and loop) x queries, the queries counted up to 512.
     * One query, measured three times (benchmarks/thread_crossover.py, under the lock, Zen 3, 2
     * vCPUs, AVX2; docs/benchmarks.md): the crossover moved with the machine's state, from 30k to
     * 140k rows at 1024 bits and from 30k to 100k at 384, and a second thread gained 1.3-1.8x from
     * 200k rows on. 8 MiB per thread threads from 44k rows at 1024 bits and 55k at 384 (the old
     * 32 MiB of popcount bytes: from 524k and 1.4M, which left 200k x 384 bits 1.3-1.5x slower). */
    if (nthreads > 64) nthreads = 64;
    if (nthreads < 1) nthreads = 1;
    const int64_t work = __atomic_load_n(&thread_work_bytes, __ATOMIC_RELAXED);
    int64_t min_rows = work / ((row_cost + QS_ROW_OVERHEAD) * (nq < 512 ? nq : 512));
    if (min_rows < 64) min_rows = 64;
    int64_t by_work = n / min_rows;
    int nt = by_work < nthreads ? (int)(by_work > 1 ? by_work : 1) : nthreads;

    int64_t block_rows;
    if (blocked) {
        if (block_bytes <= 0) block_bytes = 32 << 10; /* the transposed block stays in L1 */
        block_rows = (block_bytes / (P * W * 8)) & ~(int64_t)7;
    } else {
        if (block_bytes <= 0) block_bytes = 256 << 10; /* L2 */
        block_rows = block_bytes / tmpl->stride;
    }
    if (block_rows < 8) block_rows = 8;

    worker *ws = (worker *)calloc((size_t)nt, sizeof(worker));
    if (!ws) return -1;
    const int64_t chunk = nq > 0 ? query_chunk(nq, k, nt) : 1;
    const int64_t bpad = (block_rows + 7) & ~(int64_t)7;
    int status = 0;
    for (int t = 0; t < nt && status == 0; t++) {
        ws[t].h.k = k;
        ws[t].h.dist = (uint32_t *)malloc((size_t)(chunk * k) * 4);
        ws[t].h.rows = (int64_t *)malloc((size_t)(chunk * k) * 8);
        ws[t].h.thr = (uint64_t *)malloc((size_t)chunk * 8);
        ws[t].scratch = blocked ? (uint64_t *)malloc((size_t)(P * W * bpad) * 8) : NULL;
        if (!ws[t].h.dist || !ws[t].h.rows || !ws[t].h.thr || (blocked && !ws[t].scratch)) status = -1;
    }
    for (int64_t c0 = 0; c0 < nq && status == 0; c0 += chunk) {
        qs_scan s = *tmpl;
        s.nq = nq - c0 < chunk ? nq - c0 : chunk;
        s.q0 = tmpl->q0 + c0;
        if (tmpl->qbytes) s.qbytes = tmpl->qbytes + c0 * tmpl->nb;
        if (tmpl->qwords) s.qwords = tmpl->qwords + c0 * W;
        int64_t next_block = 0;
        for (int t = 0; t < nt; t++) {
            ws[t].s = &s;
            ws[t].direct = direct;
            ws[t].blocked = blocked;
            ws[t].block_rows = block_rows;
            ws[t].next_block = &next_block;
        }
        qs_parallel(worker_main, ws, sizeof(worker), nt);
        merge(ws, nt, s.nq, k, out_keys + c0 * k, out_rows + c0 * k);
    }
    for (int t = 0; t < nt; t++) {
        free(ws[t].h.dist);
        free(ws[t].h.rows);
        free(ws[t].h.thr);
        free(ws[t].scratch);
    }
    free(ws);
    return status;
}

int qs_hamming_topk(const uint8_t *queries, const uint8_t *codes, const uint8_t *valid, int64_t nq,
                    int64_t n, int64_t nb, int64_t k, int isa, int strategy, int nthreads,
                    int64_t block_bytes, int32_t *out_dist, int64_t *out_rows) {
    const int64_t W = (nb + 7) / 8;
    qs_direct_fn direct = direct_portable;
    qs_blocked_fn blocked = NULL;
#if QS_X86
    if (isa == QS_ISA_AVX512) {
        direct = qs_direct_avx512;
        blocked = qs_blocked_avx512;
    } else if (isa == QS_ISA_AVX2) {
        direct = qs_direct_avx2;
        blocked = qs_blocked_avx2;
    }
#else
    (void)isa;
#endif
    /* the transposed layout pays off once a few queries share each block; the AVX2 one holds the
     * queries' vectors on the stack, up to QS_BLOCKED_WMAX words (wider codes scan row-major) */
    if (strategy == QS_STRATEGY_DIRECT || (strategy == QS_STRATEGY_AUTO && nq < 4)) blocked = NULL;
#if QS_X86
    if (isa == QS_ISA_AVX2 && W > QS_BLOCKED_WMAX) blocked = NULL;
#endif

    uint64_t *qwords = (uint64_t *)malloc((size_t)(nq > 0 ? nq : 1) * (size_t)W * 8);
    if (!qwords) return -1;
    for (int64_t q = 0; q < nq; q++)
        for (int64_t w = 0; w < W; w++) qwords[q * W + w] = qs_word(queries + q * nb, nb, w);
    qs_scan s = {codes, valid, queries, qwords, n, nq, nb, W, k, nb, 1, ~(uint64_t)0, 0, NULL};
    /* keys are the distances: written in place, then the padding sentinel becomes INT32_MAX */
    int status = qs_scan_topk(&s, direct, blocked, nthreads, block_bytes, nb, (uint32_t *)out_dist, out_rows);
    for (int64_t i = 0; i < nq * k; i++)
        if ((uint32_t)out_dist[i] == QS_SENTINEL_DIST) out_dist[i] = INT32_MAX;
    free(qwords);
    return status;
}
