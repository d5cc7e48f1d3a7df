/* int8 weight products with NEON: the neon level (ARMv8.0 Advanced SIMD widening
 * multiply-adds) and the neondot level (SDOT, the ARMv8.2 dot-product extension, compiled
 * with a per-function target attribute and run only where lrt_cpu_has_neondot says the
 * CPU has it). Both compute lrt_kernels.h's exact int32 sums and finish them with the
 * portable kernel's float operations (convert, multiply by ascale * wscale, add the bias),
 * so every level gives the same bits.
 *
 * Panels [K4][gw][4]: per quad-row, 16 bytes are 4 columns x the 4 rows of that quad-row,
 * which is SDOT's operand order (each 32-bit lane: 4 byte products of one column). The
 * kernels walk 8-column groups in column order across panel boundaries, as the fp32 ones
 * (lrt_gemm_neon.c), R = 1 or 2 rows at a time.
 *
 *   neon, 12-bit activations (held as int16): SXTL widens the weights, SMLAL/SMLAL2 multiply-add them by
 *     the quad-row's 4 activations into one int32 lane per (column, row of the quad-row);
 *     the 4 lanes of a column are added once, at the end. Per 16 weight bytes and row:
 *     1 load, 2 widenings, 4 multiply-adds.
 *   neon, act8 (|q| <= 64): SMULL/SMLAL(2) multiply bytes into int16 lanes; 4 quad-rows
 *     add in int16 (|lane| <= 4 * 64 * 127 = 32512, no overflow), then SADALP folds lane
 *     pairs into int32. Per 16 bytes and row: 1 load, 2 multiplies, 1/2 fold.
 *   neondot, 12-bit activations: q = 256 hi + lo, hi = q >> 8 in [-128, 127], lo = q & 255
 *     taken as lo - 128 (a signed byte); sum w q = 256 sum w hi + sum w (lo - 128) + 128
 *     colsum, in wrapping int32 arithmetic (exact: the true sum fits, lrt_act_qmax). Two
 *     SDOT per 16 bytes and row, as VNNI's two vpdpbusd.
 *   neondot, act8: one SDOT per 16 bytes and row, 4 quad-rows of activations per load. */
#include "lrt_kernels.h"

#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#include <arm_neon.h>
#include <float.h>
#include <math.h>
#include <string.h>

#define LRT_NEON_INLINE static inline __attribute__((always_inline))
/* SDOT by element: acc lane i += the dot product of w's bytes 4i..4i+3 and a's 4 bytes in
 * lane l. GCC: the intrinsic, in functions compiled for the extension (GCC 12's arm_neon.h
 * declares it under "arch=armv8.2-a+dotprod" and refuses to inline it into a function with
 * only "+dotprod"; every CPU with the extension is ARMv8.2 or later). Clang before 16
 * declares the intrinsic only when the whole file is compiled with +dotprod, so Clang gets
 * the instruction as inline assembly, which its assembler accepts inside a function with
 * the dotprod target attribute (checked with Clang 14 for aarch64-linux-gnu). */
#if defined(__clang__)
#define LRT_DOT_INLINE static inline __attribute__((always_inline, target("dotprod")))
#define LRT_DOT_FN __attribute__((noinline, target("dotprod")))
#define SDOT_LANE(acc, w, a, l) \
    __asm__("sdot %0.4s, %1.16b, %2.4b[" #l "]" : "+w"(acc) : "w"(w), "w"(a))
#else
#define LRT_DOT_TARGET "arch=armv8.2-a+dotprod"
#define LRT_DOT_INLINE static inline __attribute__((always_inline, target(LRT_DOT_TARGET)))
#define LRT_DOT_FN __attribute__((noinline, target(LRT_DOT_TARGET)))
#define SDOT_LANE(acc, w, a, l) ((acc) = vdotq_laneq_s32((acc), (w), (a), l))
#endif

/* sums * (ascale * wscale) + bias for 4 columns: multiply, then add, the portable order. */
LRT_NEON_INLINE void store4(int32x4_t sums, float ascale, const float *wscale, const float *bias, float *out)
{
    float32x4_t s = vmulq_f32(vdupq_n_f32(ascale), vld1q_f32(wscale));
    float32x4_t b = bias ? vld1q_f32(bias) : vdupq_n_f32(0.0f);
    vst1q_f32(out, vaddq_f32(vmulq_f32(vcvtq_f32_s32(sums), s), b));
}

/* Every tile: R rows of activations (row r at q + r * qs bytes) x G 8-column groups (group
 * g's quad-row p at w[g] + p * ws); colsum, wscale, bias: 8 G consecutive values from the
 * first group's column; writes 8 G floats per row (rows ldo apart). */
typedef void (*i8_tile_fn)(int K4, const uint8_t *q, size_t qs, const int8_t *const *w, size_t ws,
                           const int32_t *colsum, const float *ascale, const float *wscale,
                           const float *bias, float *out, int ldo);

/* ---- neon, 16-bit activations ---- */

LRT_NEON_INLINE void s16_tile(int R, int G, int K4, const uint8_t *q, size_t qs, const int8_t *const *w,
                              size_t ws, const float *ascale, const float *wscale, const float *bias,
                              float *out, int ldo)
{
    int32x4_t acc[16];  /* [r][g][column of 8]: the column's 4 lanes, one per row of a quad-row */
    for (int i = 0; i < R * G * 8; i++) acc[i] = vdupq_n_s32(0);
    for (int p = 0; p < K4; p++) {
        int16x8_t a[2];
        for (int r = 0; r < R; r++) {
            int16x4_t q4 = vld1_s16((const int16_t *)(q + r * qs) + 4 * p);
            a[r] = vcombine_s16(q4, q4);
        }
        for (int g = 0; g < G; g++)
            for (int h = 0; h < 2; h++) {
                int8x16_t wv = vld1q_s8(w[g] + p * ws + 16 * h);
                int16x8_t lo = vmovl_s8(vget_low_s8(wv)), hi = vmovl_high_s8(wv);
                for (int r = 0; r < R; r++) {
                    int32x4_t *c = acc + (r * G + g) * 8 + 4 * h;
                    c[0] = vmlal_s16(c[0], vget_low_s16(lo), vget_low_s16(a[r]));
                    c[1] = vmlal_high_s16(c[1], lo, a[r]);
                    c[2] = vmlal_s16(c[2], vget_low_s16(hi), vget_low_s16(a[r]));
                    c[3] = vmlal_high_s16(c[3], hi, a[r]);
                }
            }
    }
    for (int r = 0; r < R; r++)
        for (int g = 0; g < G; g++)
            for (int h = 0; h < 2; h++) {
                const int32x4_t *c = acc + (r * G + g) * 8 + 4 * h;
                int32x4_t sums = vpaddq_s32(vpaddq_s32(c[0], c[1]), vpaddq_s32(c[2], c[3]));
                store4(sums, ascale[r], wscale + 8 * g + 4 * h, bias ? bias + 8 * g + 4 * h : NULL,
                       out + (size_t)r * ldo + 8 * g + 4 * h);
            }
}

/* ---- neon, act8 (|q| <= 64) ---- */

LRT_NEON_INLINE int8x16_t bcast4(const uint8_t *q)
{
    int32_t v;
    memcpy(&v, q, 4);
    return vreinterpretq_s8_s32(vdupq_n_s32(v));
}

LRT_NEON_INLINE void a8_tile(int R, int G, int K4, const uint8_t *q, size_t qs, const int8_t *const *w,
                             size_t ws, const float *ascale, const float *wscale, const float *bias,
                             float *out, int ldo)
{
    /* acc [r][g][pair of columns]: lanes (c, rows 0-1), (c, rows 2-3), (c+1, 0-1), (c+1, 2-3) */
    int32x4_t acc[8];
    for (int i = 0; i < R * G * 4; i++) acc[i] = vdupq_n_s32(0);
    for (int p0 = 0; p0 < K4; p0 += 4) {
        int np = K4 - p0 < 4 ? K4 - p0 : 4;
        int16x8_t t[8];  /* the same lanes as int16: one product per quad-row, up to 4 added */
        for (int r = 0; r < R; r++) {
            int8x16_t a = bcast4(q + r * qs + 4 * p0);
            for (int g = 0; g < G; g++)
                for (int h = 0; h < 2; h++) {
                    int8x16_t wv = vld1q_s8(w[g] + p0 * ws + 16 * h);
                    int16x8_t *tt = t + (r * G + g) * 4 + 2 * h;
                    tt[0] = vmull_s8(vget_low_s8(wv), vget_low_s8(a));
                    tt[1] = vmull_high_s8(wv, a);
                }
        }
        for (int i = 1; i < np; i++) {
            int p = p0 + i;
            for (int r = 0; r < R; r++) {
                int8x16_t a = bcast4(q + r * qs + 4 * p);
                for (int g = 0; g < G; g++)
                    for (int h = 0; h < 2; h++) {
                        int8x16_t wv = vld1q_s8(w[g] + p * ws + 16 * h);
                        int16x8_t *tt = t + (r * G + g) * 4 + 2 * h;
                        tt[0] = vmlal_s8(tt[0], vget_low_s8(wv), vget_low_s8(a));
                        tt[1] = vmlal_high_s8(tt[1], wv, a);
                    }
            }
        }
        for (int i = 0; i < R * G * 4; i++) acc[i] = vpadalq_s16(acc[i], t[i]);
    }
    for (int r = 0; r < R; r++)
        for (int g = 0; g < G; g++)
            for (int h = 0; h < 2; h++) {
                const int32x4_t *c = acc + (r * G + g) * 4 + 2 * h;
                store4(vpaddq_s32(c[0], c[1]), ascale[r], wscale + 8 * g + 4 * h,
                       bias ? bias + 8 * g + 4 * h : NULL, out + (size_t)r * ldo + 8 * g + 4 * h);
            }
}

/* ---- neondot, act8: lane l of a row's 16 activation bytes is quad-row p + l ---- */

LRT_DOT_INLINE void dot8_tile(int R, int G, int K4, const uint8_t *q, size_t qs, const int8_t *const *w,
                              size_t ws, const float *ascale, const float *wscale, const float *bias,
                              float *out, int ldo)
{
    int32x4_t acc[16];  /* [r][g][half]: 4 columns each */
    for (int i = 0; i < R * G * 2; i++) acc[i] = vdupq_n_s32(0);
    int8x16_t a[2];
    int p = 0;
    size_t off = 0;  /* p * ws */
#define DSTEP(l)                                                                                 \
    for (int g = 0; g < G; g++) {                                                                \
        int8x16_t w0 = vld1q_s8(w[g] + off + (l) * ws), w1 = vld1q_s8(w[g] + off + (l) * ws + 16); \
        for (int r = 0; r < R; r++) {                                                            \
            SDOT_LANE(acc[(r * G + g) * 2], w0, a[r], l);                                        \
            SDOT_LANE(acc[(r * G + g) * 2 + 1], w1, a[r], l);                                    \
        }                                                                                        \
    }
    for (; p + 4 <= K4; p += 4, off += 4 * ws) {
        for (int r = 0; r < R; r++) a[r] = vld1q_s8((const int8_t *)(q + r * qs + 4 * p));
        DSTEP(0) DSTEP(1) DSTEP(2) DSTEP(3)
    }
    if (p < K4) {  /* 1-3 quad-rows left: their bytes from a zero-padded copy (no read past the row) */
        int left = K4 - p;
        for (int r = 0; r < R; r++) {
            int8_t tmp[16] = {0};
            memcpy(tmp, q + r * qs + 4 * p, (size_t)left * 4);
            a[r] = vld1q_s8(tmp);
        }
        DSTEP(0)
        if (left > 1) { DSTEP(1) }
        if (left > 2) { DSTEP(2) }
    }
#undef DSTEP
    for (int r = 0; r < R; r++)
        for (int g = 0; g < G; g++)
            for (int h = 0; h < 2; h++)
                store4(acc[(r * G + g) * 2 + h], ascale[r], wscale + 8 * g + 4 * h,
                       bias ? bias + 8 * g + 4 * h : NULL, out + (size_t)r * ldo + 8 * g + 4 * h);
}

/* ---- neondot, 16-bit activations as two signed byte planes: hi at q + r * qs, lo - 128
 * at q + r * qs + qs / 2 ---- */

LRT_DOT_INLINE void dot16_tile(int R, int G, int K4, const uint8_t *q, size_t qs, const int8_t *const *w,
                               size_t ws, const int32_t *colsum, const float *ascale, const float *wscale,
                               const float *bias, float *out, int ldo)
{
    int32x4_t hs[8], ls[8];  /* [r][g][half] sums over the hi and the lo plane */
    const size_t half = qs / 2;
    for (int i = 0; i < R * G * 2; i++) hs[i] = ls[i] = vdupq_n_s32(0);
    int8x16_t ah[2], al[2];
    int p = 0;
    size_t off = 0;  /* p * ws */
#define DSTEP(l)                                                                                 \
    for (int g = 0; g < G; g++)                                                                  \
        for (int h = 0; h < 2; h++) {                                                            \
            int8x16_t wv = vld1q_s8(w[g] + off + (l) * ws + 16 * h);                             \
            for (int r = 0; r < R; r++) {                                                        \
                SDOT_LANE(hs[(r * G + g) * 2 + h], wv, ah[r], l);                                \
                SDOT_LANE(ls[(r * G + g) * 2 + h], wv, al[r], l);                                \
            }                                                                                    \
        }
    for (; p + 4 <= K4; p += 4, off += 4 * ws) {
        for (int r = 0; r < R; r++) {
            ah[r] = vld1q_s8((const int8_t *)(q + r * qs + 4 * p));
            al[r] = vld1q_s8((const int8_t *)(q + r * qs + half + 4 * p));
        }
        DSTEP(0) DSTEP(1) DSTEP(2) DSTEP(3)
    }
    if (p < K4) {
        int left = K4 - p;
        for (int r = 0; r < R; r++) {
            int8_t th[16] = {0}, tl[16] = {0};
            memcpy(th, q + r * qs + 4 * p, (size_t)left * 4);
            memcpy(tl, q + r * qs + half + 4 * p, (size_t)left * 4);
            ah[r] = vld1q_s8(th);
            al[r] = vld1q_s8(tl);
        }
        DSTEP(0)
        if (left > 1) { DSTEP(1) }
        if (left > 2) { DSTEP(2) }
    }
#undef DSTEP
    for (int r = 0; r < R; r++)
        for (int g = 0; g < G; g++)
            for (int h = 0; h < 2; h++) {
                /* 256 hi + (lo - 128) + 128 colsum, wrapping (unsigned) as the hardware does */
                uint32x4_t s = vshlq_n_u32(vreinterpretq_u32_s32(hs[(r * G + g) * 2 + h]), 8);
                s = vaddq_u32(s, vreinterpretq_u32_s32(ls[(r * G + g) * 2 + h]));
                s = vaddq_u32(s, vshlq_n_u32(vreinterpretq_u32_s32(vld1q_s32(colsum + 8 * g + 4 * h)), 7));
                store4(vreinterpretq_s32_u32(s), ascale[r], wscale + 8 * g + 4 * h,
                       bias ? bias + 8 * g + 4 * h : NULL, out + (size_t)r * ldo + 8 * g + 4 * h);
            }
}

/* Each tile shape as a function of its own, so its sums stay in registers. */
#define TILE_ARGS int K4, const uint8_t *q, size_t qs, const int8_t *const *w, size_t ws,         \
                  const int32_t *colsum, const float *ascale, const float *wscale, const float *bias, \
                  float *out, int ldo
#define DEFINE_NEON_TILE(KIND, R, G)                                                            \
__attribute__((noinline)) static void KIND##_##R##_##G(TILE_ARGS)                               \
{ (void)colsum; KIND##_tile(R, G, K4, q, qs, w, ws, ascale, wscale, bias, out, ldo); }
#define DEFINE_DOT8_TILE(R, G)                                                                  \
LRT_DOT_FN static void dot8_##R##_##G(TILE_ARGS)                                                \
{ (void)colsum; dot8_tile(R, G, K4, q, qs, w, ws, ascale, wscale, bias, out, ldo); }
#define DEFINE_DOT16_TILE(R, G)                                                                 \
LRT_DOT_FN static void dot16_##R##_##G(TILE_ARGS)                                               \
{ dot16_tile(R, G, K4, q, qs, w, ws, colsum, ascale, wscale, bias, out, ldo); }

DEFINE_NEON_TILE(s16, 1, 1) DEFINE_NEON_TILE(s16, 1, 2) DEFINE_NEON_TILE(s16, 2, 1)
DEFINE_NEON_TILE(a8, 1, 1) DEFINE_NEON_TILE(a8, 1, 2) DEFINE_NEON_TILE(a8, 2, 1)
DEFINE_DOT8_TILE(1, 1) DEFINE_DOT8_TILE(1, 2) DEFINE_DOT8_TILE(1, 3) DEFINE_DOT8_TILE(1, 4)
DEFINE_DOT8_TILE(1, 5) DEFINE_DOT8_TILE(1, 6) DEFINE_DOT8_TILE(1, 7) DEFINE_DOT8_TILE(1, 8)
DEFINE_DOT8_TILE(2, 1) DEFINE_DOT8_TILE(2, 2) DEFINE_DOT8_TILE(2, 3) DEFINE_DOT8_TILE(2, 4)
DEFINE_DOT16_TILE(1, 1) DEFINE_DOT16_TILE(1, 2) DEFINE_DOT16_TILE(1, 3) DEFINE_DOT16_TILE(1, 4)
DEFINE_DOT16_TILE(2, 1)

/* A kernel family: its tiles for one row and for two, by group count, and the most groups
 * each takes (what keeps its sums within the 32 vector registers). */
typedef struct {
    i8_tile_fn one[8], two[8];
    int gmax_one, gmax_two;
} i8_family;

static const i8_family fam_s16 = {{s16_1_1, s16_1_2}, {s16_2_1}, 2, 1};
static const i8_family fam_a8 = {{a8_1_1, a8_1_2}, {a8_2_1}, 2, 1};
static const i8_family fam_dot8 = {{dot8_1_1, dot8_1_2, dot8_1_3, dot8_1_4, dot8_1_5, dot8_1_6, dot8_1_7, dot8_1_8},
                                   {dot8_2_1, dot8_2_2, dot8_2_3, dot8_2_4}, 8, 4};
/* dot16 with 2 rows takes 1 group: with 2, GCC 12 kept 4 of the 16 sums on the stack */
static const i8_family fam_dot16 = {{dot16_1_1, dot16_1_2, dot16_1_3, dot16_1_4}, {dot16_2_1}, 4, 1};

/* C = dequantized (q W) + bias for M rows of prepared activations (row m at q + m * qs). */
static void i8_products(const i8_family *f, int M, const uint8_t *q, size_t qs, const float *ascale,
                        const lrt_mat *W, const float *bias, float *C, int ldc, int ncols)
{
    const int NV = W->gw / 8, K4 = (W->K + 3) / 4;
    const size_t ws = (size_t)W->gw * 4, panel = (size_t)K4 * ws;
    if (M <= 0 || W->nblk <= 0) return;
    if (ncols > W->nblk * W->gw) ncols = W->nblk * W->gw;
    const int ngroups = (ncols + 7) / 8, Gmax = M == 1 ? f->gmax_one : f->gmax_two;
    float tmp[2 * 64];
    for (int g = 0; g < ngroups; g += Gmax) {
        int G = ngroups - g < Gmax ? ngroups - g : Gmax;
        int full = 8 * (g + G) <= ncols;
        const int8_t *w[8];
        for (int i = 0; i < G; i++)
            w[i] = (const int8_t *)W->data + (size_t)((g + i) / NV) * panel + (size_t)((g + i) % NV) * 32;
        const float *bb = bias ? bias + 8 * g : NULL, *sc = W->scale + 8 * g;
        const int32_t *cs = W->colsum ? W->colsum + 8 * g : NULL;
        for (int m = 0; m < M; m += 2) {
            int R = M - m >= 2 ? 2 : 1;
            float *dst = full ? C + (size_t)m * ldc + 8 * g : tmp;
            (R == 2 ? f->two : f->one)[G - 1](K4, q + m * qs, qs, w, ws, cs, ascale + m, sc, bb, dst, full ? ldc : 64);
            if (!full)
                for (int r = 0; r < R; r++)
                    memcpy(C + (size_t)(m + r) * ldc + 8 * g, tmp + 64 * r, (size_t)(ncols - 8 * g) * sizeof(float));
        }
    }
}

/* ---- the activation quantizer: lrt_matmul.c's quantize_row, 8 floats at a time (same
 * results: the max is exact and FCVTNS rounds to nearest even like lrintf) ---- */

/* The row's largest |a| into *amax_out; returns 1 if the row holds NaN/inf. */
static int row_amax(const float *a, int K, float *amax_out)
{
    const float32x4_t big = vdupq_n_f32(FLT_MAX);
    float32x4_t vmax = vdupq_n_f32(0.0f);
    uint32x4_t ok = vdupq_n_u32(0xffffffffu);
    int k = 0;
    for (; k + 4 <= K; k += 4) {
        float32x4_t v = vabsq_f32(vld1q_f32(a + k));
        ok = vandq_u32(ok, vcleq_f32(v, big));  /* false for inf and NaN */
        vmax = vmaxq_f32(vmax, v);
    }
    float amax = vmaxvq_f32(vmax);
    int bad = vminvq_u32(ok) == 0;
    for (; k < K; k++) {
        float v = fabsf(a[k]);
        amax = v > amax ? v : amax;
        bad |= !(v <= FLT_MAX);
    }
    *amax_out = amax;
    return bad;
}

/* int16 (the lrt_quantize_rows contract) */
static int quantize_row_neon(const float *a, int K, double qmax, void *out, float *scale)
{
    int16_t *q = out;
    float amax;
    if (row_amax(a, K, &amax)) return 1;
    int k, n = (K + 3) / 4 * 4;
    float inv = amax > 0.0f ? (float)(qmax / amax) : 0.0f;
    *scale = amax > 0.0f ? (float)(amax / qmax) : 0.0f;
    const float32x4_t vinv = vdupq_n_f32(inv);
    for (k = 0; k + 8 <= K; k += 8) {
        int32x4_t c0 = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(a + k), vinv));
        int32x4_t c1 = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(a + k + 4), vinv));
        vst1q_s16(q + k, vcombine_s16(vqmovn_s32(c0), vqmovn_s32(c1)));
    }
    for (; k < K; k++) q[k] = (int16_t)lrintf(a[k] * inv);
    for (; k < n; k++) q[k] = 0;
    return 0;
}

/* The same values as bytes (qmax <= 127: act8 matrices), K4 * 4 of them (zero padded). */
static int quantize_row8_neon(const float *a, int K, double qmax, void *out, float *scale)
{
    int8_t *q = out;
    float amax;
    if (row_amax(a, K, &amax)) return 1;
    int k, n = (K + 3) / 4 * 4;
    float inv = amax > 0.0f ? (float)(qmax / amax) : 0.0f;
    *scale = amax > 0.0f ? (float)(amax / qmax) : 0.0f;
    const float32x4_t vinv = vdupq_n_f32(inv);
    for (k = 0; k + 8 <= K; k += 8) {
        int32x4_t c0 = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(a + k), vinv));
        int32x4_t c1 = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(a + k + 4), vinv));
        vst1_s8(q + k, vqmovn_s16(vcombine_s16(vqmovn_s32(c0), vqmovn_s32(c1))));
    }
    for (; k < K; k++) q[k] = (int8_t)lrintf(a[k] * inv);
    for (; k < n; k++) q[k] = 0;
    return 0;
}

/* act8 rows as bytes: scratch = ascale [M], then q [M][K4 * 4] bytes. */
static const uint8_t *quantize_rows8(int M, const float *A, int lda, const lrt_mat *W, float *scratch)
{
    uint8_t *q = (uint8_t *)(scratch + M);
    lrt_quantize_rows(M, A, lda, W, q, 4 * (size_t)((W->K + 3) / 4), scratch, quantize_row8_neon);
    return q;
}

/* The neon level's int8 product. */
void lrt_i8_neon(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                 float *C, int ldc, int ncols, float *scratch)
{
    size_t n = 4 * (size_t)((W->K + 3) / 4);
    if (W->act8) {
        const uint8_t *q = quantize_rows8(M, A, lda, W, scratch);
        i8_products(&fam_a8, M, q, n, scratch, W, bias, C, ldc, ncols);
        return;
    }
    int16_t *q = (int16_t *)(scratch + M);
    lrt_quantize_rows(M, A, lda, W, q, n * sizeof(int16_t), scratch, quantize_row_neon);
    i8_products(&fam_s16, M, (const uint8_t *)q, 2 * n, scratch, W, bias, C, ldc, ncols);
}

/* The neondot level's: act8 rows as bytes; 16-bit rows split into the two byte planes,
 * scratch = ascale [M], q [M][n] int16, planes [M][2][n] bytes (hi, then lo - 128). */
void lrt_i8_neondot(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                    float *C, int ldc, int ncols, float *scratch)
{
    size_t n = 4 * (size_t)((W->K + 3) / 4);
    if (W->act8) {
        const uint8_t *q = quantize_rows8(M, A, lda, W, scratch);
        i8_products(&fam_dot8, M, q, n, scratch, W, bias, C, ldc, ncols);
        return;
    }
    int16_t *q = (int16_t *)(scratch + M);
    int8_t *planes = (int8_t *)(q + (size_t)M * n);
    lrt_quantize_rows(M, A, lda, W, q, n * sizeof(int16_t), scratch, quantize_row_neon);
    for (int m = 0; m < M; m++) {
        const int16_t *qm = q + m * n;
        int8_t *hi = planes + 2 * m * n, *lo = hi + n;
        size_t k = 0;
        for (; k < n; k += 8) {  /* n is a multiple of 4: the last 4 through a padded copy */
            int16_t t[8] = {0};
            int16x8_t v;
            if (k + 8 <= n) v = vld1q_s16(qm + k);
            else {
                memcpy(t, qm + k, 4 * sizeof(int16_t));
                v = vld1q_s16(t);
            }
            int8x8_t h = vshrn_n_s16(v, 8);                                 /* q >> 8 */
            int8x8_t l = veor_s8(vmovn_s16(v), vdup_n_s8((int8_t)0x80));    /* (q & 255) - 128 */
            int8_t hb[8], lb[8];
            vst1_s8(hb, h);
            vst1_s8(lb, l);
            memcpy(hi + k, hb, k + 8 <= n ? 8 : 4);
            memcpy(lo + k, lb, k + 8 <= n ? 8 : 4);
        }
    }
    i8_products(&fam_dot16, M, (const uint8_t *)planes, 2 * n, scratch, W, bias, C, ldc, ncols);
}

#else
typedef int lrt_matmul_neon_unused;  /* not aarch64: nothing here (ISO C wants a declaration) */
#endif
