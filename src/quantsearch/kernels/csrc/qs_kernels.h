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

#if defined(__x86_64__) || defined(_M_X64)
#define QS_X86 1
#define QS_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vpopcntdq,popcnt")))
#define QS_TARGET_AVX2 __attribute__((target("avx2,fma,f16c,popcnt")))
#else
#define QS_X86 0
#endif

#define QS_SENTINEL_DIST UINT32_MAX
#define QS_SENTINEL_ROW INT64_MAX

/* One scan: a chunk of queries against the code rows [0, n). */
typedef struct {
    const uint8_t *codes;   /* (n, nb) packed codes, row-major */
    const uint8_t *valid;   /* (n,) 0 = deleted, or NULL */
    const uint8_t *qbytes;  /* (nq, nb) packed queries */
    const uint64_t *qwords; /* (nq, W) queries as little-endian words, last word zero padded */
    int64_t n, nq, nb, W, k;
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

/* hamming.c */
int qs_isa_supported(int isa);
int qs_hamming_topk(const uint8_t *queries, const uint8_t *codes, const uint8_t *valid, int64_t nq,
                    int64_t n, int64_t nb, int64_t k, int isa, int strategy, int nthreads,
                    int64_t block_bytes, int32_t *out_dist, int64_t *out_rows);

/* hamming_x86.c */
#if QS_X86
void qs_direct_avx512(const qs_scan *s, int64_t b0, int64_t nblk, int64_t q0, int64_t q1, qs_heaps *h);
void qs_blocked_avx512(const qs_scan *s, int64_t b0, int64_t nblk, const uint64_t *T, int64_t bpad,
                       int64_t q0, int64_t q1, qs_heaps *h);
void qs_direct_popcnt(const qs_scan *s, int64_t b0, int64_t nblk, int64_t q0, int64_t q1, qs_heaps *h);
void qs_blocked_avx2(const qs_scan *s, int64_t b0, int64_t nblk, const uint64_t *T, int64_t bpad,
                     int64_t q0, int64_t q1, qs_heaps *h);
uint64_t qs_stream_xor_avx512(const uint8_t *p, size_t bytes);
#endif
/* XOR of every word of a buffer: a one-pass sequential read (memory bandwidth probe). */
uint64_t qs_stream_xor(const uint8_t *p, size_t bytes, int isa);

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
