/* The k largest scores of a vector, best first, in one pass: a sorted buffer of k
 * entries; a score enters only if it beats the buffer's smallest, so after the first few
 * hundred the loop is a compare and a predictable branch (with AVX2 or NEON, one test per
 * 8 scores). Ties keep the lower index; NaN never enters. */
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

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

/* Scores i.. in blocks of 8 against the buffer's smallest; the few blocks holding a better
 * score go through insert lane by lane, in index order, so the result is the scalar
 * loop's. Returns where the scalar loop takes over (fewer than 8 left). */
__attribute__((target("avx2"))) static int scan_avx2(const float *s, int i, int n, int k, int64_t *out, float *best)
{
    float thr = best[k - 1];
    for (; i + 8 <= n; i += 8) {
        int m = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(s + i), _mm256_set1_ps(thr), _CMP_GT_OQ));
        for (; m; m &= m - 1) {
            int j = i + __builtin_ctz((unsigned)m);
            if (s[j] > thr) { insert(s[j], j, k, k, out, best); thr = best[k - 1]; }
        }
    }
    return i;
}
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#include <arm_neon.h>

/* scan_avx2 with NEON: 8 scores (two vectors) per test. */
static int scan_neon(const float *s, int i, int n, int k, int64_t *out, float *best)
{
    float thr = best[k - 1];
    for (; i + 8 <= n; i += 8) {
        float32x4_t t = vdupq_n_f32(thr);
        uint32x4_t gt = vorrq_u32(vcgtq_f32(vld1q_f32(s + i), t), vcgtq_f32(vld1q_f32(s + i + 4), t));
        if (vmaxvq_u32(gt) == 0) continue;   /* the common case: nothing beats the buffer */
        for (int j = i; j < i + 8; j++)
            if (s[j] > thr) { insert(s[j], j, k, k, out, best); thr = best[k - 1]; }
    }
    return i;
}
#endif

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
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
        if (lrt_isa_level() >= LRT_ISA_AVX2) {
            i = scan_avx2(scores, i, n, k, out, best);
            thr = best[k - 1];
        }
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
        if (lrt_isa_level() >= LRT_ISA_NEON) {
            i = scan_neon(scores, i, n, k, out, best);
            thr = best[k - 1];
        }
#endif
        for (; i < n; i++) {
            float v = scores[i];
            if (v > thr) { insert(v, i, k, k, out, best); thr = best[k - 1]; }
        }
    }
    return have;
}
