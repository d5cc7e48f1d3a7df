/* Sigmoid and tanh over arrays with AVX2 + FMA. libm's expf/tanhf cost 5-20 ns a value,
 * which made the activations of a 128-unit LSTM step cost more than its matrix product.
 * The vector math is in lrt_vmath_avx2.h. */
#include "lrt_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <string.h>
#include "lrt_vmath_avx2.h"

__attribute__((target("avx2,fma")))
void lrt_sigmoid_avx2(float *x, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, sigmoid256(_mm256_loadu_ps(x + i)));
    if (i < n) {  /* the tail through the same vector code, so every value gets the same math */
        float t[8] = {0};
        memcpy(t, x + i, (size_t)(n - i) * sizeof(float));
        _mm256_storeu_ps(t, sigmoid256(_mm256_loadu_ps(t)));
        memcpy(x + i, t, (size_t)(n - i) * sizeof(float));
    }
}

__attribute__((target("avx2,fma")))
void lrt_tanh_avx2(float *x, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, tanh256(_mm256_loadu_ps(x + i)));
    if (i < n) {
        float t[8] = {0};
        memcpy(t, x + i, (size_t)(n - i) * sizeof(float));
        _mm256_storeu_ps(t, tanh256(_mm256_loadu_ps(t)));
        memcpy(x + i, t, (size_t)(n - i) * sizeof(float));
    }
}

#else

void lrt_sigmoid_avx2(float *x, int n) { lrt_activate((lrt_act){LRT_SIGMOID, 0, 0}, x, n); }
void lrt_tanh_avx2(float *x, int n) { lrt_activate((lrt_act){LRT_TANH, 0, 0}, x, n); }

#endif
