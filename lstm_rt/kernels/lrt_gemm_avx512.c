/* fp32 products of the avx512vnni level: batches with 512-bit FMAs (CPUs with AVX-512 run
 * them at twice the 256-bit rate where they have full-width units, e.g. AMD Zen 5), a
 * single row (the streaming step, bound by reading the weights) through the AVX2 kernel.
 * Each column's sum is taken in the order lrt_gemm_panels_avx2 takes it (lrt_f32_split:
 * every k in order, or the even k's then the odd ones, one pass over the panel each), so
 * the two levels give the same bits. */
#include "lrt_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#include <string.h>

#define LRT_AVX512 __attribute__((target("avx2,fma,avx512f,avx512vl")))
#define LRT_AVX512_INLINE static inline __attribute__((always_inline, target("avx2,fma,avx512f,avx512vl")))

/* The rows a tile takes: 8 rows of a 32-wide panel (LSTM gates) hold 16 zmm sums, which
 * with the 8 broadcasts and 2 weight vectors fit the 32 registers. */
#define ROWS 8

/* ROWS rows x one panel of NV 8-column groups over all K: a 16-column group per zmm, the
 * odd 8 columns of a 24-wide panel (GRU gates) in a ymm. */
LRT_AVX512_INLINE void tile512_pass(int NV, int K, int k0, int kstep, const float *A, int lda,
                                    const float *wp, const float *bias, float *out, int ldo)
{
    const int gw = NV * 8, NZ = NV / 2, odd = NV % 2;
    __m512 acc[ROWS][2];
    __m256 acc8[ROWS];
    if (k0) bias = NULL;
    for (int r = 0; r < ROWS; r++) {
        for (int z = 0; z < NZ; z++) acc[r][z] = bias ? _mm512_loadu_ps(bias + 16 * z) : _mm512_setzero_ps();
        if (odd) acc8[r] = bias ? _mm256_loadu_ps(bias + 16 * NZ) : _mm256_setzero_ps();
    }
    for (int k = k0; k < K; k += kstep) {
        const float *w = wp + (size_t)k * gw;
        __m512 wz[2];
        for (int z = 0; z < NZ; z++) wz[z] = _mm512_loadu_ps(w + 16 * z);
        __m256 w8 = odd ? _mm256_loadu_ps(w + 16 * NZ) : _mm256_setzero_ps();
        for (int r = 0; r < ROWS; r++) {
            float a = A[(size_t)r * lda + k];
            for (int z = 0; z < NZ; z++) acc[r][z] = _mm512_fmadd_ps(_mm512_set1_ps(a), wz[z], acc[r][z]);
            if (odd) acc8[r] = _mm256_fmadd_ps(_mm256_set1_ps(a), w8, acc8[r]);
        }
    }
    for (int r = 0; r < ROWS; r++) {
        float *o = out + (size_t)r * ldo;
        for (int z = 0; z < NZ; z++)
            _mm512_storeu_ps(o + 16 * z, k0 ? _mm512_add_ps(_mm512_loadu_ps(o + 16 * z), acc[r][z]) : acc[r][z]);
        if (odd) _mm256_storeu_ps(o + 16 * NZ, k0 ? _mm256_add_ps(_mm256_loadu_ps(o + 16 * NZ), acc8[r]) : acc8[r]);
    }
}

LRT_AVX512_INLINE void tile512(int NV, int K, int split, const float *A, int lda, const float *wp,
                               const float *bias, float *out, int ldo)
{
    tile512_pass(NV, K, 0, split ? 2 : 1, A, lda, wp, bias, out, ldo);
    if (split) tile512_pass(NV, K, 1, 2, A, lda, wp, bias, out, ldo);
}

/* ROWS rows x two consecutive 24-wide panels (GRU gates) as 48 columns in three zmm: the
 * middle one joins the first panel's last 8 columns and the second's first 8, so no lane
 * idles (one panel alone leaves a ymm half of the FMA width unused). */
LRT_AVX512_INLINE void tile512_gru2_pass(int K, int k0, int kstep, const float *A, int lda, const float *wp,
                                         const float *bias, float *out, int ldo)
{
    const float *wq = wp + (size_t)K * 24;   /* the second panel */
    __m512 acc[ROWS][3];
    if (k0) bias = NULL;
    for (int r = 0; r < ROWS; r++)
        for (int z = 0; z < 3; z++) acc[r][z] = bias ? _mm512_loadu_ps(bias + 16 * z) : _mm512_setzero_ps();
    for (int k = k0; k < K; k += kstep) {
        const float *w = wp + (size_t)k * 24, *v = wq + (size_t)k * 24;
        __m512 w0 = _mm512_loadu_ps(w), w2 = _mm512_loadu_ps(v + 8);
        __m512 w1 = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(_mm256_loadu_ps(w + 16))),
                                                        _mm256_castps_pd(_mm256_loadu_ps(v)), 1));
        for (int r = 0; r < ROWS; r++) {
            __m512 a = _mm512_set1_ps(A[(size_t)r * lda + k]);
            acc[r][0] = _mm512_fmadd_ps(a, w0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(a, w1, acc[r][1]);
            acc[r][2] = _mm512_fmadd_ps(a, w2, acc[r][2]);
        }
    }
    for (int r = 0; r < ROWS; r++)
        for (int z = 0; z < 3; z++) {
            float *o = out + (size_t)r * ldo + 16 * z;
            _mm512_storeu_ps(o, k0 ? _mm512_add_ps(_mm512_loadu_ps(o), acc[r][z]) : acc[r][z]);
        }
}

LRT_AVX512_INLINE void tile512_gru2(int K, int split, const float *A, int lda, const float *wp, const float *bias,
                                    float *out, int ldo)
{
    tile512_gru2_pass(K, 0, split ? 2 : 1, A, lda, wp, bias, out, ldo);
    if (split) tile512_gru2_pass(K, 1, 2, A, lda, wp, bias, out, ldo);
}

/* Every panel for the rows in whole tiles of ROWS (24-wide ones two at a time where both
 * are whole); a ragged last panel through a buffer. */
#define DEFINE_GEMM512(NV)                                                                    \
LRT_AVX512 static void gemm512_nv##NV(int M, int K, const float *A, int lda, const float *Wp, \
                                      int nblk, const float *bias, float *C, int ldc, int ncols) \
{                                                                                             \
    const int gw = NV * 8, split = lrt_f32_split(K, nblk, gw);                                \
    float tmp[ROWS * 32];                                                                     \
    for (int blk = 0; blk < nblk; blk++) {                                                    \
        const float *wp = Wp + (size_t)blk * K * gw, *bb = bias ? bias + blk * gw : NULL;     \
        int j0 = blk * gw, full = ncols - j0 >= gw, n = full ? gw : ncols - j0;               \
        if (NV == 3 && blk + 1 < nblk && ncols - j0 >= 2 * gw) {                              \
            for (int m = 0; m + ROWS <= M; m += ROWS)                                         \
                tile512_gru2(K, split, A + (size_t)m * lda, lda, wp, bb, C + (size_t)m * ldc + j0, ldc); \
            blk++;                                                                            \
            continue;                                                                         \
        }                                                                                     \
        for (int m = 0; m + ROWS <= M; m += ROWS) {                                           \
            tile512(NV, K, split, A + (size_t)m * lda, lda, wp, bb, full ? C + (size_t)m * ldc + j0 : tmp, full ? ldc : gw); \
            if (!full)                                                                        \
                for (int r = 0; r < ROWS; r++)                                                \
                    memcpy(C + (size_t)(m + r) * ldc + j0, tmp + r * gw, (size_t)n * sizeof(float)); \
        }                                                                                     \
    }                                                                                         \
}
DEFINE_GEMM512(2)
DEFINE_GEMM512(3)
DEFINE_GEMM512(4)

void lrt_gemm_panels_avx512(int M, int K, const float *A, int lda, const float *Wp, int nblk, int gw,
                            const float *bias, float *C, int ldc, int ncols)
{
    if (M <= 0 || nblk <= 0) return;
    int whole = gw == 8 ? 0 : M / ROWS * ROWS;   /* 8-wide panels (Dense): no 512-bit group */
    switch (whole ? gw : 0) {
    case 16: gemm512_nv2(whole, K, A, lda, Wp, nblk, bias, C, ldc, ncols); break;
    case 24: gemm512_nv3(whole, K, A, lda, Wp, nblk, bias, C, ldc, ncols); break;
    case 32: gemm512_nv4(whole, K, A, lda, Wp, nblk, bias, C, ldc, ncols); break;
    default: break;
    }
    if (whole < M)   /* the rows left over, and single rows */
        lrt_gemm_panels_avx2(M - whole, K, A + (size_t)whole * lda, lda, Wp, nblk, gw, bias,
                             C + (size_t)whole * ldc, ldc, ncols);
}

#else  /* lrt_init never selects the avx512vnni level here */

void lrt_gemm_panels_avx512(int M, int K, const float *A, int lda, const float *Wp, int nblk, int gw,
                            const float *bias, float *C, int ldc, int ncols)
{
    lrt_gemm_panels_generic(M, K, A, lda, Wp, nblk, gw, bias, C, ldc, ncols);
}

#endif
