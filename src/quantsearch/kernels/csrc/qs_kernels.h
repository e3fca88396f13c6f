/* Native kernels of quantsearch: exact Hamming top-k and fused gather + dot rescoring.
 *
 * Plain C11 + pthreads, no Python or numpy headers: module.c is the only file that talks to Python.
 * Every instruction-set variant is a separate function compiled with a per-function target
 * attribute; the caller picks one at run time (qs_isa_supported), so the library is built for the
 * baseline ISA and still uses AVX-512 VPOPCNTDQ where the CPU has it.
 */
#ifndef QS_KERNELS_H
#define QS_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum { QS_ISA_PORTABLE = 0, QS_ISA_AVX2 = 1, QS_ISA_AVX512 = 2 };
enum { QS_STRATEGY_AUTO = 0, QS_STRATEGY_DIRECT = 1, QS_STRATEGY_BLOCKED = 2 };
enum { QS_KIND_INT8 = 0, QS_KIND_UINT8 = 1, QS_KIND_INT4 = 2, QS_KIND_FLOAT16 = 3, QS_KIND_FLOAT32 = 4 };
/* ggml block rows (uint8): per 32 dimensions a float16 d (q4_1: then a float16 m) and the values;
 * the weights are padded to whole blocks (dim = 32 * blocks) */
enum { QS_KIND_Q8_0 = 5, QS_KIND_Q4_0 = 6, QS_KIND_Q4_1 = 7 };

#if defined(__x86_64__) || defined(_M_X64)
#define QS_X86 1
#define QS_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vpopcntdq,popcnt")))
#define QS_TARGET_AVX2 __attribute__((target("avx2,fma,f16c,popcnt")))
#else
#define QS_X86 0
#endif

#define QS_SENTINEL_DIST UINT32_MAX
#define QS_SENTINEL_ROW INT64_MAX

/* One scan: a chunk of queries against the code rows [0, n).
 * A code row is `stride` bytes and begins with `planes` bit planes of nb bytes each (Hamming: one
 * plane, stride == nb); the transposed block holds word w of plane p of row b0 + i at
 * T[(p * W + w) * bpad + i], the last word of each plane ANDed with `last_mask`. */
typedef struct {
    const uint8_t *codes;   /* (n, stride) codes, row-major */
    const uint8_t *valid;   /* (n,) 0 = deleted, or NULL */
    const uint8_t *qbytes;  /* (nq, nb) packed queries of this chunk (Hamming), or NULL */
    const uint64_t *qwords; /* (nq, W) queries as little-endian words, last word zero padded, or NULL */
    int64_t n, nq, nb, W, k;
    int64_t stride, planes;
    uint64_t last_mask;
    int64_t q0;      /* index of the chunk's first query within the call */
    const void *ctx; /* per-call data of the kernel (the planes scan's query tables) */
    /* AND-term layout (transposed kernels only): the row holds src_planes planes of src_nb bytes
     * (src_W words, the last ANDed with src_mask); the transposed block holds them and then their
     * AND (plane 0 & plane 1), (src_planes + 1) * src_W words in all, which the kernels see as
     * one plane of W = (src_planes + 1) * src_W words. and_term = 0: the plain layout above. */
    int and_term;
    int64_t src_planes, src_nb, src_W;
    uint64_t src_mask;
} qs_scan;

/* Per-thread running top-k of every query of the chunk: max-heaps keyed by (dist, row). */
typedef struct {
    uint32_t *dist; /* (nq, k) */
    int64_t *rows;  /* (nq, k) */
    uint64_t *thr;  /* (nq,) distance of the heap top: only d < thr can enter */
    int64_t k;
} qs_heaps;

/* Kernel over rows [b0, b0 + nblk) for queries [q0, q1) of the chunk, reading the codes row-major. */
typedef void (*qs_direct_fn)(const qs_scan *s, int64_t b0, int64_t nblk, int64_t q0, int64_t q1,
                             qs_heaps *h);
/* Same, reading a transposed block: word w of row b0 + i at T[w * bpad + i]. */
typedef void (*qs_blocked_fn)(const qs_scan *s, int64_t b0, int64_t nblk, const uint64_t *T,
                              int64_t bpad, int64_t q0, int64_t q1, qs_heaps *h);

/* Offer `nl` lanes (bit i of mask set = lane i passed the threshold test) at distances d[i] for
 * rows row0 + i to query q's heap. Rows must arrive in ascending order per heap. */
void qs_offer(qs_heaps *h, const qs_scan *s, int64_t q, unsigned mask, const uint64_t *d, int64_t row0);

/* hamming.c: the scan driver, shared by the Hamming and the bit-plane scans. `tmpl` gives the
 * codes, layout and per-call data (q0 and the query pointers are set per chunk of queries; qbytes
 * and qwords, where present, are for the whole call). `row_cost` weighs the work per row (bytes of
 * popcounts) for choosing the thread count. Outputs (nq, k) keys ascending and their rows;
 * QS_SENTINEL_DIST / -1 in padding slots. */
int qs_scan_topk(const qs_scan *tmpl, qs_direct_fn direct, qs_blocked_fn blocked, int nthreads,
                 int64_t block_bytes, int64_t row_cost, uint32_t *out_keys, int64_t *out_rows);
/* Popcount work per added thread (see qs_scan_topk); qs_thread_work_bytes(v >= 0) sets it, and
 * returns the previous value (v < 0: only reads it). */
#define QS_THREAD_WORK_BYTES ((int64_t)8 << 20)
#define QS_ROW_OVERHEAD 256 /* work of one row besides its popcounts, in the same bytes */
int64_t qs_thread_work_bytes(int64_t value);
int qs_isa_supported(int isa);
int qs_hamming_topk(const uint8_t *queries, const uint8_t *codes, const uint8_t *valid, int64_t nq,
                    int64_t n, int64_t nb, int64_t k, int isa, int strategy, int nthreads,
                    int64_t block_bytes, int32_t *out_dist, int64_t *out_rows);

/* hamming_x86.c */
#define QS_BLOCKED_WMAX 64 /* words per code of the transposed AVX2 kernel (4096 bits; 16 KiB of query vectors) */
#if QS_X86
void qs_direct_avx512(const qs_scan *s, int64_t b0, int64_t nblk, int64_t q0, int64_t q1, qs_heaps *h);
void qs_blocked_avx512(const qs_scan *s, int64_t b0, int64_t nblk, const uint64_t *T, int64_t bpad,
                       int64_t q0, int64_t q1, qs_heaps *h);
void qs_direct_popcnt(const qs_scan *s, int64_t b0, int64_t nblk, int64_t q0, int64_t q1, qs_heaps *h);
void qs_direct_avx2(const qs_scan *s, int64_t b0, int64_t nblk, int64_t q0, int64_t q1, qs_heaps *h);
void qs_blocked_avx2(const qs_scan *s, int64_t b0, int64_t nblk, const uint64_t *T, int64_t bpad,
                     int64_t q0, int64_t q1, qs_heaps *h);
uint64_t qs_stream_xor_avx512(const uint8_t *p, size_t bytes);
uint64_t qs_stream_xor_avx2(const uint8_t *p, size_t bytes);
#endif
/* planes.c: top-k of float query weights against bit-plane codes; see planes.c */
enum { QS_PLANES_MAX = 8, QS_QUERY_BITS_MAX = 8 };
typedef struct {
    int qbits;               /* bits per quantized query weight, 0 = exact float byte tables */
    const uint64_t *uwords;  /* (nq, qbits, W) the queries' level bit planes as words */
    const double *lo, *delta; /* (nq,) weight ~ lo + delta * level */
    const float *tables;     /* exact mode: (nq, nb, 256) sum of the weights of a byte's set bits */
    const double *coef;      /* (planes,) */
    const float *row_scale, *row_bias; /* (n,) or NULL (1, 0) */
    const double *qoff;      /* (nq,) */
} qs_planes_ctx;
int qs_planes_topk(const uint8_t *codes, const uint8_t *valid, int64_t n, int64_t stride, int64_t planes,
                   int64_t dim, const float *weights, int64_t nq, int qbits, const uint8_t *uplanes,
                   const double *lo, const double *delta, const double *coef, const float *row_scale,
                   const float *row_bias, const double *qoff, int64_t k, int isa, int strategy, int nthreads,
                   int64_t block_bytes, int and_term, float *out_scores, int64_t *out_rows);
/* planes.c: top-k of per-query byte lookup tables (nq, nb, 256): score = row_scale * (sum_j
 * tables[q, j, code[j]] + qoff) + row_bias; codes rows of `stride` bytes, the first nb scored */
int qs_table_topk(const uint8_t *codes, const uint8_t *valid, int64_t n, int64_t stride, int64_t nb,
                  const float *tables, int64_t nq, const float *row_scale, const float *row_bias, const double *qoff,
                  int64_t k, int nthreads, int64_t block_bytes, float *out_scores, int64_t *out_rows);
/* nibbles.c: top-k of 2-bit codes (two bit planes) or 5-trit bytes (base 3) from per-query tables
 * of 16 uint8 per group (two dimensions' bits; two trits, or one): score = row_scale * (lo + delta *
 * sum_g lut[g][index_g] + qoff) + row_bias, the row scale from row_scale, or (scale_at >= 0) the
 * float32 at that byte of each row, or 1; see nibbles.c */
enum { QS_NIB_PLANES = 0, QS_NIB_BASE3 = 1, QS_NIB_BITS = 2 }; /* bits: one plane, 4 dimensions a nibble */
/* groups per byte position, planes and levels per dimension of a layout */
static inline int64_t qs_nib_gpb(int layout) { return layout == QS_NIB_PLANES ? 4 : layout == QS_NIB_BASE3 ? 3 : 2; }
static inline int64_t qs_nib_planes(int layout) { return layout == QS_NIB_PLANES ? 2 : 1; }
static inline int64_t qs_nib_levels(int layout) { return layout == QS_NIB_PLANES ? 4 : layout == QS_NIB_BASE3 ? 3 : 2; }
int qs_nibble_topk(const uint8_t *codes, const uint8_t *valid, int64_t n, int64_t stride, int64_t nb, int layout,
                   const uint8_t *luts, int64_t nq, const double *lo, const double *delta, const float *row_scale,
                   int64_t scale_at, const float *row_bias, const double *qoff, int64_t k, int isa, int nthreads,
                   int64_t block_bytes, float *out_scores, int64_t *out_rows);
/* nibbles.c: the tables of numpy_backend.nibble_luts from float32 queries (nq, dim) and per-dimension
 * level values (dim, 4 or 3) float64 (-2: a value not finite), and the scan from them in one call:
 * qs_nibble_topk's scores (qoff NULL: 0) plus score_bias[q] in float32 (NULL: none); -1: no memory */
int qs_nibble_luts(const float *queries, int64_t nq, int64_t dim, const double *levels, int layout, int64_t nb,
                    double *work, uint8_t *luts, double *lo, double *delta);
int qs_nibble_scan(const uint8_t *codes, const uint8_t *valid, int64_t n, int64_t stride, int64_t nb, int layout,
                   const float *queries, int64_t nq, int64_t dim, const double *levels, const float *row_scale,
                   int64_t scale_at, const float *row_bias, const double *qoff, const float *score_bias, int64_t k,
                   int isa, int nthreads, int64_t block_bytes, float *out_scores, int64_t *out_rows);
/* rescore.c: top-k of ggml block rows (kind QS_KIND_Q8_0 / Q4_0 / Q4_1, `stride` bytes, dim / 32
 * blocks) by their qs_rescore score against each query's weights (nq, dim); see rescore.c */
int qs_blocks_topk(const uint8_t *codes, const uint8_t *valid, int64_t n, int64_t stride, const float *weights,
                   int64_t nq, int64_t dim, int kind, int64_t k, int isa, int nthreads, float *out_scores,
                   int64_t *out_rows);
/* key of a float score: smaller key = larger score; -0 and +0 share a key (the caller adds +0) */
static inline uint32_t qs_score_key(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    return (b & 0x80000000u) ? b : b ^ 0x7fffffffu;
}
static inline float qs_key_score(uint32_t key) {
    uint32_t b = (key & 0x80000000u) ? key : key ^ 0x7fffffffu;
    float f;
    memcpy(&f, &b, 4);
    return f;
}
#if QS_X86
void qs_planes_blocked_avx512(const qs_scan *s, int64_t b0, int64_t nblk, const uint64_t *T, int64_t bpad,
                              int64_t q0, int64_t q1, qs_heaps *h);
void qs_planes_blocked_avx2(const qs_scan *s, int64_t b0, int64_t nblk, const uint64_t *T, int64_t bpad,
                            int64_t q0, int64_t q1, qs_heaps *h);
void qs_planes_direct_avx512(const qs_scan *s, int64_t b0, int64_t nblk, int64_t q0, int64_t q1, qs_heaps *h);
void qs_planes_direct_popcnt(const qs_scan *s, int64_t b0, int64_t nblk, int64_t q0, int64_t q1, qs_heaps *h);
#endif

/* XOR of every word of a buffer: a one-pass sequential read (memory bandwidth probe). */
uint64_t qs_stream_xor(const uint8_t *p, size_t bytes, int isa);

/* dst[dst_rows[i]] += src[src_offsets[i] + 0..width) (float32), i < m; indices checked by the caller. */
void qs_scatter_add_rows(const float *src, const int64_t *src_offsets, const int64_t *dst_rows, int64_t m,
                         int64_t width, float *dst);
#define QS_NEAREST_MAX_PARTS 1024
void qs_nearest_blocks(const float *y, int64_t n, int64_t row_len, int64_t first, int64_t reps,
                       int64_t parts, int64_t width, const float *centroids_t, const float *half,
                       int64_t *out);

/* rescore.c: segments of one tier, row r of segment i at base[i] + (r - starts[i]) * row_bytes */
typedef struct {
    const uint8_t *const *base;
    const int64_t *starts; /* ascending, starts[0] == 0 */
    const int64_t *nrows;
    int64_t count;
    int64_t row_bytes;
} qs_segments;

int qs_rescore(const qs_segments *segs, const int64_t *rows, int64_t nq, int64_t c, const float *weights,
               int64_t dim, int kind, int32_t offset, int isa, int nthreads, float *out);
int64_t qs_row_bytes(int kind, int64_t dim);
float qs_half_to_float(uint16_t h);

/* ivf.c: lists of each query by int8 centroid scores (out (nq, cap) int32, -1 padded), and the
 * Hamming top-k of each query over the rows of its lists; see ivf.c. -2: inconsistent offsets. */
int qs_ivf_probe(const float *queries, const uint8_t *qbits, int64_t nq, int64_t dim, const int8_t *cent,
                 const float *scale, const uint8_t *cbits, int64_t nbits, int64_t nlist, const int64_t *counts,
                 int64_t nprobe, int64_t want, int64_t cap, int64_t shortlist, int isa, int nthreads,
                 int32_t *out);
int qs_ivf_scan(const uint8_t *qcodes, int64_t nq, int64_t nb, const uint8_t *codes, int64_t n_rows,
                const int32_t *order, int64_t norder, const int64_t *offsets, int64_t nlist, const int32_t *probes,
                int64_t P, const uint8_t *valid, int64_t k, int isa, int nthreads, int32_t *out_dist,
                int64_t *out_rows);

/* threads.c: run fn(arg + i * size) for i in [0, count) on up to `count` threads (index 0 on the
 * calling thread); falls back to running in the calling thread if a thread cannot start. */
void qs_parallel(void *(*fn)(void *), void *args, size_t size, int count);

static inline uint64_t qs_load64(const uint8_t *p) {
    uint64_t x;
    memcpy(&x, p, 8);
    return x;
}

/* Word w of a packed code of nb bytes (the last one zero padded): the same view for queries and codes. */
static inline uint64_t qs_word(const uint8_t *p, int64_t nb, int64_t w) {
    if (8 * w + 8 <= nb) return qs_load64(p + 8 * w);
    uint64_t x = 0;
    memcpy(&x, p + 8 * w, (size_t)(nb - 8 * w));
    return x;
}

#endif
