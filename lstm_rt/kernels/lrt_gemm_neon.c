/* fp32 and fp16 packed-panel products with NEON (the neon and neondot levels), and the
 * aarch64 CPU probe. Plain ARMv8.0 Advanced SIMD, which every AArch64 Linux CPU has: no
 * target attribute needed (fp16 -> fp32 widening, FCVTL, is ARMv8.0 too).
 *
 * Every output column's sum is taken in the avx2 level's order, whatever the tile: fp32
 * matrices of at most LRT_SPLIT_BYTES as the sum of the even k's (from the bias) and the
 * odd k's (from 0), each by one fused multiply-add per k in order, in two passes over the
 * tile's panels; larger ones and fp16 from the bias, one fused multiply-add per k in order.
 * So a row gives the same bits alone (a streaming step) as in a batch (a whole sequence),
 * and the same bits as the avx2 level's kernels. (The generic kernels multiply and add
 * separately: within rounding.)
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
LRT_NEON_INLINE void tile_pass(int R, int G, int f16, int K, int k0, int kstep, const float *A, int lda,
                               const void *const *w, size_t ws, const float *bias, float *out, int ldo)
{
    float32x4_t acc[16];
    const char *base[6];
    const size_t step = ws * (f16 ? 2 : 4);
    if (k0) bias = NULL;
    for (int g = 0; g < G; g++) base[g] = (const char *)w[g];
    for (int r = 0; r < R; r++)
        for (int g = 0; g < G; g++)
            for (int h = 0; h < 2; h++)
                acc[(r * G + g) * 2 + h] = bias ? vld1q_f32(bias + 8 * g + 4 * h) : vdupq_n_f32(0.0f);
    size_t off = k0 * step;
    for (int k = k0; k < K; k += kstep, off += kstep * step) {
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
            for (int h = 0; h < 2; h++) {
                float *o = out + (size_t)r * ldo + 8 * g + 4 * h;
                vst1q_f32(o, k0 ? vaddq_f32(vld1q_f32(o), acc[(r * G + g) * 2 + h]) : acc[(r * G + g) * 2 + h]);
            }
}

/* A single row of a split fp32 matrix, G <= 4 groups: the even and the odd k's sums side by
 * side in one pass (4 G sums), so the row reads its weights once, in order. */
LRT_NEON_INLINE void row_split(int G, int K, const float *a, const void *const *w, size_t ws,
                               const float *bias, float *out)
{
    float32x4_t ev[8], od[8];
    const float *base[4];
    for (int g = 0; g < G; g++) base[g] = (const float *)w[g];
    for (int g = 0; g < G; g++)
        for (int h = 0; h < 2; h++) {
            ev[2 * g + h] = bias ? vld1q_f32(bias + 8 * g + 4 * h) : vdupq_n_f32(0.0f);
            od[2 * g + h] = vdupq_n_f32(0.0f);
        }
    int k = 0;
    for (; k + 2 <= K; k += 2) {
        float32x4_t x0 = vld1q_dup_f32(a + k), x1 = vld1q_dup_f32(a + k + 1);
        for (int g = 0; g < G; g++) {
            const float *p = base[g] + (size_t)k * ws;
            for (int h = 0; h < 2; h++) {
                ev[2 * g + h] = vfmaq_f32(ev[2 * g + h], vld1q_f32(p + 4 * h), x0);
                od[2 * g + h] = vfmaq_f32(od[2 * g + h], vld1q_f32(p + ws + 4 * h), x1);
            }
        }
    }
    if (k < K) {  /* an odd K: the last k is even */
        float32x4_t x0 = vld1q_dup_f32(a + k);
        for (int g = 0; g < G; g++)
            for (int h = 0; h < 2; h++)
                ev[2 * g + h] = vfmaq_f32(ev[2 * g + h], vld1q_f32(base[g] + (size_t)k * ws + 4 * h), x0);
    }
    for (int g = 0; g < G; g++)
        for (int h = 0; h < 2; h++) vst1q_f32(out + 8 * g + 4 * h, vaddq_f32(ev[2 * g + h], od[2 * g + h]));
}

/* A tile in its matrix's order: every k in one pass, or (split) the even k's, then the odd
 * (a single row of a split fp32 matrix goes to row_split instead). */
LRT_NEON_INLINE void tile(int R, int G, int f16, int K, int split, const float *A, int lda,
                          const void *const *w, size_t ws, const float *bias, float *out, int ldo)
{
    tile_pass(R, G, f16, K, 0, split ? 2 : 1, A, lda, w, ws, bias, out, ldo);
    if (split) tile_pass(R, G, f16, K, 1, 2, A, lda, w, ws, bias, out, ldo);
}

/* Each tile shape as a function of its own, so its sums stay in registers. One row takes
 * up to 6 groups (12 sums, 12 weight vectors and the broadcast: with 8 groups GCC 12 spilled
 * one register per k); two rows up to 4 (16 FMLA per 8 weight loads and 2 broadcasts, the
 * ratio of a 4-row x 2-group tile, which GCC 12 compiled with its sums stored to the
 * stack on every k). */
typedef void (*tile_fn)(int K, int split, const float *A, int lda, const void *const *w, size_t ws,
                        const float *bias, float *out, int ldo);
#define DEFINE_TILE(F16, R, G)                                                                 \
__attribute__((noinline)) static void tile_##F16##_##R##_##G(int K, int split, const float *A, \
    int lda, const void *const *w, size_t ws, const float *bias, float *out, int ldo)         \
{ tile(R, G, F16, K, F16 ? 0 : split, A, lda, w, ws, bias, out, ldo); }
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

/* row_split by G - 1, each a function of its own (its 4 G sums in registers) */
#define DEFINE_ROW_SPLIT(G)                                                                    \
__attribute__((noinline)) static void row_split_##G(int K, int split, const float *A, int lda, \
    const void *const *w, size_t ws, const float *bias, float *out, int ldo)                  \
{ (void)split; (void)lda; (void)ldo; row_split(G, K, A, w, ws, bias, out); }
DEFINE_ROW_SPLIT(1)
DEFINE_ROW_SPLIT(2)
DEFINE_ROW_SPLIT(3)
DEFINE_ROW_SPLIT(4)
static const tile_fn row_splits[4] = {row_split_1, row_split_2, row_split_3, row_split_4};

/* C = A W (+ bias) for panels of esize-byte elements [nblk][K][gw]. Groups outer, rows
 * inner: G groups' weights (<= 6 K * 32 bytes) stay in cache while every row passes. */
static void products(const tile_fn tiles[2][6], int esize, int M, int K, const float *A, int lda,
                     const void *Wp, int nblk, int gw, const float *bias, float *C, int ldc, int ncols)
{
    const int split = esize == 4 && lrt_f32_split(K, nblk, gw);   /* fp16: k in order */
    const int NV = gw / 8, ngroups = (ncols + 7) / 8;
    /* what the tiles of the row counts used take (a split single row: 4, 16 sums) */
    const int Gmax = M == 1 && !split ? 6 : 4;
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
            tile_fn fn = R == 1 && split ? row_splits[G - 1] : tiles[R - 1][G - 1];
            fn(K, split, A + (size_t)m * lda, lda, w, gw, bb, dst, full ? ldc : 48);
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
    products(tiles_0, 4, M, K, A, lda, Wp, nblk, gw, bias, C, ldc, ncols);
}

void lrt_matmul_f16_neon(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                         float *C, int ldc, int ncols)
{
    if (M <= 0 || W->nblk <= 0) return;
    if (ncols > W->nblk * W->gw) ncols = W->nblk * W->gw;
    products(tiles_1, 2, M, W->K, A, lda, W->data, W->nblk, W->gw, bias, C, ldc, ncols);
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
