/* The k largest scores of a vector, best first, in one pass: a sorted buffer of k
 * entries; a score enters only if it beats the buffer's smallest, so after the first few
 * hundred the loop is a compare and a predictable branch. Ties keep the lower index;
 * NaN never enters. Portable C. */
#include "lrt_kernels.h"

/* Insert (v, id) into the sorted buffer of `have` entries (capacity k); returns the new count. */
static int insert(float v, int64_t id, int have, int k, int64_t *out, float *best)
{
    int j = have < k ? have++ : k - 1;   /* when full, the smallest drops out */
    while (j > 0 && v > best[j - 1]) {
        best[j] = best[j - 1];
        out[j] = out[j - 1];
        j--;
    }
    best[j] = v;
    out[j] = id;
    return have;
}

int lrt_top_k(const float *scores, int n, const int64_t *ids, int k, int64_t *out, float *best)
{
    int have = 0, i = 0;
    /* fill the buffer with the first k real numbers */
    for (; i < n && have < k; i++) {
        int64_t id = ids ? ids[i] : i;
        float v = scores[id];
        if (v == v) have = insert(v, id, have, k, out, best);
    }
    if (have < k) return have;
    float thr = best[k - 1];
    if (ids) {
        for (; i < n; i++) {
            float v = scores[ids[i]];
            if (v > thr) { insert(v, ids[i], k, k, out, best); thr = best[k - 1]; }
        }
    } else {
        for (; i < n; i++) {
            float v = scores[i];
            if (v > thr) { insert(v, i, k, k, out, best); thr = best[k - 1]; }
        }
    }
    return have;
}
