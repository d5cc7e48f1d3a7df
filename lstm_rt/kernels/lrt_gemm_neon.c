/* fp32 and fp16 packed-panel products with NEON (the neon and neondot levels), and the
 * aarch64 CPU probe. Plain ARMv8.0 Advanced SIMD, which every AArch64 Linux CPU has: no
 * target attribute needed (fp16 -> fp32 widening, FCVTL, is ARMv8.0 too).
 *
 * Every output column's sum starts from its bias and takes one fused multiply-add per k,
 * in k order, whatever the tile: a row gives the same bits alone (a streaming step) as in
 * a batch (a whole sequence), and the same bits as the avx2 level's kernels, which do
 * exactly that. (The generic kernels multiply and add separately: within rounding.)
 *
 * Tiles: R rows x G groups of 8 columns (two 4-lane vectors each), the groups taken in
 * column order across panel boundaries (group g = panel g / NV, its 8-column slice
 * g % NV), so a single row keeps 6 groups = 12 sums in flight whatever the panel width
 * (an FMA has 4 cycles of latency and a Cortex-A76-class core issues two a cycle: 8
 * independent sums at least); a batch takes 2 rows x 4 groups (16 sums, each weight
 * vector loaded once for two FMLAs). */
#include "lrt_kernels.h"

#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#include <arm_neon.h>
#include <string.h>
#if defined(__linux__) || defined(__ANDROID__)
#include <sys/auxv.h>
#endif
#if defined(__APPLE__)
#include <sys/sysctl.h>
#endif

#define LRT_NEON_INLINE static inline __attribute__((always_inline))

/* 8 weights (one k-row of an 8-column group) at p as two fp32 vectors; fp16 halves widen
 * exactly. */
LRT_NEON_INLINE void load8(int f16, const char *p, float32x4_t *lo, float32x4_t *hi)
{
    if (f16) {
        float16x8_t h = vreinterpretq_f16_u16(vld1q_u16((const uint16_t *)p));
        *lo = vcvt_f32_f16(vget_low_f16(h));
        *hi = vcvt_high_f32_f16(h);
    } else {
        *lo = vld1q_f32((const float *)p);
        *hi = vld1q_f32((const float *)p + 4);
    }
}

/* R rows of A (lda apart) x G groups (group g's k-row k at w[g] + k * ws elements), bias
 * (8 G consecutive floats, or NULL) first; writes 8 G floats per row (rows ldo apart).
 * R * G * 2 <= 16 sums. One k per iteration, each row's A[r][k] broadcast by LD1R: a loop
 * of 4 k's taking A by lane (FMLA by element) had GCC 12 hoist all its weight loads
 * and spill the sums to the stack. */
LRT_NEON_INLINE void tile(int R, int G, int f16, int K, const float *A, int lda, const void *const *w,
                          size_t ws, const float *bias, float *out, int ldo)
{
    float32x4_t acc[16];
    const char *base[6];
    const size_t step = ws * (f16 ? 2 : 4);
    for (int g = 0; g < G; g++) base[g] = (const char *)w[g];
    for (int r = 0; r < R; r++)
        for (int g = 0; g < G; g++)
            for (int h = 0; h < 2; h++)
                acc[(r * G + g) * 2 + h] = bias ? vld1q_f32(bias + 8 * g + 4 * h) : vdupq_n_f32(0.0f);
    size_t off = 0;
    for (int k = 0; k < K; k++, off += step) {
        float32x4_t a[2];
        for (int r = 0; r < R; r++) a[r] = vld1q_dup_f32(A + (size_t)r * lda + k);
        for (int g = 0; g < G; g++) {
            float32x4_t w0, w1;
            load8(f16, base[g] + off, &w0, &w1);
            for (int r = 0; r < R; r++) {
                acc[(r * G + g) * 2] = vfmaq_f32(acc[(r * G + g) * 2], w0, a[r]);
                acc[(r * G + g) * 2 + 1] = vfmaq_f32(acc[(r * G + g) * 2 + 1], w1, a[r]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int g = 0; g < G; g++)
            for (int h = 0; h < 2; h++)
                vst1q_f32(out + (size_t)r * ldo + 8 * g + 4 * h, acc[(r * G + g) * 2 + h]);
}

/* Each tile shape as a function of its own, so its sums stay in registers. One row takes
 * up to 6 groups (12 sums, 12 weight vectors and the broadcast: with 8 groups GCC 12 spilled
 * one register per k); two rows up to 4 (16 FMLA per 8 weight loads and 2 broadcasts, the
 * ratio of a 4-row x 2-group tile, which GCC 12 compiled with its sums stored to the
 * stack on every k). */
typedef void (*tile_fn)(int K, const float *A, int lda, const void *const *w, size_t ws,
                        const float *bias, float *out, int ldo);
#define DEFINE_TILE(F16, R, G)                                                                 \
__attribute__((noinline)) static void tile_##F16##_##R##_##G(int K, const float *A, int lda,  \
    const void *const *w, size_t ws, const float *bias, float *out, int ldo)                  \
{ tile(R, G, F16, K, A, lda, w, ws, bias, out, ldo); }
#define DEFINE_TILES(F16)                                                                      \
    DEFINE_TILE(F16, 1, 1) DEFINE_TILE(F16, 1, 2) DEFINE_TILE(F16, 1, 3)                       \
    DEFINE_TILE(F16, 1, 4) DEFINE_TILE(F16, 1, 5) DEFINE_TILE(F16, 1, 6)                       \
    DEFINE_TILE(F16, 2, 1) DEFINE_TILE(F16, 2, 2) DEFINE_TILE(F16, 2, 3) DEFINE_TILE(F16, 2, 4) \
    static const tile_fn tiles_##F16[2][6] = {                                                 \
        {tile_##F16##_1_1, tile_##F16##_1_2, tile_##F16##_1_3,                                 \
         tile_##F16##_1_4, tile_##F16##_1_5, tile_##F16##_1_6},                                \
        {tile_##F16##_2_1, tile_##F16##_2_2, tile_##F16##_2_3, tile_##F16##_2_4}};
DEFINE_TILES(0)
DEFINE_TILES(1)

/* C = A W (+ bias) for panels of esize-byte elements [nblk][K][gw]. Groups outer, rows
 * inner: G groups' weights (<= 6 K * 32 bytes) stay in cache while every row passes. */
static void products(const tile_fn tiles[2][6], int esize, int M, int K, const float *A, int lda,
                     const void *Wp, int gw, const float *bias, float *C, int ldc, int ncols)
{
    const int NV = gw / 8, ngroups = (ncols + 7) / 8;
    const int Gmax = M == 1 ? 6 : 4;  /* what the tiles of the row counts used take */
    const size_t panel = (size_t)K * gw * esize;
    float tmp[2 * 48];
    for (int g = 0; g < ngroups; g += Gmax) {
        int G = ngroups - g < Gmax ? ngroups - g : Gmax;
        int full = 8 * (g + G) <= ncols;
        const void *w[6];
        for (int i = 0; i < G; i++)
            w[i] = (const char *)Wp + (size_t)((g + i) / NV) * panel + (size_t)((g + i) % NV) * 8 * esize;
        const float *bb = bias ? bias + 8 * g : NULL;
        for (int m = 0; m < M; m += 2) {
            int R = M - m >= 2 ? 2 : 1;
            float *dst = full ? C + (size_t)m * ldc + 8 * g : tmp;
            tiles[R - 1][G - 1](K, A + (size_t)m * lda, lda, w, gw, bb, dst, full ? ldc : 48);
            if (!full)
                for (int r = 0; r < R; r++)
                    memcpy(C + (size_t)(m + r) * ldc + 8 * g, tmp + 48 * r, (size_t)(ncols - 8 * g) * sizeof(float));
        }
    }
}

void lrt_gemm_panels_neon(int M, int K, const float *A, int lda, const float *Wp, int nblk, int gw,
                          const float *bias, float *C, int ldc, int ncols)
{
    if (M <= 0 || nblk <= 0) return;
    if (ncols > nblk * gw) ncols = nblk * gw;
    products(tiles_0, 4, M, K, A, lda, Wp, gw, bias, C, ldc, ncols);
}

void lrt_matmul_f16_neon(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                         float *C, int ldc, int ncols)
{
    if (M <= 0 || W->nblk <= 0) return;
    if (ncols > W->nblk * W->gw) ncols = W->nblk * W->gw;
    products(tiles_1, 2, M, W->K, A, lda, W->data, W->gw, bias, C, ldc, ncols);
}

/* ---- the CPU probe: Linux/Android hwcaps, Apple's sysctl; elsewhere NEON only (it is
 * in the baseline this file is compiled for) ---- */

#if defined(__linux__) || defined(__ANDROID__)
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1UL << 1)
#endif
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1UL << 20)
#endif
int lrt_cpu_has_neon(void) { return (getauxval(AT_HWCAP) & HWCAP_ASIMD) != 0; }
int lrt_cpu_has_neondot(void)
{
    unsigned long hw = getauxval(AT_HWCAP);
    return (hw & HWCAP_ASIMD) && (hw & HWCAP_ASIMDDP);
}
#elif defined(__APPLE__)
int lrt_cpu_has_neon(void) { return 1; }
int lrt_cpu_has_neondot(void)
{
    int v = 0;
    size_t n = sizeof(v);
    return sysctlbyname("hw.optional.arm.FEAT_DotProd", &v, &n, NULL, 0) == 0 && v;
}
#else
int lrt_cpu_has_neon(void) { return 1; }
int lrt_cpu_has_neondot(void) { return 0; }
#endif

#else
typedef int lrt_gemm_neon_unused;  /* not aarch64: nothing here (ISO C wants a declaration) */
#endif
