/* 8-lane exp, sigmoid and tanh with AVX2 + FMA, shared by the activation and cell
 * kernels. Accuracy (tested against libm): max abs error <= 1e-6 over the whole float range.
 * Include only from files compiled for x86-64 with GCC/Clang. */
#ifndef LRT_VMATH_AVX2_H
#define LRT_VMATH_AVX2_H

#include <immintrin.h>

#define LRT_AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma")))

/* e^x: x = n ln2 + r with |r| <= ln2/2, e^r by a degree-6 polynomial (Cephes expf
 * coefficients, ~1 ulp), 2^n built in the exponent bits. Inputs are clamped to the range
 * where the result is a normal float; beyond it e^x saturates to 0 or ~1.7e38, which is
 * what the sigmoid/tanh formulas below need. */
/* The functions work on N independent vectors at once (N a constant once inlined): each
 * step is issued for all N before the next, so the core overlaps their latency chains (one
 * LSTM block at a time left Zen 1 waiting on them: 250 cycles per 8 units). Every vector
 * gets the same operations as alone, so results do not depend on N. */
#define LRT_EACH(j) for (int j = 0; j < N; j++)

LRT_AVX2_INLINE void exp256n(int N, __m256 *x)
{
    __m256 n[12], r[12], p[12];
    LRT_EACH(j) {
        /* constant first: MAXPS/MINPS return their second operand when one is NaN, so NaN stays NaN */
        x[j] = _mm256_min_ps(_mm256_set1_ps(88.3f), _mm256_max_ps(_mm256_set1_ps(-87.3f), x[j]));
        n[j] = _mm256_round_ps(_mm256_mul_ps(x[j], _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    }
    /* r = x - n ln2, with ln2 split in two for precision */
    LRT_EACH(j) r[j] = _mm256_fnmadd_ps(n[j], _mm256_set1_ps(0.693359375f), x[j]);
    LRT_EACH(j) r[j] = _mm256_fnmadd_ps(n[j], _mm256_set1_ps(-2.12194440e-4f), r[j]);
    LRT_EACH(j) p[j] = _mm256_fmadd_ps(_mm256_set1_ps(1.9875691500e-4f), r[j], _mm256_set1_ps(1.3981999507e-3f));
    LRT_EACH(j) p[j] = _mm256_fmadd_ps(p[j], r[j], _mm256_set1_ps(8.3334519073e-3f));
    LRT_EACH(j) p[j] = _mm256_fmadd_ps(p[j], r[j], _mm256_set1_ps(4.1665795894e-2f));
    LRT_EACH(j) p[j] = _mm256_fmadd_ps(p[j], r[j], _mm256_set1_ps(1.6666665459e-1f));
    LRT_EACH(j) p[j] = _mm256_fmadd_ps(p[j], r[j], _mm256_set1_ps(5.0000001201e-1f));
    LRT_EACH(j) p[j] = _mm256_fmadd_ps(p[j], _mm256_mul_ps(r[j], r[j]), _mm256_add_ps(r[j], _mm256_set1_ps(1.0f)));
    LRT_EACH(j) {
        __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n[j]), _mm256_set1_epi32(127)), 23);
        x[j] = _mm256_mul_ps(p[j], _mm256_castsi256_ps(e));
    }
}

LRT_AVX2_INLINE void sigmoid256n(int N, __m256 *x)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    LRT_EACH(j) x[j] = _mm256_sub_ps(_mm256_setzero_ps(), x[j]);
    exp256n(N, x);
    LRT_EACH(j) x[j] = _mm256_div_ps(one, _mm256_add_ps(one, x[j]));
}

/* tanh(x) = sign(x) (1 - 2 / (e^{2|x|} + 1)); for |x| < 0.0625 the odd Taylor series
 * x - x^3/3 + 2x^5/15 avoids the cancellation of 1 - (1 - tiny). */
LRT_AVX2_INLINE void tanh256n(int N, __m256 *x)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 ax[12], e[12];
    LRT_EACH(j) {
        ax[j] = _mm256_andnot_ps(sign, x[j]);
        e[j] = _mm256_add_ps(ax[j], ax[j]);
    }
    exp256n(N, e);
    LRT_EACH(j) {
        __m256 big = _mm256_sub_ps(_mm256_set1_ps(1.0f),
                                   _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e[j], _mm256_set1_ps(1.0f))));
        __m256 x2 = _mm256_mul_ps(ax[j], ax[j]);
        __m256 small = _mm256_fmadd_ps(x2, _mm256_set1_ps(2.0f / 15.0f), _mm256_set1_ps(-1.0f / 3.0f));
        small = _mm256_fmadd_ps(_mm256_mul_ps(small, x2), ax[j], ax[j]);
        __m256 mag = _mm256_blendv_ps(big, small, _mm256_cmp_ps(ax[j], _mm256_set1_ps(0.0625f), _CMP_LT_OQ));
        x[j] = _mm256_or_ps(mag, _mm256_and_ps(x[j], sign));
    }
}

#undef LRT_EACH

LRT_AVX2_INLINE __m256 exp256(__m256 x) { exp256n(1, &x); return x; }
LRT_AVX2_INLINE __m256 sigmoid256(__m256 x) { sigmoid256n(1, &x); return x; }
LRT_AVX2_INLINE __m256 tanh256(__m256 x) { tanh256n(1, &x); return x; }

#endif
