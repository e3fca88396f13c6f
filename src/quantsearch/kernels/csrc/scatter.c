/* Row scatter-add (the partition sums of MUVERA's Fixed Dimensional Encodings).
 *
 * dst[dst_rows[i]] += src[src_offsets[i] .. src_offsets[i] + width) for i in 0..m-1 (float32): the
 * source rows are slices of one flat buffer (a projected token's block of one repetition is a
 * slice of its matrix-product row). The caller orders the pairs so that consecutive writes stay in
 * a small range of dst (one text's partitions of one repetition), which keeps the destination rows
 * in cache. The indices are checked by the binding before the loop; the compiler vectorises the
 * inner loop. */
#include "qs_kernels.h"

void qs_scatter_add_rows(const float *src, const int64_t *src_offsets, const int64_t *dst_rows, int64_t m,
                         int64_t width, float *dst) {
    for (int64_t i = 0; i < m; i++) {
        const float *restrict s = src + src_offsets[i];
        float *restrict d = dst + dst_rows[i] * width;
        for (int64_t j = 0; j < width; j++) d[j] += s[j];
    }
}
