/* fp16 (F16C) and int8 weight kernels with AVX2 + FMA; same contracts as the generic ones
 * in lrt_matmul.c. Compiled with function target attributes; run only after lrt_init. */
#include "lrt_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#include <string.h>

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

/* ---- int8 weights: widen 16 int8 (8 columns x 2 rows) to int16, vpmaddwd with a
 * broadcast pair of int16 activations: 16 exact multiply-adds into 8 int32 sums ---- */

LRT_AVX2_INLINE void i8_tile(int R, int NV, int K2, const int16_t *q, const int8_t *wp,
                             const float *ascale, const float *wscale, const float *bias,
                             float *out, int ldo)
{
    __m256i acc[8];
    for (int i = 0; i < R * NV; i++) acc[i] = _mm256_setzero_si256();
    for (int p = 0; p < K2; p++) {
        const int8_t *w = wp + (size_t)p * NV * 16;
        __m256i wv[4];
        for (int v = 0; v < NV; v++) wv[v] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + 16 * v)));
        for (int r = 0; r < R; r++) {
            int32_t pair;
            memcpy(&pair, q + (size_t)r * K2 * 2 + 2 * p, 4);
            __m256i a = _mm256_set1_epi32(pair);
            for (int v = 0; v < NV; v++)
                acc[r * NV + v] = _mm256_add_epi32(acc[r * NV + v], _mm256_madd_epi16(wv[v], a));
        }
    }
    for (int r = 0; r < R; r++)
        for (int v = 0; v < NV; v++) {
            __m256 s = _mm256_mul_ps(_mm256_set1_ps(ascale[r]), _mm256_loadu_ps(wscale + 8 * v));
            __m256 b = bias ? _mm256_loadu_ps(bias + 8 * v) : _mm256_setzero_ps();
            _mm256_storeu_ps(out + (size_t)r * ldo + 8 * v,
                             _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r * NV + v]), s, b));
        }
}

/* One row against four 8-column panels at once (a Dense head, or any gw = 8 matrix, when
 * streaming): each broadcast pair of activations feeds four panels, so the broadcast cost
 * is shared and four independent sums are in flight. Writes 32 floats to out. Not inlined:
 * inside the tile loops the compiler ran out of ymm registers and spilled the sums. */
LRT_AVX2_FN __attribute__((noinline)) static void i8_row4(int K2, const int16_t *q, float ascale,
                                                          const int8_t *wp, size_t panel,
                                                          const float *wscale, const float *bias, float *out)
{
    /* named accumulators (an array made the compiler shuffle registers every iteration),
     * two K pairs per iteration; more accumulators than four would spill (16 ymm registers) */
    const int8_t *w0 = wp, *w1 = wp + panel, *w2 = wp + 2 * panel, *w3 = wp + 3 * panel;
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    int p = 0;
#define I8_W(ptr, off) _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)((ptr) + (off))))
#define I8_STEP(x, o)                                                   \
    a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(I8_W(w0, o), x));       \
    a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(I8_W(w1, o), x));       \
    a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(I8_W(w2, o), x));       \
    a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(I8_W(w3, o), x));
    for (; p + 2 <= K2; p += 2) {
        int32_t pe, po;
        memcpy(&pe, q + 2 * p, 4);
        memcpy(&po, q + 2 * p + 2, 4);
        size_t o = (size_t)p * 16;
        I8_STEP(_mm256_set1_epi32(pe), o)
        I8_STEP(_mm256_set1_epi32(po), o + 16)
    }
    if (p < K2) {
        int32_t pe;
        memcpy(&pe, q + 2 * p, 4);
        I8_STEP(_mm256_set1_epi32(pe), (size_t)p * 16)
    }
#undef I8_STEP
#undef I8_W
    __m256i acc[4] = {a0, a1, a2, a3};
    for (int i = 0; i < 4; i++) {
        __m256 s = _mm256_mul_ps(_mm256_set1_ps(ascale), _mm256_loadu_ps(wscale + 8 * i));
        __m256 b = bias ? _mm256_loadu_ps(bias + 8 * i) : _mm256_setzero_ps();
        _mm256_storeu_ps(out + 8 * i, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i]), s, b));
    }
}

/* The tiles as functions of their own: inlined into the panel loops they spilled sums. */
#define DEFINE_I8_TILE(R, NV)                                                                   \
LRT_AVX2_FN __attribute__((noinline)) static void i8_tile_##R##_##NV(                           \
    int K2, const int16_t *q, const int8_t *wp, const float *ascale, const float *wscale,       \
    const float *bias, float *out, int ldo)                                                     \
{ i8_tile(R, NV, K2, q, wp, ascale, wscale, bias, out, ldo); }
DEFINE_I8_TILE(1, 1)
DEFINE_I8_TILE(2, 1)
DEFINE_I8_TILE(1, 2)
DEFINE_I8_TILE(2, 2)
DEFINE_I8_TILE(1, 3)
DEFINE_I8_TILE(2, 3)
DEFINE_I8_TILE(1, 4)
DEFINE_I8_TILE(2, 4)

#define DEFINE_I8(NV)                                                                           \
LRT_AVX2_FN static void i8_nv##NV(int M, const int16_t *q, const float *ascale, const lrt_mat *W, \
                                  const float *bias, float *C, int ldc, int ncols)              \
{                                                                                               \
    const int gw = NV * 8, K2 = (W->K + 1) / 2;                                                 \
    float tmp[2 * 32];                                                                          \
    int blk = 0;                                                                                \
    if (NV == 1 && M == 1)                                                                      \
        for (; blk + 4 <= W->nblk && (blk + 4) * 8 <= ncols; blk += 4)                          \
            i8_row4(K2, q, ascale[0], (const int8_t *)W->data + (size_t)blk * K2 * 16,          \
                    (size_t)K2 * 16, W->scale + blk * 8, bias ? bias + blk * 8 : NULL, C + blk * 8); \
    for (; blk < W->nblk; blk++) {                                                              \
        const int8_t *wp = (const int8_t *)W->data + (size_t)blk * K2 * gw * 2;                 \
        const float *bb = bias ? bias + blk * gw : NULL, *ws = W->scale + blk * gw;             \
        int j0 = blk * gw, n = ncols - j0 < gw ? ncols - j0 : gw, m = 0;                        \
        for (; m + 2 <= M; m += 2) {                                                            \
            i8_tile_2_##NV(K2, q + (size_t)m * K2 * 2, wp, ascale + m, ws, bb, tmp, gw);        \
            store_cols(C + (size_t)m * ldc + j0, tmp, n);                                       \
            store_cols(C + (size_t)(m + 1) * ldc + j0, tmp + gw, n);                            \
        }                                                                                       \
        for (; m < M; m++) {                                                                    \
            i8_tile_1_##NV(K2, q + (size_t)m * K2 * 2, wp, ascale + m, ws, bb, tmp, gw);        \
            store_cols(C + (size_t)m * ldc + j0, tmp, n);                                       \
        }                                                                                       \
    }                                                                                           \
}
DEFINE_I8(1)
DEFINE_I8(2)
DEFINE_I8(3)
DEFINE_I8(4)

void lrt_matmul_i8_avx2(int M, const int16_t *q, const float *ascale, const lrt_mat *W,
                        const float *bias, float *C, int ldc, int ncols)
{
    switch (W->gw) {
    case 8:  i8_nv1(M, q, ascale, W, bias, C, ldc, ncols); break;
    case 16: i8_nv2(M, q, ascale, W, bias, C, ldc, ncols); break;
    case 24: i8_nv3(M, q, ascale, W, bias, C, ldc, ncols); break;
    default: i8_nv4(M, q, ascale, W, bias, C, ldc, ncols); break;
    }
}

#else

void lrt_matmul_f16_avx2(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                         float *C, int ldc, int ncols)
{
    lrt_matmul_f16_generic(M, A, lda, W, bias, C, ldc, ncols);
}

void lrt_matmul_i8_avx2(int M, const int16_t *q, const float *ascale, const lrt_mat *W,
                        const float *bias, float *C, int ldc, int ncols)
{
    lrt_matmul_i8_generic(M, q, ascale, W, bias, C, ldc, ncols);
}

#endif
