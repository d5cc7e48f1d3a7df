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

/* ---- int8 weights, panels [K4][gw][4]: 16 bytes (4 columns x 4 rows) widen to int16 and
 * meet the broadcast 4 int16 activations of those rows in vpmaddwd, 16 exact products into
 * 8 int32 sums, two per column; the pairs are added once, at the end ---- */

/* Two pair-sum vectors (columns 0-3 and 4-7 of an 8-column group) -> 8 column sums. */
LRT_AVX2_INLINE __m256i i8_fold(__m256i lo4, __m256i hi4)
{
    /* hadd gives [c0 c1 c4 c5 | c2 c3 c6 c7]; the permute puts the columns in order */
    return _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(lo4, hi4), _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7));
}

/* sums * (ascale * wscale) + bias: multiply, then add (no FMA), the portable kernel's
 * rounding, so that every level gives the same floats for the same integer sums. */
LRT_AVX2_INLINE void i8_store(__m256i sums, float ascale, const float *wscale, const float *bias, float *out)
{
    __m256 s = _mm256_mul_ps(_mm256_set1_ps(ascale), _mm256_loadu_ps(wscale));
    __m256 b = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
    _mm256_storeu_ps(out, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sums), s), b));
}

#define I8_W16(ptr) _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(ptr)))

/* R rows of q (K4 * 4 int16 each) times NV 8-column groups of one panel: wp is the group's
 * first column in quad-row 0, wstride the bytes from one quad-row to the next. Writes
 * NV * 8 floats per row to out (rows ldo apart). R * NV <= 4 keeps the sums in registers. */
LRT_AVX2_INLINE void i8_tile(int R, int NV, int K4, const int16_t *q, const int8_t *wp, size_t wstride,
                             const float *ascale, const float *wscale, const float *bias,
                             float *out, int ldo)
{
    __m256i acc[8];
    /* unrolled: as a loop the compiler made it a memset (rep stos, ~40 cycles a call) */
#pragma GCC unroll 8
    for (int i = 0; i < 2 * R * NV; i++) acc[i] = _mm256_setzero_si256();
    for (int p = 0; p < K4; p++) {
        const int8_t *w = wp + (size_t)p * wstride;
        __m256i a[2];
        for (int r = 0; r < R; r++) {
            int64_t quad;
            memcpy(&quad, q + (size_t)r * K4 * 4 + 4 * p, 8);
            a[r] = _mm256_set1_epi64x(quad);
        }
        for (int v = 0; v < NV; v++) {
            __m256i w0 = I8_W16(w + 32 * v), w1 = I8_W16(w + 32 * v + 16);
            for (int r = 0; r < R; r++) {
                __m256i *c = acc + 2 * (r * NV + v);
                c[0] = _mm256_add_epi32(c[0], _mm256_madd_epi16(w0, a[r]));
                c[1] = _mm256_add_epi32(c[1], _mm256_madd_epi16(w1, a[r]));
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int v = 0; v < NV; v++)
            i8_store(i8_fold(acc[2 * (r * NV + v)], acc[2 * (r * NV + v) + 1]), ascale[r], wscale + 8 * v,
                     bias ? bias + 8 * v : NULL, out + (size_t)r * ldo + 8 * v);
}

/* One row against four 8-column panels at once (a Dense head, or any gw = 8 matrix, when
 * streaming): each broadcast quad of activations feeds four panels, so the broadcast cost
 * is shared and eight independent sums are in flight. Writes 32 floats to out. Not
 * inlined: inside the tile loops the compiler ran out of ymm registers and spilled. */
LRT_AVX2_FN __attribute__((noinline)) static void i8_row4(int K4, const int16_t *q, float ascale,
                                                          const int8_t *wp, size_t panel,
                                                          const float *wscale, const float *bias, float *out)
{
    /* named accumulators (an array made the compiler shuffle registers every iteration) */
    const int8_t *w0 = wp, *w1 = wp + panel, *w2 = wp + 2 * panel, *w3 = wp + 3 * panel;
    __m256i a0 = _mm256_setzero_si256(), b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0, a3 = a0, b3 = a0;
    for (int p = 0; p < K4; p++) {
        int64_t quad;
        memcpy(&quad, q + 4 * p, 8);
        __m256i x = _mm256_set1_epi64x(quad);
        size_t o = (size_t)p * 32;
#define I8_STEP(a, b, w)                                                    \
        a = _mm256_add_epi32(a, _mm256_madd_epi16(I8_W16(w + o), x));      \
        b = _mm256_add_epi32(b, _mm256_madd_epi16(I8_W16(w + o + 16), x));
        I8_STEP(a0, b0, w0)
        I8_STEP(a1, b1, w1)
        I8_STEP(a2, b2, w2)
        I8_STEP(a3, b3, w3)
#undef I8_STEP
    }
    __m256i sums[4] = {i8_fold(a0, b0), i8_fold(a1, b1), i8_fold(a2, b2), i8_fold(a3, b3)};
    for (int i = 0; i < 4; i++)
        i8_store(sums[i], ascale, wscale + 8 * i, bias ? bias + 8 * i : NULL, out + 8 * i);
}

/* The tiles as functions of their own: inlined into the panel loops they spilled sums. */
#define DEFINE_I8_TILE(R, NV)                                                                   \
LRT_AVX2_FN __attribute__((noinline)) static void i8_tile_##R##_##NV(                           \
    int K4, const int16_t *q, const int8_t *wp, size_t wstride, const float *ascale,            \
    const float *wscale, const float *bias, float *out, int ldo)                                \
{ i8_tile(R, NV, K4, q, wp, wstride, ascale, wscale, bias, out, ldo); }
DEFINE_I8_TILE(1, 1)
DEFINE_I8_TILE(1, 2)
DEFINE_I8_TILE(1, 3)
DEFINE_I8_TILE(1, 4)
DEFINE_I8_TILE(2, 1)
DEFINE_I8_TILE(2, 2)

/* Row pairs take the panel's groups two at a time (four sums per group and row). */
#define DEFINE_I8(NV)                                                                           \
LRT_AVX2_FN static void i8_nv##NV(int M, const int16_t *q, const float *ascale, const lrt_mat *W, \
                                  const float *bias, float *C, int ldc, int ncols)              \
{                                                                                               \
    const int gw = NV * 8, K4 = (W->K + 3) / 4;                                                 \
    const size_t qs = (size_t)K4 * 4, ws = (size_t)gw * 4;                                      \
    float tmp[2 * 32];                                                                          \
    int blk = 0;                                                                                \
    if (NV == 1 && M == 1)                                                                      \
        for (; blk + 4 <= W->nblk && (blk + 4) * 8 <= ncols; blk += 4)                          \
            i8_row4(K4, q, ascale[0], (const int8_t *)W->data + (size_t)blk * K4 * 32,          \
                    (size_t)K4 * 32, W->scale + blk * 8, bias ? bias + blk * 8 : NULL, C + blk * 8); \
    for (; blk < W->nblk; blk++) {                                                              \
        const int8_t *wp = (const int8_t *)W->data + (size_t)blk * K4 * ws;                     \
        const float *bb = bias ? bias + blk * gw : NULL, *sc = W->scale + blk * gw;             \
        int j0 = blk * gw, n = ncols - j0 < gw ? ncols - j0 : gw, m = 0;                        \
        for (; m + 2 <= M; m += 2) {                                                            \
            for (int v = 0; v < NV; v += 2) {                                                   \
                const float *bv = bb ? bb + 8 * v : NULL;                                       \
                if (v + 2 <= NV)                                                                \
                    i8_tile_2_2(K4, q + m * qs, wp + 32 * v, ws, ascale + m, sc + 8 * v, bv, tmp + 8 * v, gw); \
                else                                                                            \
                    i8_tile_2_1(K4, q + m * qs, wp + 32 * v, ws, ascale + m, sc + 8 * v, bv, tmp + 8 * v, gw); \
            }                                                                                   \
            store_cols(C + (size_t)m * ldc + j0, tmp, n);                                       \
            store_cols(C + (size_t)(m + 1) * ldc + j0, tmp + gw, n);                            \
        }                                                                                       \
        for (; m < M; m++) {   /* a whole block straight into C, a ragged one via tmp */    \
            float *out = n == gw ? C + (size_t)m * ldc + j0 : tmp;                              \
            i8_tile_1_##NV(K4, q + m * qs, wp, ws, ascale + m, sc, bb, out, gw);                \
            if (n < gw) store_cols(C + (size_t)m * ldc + j0, tmp, n);                           \
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

/* ---- int8 weights x 8-bit activations (act8 matrices, |q| <= 64; lrt_kernels.h proves
 * the bounds). Per quad-row the row's 4 activation bytes are broadcast; vpsignb gives each
 * weight its activation's sign and vpmaddubsw multiplies by |q| (two products per int16
 * lane, never saturating); two quad-rows add in int16; vpmaddwd by ones folds a column's
 * two lanes into its int32 sum. Per 32 weight bytes and row: 1.5 integer multiplies and
 * no widening of weights, against the 16-bit path's 2 multiplies and 2 widenings (Zen 1
 * runs both kinds on one pipe each, 2 cycles per 256-bit op). ---- */

LRT_AVX2_INLINE __m256i a8_bcast(const int8_t *q)
{
    int32_t v;
    memcpy(&v, q, 4);
    return _mm256_set1_epi32(v);
}

/* int16 lanes: |x| * sign(w, x), two byte products each (|lane| <= 2 * 64 * 127). */
LRT_AVX2_INLINE __m256i a8_mul(__m256i x, __m256i ax, const int8_t *w)
{
    return _mm256_maddubs_epi16(ax, _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)w), x));
}

/* R rows of q (qs bytes apart) times G 8-column groups; group g's quad-row p at
 * w[g] + p * wstride. Writes G * 8 floats per row (rows ldo apart; groups' outputs,
 * scales and biases consecutive). R * G <= 8 sums stay in registers. */
LRT_AVX2_INLINE void a8_tile(int R, int G, int K4, const int8_t *q, size_t qs, const int8_t *const *w,
                             size_t wstride, const float *ascale, const float *wscale, const float *bias,
                             float *out, int ldo)
{
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc[8];
#pragma GCC unroll 8
    for (int i = 0; i < R * G; i++) acc[i] = _mm256_setzero_si256();   /* (unrolled: see i8_tile) */
    size_t o = 0;
    int p = 0;
    for (; p + 2 <= K4; p += 2, o += 2 * wstride) {
        for (int r = 0; r < R; r++) {
            const int8_t *qr = q + (size_t)r * qs + 4 * p;
            __m256i x0 = a8_bcast(qr), x1 = a8_bcast(qr + 4);
            __m256i a0 = _mm256_abs_epi8(x0), a1 = _mm256_abs_epi8(x1);
            for (int g = 0; g < G; g++) {
                __m256i pair = _mm256_add_epi16(a8_mul(x0, a0, w[g] + o), a8_mul(x1, a1, w[g] + o + wstride));
                acc[r * G + g] = _mm256_add_epi32(acc[r * G + g], _mm256_madd_epi16(pair, ones));
            }
        }
    }
    if (p < K4)  /* an odd last quad-row */
        for (int r = 0; r < R; r++) {
            __m256i x0 = a8_bcast(q + (size_t)r * qs + 4 * p), a0 = _mm256_abs_epi8(x0);
            for (int g = 0; g < G; g++)
                acc[r * G + g] = _mm256_add_epi32(acc[r * G + g], _mm256_madd_epi16(a8_mul(x0, a0, w[g] + o), ones));
        }
    for (int r = 0; r < R; r++)
        for (int g = 0; g < G; g++)
            i8_store(acc[r * G + g], ascale[r], wscale + 8 * g, bias ? bias + 8 * g : NULL,
                     out + (size_t)r * ldo + 8 * g);
}

/* The tiles as functions of their own, so each keeps its sums in registers. */
#define DEFINE_A8_TILE(R, G)                                                                    \
LRT_AVX2_FN __attribute__((noinline)) static void a8_tile_##R##_##G(                            \
    int K4, const int8_t *q, size_t qs, const int8_t *const *w, size_t wstride,                 \
    const float *ascale, const float *wscale, const float *bias, float *out, int ldo)           \
{ a8_tile(R, G, K4, q, qs, w, wstride, ascale, wscale, bias, out, ldo); }
DEFINE_A8_TILE(1, 1)
DEFINE_A8_TILE(1, 2)
DEFINE_A8_TILE(1, 3)
DEFINE_A8_TILE(1, 4)
DEFINE_A8_TILE(1, 6)
DEFINE_A8_TILE(1, 8)
DEFINE_A8_TILE(2, 1)
DEFINE_A8_TILE(2, 2)
DEFINE_A8_TILE(2, 3)
DEFINE_A8_TILE(2, 4)

typedef void (*a8_tile_fn)(int, const int8_t *, size_t, const int8_t *const *, size_t, const float *,
                           const float *, const float *, float *, int);
static const a8_tile_fn a8_tiles[2][8] = {
    {a8_tile_1_1, a8_tile_1_2, a8_tile_1_3, a8_tile_1_4, NULL, a8_tile_1_6, NULL, a8_tile_1_8},
    {a8_tile_2_1, a8_tile_2_2, a8_tile_2_3, a8_tile_2_4, NULL, NULL, NULL, NULL}};

/* R (1 or 2) rows against every column: 8-column groups taken G at a time, whole panels
 * per pass (a panel split between passes has its cache lines fetched twice): a 32-wide
 * panel (LSTM gates) or a 24-wide one alone, narrower panels several at a time. A ragged
 * last group goes through a buffer. */
static void a8_rows(int R, const int8_t *q, size_t qs, const float *ascale, const lrt_mat *W,
                    const float *bias, float *C, int ldc, int ncols)
{
    const int NV = W->gw / 8, K4 = (W->K + 3) / 4;
    const size_t ws = (size_t)W->gw * 4, panel = (size_t)K4 * ws;
    const int per = R == 2 ? (NV >= 3 ? NV : 4) : (NV == 3 ? 6 : 8);
    int ngroups = (ncols + 7) / 8, g = 0, v = 0;   /* group g is group v of its panel */
    const int8_t *next = (const int8_t *)W->data;   /* its weights */
    float tmp[2 * 32];
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
        float *out = full ? C + 8 * g : tmp;
        int ldo = full ? ldc : 32;
        a8_tiles[R - 1][G - 1](K4, q, qs, w, ws, ascale, W->scale + 8 * g, bias ? bias + 8 * g : NULL, out, ldo);
        if (!full)
            for (int r = 0; r < R; r++)
                store_cols(C + (size_t)r * ldc + 8 * g, tmp + 32 * r, ncols - 8 * g);
        g += G;
    }
}

void lrt_matmul_i8a8_avx2(int M, const int8_t *q, const float *ascale, const lrt_mat *W,
                          const float *bias, float *C, int ldc, int ncols)
{
    const size_t qs = 4 * (size_t)((W->K + 3) / 4);
    int m = 0;
    for (; m + 2 <= M; m += 2)
        a8_rows(2, q + m * qs, qs, ascale + m, W, bias, C + (size_t)m * ldc, ldc, ncols);
    if (m < M)
        a8_rows(1, q + m * qs, qs, ascale + m, W, bias, C + (size_t)m * ldc, ldc, ncols);
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

/* 8 values of a from k on (fewer than 8 left: the rest read as 0) times inv, rounded to
 * nearest even like lrintf */
LRT_AVX2_INLINE __m256i scaled8(const float *a, int k, int K, __m256 inv)
{
    __m256 v = K - k >= 8 ? _mm256_loadu_ps(a + k) : lrt_load_part(a + k, K - k);
    return _mm256_cvtps_epi32(_mm256_mul_ps(v, inv));
}

/* Store the first n bytes of v (n a multiple of 4, at most 32). */
LRT_AVX2_INLINE void store_bytes(void *dst, __m256i v, int n)
{
    if (n == 32) _mm256_storeu_si256((__m256i *)dst, v);
    else lrt_store_part((float *)dst, _mm256_castsi256_ps(v), n / 4);
}

LRT_AVX2_FN int lrt_quantize_row_avx2(const float *a, int K, double qmax, int16_t *q, float *scale)
{
    float amax;
    if (row_amax(a, K, &amax)) return 1;
    int k, n = (K + 3) / 4 * 4;
    float inv = amax > 0.0f ? (float)(qmax / amax) : 0.0f;
    *scale = amax > 0.0f ? (float)(amax / qmax) : 0.0f;
    const __m256 vinv = _mm256_set1_ps(inv);
    for (k = 0; k < n; k += 16) {
        /* the zero padding up to n comes from the zero lanes of a partial load */
        __m256i lo = scaled8(a, k, K, vinv), hi = k + 8 < K ? scaled8(a, k + 8, K, vinv) : _mm256_setzero_si256();
        /* packs works per 128-bit lane; the permute restores the order */
        __m256i v = _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), 0xd8);
        store_bytes(q + k, v, (n - k < 16 ? n - k : 16) * 2);
    }
    return 0;
}

/* The same values as bytes (qmax <= 127, so the packs never saturate). */
LRT_AVX2_FN int lrt_quantize_row8_avx2(const float *a, int K, double qmax, int8_t *q, float *scale)
{
    float amax;
    if (row_amax(a, K, &amax)) return 1;
    int k, n = (K + 3) / 4 * 4;
    float inv = amax > 0.0f ? (float)(qmax / amax) : 0.0f;
    *scale = amax > 0.0f ? (float)(amax / qmax) : 0.0f;
    const __m256 vinv = _mm256_set1_ps(inv);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7), zero = _mm256_setzero_si256();
    for (k = 0; k < n; k += 32) {
        __m256i c0 = scaled8(a, k, K, vinv);
        __m256i c1 = k + 8 < K ? scaled8(a, k + 8, K, vinv) : zero;
        __m256i c2 = k + 16 < K ? scaled8(a, k + 16, K, vinv) : zero;
        __m256i c3 = k + 24 < K ? scaled8(a, k + 24, K, vinv) : zero;
        /* the packs interleave 4-value pieces per 128-bit lane; the permute restores the order */
        __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(c0, c1), _mm256_packs_epi32(c2, c3));
        store_bytes(q + k, _mm256_permutevar8x32_epi32(b, order), n - k < 32 ? n - k : 32);
    }
    return 0;
}

/* The avx2 level's int8 product. scratch: ascale [M], then q [M][K4 * 4] as int16 or, for
 * act8 matrices, as bytes. */
LRT_AVX2_FN void lrt_i8_avx2(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                             float *C, int ldc, int ncols, float *scratch)
{
    float *ascale = scratch;
    if (!W->act8) {
        int16_t *q = (int16_t *)(scratch + M);
        lrt_quantize_rows(M, A, lda, W, q, ascale, lrt_quantize_row_avx2);
        lrt_matmul_i8_avx2(M, q, ascale, W, bias, C, ldc, ncols);
        return;
    }
    size_t n = 4 * (size_t)((W->K + 3) / 4);
    double qmax = lrt_act_qmax(W);
    int8_t *q = (int8_t *)(scratch + M);
    for (int m = 0; m < M; m++)
        if (lrt_quantize_row8_avx2(A + (size_t)m * lda, W->K, qmax, q + m * n, ascale + m)) {
            ascale[m] = NAN;  /* NaN in, NaN out */
            memset(q + m * n, 0, n);
        }
    lrt_matmul_i8a8_avx2(M, q, ascale, W, bias, C, ldc, ncols);
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

int lrt_quantize_row_avx2(const float *a, int K, double qmax, int16_t *q, float *scale)
{
    (void)a; (void)K; (void)qmax; (void)q; (void)scale;
    return -1;
}

int lrt_quantize_row8_avx2(const float *a, int K, double qmax, int8_t *q, float *scale)
{
    (void)a; (void)K; (void)qmax; (void)q; (void)scale;
    return -1;
}

void lrt_i8_avx2(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                 float *C, int ldc, int ncols, float *scratch)
{
    lrt_i8_generic(M, A, lda, W, bias, C, ldc, ncols, scratch);
}

void lrt_matmul_i8a8_avx2(int M, const int8_t *q, const float *ascale, const lrt_mat *W,
                          const float *bias, float *C, int ldc, int ncols)
{
    (void)M; (void)q; (void)ascale; (void)W; (void)bias; (void)C; (void)ldc; (void)ncols;
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

void lrt_matmul_i8_avx2(int M, const int16_t *q, const float *ascale, const lrt_mat *W,
                        const float *bias, float *C, int ldc, int ncols)
{
    lrt_matmul_i8_generic(M, q, ascale, W, bias, C, ldc, ncols);
}

#endif
