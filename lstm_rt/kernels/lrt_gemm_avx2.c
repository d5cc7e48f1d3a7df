/* Packed-panel matrix product with AVX2 + FMA, compiled for those instructions only here
 * (function target attributes), so the rest of the build stays baseline x86-64 and this
 * code runs only after lrt_init has seen the CPU support it. */
#include "lrt_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#include <string.h>
#include "lrt_row_avx2.h"

#define LRT_AVX2 __attribute__((target("avx2,fma")))
#define LRT_AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma")))

/* One tile: R rows x NV vectors of 8 columns of one panel, the k's k0, k0 + kstep, ... (k0 =
 * 0: from the bias, stored; k0 = 1: from 0, added to what the first pass stored). Per k the
 * R broadcasts are loaded first, then each weight vector once, feeding R FMAs: R * NV
 * accumulators + R broadcasts + 1 weight register must fit the 16 ymm registers. */
LRT_AVX2_INLINE void tile_pass(int R, int NV, int K, int k0, int kstep, const float *A, int lda,
                               const float *wp, const float *bias, float *out, int ldo)
{
    __m256 acc[12];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < NV; v++)
            acc[r * NV + v] = bias && k0 == 0 ? _mm256_loadu_ps(bias + 8 * v) : _mm256_setzero_ps();
    const int gw = NV * 8;
    for (int k = k0; k < K; k += kstep) {
        const float *w = wp + (size_t)k * gw;
        __m256 a[6];
        for (int r = 0; r < R; r++) a[r] = _mm256_broadcast_ss(A + (size_t)r * lda + k);
        for (int v = 0; v < NV; v++) {
            __m256 wv = _mm256_loadu_ps(w + 8 * v);
            for (int r = 0; r < R; r++) acc[r * NV + v] = _mm256_fmadd_ps(a[r], wv, acc[r * NV + v]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int v = 0; v < NV; v++) {
            float *o = out + (size_t)r * ldo + 8 * v;
            _mm256_storeu_ps(o, k0 == 0 ? acc[r * NV + v] : _mm256_add_ps(_mm256_loadu_ps(o), acc[r * NV + v]));
        }
}

/* A tile in the matrix's order (lrt_f32_split): every k in one pass, or the even k's, then
 * the odd ones (a second pass over the panel, which the first left in L1). */
LRT_AVX2_INLINE void tile(int R, int NV, int K, int split, const float *A, int lda, const float *wp,
                          const float *bias, float *out, int ldo)
{
    tile_pass(R, NV, K, 0, split ? 2 : 1, A, lda, wp, bias, out, ldo);
    if (split) tile_pass(R, NV, K, 1, 2, A, lda, wp, bias, out, ldo);
}

/* panels a single row takes at once: at least 8 sums in flight (32-wide panels: 12, one
 * broadcast per 96 multiply-adds, with room left in the 16 registers); split, a 24-wide
 * panel alone has 6 (two at once, two streams, measured slower) */
#define PANELS_FOR(NV) ((NV) >= 3 ? 3 : (NV) == 2 ? 4 : 8)
#define PANELS_SPLIT(NV) ((NV) >= 3 ? 1 : (NV) == 2 ? 2 : 4)

#define ROWS_FOR(NV) ((NV) >= 3 ? 3 : (NV) == 2 ? 4 : 6)

/* A single row over PMAX panels from blk on (fewer at the end; a ragged last panel through
 * tmp) with FN, row_split or row_panels; moves blk to the last panel taken. */
#define ROW_PASS(FN, PMAX, NV)                                                                \
    do {                                                                                      \
        if (blk + (PMAX) <= nblk && (blk + (PMAX)) * gw <= ncols) {                           \
            FN((PMAX), NV, K, A, wp, (size_t)K * gw, bb, C + j0);                             \
            blk += (PMAX) - 1;                                                                \
        } else if ((PMAX) > 2 && blk + 2 <= nblk && (blk + 2) * gw <= ncols) {                \
            FN(2, NV, K, A, wp, (size_t)K * gw, bb, C + j0);                                  \
            blk += 1;                                                                         \
        } else {                                                                              \
            FN(1, NV, K, A, wp, 0, bb, full ? C + j0 : tmp);                                  \
            if (!full) memcpy(C + j0, tmp, (size_t)n * sizeof(float));                        \
        }                                                                                     \
    } while (0)

#define DEFINE_GEMM_AVX2(NV)                                                                  \
LRT_AVX2 static void gemm_nv##NV(int M, int K, const float *A, int lda, const float *Wp,      \
                                 int nblk, const float *bias, float *C, int ldc, int ncols)   \
{                                                                                             \
    const int gw = NV * 8, R = ROWS_FOR(NV), split = lrt_f32_split(K, nblk, gw);              \
    float tmp[6 * 32];                                                                        \
    for (int blk = 0; blk < nblk; blk++) {                                                    \
        const float *wp = Wp + (size_t)blk * K * gw;                                          \
        const float *bb = bias ? bias + blk * gw : NULL;                                      \
        int j0 = blk * gw, full = ncols - j0 >= gw;                                           \
        int n = full ? gw : ncols - j0;                                                       \
        int m = 0;                                                                            \
        if (M == 1) {                                                                         \
            if (split) ROW_PASS(row_split, PANELS_SPLIT(NV), NV);                             \
            else ROW_PASS(row_panels, PANELS_FOR(NV), NV);                                    \
            continue;                                                                         \
        }                                                                                     \
        for (; m + R <= M; m += R) {                                                          \
            float *dst = full ? C + (size_t)m * ldc + j0 : tmp;                               \
            tile(R, NV, K, split, A + (size_t)m * lda, lda, wp, bb, dst, full ? ldc : gw);    \
            if (!full)                                                                        \
                for (int r = 0; r < R; r++)                                                   \
                    memcpy(C + (size_t)(m + r) * ldc + j0, tmp + r * gw, (size_t)n * sizeof(float)); \
        }                                                                                     \
        for (; m < M; m++) {                                                                  \
            tile(1, NV, K, split, A + (size_t)m * lda, lda, wp, bb, tmp, gw);                 \
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
