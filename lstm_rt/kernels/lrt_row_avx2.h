/* A single row of A against panels of fp32 weights with AVX2 + FMA, in the order of
 * lrt_f32_split: the products of a streaming step. Shared by the panel product
 * (lrt_gemm_avx2.c) and the fused step (lrt_cell_avx2.c), which must sum alike. Include
 * only from files compiled for x86-64 with GCC/Clang. */
#ifndef LRT_ROW_AVX2_H
#define LRT_ROW_AVX2_H

#include <immintrin.h>
#include <stddef.h>

#define LRT_ROW_INLINE static inline __attribute__((always_inline, target("avx2,fma")))

/* A single row of a split matrix: one panel at a time (narrower ones 2 or 4 at once), the
 * even and the odd k's sums side by side: a 32-wide panel alone has 8 independent sums, so
 * the row reads the weights as one stream, panel after panel. (Three panels at once read
 * three streams that start again every pass: on Zen 5, from L2, 105-120 GB/s against one
 * stream's 145-175.) */
LRT_ROW_INLINE void row_split(int P, int NV, int K, const float *a, const float *wp, size_t pstride,
                               const float *bias, float *out)
{
    const int gw = NV * 8;
    __m256 ev[8], od[8];
    for (int p = 0; p < P; p++)
        for (int v = 0; v < NV; v++) {
            ev[p * NV + v] = bias ? _mm256_loadu_ps(bias + p * gw + 8 * v) : _mm256_setzero_ps();
            od[p * NV + v] = _mm256_setzero_ps();
        }
    int k = 0;
    for (; k + 2 <= K; k += 2) {
        __m256 ak = _mm256_broadcast_ss(a + k), bk = _mm256_broadcast_ss(a + k + 1);
        for (int p = 0; p < P; p++) {
            const float *w = wp + p * pstride + (size_t)k * gw;
            for (int v = 0; v < NV; v++) ev[p * NV + v] = _mm256_fmadd_ps(ak, _mm256_loadu_ps(w + 8 * v), ev[p * NV + v]);
            for (int v = 0; v < NV; v++) od[p * NV + v] = _mm256_fmadd_ps(bk, _mm256_loadu_ps(w + gw + 8 * v), od[p * NV + v]);
        }
    }
    if (k < K) {  /* an odd K: the last k is even */
        __m256 ak = _mm256_broadcast_ss(a + k);
        for (int p = 0; p < P; p++)
            for (int v = 0; v < NV; v++)
                ev[p * NV + v] = _mm256_fmadd_ps(ak, _mm256_loadu_ps(wp + p * pstride + (size_t)k * gw + 8 * v), ev[p * NV + v]);
    }
    for (int p = 0; p < P; p++)
        for (int v = 0; v < NV; v++) _mm256_storeu_ps(out + p * gw + 8 * v, _mm256_add_ps(ev[p * NV + v], od[p * NV + v]));
}

/* A single row of a larger matrix, every k in order, against P panels at once: P * NV
 * independent sums hide the 4-cycle FMA latency (one panel alone has too few: a 512x10000
 * Dense head ran at a quarter of the FMA rate), and the P streams keep enough misses in
 * flight for weights that come from L3 or memory (one stream, split, ran 1.1-1.5x slower
 * there). */
LRT_ROW_INLINE void row_panels(int P, int NV, int K, const float *a, const float *wp, size_t pstride,
                                const float *bias, float *out)
{
    const int gw = NV * 8;
    __m256 acc[12];
    for (int p = 0; p < P; p++)
        for (int v = 0; v < NV; v++)
            acc[p * NV + v] = bias ? _mm256_loadu_ps(bias + p * gw + 8 * v) : _mm256_setzero_ps();
    for (int k = 0; k < K; k++) {
        __m256 ak = _mm256_broadcast_ss(a + k);
        for (int p = 0; p < P; p++) {
            const float *w = wp + p * pstride + (size_t)k * gw;
            for (int v = 0; v < NV; v++) acc[p * NV + v] = _mm256_fmadd_ps(ak, _mm256_loadu_ps(w + 8 * v), acc[p * NV + v]);
        }
    }
    for (int p = 0; p < P; p++)
        for (int v = 0; v < NV; v++) _mm256_storeu_ps(out + p * gw + 8 * v, acc[p * NV + v]);
}

#endif
