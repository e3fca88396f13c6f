/* Inverted-file kernels: choosing the lists of each query, and the Hamming top-k over their rows.
 *
 * qs_ivf_probe scores every query against int8 centroids (score = scale[l] * <q, c8[l]>, float
 * accumulation), or, with a shortlist, only the `shortlist` lists whose centroid sign bits are
 * nearest (Hamming) to the query's (a 32x smaller read than the int8 centroids), and takes lists in descending score (ties: the smaller list): `nprobe` of them, or,
 * with per-list valid-row counts, as many as it takes for the valid rows of the lists taken to
 * reach `want` (at least `nprobe`, at most `cap`). A max-heap over all lists is popped only as far
 * as needed, so a filter that needs many lists costs nothing when it needs few.
 *
 * qs_ivf_scan scans, for every query, the rows of its lists (list l is order[offsets[l] ..
 * offsets[l + 1]]: the rows stay where they are in the codes array, the lists are ranges of row
 * numbers), skipping rows >= n_rows and rows not valid. Each thread takes a contiguous share of the
 * queries, groups its (list, query) pairs by list and reads every row of a list once for all the
 * queries that probe it. Top-k per query is a max-heap of (distance << 32 | row) keys, so ties go
 * to the smaller row whatever the order the lists are visited in. A thread with a single query (a
 * single-query search) gathers the rows of its lists, computes their distances in one prefetched
 * pass and keeps the k smallest keys by a histogram of the distances: the same keys, ~10% faster
 * at 1M x 1024 (docs/benchmarks.md). */
#include <math.h>
#include <stdlib.h>

#include "qs_kernels.h"

#if QS_X86
#include <immintrin.h>
#endif

/* ---------------------------------------------------------------- centroid scores */

static float dot_i8_portable(const int8_t *c, const float *q, int64_t dim) {
    float acc[8] = {0};
    int64_t j = 0;
    for (; j + 8 <= dim; j += 8)
        for (int u = 0; u < 8; u++) acc[u] += q[j + u] * (float)c[j + u];
    float s = 0;
    for (int u = 0; u < 8; u++) s += acc[u];
    for (; j < dim; j++) s += q[j] * (float)c[j];
    return s;
}

#if QS_X86
QS_TARGET_AVX2 static float dot_i8_avx2(const int8_t *c, const float *q, int64_t dim) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 32 <= dim; j += 32) {
        __m256i b = _mm256_loadu_si256((const __m256i *)(c + j));
        __m128i lo = _mm256_castsi256_si128(b), hi = _mm256_extracti128_si256(b, 1);
        a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), _mm256_loadu_ps(q + j), a0);
        a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))),
                             _mm256_loadu_ps(q + j + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), _mm256_loadu_ps(q + j + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))),
                             _mm256_loadu_ps(q + j + 24), a3);
    }
    __m256 acc = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    float total = _mm_cvtss_f32(s);
    for (; j < dim; j++) total += q[j] * (float)c[j];
    return total;
}
#endif

typedef float (*dot_i8_fn)(const int8_t *, const float *, int64_t);

/* (score, list) pairs: `a` before `b` when it scores higher, or the same with the smaller list */
typedef struct {
    float score;
    int32_t list;
} scored;

static inline int before(scored a, scored b) { return a.score > b.score || (a.score == b.score && a.list < b.list); }

static void sift_down(scored *h, int64_t n, int64_t i) {
    for (;;) {
        int64_t best = i, l = 2 * i + 1, r = l + 1;
        if (l < n && before(h[l], h[best])) best = l;
        if (r < n && before(h[r], h[best])) best = r;
        if (best == i) return;
        scored t = h[i];
        h[i] = h[best];
        h[best] = t;
        i = best;
    }
}

static inline __attribute__((always_inline)) uint32_t hamming_body(const uint8_t *a, const uint8_t *b,
                                                                    int64_t nb) {
    uint64_t d = 0;
    int64_t i = 0;
    for (; i + 8 <= nb; i += 8) d += (uint64_t)__builtin_popcountll(qs_load64(a + i) ^ qs_load64(b + i));
    for (; i < nb; i++) d += (uint64_t)__builtin_popcount((unsigned)(a[i] ^ b[i]));
    return (uint32_t)d;
}

/* max-heap of k keys; a key enters when smaller than the largest */
static inline void offer(uint64_t *h, int64_t k, uint64_t key) {
    if (key >= h[0]) return;
    int64_t i = 0;
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, big = l;
        if (l >= k) break;
        if (r < k && h[r] > h[l]) big = r;
        if (h[big] <= key) break;
        h[i] = h[big];
        i = big;
    }
    h[i] = key;
}

typedef struct {
    const float *queries;
    const uint8_t *qbits, *cbits;
    const int8_t *cent;
    const float *scale;
    const int64_t *counts;
    int64_t nlist, dim, nbits, nprobe, want, cap, shortlist;
    int32_t *out;
    int64_t q0, q1;
    dot_i8_fn dot;
    int popcnt;
    int rc;
} probe_job;

/* the `m` lists nearest to the query's sign bits (Hamming to the centroids' sign bits), into keys */
static inline __attribute__((always_inline)) void shortlist_body(const probe_job *j, const uint8_t *qb,
                                                                 uint64_t *keys, int64_t m) {
    for (int64_t i = 0; i < m; i++) keys[i] = UINT64_MAX;
    for (int64_t l = 0; l < j->nlist; l++)
        offer(keys, m, ((uint64_t)hamming_body(qb, j->cbits + l * j->nbits, j->nbits) << 32) | (uint64_t)l);
}
static void shortlist_portable(const probe_job *j, const uint8_t *qb, uint64_t *keys, int64_t m) {
    shortlist_body(j, qb, keys, m);
}
#if QS_X86
__attribute__((target("popcnt"))) static void shortlist_popcnt(const probe_job *j, const uint8_t *qb,
                                                               uint64_t *keys, int64_t m) {
    shortlist_body(j, qb, keys, m);
}
#endif

static void *probe_main(void *arg) {
    probe_job *j = (probe_job *)arg;
    const int64_t m = j->shortlist > 0 && j->shortlist < j->nlist ? j->shortlist : j->nlist;
    scored *h = (scored *)malloc((size_t)(j->nlist > 0 ? j->nlist : 1) * sizeof(scored));
    uint64_t *keys = (uint64_t *)malloc((size_t)(m > 0 ? m : 1) * sizeof(uint64_t));
    if (!h || !keys) {
        free(h);
        free(keys);
        j->rc = -1;
        return NULL;
    }
    for (int64_t q = j->q0; q < j->q1; q++) {
        const float *w = j->queries + q * j->dim;
        int64_t n = 0;
        if (m < j->nlist) {
#if QS_X86
            if (j->popcnt)
                shortlist_popcnt(j, j->qbits + q * j->nbits, keys, m);
            else
#endif
                shortlist_portable(j, j->qbits + q * j->nbits, keys, m);
            for (int64_t i = 0; i < m; i++)
                if (keys[i] != UINT64_MAX) h[n++].list = (int32_t)(keys[i] & 0xffffffffu);
        } else {
            for (int64_t l = 0; l < j->nlist; l++) h[n++].list = (int32_t)l;
        }
        for (int64_t i = 0; i < n; i++) {
            const int32_t l = h[i].list;
            const float s = j->scale[l] * j->dot(j->cent + (int64_t)l * j->dim, w, j->dim);
            h[i].score = isnan(s) ? -INFINITY : s;
        }
        for (int64_t i = n / 2 - 1; i >= 0; i--) sift_down(h, n, i);
        int32_t *out = j->out + q * j->cap;
        int64_t taken = 0, seen = 0;
        while (taken < j->cap && n > 0) {
            if (taken >= j->nprobe && (j->counts == NULL || seen >= j->want)) break;
            const int32_t l = h[0].list;
            out[taken++] = l;
            if (j->counts) seen += j->counts[l];
            h[0] = h[--n];
            sift_down(h, n, 0);
        }
        for (int64_t i = taken; i < j->cap; i++) out[i] = -1;
    }
    free(h);
    free(keys);
    return NULL;
}

int qs_ivf_probe(const float *queries, const uint8_t *qbits, int64_t nq, int64_t dim, const int8_t *cent,
                 const float *scale, const uint8_t *cbits, int64_t nbits, int64_t nlist, const int64_t *counts,
                 int64_t nprobe, int64_t want, int64_t cap, int64_t shortlist, int isa, int nthreads,
                 int32_t *out) {
    dot_i8_fn dot = dot_i8_portable;
    int popcnt = 0;
#if QS_X86
    if (isa == QS_ISA_AVX2 || isa == QS_ISA_AVX512) dot = dot_i8_avx2;
    popcnt = isa != QS_ISA_PORTABLE && __builtin_cpu_supports("popcnt");
#else
    (void)isa;
#endif
    if (!qbits || !cbits) shortlist = 0;
    /* a thread for every ~4M multiply-adds (a query against 2,000 lists of 1,024 dimensions is 2M) */
    const int64_t m = shortlist > 0 && shortlist < nlist ? shortlist : nlist;
    const int64_t work = nq * (m * dim + nlist * nbits * 8);
    int64_t by_work = work / ((int64_t)4 << 20);
    int nt = nthreads < 1 ? 1 : nthreads > 64 ? 64 : nthreads;
    if (by_work < nt) nt = by_work > 1 ? (int)by_work : 1;
    if (nt > nq) nt = nq > 0 ? (int)nq : 1;
    probe_job *jobs = (probe_job *)calloc((size_t)nt, sizeof(probe_job));
    if (!jobs) return -1;
    for (int t = 0; t < nt; t++) {
        probe_job j = {queries, qbits, cbits, cent, scale, counts, nlist, dim, nbits, nprobe, want, cap, shortlist,
                       out, nq * t / nt, nq * (t + 1) / nt, dot, popcnt, 0};
        jobs[t] = j;
    }
    qs_parallel(probe_main, jobs, sizeof(probe_job), nt);
    int rc = 0;
    for (int t = 0; t < nt; t++) rc |= jobs[t].rc;
    free(jobs);
    return rc;
}

/* ---------------------------------------------------------------- list scan */

static int cmp_u64(const void *a, const void *b) {
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_i32(const void *a, const void *b) {
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x < y ? -1 : x > y;
}


typedef struct {
    const uint8_t *qcodes, *codes, *valid;
    const int32_t *order, *probes;
    const int64_t *offsets;
    int64_t nb, n_rows, norder, nlist, P, k;
    int32_t *out_dist;
    int64_t *out_rows;
    int64_t q0, q1;
    int popcnt;
    int rc;
} scan_job;

#define QS_SCAN_PREFETCH 12

/* rows of one list against a group of queries (their heaps side by side in `heaps`) */
static inline __attribute__((always_inline)) void scan_list_body(const scan_job *j, int64_t l, const int64_t *group,
                                                                 int64_t g, uint64_t *heaps) {
    const int64_t a = j->offsets[l], b = j->offsets[l + 1];
    const int64_t nb = j->nb;
    for (int64_t i = a; i < b; i++) {
        if (i + QS_SCAN_PREFETCH < b) {
            const int64_t p = j->order[i + QS_SCAN_PREFETCH];
            if (p >= 0 && p < j->n_rows) {
                const uint8_t *pp = j->codes + p * nb;
                __builtin_prefetch(pp);
                if (nb > 64) __builtin_prefetch(pp + 64);
            }
        }
        const int64_t r = j->order[i];
        if (r < 0 || r >= j->n_rows || (j->valid && !j->valid[r])) continue;
        const uint8_t *code = j->codes + r * nb;
        for (int64_t u = 0; u < g; u++) {
            const int64_t q = group[u];
            const uint64_t key = ((uint64_t)hamming_body(j->qcodes + q * nb, code, nb) << 32) | (uint64_t)r;
            offer(heaps + (q - j->q0) * j->k, j->k, key);
        }
    }
}

static void scan_list_portable(const scan_job *j, int64_t l, const int64_t *group, int64_t g, uint64_t *heaps) {
    scan_list_body(j, l, group, g, heaps);
}
#if QS_X86
__attribute__((target("popcnt"))) static void scan_list_popcnt(const scan_job *j, int64_t l, const int64_t *group,
                                                               int64_t g, uint64_t *heaps) {
    scan_list_body(j, l, group, g, heaps);
}
#endif

/* One query: the rows of its lists are gathered first (one prefetch stream across the lists), their
 * distances computed into an array, and the k smallest (distance, row) keys chosen by a histogram of
 * the distances instead of a heap: the same k keys, without a data-dependent heap update per row. */
static inline __attribute__((always_inline)) int scan_one_body(const scan_job *j, int64_t q) {
    const int32_t *probe = j->probes + q * j->P;
    int64_t total = 0;
    for (int64_t p = 0; p < j->P; p++) {
        const int32_t l = probe[p];
        if (l >= 0 && l < j->nlist) total += j->offsets[l + 1] - j->offsets[l];
    }
    const int64_t nb = j->nb, maxd = nb * 8;
    int32_t *rows = (int32_t *)malloc((size_t)(total > 0 ? total : 1) * sizeof(int32_t));
    uint32_t *dist = (uint32_t *)malloc((size_t)(total > 0 ? total : 1) * sizeof(uint32_t));
    int64_t *hist = (int64_t *)calloc((size_t)(maxd + 1), sizeof(int64_t));
    uint64_t *keys = (uint64_t *)malloc((size_t)j->k * sizeof(uint64_t));
    if (!rows || !dist || !hist || !keys) {
        free(rows), free(dist), free(hist), free(keys);
        return -1;
    }
    int64_t m = 0;
    for (int64_t p = 0; p < j->P; p++) {
        const int32_t l = probe[p];
        if (l < 0 || l >= j->nlist) continue;
        int dup = 0; /* a list probed twice counts once */
        for (int64_t e = 0; e < p && !dup; e++) dup = probe[e] == l;
        if (dup) continue;
        for (int64_t i = j->offsets[l]; i < j->offsets[l + 1]; i++) {
            const int32_t r = j->order[i];
            if (r >= 0 && r < j->n_rows && !(j->valid && !j->valid[r])) rows[m++] = r;
        }
    }
    const uint8_t *qc = j->qcodes + q * nb;
    for (int64_t i = 0; i < m; i++) {
        if (i + QS_SCAN_PREFETCH < m) {
            const uint8_t *pp = j->codes + (int64_t)rows[i + QS_SCAN_PREFETCH] * nb;
            __builtin_prefetch(pp);
            if (nb > 64) __builtin_prefetch(pp + 64);
        }
        const uint32_t d = hamming_body(qc, j->codes + (int64_t)rows[i] * nb, nb);
        dist[i] = d;
        hist[d]++;
    }
    /* the k-th smallest distance: below it every row is kept, at it the smallest rows */
    int64_t below = 0, t = 0;
    for (; t <= maxd && below + hist[t] < j->k; t++) below += hist[t];
    int64_t n_keys = 0;
    for (int64_t i = 0; i < m; i++)
        if ((int64_t)dist[i] < t) keys[n_keys++] = ((uint64_t)dist[i] << 32) | (uint64_t)(uint32_t)rows[i];
    if (t <= maxd) {
        /* rows at the threshold distance: the smallest (k - below) of them */
        const int64_t need = j->k - below;
        int64_t n_tie = 0;
        for (int64_t i = 0; i < m; i++)
            if ((int64_t)dist[i] == t) rows[n_tie++] = rows[i]; /* i >= n_tie: reuses the array */
        if (n_tie > need) qsort(rows, (size_t)n_tie, sizeof(int32_t), cmp_i32);
        for (int64_t i = 0; i < n_tie && i < need; i++)
            keys[n_keys++] = ((uint64_t)t << 32) | (uint64_t)(uint32_t)rows[i];
    }
    qsort(keys, (size_t)n_keys, sizeof(uint64_t), cmp_u64);
    for (int64_t i = 0; i < j->k; i++) {
        const int found = i < n_keys;
        j->out_dist[q * j->k + i] = found ? (int32_t)(keys[i] >> 32) : INT32_MAX;
        j->out_rows[q * j->k + i] = found ? (int64_t)(keys[i] & 0xffffffffu) : -1;
    }
    free(rows), free(dist), free(hist), free(keys);
    return 0;
}

static int scan_one_portable(const scan_job *j, int64_t q) { return scan_one_body(j, q); }
#if QS_X86
__attribute__((target("popcnt"))) static int scan_one_popcnt(const scan_job *j, int64_t q) {
    return scan_one_body(j, q);
}
#endif

static void *scan_main(void *arg) {
    scan_job *j = (scan_job *)arg;
    const int64_t nq = j->q1 - j->q0;
    if (nq <= 0) return NULL;
    if (nq == 1) {
#if QS_X86
        if (j->popcnt)
            j->rc = scan_one_popcnt(j, j->q0);
        else
#endif
            j->rc = scan_one_portable(j, j->q0);
        return NULL;
    }
    uint64_t *heaps = (uint64_t *)malloc((size_t)(nq * j->k) * sizeof(uint64_t));
    uint64_t *pairs = (uint64_t *)malloc((size_t)(nq * j->P > 0 ? nq * j->P : 1) * sizeof(uint64_t));
    int64_t *group = (int64_t *)malloc((size_t)nq * sizeof(int64_t));
    if (!heaps || !pairs || !group) {
        free(heaps);
        free(pairs);
        free(group);
        j->rc = -1;
        return NULL;
    }
    for (int64_t i = 0; i < nq * j->k; i++) heaps[i] = UINT64_MAX;
    int64_t np = 0;
    for (int64_t q = j->q0; q < j->q1; q++)
        for (int64_t p = 0; p < j->P; p++) {
            const int32_t l = j->probes[q * j->P + p];
            if (l >= 0 && l < j->nlist) pairs[np++] = ((uint64_t)(uint32_t)l << 32) | (uint64_t)q;
        }
    qsort(pairs, (size_t)np, sizeof(uint64_t), cmp_u64); /* by list, then query: duplicates adjacent */
    for (int64_t s = 0; s < np;) {
        const int64_t l = (int64_t)(pairs[s] >> 32);
        int64_t g = 0, e = s;
        for (; e < np && (int64_t)(pairs[e] >> 32) == l; e++) {
            const int64_t q = (int64_t)(pairs[e] & 0xffffffffu);
            if (g == 0 || group[g - 1] != q) group[g++] = q; /* a list probed twice counts once */
        }
#if QS_X86
        if (j->popcnt)
            scan_list_popcnt(j, l, group, g, heaps);
        else
#endif
            scan_list_portable(j, l, group, g, heaps);
        s = e;
    }
    for (int64_t u = 0; u < nq; u++) {
        uint64_t *h = heaps + u * j->k;
        qsort(h, (size_t)j->k, sizeof(uint64_t), cmp_u64);
        const int64_t q = j->q0 + u;
        for (int64_t i = 0; i < j->k; i++) {
            const int found = h[i] != UINT64_MAX;
            j->out_dist[q * j->k + i] = found ? (int32_t)(h[i] >> 32) : INT32_MAX;
            j->out_rows[q * j->k + i] = found ? (int64_t)(h[i] & 0xffffffffu) : -1;
        }
    }
    free(heaps);
    free(pairs);
    free(group);
    return NULL;
}

int qs_ivf_scan(const uint8_t *qcodes, int64_t nq, int64_t nb, const uint8_t *codes, int64_t n_rows,
                const int32_t *order, int64_t norder, const int64_t *offsets, int64_t nlist, const int32_t *probes,
                int64_t P, const uint8_t *valid, int64_t k, int isa, int nthreads, int32_t *out_dist,
                int64_t *out_rows) {
    /* the list ranges are checked once here: every scan reads order[offsets[l] .. offsets[l + 1]] */
    if (offsets[0] < 0 || offsets[nlist] > norder) return -2;
    for (int64_t l = 0; l < nlist; l++)
        if (offsets[l] > offsets[l + 1]) return -2;
    /* threads split the queries; a thread for every ~64 list probes (a single query runs here) */
    int nt = nthreads < 1 ? 1 : nthreads > 64 ? 64 : nthreads;
    const int64_t by_work = nq * P / 64;
    if (by_work < nt) nt = by_work > 1 ? (int)by_work : 1;
    if (nt > nq) nt = nq > 0 ? (int)nq : 1;
    scan_job *jobs = (scan_job *)calloc((size_t)nt, sizeof(scan_job));
    if (!jobs) return -1;
    int popcnt = 0;
#if QS_X86
    popcnt = isa != QS_ISA_PORTABLE && __builtin_cpu_supports("popcnt");
#else
    (void)isa;
#endif
    for (int t = 0; t < nt; t++) {
        scan_job j = {qcodes, codes, valid, order, probes, offsets, nb, n_rows, norder, nlist, P, k,
                      out_dist, out_rows, nq * t / nt, nq * (t + 1) / nt, popcnt, 0};
        jobs[t] = j;
    }
    qs_parallel(scan_main, jobs, sizeof(scan_job), nt);
    int rc = 0;
    for (int t = 0; t < nt; t++) rc |= jobs[t].rc;
    free(jobs);
    return rc;
}
