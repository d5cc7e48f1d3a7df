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

#else
typedef int lrt_act_neon_unused;  /* not aarch64: nothing here (ISO C wants a declaration) */
#endif
