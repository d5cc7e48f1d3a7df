/* The first n (0 <= n < 8) floats of an array as an 8-lane vector (the other lanes 0), and
 * back: for the last, partial 8-unit block of a row, where a full load or store would touch
 * past the array. Plain loads and stores of 4, 2 and 1 floats: VMASKMOVPS does this in one
 * instruction, but AMD Zen 1 runs it as microcode (~30 cycles a load or a store, measured;
 * these take ~5). The store moves bits only, so it serves any 4-byte units (the int8
 * quantizer's packed values). Include only from files compiled for x86-64 with GCC/Clang. */
#ifndef LRT_PART_AVX2_H
#define LRT_PART_AVX2_H

#include <immintrin.h>
#include <string.h>

#define LRT_PART_INLINE static inline __attribute__((always_inline, target("avx2")))

/* n in 0 .. 3 floats; __m128i loads and stores may alias any type */
LRT_PART_INLINE __m128 lrt_load_upto3(const float *p, int n)
{
    __m128 v = n & 2 ? _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)p)) : _mm_setzero_ps();
    if (n & 1) v = n & 2 ? _mm_insert_ps(v, _mm_load_ss(p + 2), 0x20) : _mm_load_ss(p);
    return v;
}

LRT_PART_INLINE __m256 lrt_load_part(const float *p, int n)
{
    __m128 lo, hi = _mm_setzero_ps();
    if (n >= 4) {
        lo = _mm_loadu_ps(p);
        hi = lrt_load_upto3(p + 4, n - 4);
    } else {
        lo = lrt_load_upto3(p, n);
    }
    return _mm256_insertf128_ps(_mm256_castps128_ps256(lo), hi, 1);
}

LRT_PART_INLINE void lrt_store_part(float *p, __m256 v, int n)
{
    __m128 x = _mm256_castps256_ps128(v);
    if (n >= 4) {
        _mm_storeu_ps(p, x);
        x = _mm256_extractf128_ps(v, 1);
        p += 4;
        n -= 4;
    }
    if (n & 2) {
        _mm_storel_epi64((__m128i *)p, _mm_castps_si128(x));
        x = _mm_movehl_ps(x, x);
        p += 2;
    }
    if (n & 1) {
        float f = _mm_cvtss_f32(x);
        memcpy(p, &f, sizeof(f));   /* (a plain float store would not be allowed to alias other types) */
    }
}

#endif
