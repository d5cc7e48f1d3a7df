/* Packed-panel matrix product with AVX2 + FMA, compiled for those instructions only here
 * (function target attributes), so the rest of the build stays baseline x86-64 and this
 * code runs only after lrt_init has seen the CPU support it. */
#include "lrt_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#include <string.h>

#define LRT_AVX2 __attribute__((target("avx2,fma")))
#define LRT_AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma")))

/* One tile: R rows x NV vectors of 8 columns, over all K, for one panel block. Per k the
 * R broadcasts are loaded first, then each weight vector once, feeding R FMAs: R * NV
 * accumulators + R broadcasts + 1 weight register must fit the 16 ymm registers. */
LRT_AVX2_INLINE void tile(int R, int NV, int K, const float *A, int lda, const float *wp,
                          const float *bias, float *out, int ldo)
{
    __m256 acc[12];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < NV; v++)
            acc[r * NV + v] = bias ? _mm256_loadu_ps(bias + 8 * v) : _mm256_setzero_ps();
    const int gw = NV * 8;
    for (int k = 0; k < K; k++) {
        const float *w = wp + (size_t)k * gw;
        __m256 a[6];
        for (int r = 0; r < R; r++) a[r] = _mm256_broadcast_ss(A + (size_t)r * lda + k);
        for (int v = 0; v < NV; v++) {
            __m256 wv = _mm256_loadu_ps(w + 8 * v);
            for (int r = 0; r < R; r++) acc[r * NV + v] = _mm256_fmadd_ps(a[r], wv, acc[r * NV + v]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int v = 0; v < NV; v++) _mm256_storeu_ps(out + (size_t)r * ldo + 8 * v, acc[r * NV + v]);
}

/* A single row (the streaming step) against P panels at once: P * NV independent sums
 * hide the 4-cycle FMA latency (one panel alone has too few: a 512x10000 Dense head ran
 * at a quarter of the FMA rate). Each column's sum starts from its bias and runs over k
 * in order, exactly as tile() computes a row of a batch, so a step and a whole-sequence
 * run give the same bits (splitting k into partial sums instead did not: 1e-5 apart). */
LRT_AVX2_INLINE void row_panels(int P, int NV, int K, const float *a, const float *wp, size_t pstride,
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

/* panels a single row takes at once: at least 8 sums in flight (32-wide panels: 12, one
 * broadcast per 96 multiply-adds, with room left in the 16 registers) */
#define PANELS_FOR(NV) ((NV) >= 3 ? 3 : (NV) == 2 ? 4 : 8)

#define ROWS_FOR(NV) ((NV) >= 3 ? 3 : (NV) == 2 ? 4 : 6)

#define DEFINE_GEMM_AVX2(NV)                                                                  \
LRT_AVX2 static void gemm_nv##NV(int M, int K, const float *A, int lda, const float *Wp,      \
                                 int nblk, const float *bias, float *C, int ldc, int ncols)   \
{                                                                                             \
    const int gw = NV * 8, R = ROWS_FOR(NV);                                                  \
    float tmp[6 * 32];                                                                        \
    for (int blk = 0; blk < nblk; blk++) {                                                    \
        const float *wp = Wp + (size_t)blk * K * gw;                                          \
        const float *bb = bias ? bias + blk * gw : NULL;                                      \
        int j0 = blk * gw, full = ncols - j0 >= gw;                                           \
        int n = full ? gw : ncols - j0;                                                       \
        int m = 0;                                                                            \
        if (M == 1) {                                                                         \
            const int P = PANELS_FOR(NV);                                                     \
            if (blk + P <= nblk && (blk + P) * gw <= ncols) {                                 \
                row_panels(P, NV, K, A, wp, (size_t)K * gw, bb, C + j0);                      \
                blk += P - 1;                                                                 \
            } else if (P > 2 && blk + 2 <= nblk && (blk + 2) * gw <= ncols) {                 \
                row_panels(2, NV, K, A, wp, (size_t)K * gw, bb, C + j0);                      \
                blk += 1;                                                                     \
            } else {                                                                          \
                row_panels(1, NV, K, A, wp, 0, bb, full ? C + j0 : tmp);                      \
                if (!full) memcpy(C + j0, tmp, (size_t)n * sizeof(float));                    \
            }                                                                                 \
            continue;                                                                         \
        }                                                                                     \
        for (; m + R <= M; m += R) {                                                          \
            float *dst = full ? C + (size_t)m * ldc + j0 : tmp;                               \
            tile(R, NV, K, A + (size_t)m * lda, lda, wp, bb, dst, full ? ldc : gw);           \
            if (!full)                                                                        \
                for (int r = 0; r < R; r++)                                                   \
                    memcpy(C + (size_t)(m + r) * ldc + j0, tmp + r * gw, (size_t)n * sizeof(float)); \
        }                                                                                     \
        for (; m < M; m++) {                                                                  \
            tile(1, NV, K, A + (size_t)m * lda, lda, wp, bb, tmp, gw);                        \
            memcpy(C + (size_t)m * ldc + j0, tmp, (size_t)n * sizeof(float));                \
        }                                                                                     \
    }                                                                                         \
}

DEFINE_GEMM_AVX2(1)
DEFINE_GEMM_AVX2(2)
DEFINE_GEMM_AVX2(3)
DEFINE_GEMM_AVX2(4)

void lrt_gemm_panels_avx2(int M, int K, const float *A, int lda, const float *Wp, int nblk, int gw,
                          const float *bias, float *C, int ldc, int ncols)
{
    if (M <= 0 || nblk <= 0) return;
    switch (gw) {
    case 8:  gemm_nv1(M, K, A, lda, Wp, nblk, bias, C, ldc, ncols); break;
    case 16: gemm_nv2(M, K, A, lda, Wp, nblk, bias, C, ldc, ncols); break;
    case 24: gemm_nv3(M, K, A, lda, Wp, nblk, bias, C, ldc, ncols); break;
    default: gemm_nv4(M, K, A, lda, Wp, nblk, bias, C, ldc, ncols); break;
    }
}

int lrt_cpu_has_avx2_fma(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
}

/* __builtin_cpu_supports also checks (XGETBV) that the OS saves the AVX-512 registers. */
int lrt_cpu_has_avx512vnni(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw");
}

#else  /* not x86-64 with GCC/Clang: the portable kernels are the only ones */

void lrt_gemm_panels_avx2(int M, int K, const float *A, int lda, const float *Wp, int nblk, int gw,
                          const float *bias, float *C, int ldc, int ncols)
{
    lrt_gemm_panels_generic(M, K, A, lda, Wp, nblk, gw, bias, C, ldc, ncols);
}

int lrt_cpu_has_avx2_fma(void) { return 0; }
int lrt_cpu_has_avx512vnni(void) { return 0; }

#endif
