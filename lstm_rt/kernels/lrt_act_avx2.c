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

/* Lane l sums the terms j = l (mod 8) in order, the zero-padded tail's extra lanes add 0,
 * then the lanes pairwise: the order lrt_exp_sum_neon keeps too. */
__attribute__((target("avx2,fma")))
float lrt_exp_sum_avx2(float *x, int n, float shift, int store)
{
    const __m256 s = _mm256_set1_ps(shift);
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 v[2] = {_mm256_sub_ps(_mm256_loadu_ps(x + i), s), _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), s)};
        exp256n(2, v);
        if (store) {
            _mm256_storeu_ps(x + i, v[0]);
            _mm256_storeu_ps(x + i + 8, v[1]);
        }
        acc = _mm256_add_ps(_mm256_add_ps(acc, v[0]), v[1]);
    }
    for (; i < n; i += 8) {
        int m = n - i < 8 ? n - i : 8;
        float t[8] = {0};
        memcpy(t, x + i, (size_t)m * sizeof(float));
        __m256 v = exp256(_mm256_sub_ps(_mm256_loadu_ps(t), s));
        _mm256_storeu_ps(t, v);
        if (store) memcpy(x + i, t, (size_t)m * sizeof(float));
        for (int j = m; j < 8; j++) t[j] = 0.0f;
        acc = _mm256_add_ps(acc, _mm256_loadu_ps(t));
    }
    float l[8];
    _mm256_storeu_ps(l, acc);
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

#else

float lrt_exp_sum_avx2(float *x, int n, float shift, int store) { return lrt_exp_sum_generic(x, n, shift, store); }
void lrt_sigmoid_avx2(float *x, int n) { lrt_activate((lrt_act){LRT_SIGMOID, 0, 0}, x, n); }
void lrt_tanh_avx2(float *x, int n) { lrt_activate((lrt_act){LRT_TANH, 0, 0}, x, n); }

#endif
