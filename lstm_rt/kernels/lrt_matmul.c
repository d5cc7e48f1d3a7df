/* Portable kernels for the two narrow weight types (fp32's live in lrt_gemm.c), the int8
 * activation quantizer and the whole portable int8 product (lrt_i8_generic). */
#include <float.h>
#include <math.h>
#include <string.h>
#include "lrt_kernels.h"

/* IEEE half -> float, bit by bit (the AVX2 path uses F16C instead). */
static inline float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) bits = sign | 0x7f800000 | (man << 13);           /* inf / NaN */
    else if (exp) bits = sign | ((exp + 112) << 23) | (man << 13);      /* normal */
    else if (!man) bits = sign;                                         /* zero */
    else {                                                              /* subnormal */
        int e = -1;
        do { man <<= 1; e++; } while (!(man & 0x400));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

void lrt_matmul_f16_generic(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                            float *C, int ldc, int ncols)
{
    const uint16_t *wd = (const uint16_t *)W->data;
    int K = W->K, gw = W->gw;
    float acc[32];
    for (int m = 0; m < M; m++) {
        const float *a = A + (size_t)m * lda;
        for (int blk = 0; blk < W->nblk; blk++) {
            const uint16_t *wp = wd + (size_t)blk * K * gw;
            for (int j = 0; j < gw; j++) acc[j] = bias ? bias[blk * gw + j] : 0.0f;
            for (int k = 0; k < K; k++)
                for (int j = 0; j < gw; j++) acc[j] += a[k] * half_to_float(wp[(size_t)k * gw + j]);
            int j0 = blk * gw, n = ncols - j0 < gw ? ncols - j0 : gw;
            for (int j = 0; j < n; j++) C[(size_t)m * ldc + j0 + j] = acc[j];
        }
    }
}

void lrt_matmul_i8_generic(int M, const int16_t *q, const float *ascale, const lrt_mat *W,
                           const float *bias, float *C, int ldc, int ncols)
{
    const int8_t *wd = (const int8_t *)W->data;
    int K4 = (W->K + 3) / 4, gw = W->gw;
    int32_t acc[32];
    for (int m = 0; m < M; m++) {
        const int16_t *qa = q + (size_t)m * K4 * 4;
        for (int blk = 0; blk < W->nblk; blk++) {
            const int8_t *wp = wd + (size_t)blk * K4 * gw * 4;
            for (int j = 0; j < gw; j++) acc[j] = 0;
            for (int p = 0; p < K4; p++) {
                const int8_t *w = wp + (size_t)p * gw * 4;
                const int16_t *a = qa + 4 * p;
                for (int j = 0; j < gw; j++)
                    acc[j] += (int32_t)w[4 * j] * a[0] + (int32_t)w[4 * j + 1] * a[1] +
                              (int32_t)w[4 * j + 2] * a[2] + (int32_t)w[4 * j + 3] * a[3];
            }
            int j0 = blk * gw, n = ncols - j0 < gw ? ncols - j0 : gw;
            for (int j = 0; j < n; j++)
                C[(size_t)m * ldc + j0 + j] = (float)acc[j] * (ascale[m] * W->scale[j0 + j])
                                              + (bias ? bias[j0 + j] : 0.0f);
        }
    }
}

int lrt_i8_colsums(const lrt_mat *W, int32_t *out)
{
    int K4 = (W->K + 3) / 4, gw = W->gw, lowest = 0;
    const int8_t *w = (const int8_t *)W->data;
    int32_t acc[32 * 4];  /* a quad-row's gw * 4 bytes, summed over the quad-rows */
    for (int blk = 0; blk < W->nblk; blk++) {
        memset(acc, 0, sizeof(acc));
        for (int p = 0; p < K4; p++, w += (size_t)gw * 4)
            for (int i = 0; i < gw * 4; i++) {
                acc[i] += w[i];
                lowest += w[i] == -128;
            }
        for (int j = 0; j < gw; j++)
            out[(size_t)blk * gw + j] = acc[4 * j] + acc[4 * j + 1] + acc[4 * j + 2] + acc[4 * j + 3];
    }
    return lowest;
}

void lrt_embed(int dtype, const void *table, const float *scale, int E, const int64_t *ids, int n,
               float *out, int ldo)
{
    for (int i = 0; i < n; i++) {
        float *o = out + (size_t)i * ldo;
        size_t row = (size_t)ids[i] * E;
        if (dtype == LRT_F32) {
            memcpy(o, (const float *)table + row, (size_t)E * sizeof(float));
        } else if (dtype == LRT_F16) {
            const uint16_t *t = (const uint16_t *)table + row;
            for (int e = 0; e < E; e++) o[e] = half_to_float(t[e]);
        } else {
            const int8_t *t = (const int8_t *)table + row;
            float s = scale[ids[i]];
            for (int e = 0; e < E; e++) o[e] = (float)t[e] * s;
        }
    }
}

size_t lrt_matmul_scratch_floats(int M, int K)
{
    /* per row: K4 * 4 int16 (two per float slot), the same again for the VNNI byte
     * planes or the AVX2 bytes, and one scale */
    return (size_t)M * (4 * (size_t)((K + 3) / 4) + 1);
}

/* Quantize a row of A to int16 with one scale: K4 * 4 values (zero padded). Returns 0, or
 * 1 if the row holds NaN/inf (its output becomes NaN). */
static int quantize_row(const float *a, int K, double qmax, void *out, float *scale)
{
    int16_t *q = out;
    float amax = 0.0f;
    int bad = 0;
    for (int k = 0; k < K; k++) {
        float v = fabsf(a[k]);
        amax = v > amax ? v : amax;
        bad |= !(v <= FLT_MAX);  /* NaN compares false, so test it explicitly */
    }
    if (bad) return 1;
    float inv = amax > 0.0f ? (float)(qmax / amax) : 0.0f;
    *scale = amax > 0.0f ? (float)(amax / qmax) : 0.0f;
    for (int k = 0; k < K; k++) q[k] = (int16_t)lrintf(a[k] * inv);
    for (int k = K; k < (K + 3) / 4 * 4; k++) q[k] = 0;
    return 0;
}

void lrt_i8_generic(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                    float *C, int ldc, int ncols, float *scratch)
{
    float *ascale = scratch;
    int16_t *q = (int16_t *)(scratch + M);
    lrt_quantize_rows(M, A, lda, W, q, 4 * (size_t)((W->K + 3) / 4) * sizeof(int16_t), ascale, quantize_row);
    lrt_matmul_i8_generic(M, q, ascale, W, bias, C, ldc, ncols);
}
