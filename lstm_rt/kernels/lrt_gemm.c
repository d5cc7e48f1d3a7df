/* Packed-panel matrix product, portable C. See lrt_kernels.h for the panel layout. */
#include <string.h>
#include "lrt_kernels.h"

/* Rows are processed four at a time so each weight load feeds four FMAs (the batched
 * stream and whole-sequence input projection cases); GW is a compile-time constant so
 * the compiler keeps the accumulators in vector registers. */
#define LRT_GEMM_ROWS 4

#define DEFINE_GEMM(GW)                                                                   \
static void gemm_gw##GW(int M, int K, const float *A, int lda, const float *Wp, int nblk, \
                        const float *bias, float *C, int ldc, int ncols)                  \
{                                                                                         \
    for (int m0 = 0; m0 < M; m0 += LRT_GEMM_ROWS) {                                       \
        int mr = M - m0 < LRT_GEMM_ROWS ? M - m0 : LRT_GEMM_ROWS;                         \
        for (int blk = 0; blk < nblk; blk++) {                                            \
            float acc[LRT_GEMM_ROWS][GW];                                                 \
            const float *wp = Wp + (size_t)blk * K * GW;                                  \
            for (int r = 0; r < LRT_GEMM_ROWS; r++)                                       \
                for (int j = 0; j < GW; j++)                                              \
                    acc[r][j] = bias ? bias[blk * GW + j] : 0.0f;                         \
            if (mr == LRT_GEMM_ROWS) {                                                    \
                const float *a0 = A + (size_t)m0 * lda, *a1 = a0 + lda;                   \
                const float *a2 = a1 + lda, *a3 = a2 + lda;                               \
                for (int k = 0; k < K; k++) {                                             \
                    const float *w = wp + (size_t)k * GW;                                 \
                    float x0 = a0[k], x1 = a1[k], x2 = a2[k], x3 = a3[k];                 \
                    for (int j = 0; j < GW; j++) {                                        \
                        acc[0][j] += x0 * w[j]; acc[1][j] += x1 * w[j];                   \
                        acc[2][j] += x2 * w[j]; acc[3][j] += x3 * w[j];                   \
                    }                                                                     \
                }                                                                         \
            } else {                                                                      \
                for (int r = 0; r < mr; r++) {                                            \
                    const float *a = A + (size_t)(m0 + r) * lda;                          \
                    for (int k = 0; k < K; k++) {                                         \
                        const float *w = wp + (size_t)k * GW;                             \
                        float xv = a[k];                                                  \
                        for (int j = 0; j < GW; j++) acc[r][j] += xv * w[j];              \
                    }                                                                     \
                }                                                                         \
            }                                                                             \
            int j0 = blk * GW, n = ncols - j0 < GW ? ncols - j0 : GW;                     \
            for (int r = 0; r < mr; r++) {                                                \
                float *c = C + (size_t)(m0 + r) * ldc + j0;                               \
                for (int j = 0; j < n; j++) c[j] = acc[r][j];                             \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
}

DEFINE_GEMM(8)
DEFINE_GEMM(16)
DEFINE_GEMM(24)
DEFINE_GEMM(32)

void lrt_gemm_panels_generic(int M, int K, const float *A, int lda, const float *Wp, int nblk, int gw,
                             const float *bias, float *C, int ldc, int ncols)
{
    if (M <= 0 || nblk <= 0) return;
    switch (gw) {
    case 8:  gemm_gw8(M, K, A, lda, Wp, nblk, bias, C, ldc, ncols); break;
    case 16: gemm_gw16(M, K, A, lda, Wp, nblk, bias, C, ldc, ncols); break;
    case 24: gemm_gw24(M, K, A, lda, Wp, nblk, bias, C, ldc, ncols); break;
    default: gemm_gw32(M, K, A, lda, Wp, nblk, bias, C, ldc, ncols); break;
    }
}
