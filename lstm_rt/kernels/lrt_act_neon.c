/* Sigmoid and tanh over arrays with NEON (the neon and neondot levels): libm's expf/tanhf
 * per value would cost more than a small LSTM step's matrix product, as on x86 (see
 * lrt_act_avx2.c). The vector math is in lrt_vmath_neon.h. */
#include "lrt_kernels.h"

#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#include <string.h>
#include "lrt_vmath_neon.h"

/* 8 values a pass (two independent vectors), then the tail through the same vector code
 * in a zero-padded buffer, so every value gets the same math wherever it sits. */
#define DEFINE_ARRAY_FN(NAME, VECFN)                                                     \
void NAME(float *x, int n)                                                               \
{                                                                                        \
    int i = 0;                                                                           \
    for (; i + 8 <= n; i += 8) {                                                         \
        float32x4_t v[2] = {vld1q_f32(x + i), vld1q_f32(x + i + 4)};                     \
        VECFN(2, v);                                                                     \
        vst1q_f32(x + i, v[0]);                                                          \
        vst1q_f32(x + i + 4, v[1]);                                                      \
    }                                                                                    \
    if (i < n) {                                                                         \
        float t[8] = {0};                                                                \
        memcpy(t, x + i, (size_t)(n - i) * sizeof(float));                               \
        float32x4_t v[2] = {vld1q_f32(t), vld1q_f32(t + 4)};                             \
        VECFN(2, v);                                                                     \
        vst1q_f32(t, v[0]);                                                              \
        vst1q_f32(t + 4, v[1]);                                                          \
        memcpy(x + i, t, (size_t)(n - i) * sizeof(float));                               \
    }                                                                                    \
}

DEFINE_ARRAY_FN(lrt_sigmoid_neon, sigmoid4n)
DEFINE_ARRAY_FN(lrt_tanh_neon, tanh4n)

/* The order of lrt_exp_sum_avx2: lane l (of 8, two vectors) sums the terms j = l (mod 8),
 * the zero-padded tail's extra lanes add 0, then the lanes pairwise; same bits. */
float lrt_exp_sum_neon(float *x, int n, float shift, int store)
{
    const float32x4_t s = vdupq_n_f32(shift);
    float32x4_t lo = vdupq_n_f32(0.0f), hi = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        float32x4_t v[2] = {vsubq_f32(vld1q_f32(x + i), s), vsubq_f32(vld1q_f32(x + i + 4), s)};
        exp4n(2, v);
        if (store) {
            vst1q_f32(x + i, v[0]);
            vst1q_f32(x + i + 4, v[1]);
        }
        lo = vaddq_f32(lo, v[0]);
        hi = vaddq_f32(hi, v[1]);
    }
    if (i < n) {
        int m = n - i;
        float t[8] = {0};
        memcpy(t, x + i, (size_t)m * sizeof(float));
        float32x4_t v[2] = {vsubq_f32(vld1q_f32(t), s), vsubq_f32(vld1q_f32(t + 4), s)};
        exp4n(2, v);
        vst1q_f32(t, v[0]);
        vst1q_f32(t + 4, v[1]);
        if (store) memcpy(x + i, t, (size_t)m * sizeof(float));
        for (int j = m; j < 8; j++) t[j] = 0.0f;
        lo = vaddq_f32(lo, vld1q_f32(t));
        hi = vaddq_f32(hi, vld1q_f32(t + 4));
    }
    float l[8];
    vst1q_f32(l, lo);
    vst1q_f32(l + 4, hi);
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

#else
typedef int lrt_act_neon_unused;  /* not aarch64: nothing here (ISO C wants a declaration) */
#endif
