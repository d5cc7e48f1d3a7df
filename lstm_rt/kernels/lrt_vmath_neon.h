/* 4-lane exp, sigmoid and tanh with NEON, shared by the activation and cell kernels: the
 * algorithm of lrt_vmath_avx2.h step for step (same constants, same fused multiply-adds,
 * same order), so a value gets the same bits from the neon level as from avx2 (the kernel
 * check driver compares digests of both). Max abs error against libm <= 1e-6.
 * Include only from files compiled for aarch64 with GCC/Clang. Every AArch64 CPU has
 * Advanced SIMD with FMA and directed rounding (FRINTN), so no target attribute. */
#ifndef LRT_VMATH_NEON_H
#define LRT_VMATH_NEON_H

#include <arm_neon.h>

#define LRT_NEON_INLINE static inline __attribute__((always_inline))

/* The functions work on N independent vectors at once (N a constant once inlined), each
 * step issued for all N before the next so the core overlaps their latency chains; every
 * vector gets the same operations as alone. */
#define LRT_EACH(j) for (int j = 0; j < N; j++)

/* e^x: x = n ln2 + r with |r| <= ln2/2, e^r by the degree-6 Cephes polynomial, 2^n built
 * in the exponent bits; x clamped to where the result is a normal float. */
LRT_NEON_INLINE void exp4n(int N, float32x4_t *x)
{
    float32x4_t n[16], r[16], p[16];
    LRT_EACH(j) {
        /* FMAX/FMIN return NaN when either operand is NaN: NaN stays NaN (as MAXPS/MINPS
         * with the constant first do in the AVX2 version) */
        x[j] = vminq_f32(vdupq_n_f32(88.3f), vmaxq_f32(vdupq_n_f32(-87.3f), x[j]));
        n[j] = vrndnq_f32(vmulq_f32(x[j], vdupq_n_f32(1.44269504088896341f)));  /* ties to even */
    }
    /* r = x - n ln2, ln2 split in two; vfmsq(a, b, c) = a - b * c, one rounding (fnmadd) */
    LRT_EACH(j) r[j] = vfmsq_f32(x[j], n[j], vdupq_n_f32(0.693359375f));
    LRT_EACH(j) r[j] = vfmsq_f32(r[j], n[j], vdupq_n_f32(-2.12194440e-4f));
    /* vfmaq(a, b, c) = a + b * c, one rounding (fmadd(b, c, a)) */
    LRT_EACH(j) p[j] = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), vdupq_n_f32(1.9875691500e-4f), r[j]);
    LRT_EACH(j) p[j] = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p[j], r[j]);
    LRT_EACH(j) p[j] = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p[j], r[j]);
    LRT_EACH(j) p[j] = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p[j], r[j]);
    LRT_EACH(j) p[j] = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p[j], r[j]);
    LRT_EACH(j) p[j] = vfmaq_f32(vaddq_f32(r[j], vdupq_n_f32(1.0f)), p[j], vmulq_f32(r[j], r[j]));
    LRT_EACH(j) {
        int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtnq_s32_f32(n[j]), vdupq_n_s32(127)), 23);
        x[j] = vmulq_f32(p[j], vreinterpretq_f32_s32(e));
    }
}

LRT_NEON_INLINE void sigmoid4n(int N, float32x4_t *x)
{
    const float32x4_t one = vdupq_n_f32(1.0f);
    LRT_EACH(j) x[j] = vsubq_f32(vdupq_n_f32(0.0f), x[j]);  /* 0 - x, as the AVX2 code (not -x) */
    exp4n(N, x);
    LRT_EACH(j) x[j] = vdivq_f32(one, vaddq_f32(one, x[j]));
}

/* tanh(x) = sign(x) (1 - 2 / (e^{2|x|} + 1)); for |x| < 0.0625 the odd Taylor series
 * x - x^3/3 + 2x^5/15 avoids the cancellation of 1 - (1 - tiny). */
LRT_NEON_INLINE void tanh4n(int N, float32x4_t *x)
{
    const uint32x4_t sign = vdupq_n_u32(0x80000000u);
    float32x4_t ax[16], e[16];
    LRT_EACH(j) {
        ax[j] = vabsq_f32(x[j]);
        e[j] = vaddq_f32(ax[j], ax[j]);
    }
    exp4n(N, e);
    LRT_EACH(j) {
        float32x4_t big = vsubq_f32(vdupq_n_f32(1.0f),
                                    vdivq_f32(vdupq_n_f32(2.0f), vaddq_f32(e[j], vdupq_n_f32(1.0f))));
        float32x4_t x2 = vmulq_f32(ax[j], ax[j]);
        float32x4_t small = vfmaq_f32(vdupq_n_f32(-1.0f / 3.0f), x2, vdupq_n_f32(2.0f / 15.0f));
        small = vfmaq_f32(ax[j], vmulq_f32(small, x2), ax[j]);
        /* FCMGT is false for NaN, as _CMP_LT_OQ: NaN takes the `big` path in both */
        float32x4_t mag = vbslq_f32(vcltq_f32(ax[j], vdupq_n_f32(0.0625f)), small, big);
        x[j] = vreinterpretq_f32_u32(vorrq_u32(vreinterpretq_u32_f32(mag),
                                               vandq_u32(vreinterpretq_u32_f32(x[j]), sign)));
    }
}

#undef LRT_EACH

#endif
