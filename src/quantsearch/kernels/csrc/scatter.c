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

/* Nearest centroid of every (token, repetition) block (MUVERA's k-means partitions).
 *
 * Block j of token i is y[i * row_len + first + j * width .. + width); its partition is the centroid
 * c of repetition j with the largest <block, centroid> - half[j, c] (half = |c|^2 / 2, so the largest
 * is the nearest), ties to the smaller c, written to out[i * reps + j]. The centroids come transposed,
 * centroids_t[j, k, c], so that the inner loop runs over the partitions: independent lanes, which the
 * compiler vectorises without reordering any sum. One pass over y; every repetition's centroids
 * (40 KB at the defaults) stay in cache. parts <= QS_NEAREST_MAX_PARTS (checked by the binding). */
void qs_nearest_blocks(const float *y, int64_t n, int64_t row_len, int64_t first, int64_t reps,
                       int64_t parts, int64_t width, const float *centroids_t, const float *half,
                       int64_t *out) {
    float scores[QS_NEAREST_MAX_PARTS];
    for (int64_t i = 0; i < n; i++) {
        const float *row = y + i * row_len + first;
        for (int64_t j = 0; j < reps; j++) {
            const float *b = row + j * width;
            const float *ct = centroids_t + j * width * parts;
            const float *h = half + j * parts;
            for (int64_t p = 0; p < parts; p++) scores[p] = 0.0f;
            for (int64_t k = 0; k < width; k++) {
                const float bk = b[k];
                const float *restrict col = ct + k * parts;
                for (int64_t p = 0; p < parts; p++) scores[p] += bk * col[p];
            }
            int64_t best = 0;
            float best_score = scores[0] - h[0];
            for (int64_t p = 1; p < parts; p++) {
                const float s = scores[p] - h[p];
                if (s > best_score) {
                    best_score = s;
                    best = p;
                }
            }
            out[i * reps + j] = best;
        }
    }
}
