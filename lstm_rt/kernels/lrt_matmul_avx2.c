/* fp16 (F16C) and int8 weight kernels with AVX2 + FMA; same contracts as the generic ones
 * in lrt_matmul.c. Compiled with function target attributes; run only after lrt_init. */
#include "lrt_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <string.h>
#include "lrt_part_avx2.h"

#define LRT_AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c")))
#define LRT_AVX2_FN __attribute__((target("avx2,fma,f16c")))

static inline void store_cols(float *dst, const float *tile, int n) { memcpy(dst, tile, (size_t)n * sizeof(float)); }

/* ---- fp16 weights: vcvtph2ps widens 8 halves, then the fp32 FMA tile ---- */

LRT_AVX2_INLINE void f16_tile(int R, int NV, int K, const float *A, int lda, const uint16_t *wp,
                              const float *bias, float *out, int ldo)
{
    __m256 acc[8];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < NV; v++)
            acc[r * NV + v] = bias ? _mm256_loadu_ps(bias + 8 * v) : _mm256_setzero_ps();
    for (int k = 0; k < K; k++) {
        const uint16_t *w = wp + (size_t)k * NV * 8;
        __m256 wv[4];
        for (int v = 0; v < NV; v++) wv[v] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + 8 * v)));
        for (int r = 0; r < R; r++) {
            __m256 a = _mm256_broadcast_ss(A + (size_t)r * lda + k);
            for (int v = 0; v < NV; v++) acc[r * NV + v] = _mm256_fmadd_ps(a, wv[v], acc[r * NV + v]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int v = 0; v < NV; v++) _mm256_storeu_ps(out + (size_t)r * ldo + 8 * v, acc[r * NV + v]);
}

#define DEFINE_F16(NV)                                                                          \
LRT_AVX2_FN static void f16_nv##NV(int M, const float *A, int lda, const lrt_mat *W,            \
                                   const float *bias, float *C, int ldc, int ncols)             \
{                                                                                               \
    const int gw = NV * 8, K = W->K;                                                            \
    float tmp[2 * 32];                                                                          \
    for (int blk = 0; blk < W->nblk; blk++) {                                                   \
        const uint16_t *wp = (const uint16_t *)W->data + (size_t)blk * K * gw;                  \
        const float *bb = bias ? bias + blk * gw : NULL;                                        \
        int j0 = blk * gw, n = ncols - j0 < gw ? ncols - j0 : gw, m = 0;                        \
        for (; m + 2 <= M; m += 2) {                                                            \
            f16_tile(2, NV, K, A + (size_t)m * lda, lda, wp, bb, tmp, gw);                      \
            store_cols(C + (size_t)m * ldc + j0, tmp, n);                                       \
            store_cols(C + (size_t)(m + 1) * ldc + j0, tmp + gw, n);                            \
        }                                                                                       \
        for (; m < M; m++) {                                                                    \
            f16_tile(1, NV, K, A + (size_t)m * lda, lda, wp, bb, tmp, gw);                      \
            store_cols(C + (size_t)m * ldc + j0, tmp, n);                                       \
        }                                                                                       \
    }                                                                                           \
}
DEFINE_F16(1)
DEFINE_F16(2)
DEFINE_F16(3)
DEFINE_F16(4)

void lrt_matmul_f16_avx2(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                         float *C, int ldc, int ncols)
{
    switch (W->gw) {
    case 8:  f16_nv1(M, A, lda, W, bias, C, ldc, ncols); break;
    case 16: f16_nv2(M, A, lda, W, bias, C, ldc, ncols); break;
    case 24: f16_nv3(M, A, lda, W, bias, C, ldc, ncols); break;
    default: f16_nv4(M, A, lda, W, bias, C, ldc, ncols); break;
    }
}

/* ---- int8 weights [K4][gw][4] against activation bytes. The two byte kernels below meet
 * the weights as they are stored, with vpmaddubsw (unsigned activation byte x signed
 * weight, two products per int16 lane) under bounds that keep every int16 lane exact
 * (lrt_kernels.h proves them): no weight is widened per row (vpmovsxbw shares the integer
 * multiply pipes). Batches of 8 rows or more with 12-bit activations widen each pass's
 * weights once instead (w16_tile).
 *
 * Epilogue of all: sums * (ascale * wscale) + bias, multiply then add (no FMA), the
 * portable kernel's rounding, so that every level gives the same floats for the same
 * integer sums. ---- */
LRT_AVX2_INLINE void i8_store(__m256i sums, float ascale, const float *wscale, const float *bias, float *out)
{
    __m256 s = _mm256_mul_ps(_mm256_set1_ps(ascale), _mm256_loadu_ps(wscale));
    __m256 b = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
    _mm256_storeu_ps(out, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sums), s), b));
}

/* i8_store of the sums of offset activation bytes u = q + 2^shift: sum w q = sum w u -
 * 2^shift colsum, in wrapping int32 (exact: the true sum fits). */
LRT_AVX2_INLINE void i8_store_offset(__m256i sums, const int32_t *colsum, int shift, float ascale,
                                     const float *wscale, const float *bias, float *out)
{
    __m256i off = _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)colsum), shift);
    i8_store(_mm256_sub_epi32(sums, off), ascale, wscale, bias, out);
}

LRT_AVX2_INLINE __m256i bcast4(const void *q)
{
    int32_t v;
    memcpy(&v, q, 4);
    return _mm256_set1_epi32(v);
}

/* M rows of activations (row m at q + m * qs) times G 8-column groups, group g's quad-row
 * p at w[g] + p * wstride; writes G * 8 floats per row (rows ldo apart; the groups'
 * outputs, colsums, scales and biases consecutive). The rows loop inside: at K = 64 a
 * call per row and group set cost as much as its products. */
typedef void (*byte_tiles_fn)(int M, int K4, const uint8_t *q, size_t qs, const int8_t *const *w,
                              size_t wstride, const int32_t *colsum, const float *ascale,
                              const float *wscale, const float *bias, float *out, int ldo);

/* act8 matrices (|q| <= 64), as bytes u = q + 64 in [0, 128]. Per quad-row the row's 4
 * bytes are broadcast and vpmaddubsw multiplies them by the weights as stored (|lane| <=
 * 2 * 128 * 127 = 32512: it never saturates); vpmaddwd by ones folds a column's two lanes
 * into its int32 sum, and the offset comes off at the end (i8_store_offset).
 * 2 integer multiplies per 32 products and row (applying q's sign to the weights instead,
 * vpsignb, shares those pipes on AMD Zen: measured 8-13% slower). */
LRT_AVX2_INLINE void a8_tile(int R, int G, int K4, const uint8_t *q, size_t qs, const int8_t *const *w,
                             size_t wstride, const int32_t *colsum, const float *ascale, const float *wscale,
                             const float *bias, float *out, int ldo)
{
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc[8];
    /* unrolled: as a loop the compiler made it a memset (rep stos, ~40 cycles a call) */
#pragma GCC unroll 8
    for (int i = 0; i < R * G; i++) acc[i] = _mm256_setzero_si256();
    size_t o = 0;
    for (int p = 0; p < K4; p++, o += wstride)
        for (int r = 0; r < R; r++) {
            __m256i u = bcast4(q + (size_t)r * qs + 4 * p);
            for (int g = 0; g < G; g++) {
                acc[r * G + g] = _mm256_add_epi32(acc[r * G + g], _mm256_madd_epi16(
                    _mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i *)(w[g] + o))), ones));
                /* in this order: GCC otherwise adds two products first, and the extra live
                 * vectors spill sums to the stack */
                __asm__("" : "+x"(acc[r * G + g]));
            }
        }
    for (int r = 0; r < R; r++)
        for (int g = 0; g < G; g++)
            i8_store_offset(acc[r * G + g], colsum + 8 * g, 6, ascale[r], wscale + 8 * g,
                            bias ? bias + 8 * g : NULL, out + (size_t)r * ldo + 8 * g);
}

/* Every other int8 matrix (|q| <= LRT_ACT12_QMAX): u = q + 2048 in [1, 4095] comes as two
 * 6-bit planes, u = 64 hi + lo (hi at q, lo at q + qs / 2). Both are unsigned bytes <= 63,
 * so vpmaddubsw takes them as they are (|lane| <= 2 * 63 * 127), two quad-rows add in
 * int16, and vpmaddwd widens the hi sums by 64 and the lo sums by 1; the offset comes off
 * at the end (i8_store_offset). 6 integer multiplies per 64 products and row, against 8
 * (4 of them widenings) for 16-bit activations. One row per tile: the four broadcasts per
 * quad-row pair leave registers for four groups' sums. */
LRT_AVX2_INLINE void a12_tile(int G, int K4, const uint8_t *q, size_t qs, const int8_t *const *w,
                              size_t wstride, const int32_t *colsum, float ascale, const float *wscale,
                              const float *bias, float *out)
{
    const __m256i ones = _mm256_set1_epi16(1), by64 = _mm256_set1_epi16(64);
    const uint8_t *hi = q, *lo = q + qs / 2;
    __m256i acc[4];
#pragma GCC unroll 4
    for (int i = 0; i < G; i++) acc[i] = _mm256_setzero_si256();
    size_t o = 0;
    int p = 0;
    for (; p + 2 <= K4; p += 2, o += 2 * wstride) {
        __m256i h0 = bcast4(hi + 4 * p), h1 = bcast4(hi + 4 * p + 4);
        __m256i l0 = bcast4(lo + 4 * p), l1 = bcast4(lo + 4 * p + 4);
        for (int g = 0; g < G; g++) {
            __m256i w0 = _mm256_loadu_si256((const __m256i *)(w[g] + o));
            __m256i w1 = _mm256_loadu_si256((const __m256i *)(w[g] + o + wstride));
            /* in registers: as memory operands GCC loads each weight twice, and the 16 loads
             * per quad-row pair (3 groups) left the multiply pipes waiting: 1.2x slower */
            __asm__("" : "+x"(w0), "+x"(w1));
            __m256i ph = _mm256_add_epi16(_mm256_maddubs_epi16(h0, w0), _mm256_maddubs_epi16(h1, w1));
            __m256i pl = _mm256_add_epi16(_mm256_maddubs_epi16(l0, w0), _mm256_maddubs_epi16(l1, w1));
            acc[g] = _mm256_add_epi32(acc[g], _mm256_add_epi32(_mm256_madd_epi16(ph, by64), _mm256_madd_epi16(pl, ones)));
        }
    }
    if (p < K4) {  /* an odd last quad-row */
        __m256i h0 = bcast4(hi + 4 * p), l0 = bcast4(lo + 4 * p);
        for (int g = 0; g < G; g++) {
            __m256i w0 = _mm256_loadu_si256((const __m256i *)(w[g] + o));
            acc[g] = _mm256_add_epi32(acc[g], _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(h0, w0), by64),
                                                               _mm256_madd_epi16(_mm256_maddubs_epi16(l0, w0), ones)));
        }
    }
    for (int g = 0; g < G; g++)
        i8_store_offset(acc[g], colsum + 8 * g, 11, ascale, wscale + 8 * g, bias ? bias + 8 * g : NULL, out + 8 * g);
}

/* The tiles over M rows as functions of their own, so each keeps its sums in registers:
 * act8 two rows at a time (then an odd last one) while R * G <= 8 sums fit, else (the
 * 6- and 8-group passes of a single row) one. */
#define DEFINE_A8_TILES(G, R)                                                                   \
LRT_AVX2_FN __attribute__((noinline)) static void a8_tiles_##G(                                 \
    int M, int K4, const uint8_t *q, size_t qs, const int8_t *const *w, size_t wstride,         \
    const int32_t *colsum, const float *ascale, const float *wscale, const float *bias,         \
    float *out, int ldo)                                                                        \
{                                                                                               \
    int m = 0;                                                                                  \
    for (; m + R <= M; m += R)                                                                  \
        a8_tile(R, G, K4, q + m * qs, qs, w, wstride, colsum, ascale + m, wscale, bias, out + (size_t)m * ldo, ldo); \
    if (m < M)                                                                                  \
        a8_tile(1, G, K4, q + m * qs, qs, w, wstride, colsum, ascale + m, wscale, bias, out + (size_t)m * ldo, ldo); \
}
DEFINE_A8_TILES(1, 2)
DEFINE_A8_TILES(2, 2)
DEFINE_A8_TILES(3, 2)
DEFINE_A8_TILES(4, 2)
DEFINE_A8_TILES(6, 1)
DEFINE_A8_TILES(8, 1)

#define DEFINE_A12_TILES(G)                                                                     \
LRT_AVX2_FN __attribute__((noinline)) static void a12_tiles_##G(                                \
    int M, int K4, const uint8_t *q, size_t qs, const int8_t *const *w, size_t wstride,         \
    const int32_t *colsum, const float *ascale, const float *wscale, const float *bias,         \
    float *out, int ldo)                                                                        \
{                                                                                               \
    for (int m = 0; m < M; m++)                                                                 \
        a12_tile(G, K4, q + m * qs, qs, w, wstride, colsum, ascale[m], wscale, bias, out + (size_t)m * ldo); \
}
DEFINE_A12_TILES(1)
DEFINE_A12_TILES(2)
DEFINE_A12_TILES(3)
DEFINE_A12_TILES(4)

/* 12-bit matrices with W16_MIN_ROWS rows or more (batches, the input projection of a
 * sequence): a pass widens its weights to int16 once, into an L1 buffer, and every row
 * meets them in vpmaddwd with its int16 activations (the same q as the planes hold, so the
 * same sums): 2 integer multiplies per 32 products and row against a12_tile's 3. Below 8
 * rows the widening (per pass, not per row) costs more than it saves. act8 matrices stay
 * with a8_tile at every M: measured as fast, with half the weight bytes.
 * Buffer layout [p][g][2][16]: quad-row p of group g as the k pairs (4p, 4p+1) and
 * (4p+2, 4p+3) of its 8 columns, one int32 lane per column. */
#define W16_BUF_BYTES 16384
#define W16_MIN_ROWS 8

LRT_AVX2_INLINE void w16_widen(int G, int K4, const int8_t *const *w, size_t wstride, int16_t *buf)
{
    for (int p = 0; p < K4; p++)
        for (int g = 0; g < G; g++) {
            __m256i x = _mm256_loadu_si256((const __m256i *)(w[g] + (size_t)p * wstride));
            /* columns 0-3 and 4-7, each column's 4 weights as two int32 lanes (k pairs) */
            __m256 a = _mm256_castsi256_ps(_mm256_cvtepi8_epi16(_mm256_castsi256_si128(x)));
            __m256 b = _mm256_castsi256_ps(_mm256_cvtepi8_epi16(_mm256_extracti128_si256(x, 1)));
            /* the shuffles take one pair of each column, in the order 0 1 4 5 | 2 3 6 7;
             * the permute restores 0-7 */
            __m256i k01 = _mm256_permute4x64_epi64(_mm256_castps_si256(_mm256_shuffle_ps(a, b, 0x88)), 0xd8);
            __m256i k23 = _mm256_permute4x64_epi64(_mm256_castps_si256(_mm256_shuffle_ps(a, b, 0xdd)), 0xd8);
            _mm256_store_si256((__m256i *)(buf + ((size_t)p * G + g) * 32), k01);
            _mm256_store_si256((__m256i *)(buf + ((size_t)p * G + g) * 32 + 16), k23);
        }
}

/* R rows (row r's int16 values at q + r * qs16) times the buffer's G groups over K4
 * quad-rows. The sums of a K chunk before the last stay int32 in out (first: start from
 * 0, else from out); the last chunk stores floats. */
LRT_AVX2_INLINE void w16_tile(int R, int G, int K4, const int16_t *q, size_t qs16, const int16_t *buf,
                              int first, int last, const float *ascale, const float *wscale,
                              const float *bias, float *out, int ldo)
{
    __m256i acc[12];
#pragma GCC unroll 12
    for (int i = 0; i < R * G; i++)
        acc[i] = first ? _mm256_setzero_si256()
                       : _mm256_loadu_si256((const __m256i *)(out + (size_t)(i / G) * ldo + 8 * (i % G)));
    for (int p = 0; p < K4; p++)
        for (int h = 0; h < 2; h++) {
            const int16_t *wb = buf + (size_t)p * G * 32 + 16 * h;
            for (int r = 0; r < R; r++) {
                __m256i a = bcast4(q + (size_t)r * qs16 + 4 * p + 2 * h);
                for (int g = 0; g < G; g++) {
                    acc[r * G + g] = _mm256_add_epi32(acc[r * G + g],
                        _mm256_madd_epi16(a, _mm256_load_si256((const __m256i *)(wb + 32 * g))));
                    /* in this order: GCC otherwise adds the two k pairs' products first,
                     * and the extra live vectors spill sums to the stack */
                    __asm__("" : "+x"(acc[r * G + g]));
                }
            }
        }
    for (int r = 0; r < R; r++)
        for (int g = 0; g < G; g++) {
            float *o = out + (size_t)r * ldo + 8 * g;
            if (last) i8_store(acc[r * G + g], ascale[r], wscale + 8 * g, bias ? bias + 8 * g : NULL, o);
            else _mm256_storeu_si256((__m256i *)o, acc[r * G + g]);
        }
}

/* A pass: K in chunks whose widened weights fit the buffer, every row (R at a time) over
 * each chunk. q holds int16 rows qs bytes apart. R * G <= 9 sums: with 12 GCC spills. */
#define DEFINE_W16_TILES(G, R)                                                                  \
LRT_AVX2_FN __attribute__((noinline)) static void w16_tiles_##G(                                \
    int M, int K4, const uint8_t *q, size_t qs, const int8_t *const *w, size_t wstride,         \
    const int32_t *colsum, const float *ascale, const float *wscale, const float *bias,         \
    float *out, int ldo)                                                                        \
{                                                                                               \
    (void)colsum;                                                                               \
    int16_t buf[W16_BUF_BYTES / 2] __attribute__((aligned(32)));                                \
    const int kc = W16_BUF_BYTES / (64 * G);                                                    \
    const size_t qs16 = qs / 2;                                                                 \
    const int8_t *wc[G];                                                                        \
    for (int p0 = 0; p0 < K4; p0 += kc) {                                                       \
        int n = K4 - p0 < kc ? K4 - p0 : kc, first = p0 == 0, last = p0 + n == K4;              \
        for (int g = 0; g < G; g++) wc[g] = w[g] + (size_t)p0 * wstride;                        \
        w16_widen(G, n, wc, wstride, buf);                                                      \
        const int16_t *qc = (const int16_t *)q + 4 * p0;                                        \
        int m = 0;                                                                              \
        for (; m + R <= M; m += R)                                                              \
            w16_tile(R, G, n, qc + m * qs16, qs16, buf, first, last, ascale + m, wscale, bias,  \
                     out + (size_t)m * ldo, ldo);                                               \
        for (; m < M; m++)                                                                      \
            w16_tile(1, G, n, qc + m * qs16, qs16, buf, first, last, ascale + m, wscale, bias,  \
                     out + (size_t)m * ldo, ldo);                                               \
    }                                                                                           \
}
DEFINE_W16_TILES(1, 4)
DEFINE_W16_TILES(2, 4)
DEFINE_W16_TILES(3, 3)

/* A kernel's tiles by G - 1, and how many groups a pass takes: whole panels per pass (a
 * panel split between passes has its cache lines fetched twice), a 32-wide panel (LSTM
 * gates) or a 24-wide one alone, narrower panels several at a time. The widened passes
 * take a 32-wide panel as two halves of 64 bytes, whole cache lines each. */
typedef struct {
    byte_tiles_fn tiles[8];
    int per[2][4];     /* groups per pass by [one row only][gw / 8 - 1] */
} byte_kernel;

static const byte_kernel a8_kernel = {
    {a8_tiles_1, a8_tiles_2, a8_tiles_3, a8_tiles_4, NULL, a8_tiles_6, NULL, a8_tiles_8},
    {{4, 4, 3, 4}, {8, 8, 6, 8}}};
static const byte_kernel a12_kernel = {
    {a12_tiles_1, a12_tiles_2, a12_tiles_3, a12_tiles_4, NULL, NULL, NULL, NULL},
    {{4, 4, 3, 4}, {4, 4, 3, 4}}};
static const byte_kernel w16_kernel = {
    {w16_tiles_1, w16_tiles_2, w16_tiles_3, NULL, NULL, NULL, NULL, NULL},
    {{2, 2, 3, 2}, {2, 2, 3, 2}}};

/* M rows (qs bytes apart) against every column: a pass takes a set of 8-column groups and
 * runs every row over it (the set's weights stay in L1 from row to row). A set with a
 * ragged last group goes through a buffer. */
static void byte_product(const byte_kernel *kn, int M, const uint8_t *q, size_t qs, const float *ascale,
                         const lrt_mat *W, const float *bias, float *C, int ldc, int ncols)
{
    const int NV = W->gw / 8, K4 = (W->K + 3) / 4;
    const size_t ws = (size_t)W->gw * 4, panel = (size_t)K4 * ws;
    const int per = kn->per[M == 1][NV - 1];
    int ngroups = (ncols + 7) / 8, g = 0, v = 0;   /* group g is group v of its panel */
    const int8_t *next = (const int8_t *)W->data;   /* its weights */
    float tmp[8 * 32];
    while (g < ngroups) {
        int left = ngroups - g, G = left >= per ? per : left >= 4 ? 4 : left;
        int full = 8 * (g + G) <= ncols;
        const int8_t *w[8];
        for (int i = 0; i < G; i++) {
            w[i] = next;
            next += 32;
            if (++v == NV) {  /* on to the next panel */
                v = 0;
                next += panel - ws;
            }
        }
        const int32_t *cs = W->colsum + 8 * g;
        const float *sc = W->scale + 8 * g, *bb = bias ? bias + 8 * g : NULL;
        if (full)
            kn->tiles[G - 1](M, K4, q, qs, w, ws, cs, ascale, sc, bb, C + 8 * g, ldc);
        else  /* up to 8 rows at a time through the buffer */
            for (int m = 0; m < M; m += 8) {
                int R = M - m >= 8 ? 8 : M - m;
                kn->tiles[G - 1](R, K4, q + m * qs, qs, w, ws, cs, ascale + m, sc, bb, tmp, 32);
                for (int r = 0; r < R; r++)
                    store_cols(C + (size_t)(m + r) * ldc + 8 * g, tmp + 32 * r, ncols - 8 * g);
            }
        g += G;
    }
}

/* ---- activation quantizer: lrt_matmul's quantize_row, 8 floats at a time (same results:
 * the max is exact and vcvtps2dq rounds to nearest even like lrintf) ---- */

/* The row's largest |a| (exact) into *amax; returns 1 if the row holds NaN/inf. The last
 * K % 8 values come in as one partial vector (the other lanes 0), so a short row costs a
 * few vector operations, not a scalar loop. */
LRT_AVX2_INLINE int row_amax(const float *a, int K, float *amax_out)
{
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)), big = _mm256_set1_ps(FLT_MAX);
    __m256 vmax = _mm256_setzero_ps();
    int bad = 0, k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 v = _mm256_and_ps(_mm256_loadu_ps(a + k), absmask);
        bad |= _mm256_movemask_ps(_mm256_cmp_ps(v, big, _CMP_NLE_UQ));  /* inf, or NaN (unordered) */
        vmax = _mm256_max_ps(vmax, v);
    }
    if (k < K) {
        __m256 v = _mm256_and_ps(lrt_load_part(a + k, K - k), absmask);
        bad |= _mm256_movemask_ps(_mm256_cmp_ps(v, big, _CMP_NLE_UQ));
        vmax = _mm256_max_ps(vmax, v);
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    *amax_out = _mm_cvtss_f32(m);
    return bad != 0;
}

/* The row's scale amax / qmax into *scale and qmax / amax (0 for an all-zero row) into
 * *inv, as the portable quantizer computes them; returns 1 if the row holds NaN/inf. */
LRT_AVX2_INLINE int row_scale(const float *a, int K, double qmax, __m256 *inv, float *scale)
{
    float amax;
    if (row_amax(a, K, &amax)) return 1;
    *inv = _mm256_set1_ps(amax > 0.0f ? (float)(qmax / amax) : 0.0f);
    *scale = amax > 0.0f ? (float)(amax / qmax) : 0.0f;
    return 0;
}

/* 8 values of a from k on (fewer than 8 left: the rest read as 0) times inv, rounded to
 * nearest even like lrintf */
LRT_AVX2_INLINE __m256i scaled8(const float *a, int k, int K, __m256 inv)
{
    __m256 v = K - k >= 8 ? _mm256_loadu_ps(a + k) : lrt_load_part(a + k, K - k);
    return _mm256_cvtps_epi32(_mm256_mul_ps(v, inv));
}

/* 32 values of a from k on (k < K) as four vectors of int32 q, scaled8's; past K, 0 */
LRT_AVX2_INLINE void scaled32(const float *a, int k, int K, __m256 inv, __m256i c[4])
{
    for (int i = 0; i < 4; i++)
        c[i] = k + 8 * i < K ? scaled8(a, k + 8 * i, K, inv) : _mm256_setzero_si256();
}

/* Store the first n bytes of v (n a multiple of 4, at most 32). */
LRT_AVX2_INLINE void store_bytes(void *dst, __m256i v, int n)
{
    if (n == 32) _mm256_storeu_si256((__m256i *)dst, v);
    else lrt_store_part((float *)dst, _mm256_castsi256_ps(v), n / 4);
}

LRT_AVX2_FN int lrt_quantize_row_avx2(const float *a, int K, double qmax, void *out, float *scale)
{
    int16_t *q = out;
    __m256 vinv;
    if (row_scale(a, K, qmax, &vinv, scale)) return 1;
    int k, n = (K + 3) / 4 * 4;
    for (k = 0; k < n; k += 16) {
        /* the zero padding up to n comes from the zero lanes of a partial load */
        __m256i lo = scaled8(a, k, K, vinv), hi = k + 8 < K ? scaled8(a, k + 8, K, vinv) : _mm256_setzero_si256();
        /* packs works per 128-bit lane; the permute restores the order */
        __m256i v = _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), 0xd8);
        store_bytes(q + k, v, (n - k < 16 ? n - k : 16) * 2);
    }
    return 0;
}

/* The same values as bytes u = q + 64 (act8: |q| <= 64, u in [0, 128]), the operand of
 * both the AVX2 and the VNNI act8 kernels; the padding is q = 0 (u = 64). */
LRT_AVX2_FN int lrt_quantize_row_u8_avx2(const float *a, int K, double qmax, void *out, float *scale)
{
    uint8_t *u = out;
    __m256 vinv;
    if (row_scale(a, K, qmax, &vinv, scale)) return 1;
    int k, n = (K + 3) / 4 * 4;
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7), off = _mm256_set1_epi32(64);
    for (k = 0; k < n; k += 32) {
        __m256i c[4];
        scaled32(a, k, K, vinv, c);
        for (int i = 0; i < 4; i++) c[i] = _mm256_add_epi32(c[i], off);
        /* the packs interleave 4-value pieces per 128-bit lane; the permute restores the order */
        __m256i b = _mm256_packus_epi16(_mm256_packs_epi32(c[0], c[1]), _mm256_packs_epi32(c[2], c[3]));
        store_bytes(u + k, _mm256_permutevar8x32_epi32(b, order), n - k < 32 ? n - k : 32);
    }
    return 0;
}

/* The same values as the two 6-bit planes of u = q + 2048 (|q| <= LRT_ACT12_QMAX): hi =
 * u >> 6 at planes, lo = u & 63 at planes + n (n = K4 * 4 each; the padding is q = 0). */
LRT_AVX2_FN static int quantize_row12_avx2(const float *a, int K, double qmax, void *out, float *scale)
{
    uint8_t *planes = out;
    __m256 vinv;
    if (row_scale(a, K, qmax, &vinv, scale)) return 1;
    int k, n = (K + 3) / 4 * 4;
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7), off = _mm256_set1_epi32(2048);
    const __m256i low6 = _mm256_set1_epi16(63);
    for (k = 0; k < n; k += 32) {
        __m256i c[4];
        scaled32(a, k, K, vinv, c);
        for (int i = 0; i < 4; i++) c[i] = _mm256_add_epi32(c[i], off);
        /* u in [1, 4095] as int16, then the planes as bytes; the packs interleave 4-value
         * pieces per 128-bit lane and the permute restores the order */
        __m256i u01 = _mm256_packs_epi32(c[0], c[1]), u23 = _mm256_packs_epi32(c[2], c[3]);
        __m256i hi = _mm256_packus_epi16(_mm256_srli_epi16(u01, 6), _mm256_srli_epi16(u23, 6));
        __m256i lo = _mm256_packus_epi16(_mm256_and_si256(u01, low6), _mm256_and_si256(u23, low6));
        int nb = n - k < 32 ? n - k : 32;
        store_bytes(planes + k, _mm256_permutevar8x32_epi32(hi, order), nb);
        store_bytes(planes + n + k, _mm256_permutevar8x32_epi32(lo, order), nb);
    }
    return 0;
}

/* The avx2 level's int8 product. scratch: ascale [M], then per row the activation bytes:
 * q (act8 matrices, K4 * 4 bytes) or its two 12-bit planes (2 * K4 * 4 bytes). */
LRT_AVX2_FN void lrt_i8_avx2(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                             float *C, int ldc, int ncols, float *scratch)
{
    float *ascale = scratch;
    const size_t q4 = 4 * (size_t)((W->K + 3) / 4);
    uint8_t *q = (uint8_t *)(scratch + M);
    /* each call with a constant quantizer (a direct call) */
    if (W->act8) {
        lrt_quantize_rows(M, A, lda, W, q, q4, ascale, lrt_quantize_row_u8_avx2);
        byte_product(&a8_kernel, M, q, q4, ascale, W, bias, C, ldc, ncols);
    } else if (M >= W16_MIN_ROWS) {  /* int16 values: as many bytes as the two planes */
        lrt_quantize_rows(M, A, lda, W, q, 2 * q4, ascale, lrt_quantize_row_avx2);
        byte_product(&w16_kernel, M, q, 2 * q4, ascale, W, bias, C, ldc, ncols);
    } else {
        lrt_quantize_rows(M, A, lda, W, q, 2 * q4, ascale, quantize_row12_avx2);
        byte_product(&a12_kernel, M, q, 2 * q4, ascale, W, bias, C, ldc, ncols);
    }
}

/* q = 256 * (hi - 128) + lo, 32 values at a time (n is a multiple of 4). */
LRT_AVX2_FN void lrt_split_bytes_avx2(const int16_t *q, int n, uint8_t *hi, uint8_t *lo)
{
    const __m256i off = _mm256_set1_epi16(128), low = _mm256_set1_epi16(0xff);
    int k = 0;
    for (; k + 32 <= n; k += 32) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(q + k)), b = _mm256_loadu_si256((const __m256i *)(q + k + 16));
        __m256i h = _mm256_packus_epi16(_mm256_add_epi16(_mm256_srai_epi16(a, 8), off),
                                         _mm256_add_epi16(_mm256_srai_epi16(b, 8), off));
        __m256i l = _mm256_packus_epi16(_mm256_and_si256(a, low), _mm256_and_si256(b, low));
        _mm256_storeu_si256((__m256i *)(hi + k), _mm256_permute4x64_epi64(h, 0xd8));
        _mm256_storeu_si256((__m256i *)(lo + k), _mm256_permute4x64_epi64(l, 0xd8));
    }
    for (; k < n; k++) {
        hi[k] = (uint8_t)((q[k] >> 8) + 128);
        lo[k] = (uint8_t)(q[k] & 0xff);
    }
}

#else  /* lrt_init never selects the AVX2 kernels here: portable stand-ins */

int lrt_quantize_row_avx2(const float *a, int K, double qmax, void *q, float *scale)
{
    (void)a; (void)K; (void)qmax; (void)q; (void)scale;
    return -1;
}

int lrt_quantize_row_u8_avx2(const float *a, int K, double qmax, void *q, float *scale)
{
    (void)a; (void)K; (void)qmax; (void)q; (void)scale;
    return -1;
}

void lrt_i8_avx2(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                 float *C, int ldc, int ncols, float *scratch)
{
    lrt_i8_generic(M, A, lda, W, bias, C, ldc, ncols, scratch);
}

void lrt_split_bytes_avx2(const int16_t *q, int n, uint8_t *hi, uint8_t *lo)
{
    (void)q; (void)n; (void)hi; (void)lo;
}

void lrt_matmul_f16_avx2(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                         float *C, int ldc, int ncols)
{
    lrt_matmul_f16_generic(M, A, lda, W, bias, C, ldc, ncols);
}

#endif
