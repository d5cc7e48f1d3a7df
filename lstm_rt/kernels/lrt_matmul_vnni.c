/* int8 weights with AVX-512 VNNI (vpdpbusd: 4 unsigned bytes times 4 signed bytes, summed
 * into an int32 lane, no intermediate saturation), on 256-bit vectors for single rows and
 * row pairs, on 512-bit ones for batches of 4 rows and more. Each int16
 * activation q is split into two unsigned bytes, q = 256 * (hi - 128) + lo, so one weight
 * load feeds two dot products and the result is as exact as the generic kernel's:
 *     sum_k w q = 256 * (sum_k w hi - 128 * colsum) + sum_k w lo.
 * Same contract as lrt_matmul_i8_generic; run only after lrt_init chose "avx512vnni".
 * act8 matrices (|q| <= 64) take one plane, u = q + 64 in [0, 128]: one dot product per
 * weight load, sum_k w q = sum_k w u - 64 * colsum. The kernels below take the number of
 * planes P (1 or 2) as a constant. */
#include "lrt_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#include <string.h>

#define LRT_VNNI_TARGET "avx2,fma,avx512vl,avx512bw,avx512vnni"
#define LRT_VNNI_INLINE static inline __attribute__((always_inline, target(LRT_VNNI_TARGET)))
#define LRT_VNNI_FN __attribute__((target(LRT_VNNI_TARGET)))

/* acc + the 4-byte dot products of unsigned a and signed w in each 32-bit lane. Inline
 * assembly, not _mm256_dpbusd_epi32: GCC 12 keeps that intrinsic's operands in ymm0-15
 * and copied every sum in and out of ymm16-31 on each step (twice the instructions). The
 * assembler encodes it as EVEX (AVX512-VNNI), not as the VEX form of AVX-VNNI. */
LRT_VNNI_INLINE __m256i dpbusd(__m256i acc, __m256i a, __m256i w)
{
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(w));
    return acc;
}

static inline void store_cols(float *dst, const float *tile, int n) { memcpy(dst, tile, (size_t)n * sizeof(float)); }

/* Batches: R rows (P byte planes of qn bytes each: hi, lo, or u alone; a row's planes
 * P * qn bytes apart) times one panel of NV 8-column groups (quad-rows wstride bytes apart,
 * a group's 32 bytes after the previous one's). Writes NV * 8 floats per row to out (rows
 * ldo apart). R * NV <= 8: 16 sums, which with the broadcasts and a weight fit the 32
 * vector registers. */
LRT_VNNI_INLINE void vnni_tile(int P, int R, int NV, int K4, const uint8_t *planes, size_t qn,
                               const int8_t *wp, size_t wstride, const int32_t *colsum,
                               const float *ascale, const float *wscale, const float *bias,
                               float *out, int ldo)
{
    __m256i hi[8], lo[8];
    for (int v = 0; v < NV; v++) {
        /* start the hi sums at -128 * colsum (-64 * colsum for u): the offset, undone */
        __m256i off = _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(colsum + 8 * v)), P == 2 ? 7 : 6);
        for (int r = 0; r < R; r++) {
            hi[r * NV + v] = _mm256_sub_epi32(_mm256_setzero_si256(), off);
            lo[r * NV + v] = _mm256_setzero_si256();
        }
    }
    for (int p = 0; p < K4; p++) {
        __m256i bh[2], bl[2];
        for (int r = 0; r < R; r++) {
            int32_t h, l;
            memcpy(&h, planes + P * qn * r + 4 * p, 4);
            bh[r] = _mm256_set1_epi32(h);
            if (P == 2) {
                memcpy(&l, planes + P * qn * r + qn + 4 * p, 4);
                bl[r] = _mm256_set1_epi32(l);
            }
        }
        for (int v = 0; v < NV; v++) {
            __m256i w = _mm256_loadu_si256((const __m256i *)(wp + 32 * v + p * wstride));
            for (int r = 0; r < R; r++) {
                hi[r * NV + v] = dpbusd(hi[r * NV + v], bh[r], w);
                if (P == 2) lo[r * NV + v] = dpbusd(lo[r * NV + v], bl[r], w);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int v = 0; v < NV; v++) {
            /* 256 * hi may wrap, but the total fits int32 (lrt_matmul bounds q), and
             * wrapping addition is exact modulo 2^32 */
            __m256i sums = P == 2 ? _mm256_add_epi32(_mm256_slli_epi32(hi[r * NV + v], 8), lo[r * NV + v])
                                  : hi[r * NV + v];
            __m256 s = _mm256_mul_ps(_mm256_set1_ps(ascale[r]), _mm256_loadu_ps(wscale + 8 * v));
            __m256 b = bias ? _mm256_loadu_ps(bias + 8 * v) : _mm256_setzero_ps();
            /* multiply, then add (no FMA): the portable kernel's rounding, bit for bit */
            _mm256_storeu_ps(out + (size_t)r * ldo + 8 * v, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sums), s), b));
        }
}

/* The tiles as functions of their own, so each keeps its sums in registers. */
#define DEFINE_VNNI_TILE(P, R, NV)                                                              \
LRT_VNNI_FN __attribute__((noinline)) static void vnni_tile_##P##_##R##_##NV(                   \
    int K4, const uint8_t *planes, size_t qn, const int8_t *wp, size_t wstride,                 \
    const int32_t *colsum, const float *ascale, const float *wscale, const float *bias,         \
    float *out, int ldo)                                                                        \
{ vnni_tile(P, R, NV, K4, planes, qn, wp, wstride, colsum, ascale, wscale, bias, out, ldo); }
DEFINE_VNNI_TILE(2, 2, 1)
DEFINE_VNNI_TILE(2, 2, 2)
DEFINE_VNNI_TILE(2, 2, 3)
DEFINE_VNNI_TILE(2, 2, 4)
DEFINE_VNNI_TILE(1, 2, 1)
DEFINE_VNNI_TILE(1, 2, 2)
DEFINE_VNNI_TILE(1, 2, 3)
DEFINE_VNNI_TILE(1, 2, 4)

/* Streaming (one row): G <= 8 consecutive 8-column groups of the output per pass over the
 * activations. Group i's weights start at w[i] (quad-rows wstride bytes apart); its 8
 * outputs, colsums, scales and biases follow the previous group's. Named sums: with an
 * array the compiler copied registers every step. */
LRT_VNNI_INLINE void vnni_row(int P, int G, int K4, const uint8_t *qhi, const uint8_t *qlo, const int8_t *const *w,
                              size_t wstride, const int32_t *colsum, float ascale, const float *wscale,
                              const float *bias, float *out)
{
    __m256i h0, h1, h2, h3, h4, h5, h6, h7, l0, l1, l2, l3, l4, l5, l6, l7;
    const int8_t *w0 = w[0], *w1 = w[G > 1], *w2 = w[G > 2 ? 2 : 0], *w3 = w[G > 3 ? 3 : 0],
                 *w4 = w[G > 4 ? 4 : 0], *w5 = w[G > 5 ? 5 : 0], *w6 = w[G > 6 ? 6 : 0], *w7 = w[G > 7 ? 7 : 0];
#define START(i)                                                                                \
    if (G > i) {                                                                                \
        h##i = _mm256_sub_epi32(_mm256_setzero_si256(),                                         \
                                _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(colsum + 8 * i)), P == 2 ? 7 : 6)); \
        l##i = _mm256_setzero_si256();                                                          \
    }
    START(0) START(1) START(2) START(3) START(4) START(5) START(6) START(7)
#undef START
    for (size_t o = 0; o < (size_t)K4 * wstride; o += wstride) {
        int32_t hq, lq = 0;
        memcpy(&hq, qhi, 4);
        if (P == 2) memcpy(&lq, qlo, 4);
        qhi += 4;
        qlo += 4;
        const __m256i bh = _mm256_set1_epi32(hq), bl = _mm256_set1_epi32(lq);
        __m256i x;
#define DOT(i)                                                                                  \
        if (G > i) {                                                                            \
            x = _mm256_loadu_si256((const __m256i *)(w##i + o));                                \
            h##i = dpbusd(h##i, bh, x);                                                         \
            if (P == 2) l##i = dpbusd(l##i, bl, x);                                             \
        }
        DOT(0) DOT(1) DOT(2) DOT(3) DOT(4) DOT(5) DOT(6) DOT(7)
#undef DOT
    }
#define FINISH(i)                                                                               \
    if (G > i) {                                                                                \
        __m256i sums = P == 2 ? _mm256_add_epi32(_mm256_slli_epi32(h##i, 8), l##i) : h##i;      \
        __m256 sc = _mm256_mul_ps(_mm256_set1_ps(ascale), _mm256_loadu_ps(wscale + 8 * i));     \
        __m256 bb = bias ? _mm256_loadu_ps(bias + 8 * i) : _mm256_setzero_ps();                 \
        _mm256_storeu_ps(out + 8 * i, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sums), sc), bb)); \
    }
    FINISH(0) FINISH(1) FINISH(2) FINISH(3) FINISH(4) FINISH(5) FINISH(6) FINISH(7)
#undef FINISH
}

#define DEFINE_VNNI_ROW(P, G)                                                                   \
LRT_VNNI_FN __attribute__((noinline)) static void vnni_row_##P##_##G(                           \
    int K4, const uint8_t *qhi, const uint8_t *qlo, const int8_t *const *w, size_t wstride,     \
    const int32_t *colsum, float ascale, const float *wscale, const float *bias, float *out)    \
{ vnni_row(P, G, K4, qhi, qlo, w, wstride, colsum, ascale, wscale, bias, out); }
DEFINE_VNNI_ROW(2, 8)
DEFINE_VNNI_ROW(2, 6)
DEFINE_VNNI_ROW(2, 4)
DEFINE_VNNI_ROW(2, 2)
DEFINE_VNNI_ROW(2, 1)
DEFINE_VNNI_ROW(1, 8)
DEFINE_VNNI_ROW(1, 6)
DEFINE_VNNI_ROW(1, 4)
DEFINE_VNNI_ROW(1, 2)
DEFINE_VNNI_ROW(1, 1)

typedef void (*vnni_row_fn)(int, const uint8_t *, const uint8_t *, const int8_t *const *, size_t,
                            const int32_t *, float, const float *, const float *, float *);

/* One row of A against every column: 8-column groups in passes of 8, 4, 2, 1; a ragged
 * last group goes through a buffer. */
static void vnni_one_row(int P, const uint8_t *planes, size_t qn, float ascale, const lrt_mat *W,
                         const float *bias, float *C, int ncols)
{
    static const vnni_row_fn rows[2][8] = {
        {vnni_row_1_1, vnni_row_1_2, NULL, vnni_row_1_4, NULL, vnni_row_1_6, NULL, vnni_row_1_8},
        {vnni_row_2_1, vnni_row_2_2, NULL, vnni_row_2_4, NULL, vnni_row_2_6, NULL, vnni_row_2_8}};
    const int gw = W->gw, NV = gw / 8, K4 = (W->K + 3) / 4;
    const size_t ws = (size_t)gw * 4, panel = (size_t)K4 * ws;
    const int8_t *wd = (const int8_t *)W->data;
    /* Whole panels per pass: a panel split between two passes has its cache lines
     * fetched twice (its quad-rows interleave the groups). A 32-wide panel (LSTM
     * gates) alone: one contiguous stream per pass, which the prefetchers serve
     * better than two (LSTM 256x512 int8 step 23.8 -> 21.8 us); narrower panels two or
     * more at a time (fewer than 4 groups in flight were slower). */
    int per = NV == 4 ? 4 : 8 / NV * NV;
    int ngroups = (ncols + 7) / 8, g = 0, v = 0;  /* group g is group v of its panel */
    const int8_t *next = wd;                        /* its weights */
    while (g < ngroups) {
        int left = ngroups - g, G = left >= per ? per : left >= 4 ? 4 : left >= 2 ? 2 : 1;
        int full = 8 * (g + G) <= ncols;
        if (!full) G = 1;  /* only the last group can be ragged */
        const int8_t *w[8];
        for (int i = 0; i < G; i++) {
            w[i] = next;
            next += 32;
            if (++v == NV) {  /* on to the next panel */
                v = 0;
                next += panel - ws;
            }
        }
        float tmp[8], *out = full ? C + 8 * g : tmp;
        const float *b = bias ? bias + 8 * g : NULL;
        const int32_t *cs = W->colsum + 8 * g;
        rows[P - 1][G - 1](K4, planes, planes + qn, w, ws, cs, ascale, W->scale + 8 * g, b, out);
        if (!full) store_cols(C + 8 * g, tmp, ncols - 8 * g);
        g += G;
    }
}

typedef void (*vnni_tile_fn)(int, const uint8_t *, size_t, const int8_t *, size_t,
                             const int32_t *, const float *, const float *, const float *, float *, int);

/* acc + the dot products, 16 lanes. */
LRT_VNNI_INLINE __m512i dpbusd512(__m512i acc, __m512i a, __m512i w)
{
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(w));
    return acc;
}

/* Batches on 512-bit vectors: 4 rows x one panel of NV (2..4) groups. A quad-row's 64
 * bytes of two groups feed one 16-lane dot product (lanes in column order); the odd group
 * of a 24-wide panel goes in a ymm. Each lane computes what vnni_tile's does: the same
 * sums, the same epilogue. Sums: 4 rows x 2 planes x 2 vectors + 8 broadcasts fit the 32
 * registers. */
LRT_VNNI_INLINE void vnni_tile4(int P, int NV, int K4, const uint8_t *planes, size_t qn,
                                const int8_t *wp, size_t wstride, const int32_t *colsum,
                                const float *ascale, const float *wscale, const float *bias,
                                float *out, int ldo)
{
    const int NZ = NV / 2, odd = NV % 2, shift = P == 2 ? 7 : 6;
    __m512i hz[4][2], lz[4][2];
    __m256i h8[4], l8[4];
    for (int r = 0; r < 4; r++) {
        for (int z = 0; z < NZ; z++) {
            hz[r][z] = _mm512_sub_epi32(_mm512_setzero_si512(),
                                        _mm512_slli_epi32(_mm512_loadu_si512(colsum + 16 * z), shift));
            lz[r][z] = _mm512_setzero_si512();
        }
        if (odd) {
            h8[r] = _mm256_sub_epi32(_mm256_setzero_si256(),
                                     _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(colsum + 16 * NZ)), shift));
            l8[r] = _mm256_setzero_si256();
        }
    }
    for (int p = 0; p < K4; p++) {
        __m512i bh[4], bl[4];
        for (int r = 0; r < 4; r++) {
            int32_t h, l;
            memcpy(&h, planes + P * qn * r + 4 * p, 4);
            bh[r] = _mm512_set1_epi32(h);
            if (P == 2) {
                memcpy(&l, planes + P * qn * r + qn + 4 * p, 4);
                bl[r] = _mm512_set1_epi32(l);
            }
        }
        const int8_t *w = wp + (size_t)p * wstride;
        for (int z = 0; z < NZ; z++) {
            __m512i wz = _mm512_loadu_si512(w + 64 * z);
            for (int r = 0; r < 4; r++) {
                hz[r][z] = dpbusd512(hz[r][z], bh[r], wz);
                if (P == 2) lz[r][z] = dpbusd512(lz[r][z], bl[r], wz);
            }
        }
        if (odd) {
            __m256i w8 = _mm256_loadu_si256((const __m256i *)(w + 64 * NZ));
            for (int r = 0; r < 4; r++) {
                h8[r] = dpbusd(h8[r], _mm512_castsi512_si256(bh[r]), w8);
                if (P == 2) l8[r] = dpbusd(l8[r], _mm512_castsi512_si256(bl[r]), w8);
            }
        }
    }
    for (int r = 0; r < 4; r++) {
        float *o = out + (size_t)r * ldo;
        for (int z = 0; z < NZ; z++) {
            __m512i sums = P == 2 ? _mm512_add_epi32(_mm512_slli_epi32(hz[r][z], 8), lz[r][z]) : hz[r][z];
            __m512 sc = _mm512_mul_ps(_mm512_set1_ps(ascale[r]), _mm512_loadu_ps(wscale + 16 * z));
            __m512 b = bias ? _mm512_loadu_ps(bias + 16 * z) : _mm512_setzero_ps();
            _mm512_storeu_ps(o + 16 * z, _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(sums), sc), b));
        }
        if (odd) {
            __m256i sums = P == 2 ? _mm256_add_epi32(_mm256_slli_epi32(h8[r], 8), l8[r]) : h8[r];
            __m256 sc = _mm256_mul_ps(_mm256_set1_ps(ascale[r]), _mm256_loadu_ps(wscale + 16 * NZ));
            __m256 b = bias ? _mm256_loadu_ps(bias + 16 * NZ) : _mm256_setzero_ps();
            _mm256_storeu_ps(o + 16 * NZ, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sums), sc), b));
        }
    }
}

#define DEFINE_VNNI_TILE4(P, NV)                                                                \
LRT_VNNI_FN __attribute__((noinline)) static void vnni_tile4_##P##_##NV(                        \
    int K4, const uint8_t *planes, size_t qn, const int8_t *wp, size_t wstride,                 \
    const int32_t *colsum, const float *ascale, const float *wscale, const float *bias,         \
    float *out, int ldo)                                                                        \
{ vnni_tile4(P, NV, K4, planes, qn, wp, wstride, colsum, ascale, wscale, bias, out, ldo); }
DEFINE_VNNI_TILE4(1, 2)
DEFINE_VNNI_TILE4(1, 3)
DEFINE_VNNI_TILE4(1, 4)
DEFINE_VNNI_TILE4(2, 2)
DEFINE_VNNI_TILE4(2, 3)
DEFINE_VNNI_TILE4(2, 4)

void lrt_matmul_i8_vnni(int M, const uint8_t *planes, const float *ascale, const lrt_mat *W,
                        const float *bias, float *C, int ldc, int ncols)
{
    static const vnni_tile_fn pairs[2][4] = {
        {vnni_tile_1_2_1, vnni_tile_1_2_2, vnni_tile_1_2_3, vnni_tile_1_2_4},
        {vnni_tile_2_2_1, vnni_tile_2_2_2, vnni_tile_2_2_3, vnni_tile_2_2_4}};
    static const vnni_tile_fn quads[2][3] = {
        {vnni_tile4_1_2, vnni_tile4_1_3, vnni_tile4_1_4}, {vnni_tile4_2_2, vnni_tile4_2_3, vnni_tile4_2_4}};
    const int P = W->act8 ? 1 : 2;
    const vnni_tile_fn *pair = pairs[P - 1];
    const int gw = W->gw, K4 = (W->K + 3) / 4;
    const size_t qn = (size_t)K4 * 4, ws = (size_t)gw * 4, panel = (size_t)K4 * ws;
    const int m4 = gw >= 16 ? M / 4 * 4 : 0;   /* rows in 4-row tiles of 512-bit vectors */
    float tmp[4 * 32];
    for (int blk = 0; blk < W->nblk && M >= 2; blk++) {
        const int8_t *wp = (const int8_t *)W->data + blk * panel;
        const float *bb = bias ? bias + blk * gw : NULL, *sc = W->scale + blk * gw;
        int j0 = blk * gw, n = ncols - j0 < gw ? ncols - j0 : gw;
        for (int m = 0; m < m4; m += 4) {
            float *out = n == gw ? C + (size_t)m * ldc + j0 : tmp;
            quads[P - 1][gw / 8 - 2](K4, planes + P * qn * m, qn, wp, ws, W->colsum + j0, ascale + m, sc, bb,
                                     out, n == gw ? ldc : gw);
            if (n < gw)
                for (int r = 0; r < 4; r++) store_cols(C + (size_t)(m + r) * ldc + j0, tmp + r * gw, n);
        }
        for (int m = m4; m + 2 <= M; m += 2) {
            pair[gw / 8 - 1](K4, planes + P * qn * m, qn, wp, ws, W->colsum + j0, ascale + m, sc, bb, tmp, gw);
            store_cols(C + (size_t)m * ldc + j0, tmp, n);
            store_cols(C + (size_t)(m + 1) * ldc + j0, tmp + gw, n);
        }
    }
    if (M % 2) {  /* one row (streaming), or the last of an odd batch */
        int m = M - 1;
        vnni_one_row(P, planes + P * qn * m, qn, ascale[m], W, bias, C + (size_t)m * ldc, ncols);
    }
}

/* The avx512vnni level's int8 product: int16 activations (lrt_act_qmax) split into byte
 * planes; act8 rows as one plane u = q + 64. scratch: ascale [M], then q [M][n] int16 and
 * planes [M][2][n] bytes, or u [M][n] bytes. */
void lrt_i8_vnni(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                 float *C, int ldc, int ncols, float *scratch)
{
    size_t n = 4 * (size_t)((W->K + 3) / 4);
    float *ascale = scratch;
    if (W->act8) {
        uint8_t *u = (uint8_t *)(scratch + M);
        lrt_quantize_rows(M, A, lda, W, u, n, ascale, lrt_quantize_row_u8_avx2);
        lrt_matmul_i8_vnni(M, u, ascale, W, bias, C, ldc, ncols);
        return;
    }
    int16_t *q = (int16_t *)(scratch + M);
    uint8_t *planes = (uint8_t *)(q + M * n);
    lrt_quantize_rows(M, A, lda, W, q, n * sizeof(int16_t), ascale, lrt_quantize_row_avx2);
    for (int m = 0; m < M; m++)
        lrt_split_bytes_avx2(q + m * n, (int)n, planes + 2 * m * n, planes + (2 * m + 1) * n);
    lrt_matmul_i8_vnni(M, planes, ascale, W, bias, C, ldc, ncols);
}

#else

/* lrt_init never selects the VNNI kernels here */
void lrt_i8_vnni(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                 float *C, int ldc, int ncols, float *scratch)
{
    lrt_i8_generic(M, A, lda, W, bias, C, ldc, ncols, scratch);
}

void lrt_matmul_i8_vnni(int M, const uint8_t *planes, const float *ascale, const lrt_mat *W,
                        const float *bias, float *C, int ldc, int ncols)
{
    (void)M; (void)planes; (void)ascale; (void)W; (void)bias; (void)C; (void)ldc; (void)ncols;
}

#endif
