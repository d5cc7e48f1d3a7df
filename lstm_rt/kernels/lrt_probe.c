/* Machine probes for the benchmarks' physical bounds (not used by inference):
 * read bandwidth over a buffer of a given size, and the FP32 FMA peak of one core.
 * AVX2 versions when the CPU has it (as the kernels use), portable C otherwise. */
#include "lrt_kernels.h"

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define PROBE_AVX2 __attribute__((target("avx2,fma")))

/* Sum of passes over buf with 4 independent 32-byte load streams; returns a checksum so
 * the loads cannot be optimized away. n is a multiple of 128 bytes. */
PROBE_AVX2 static uint64_t read_avx2(const uint8_t *buf, size_t n, int passes)
{
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (int p = 0; p < passes; p++)
        for (size_t i = 0; i < n; i += 128) {
            a0 = _mm256_xor_si256(a0, _mm256_load_si256((const __m256i *)(buf + i)));
            a1 = _mm256_xor_si256(a1, _mm256_load_si256((const __m256i *)(buf + i + 32)));
            a2 = _mm256_xor_si256(a2, _mm256_load_si256((const __m256i *)(buf + i + 64)));
            a3 = _mm256_xor_si256(a3, _mm256_load_si256((const __m256i *)(buf + i + 96)));
        }
    __m256i s = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
    uint64_t out[4];
    _mm256_storeu_si256((__m256i *)out, s);
    return out[0] ^ out[1] ^ out[2] ^ out[3];
}

/* 12 independent FMA chains of 8 lanes: 192 FLOPs per iteration, enough chains to cover
 * the FMA latency on two pipes. */
PROBE_AVX2 static float fma_avx2(long iters)
{
    __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
    __m256 c[12];
    for (int i = 0; i < 12; i++) c[i] = _mm256_set1_ps((float)i);
    for (long it = 0; it < iters; it++)
        for (int i = 0; i < 12; i++) c[i] = _mm256_fmadd_ps(c[i], x, y);
    __m256 s = c[0];
    for (int i = 1; i < 12; i++) s = _mm256_add_ps(s, c[i]);
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0];
}
#endif

static uint64_t read_generic(const uint8_t *buf, size_t n, int passes)
{
    uint64_t a[4] = {0, 0, 0, 0}, w;
    for (int p = 0; p < passes; p++)
        for (size_t i = 0; i < n; i += 32)
            for (int k = 0; k < 4; k++) {
                memcpy(&w, buf + i + 8 * k, 8);
                a[k] ^= w;
            }
    return a[0] ^ a[1] ^ a[2] ^ a[3];
}

static float fma_generic(long iters)
{
    float c[16];
    for (int i = 0; i < 16; i++) c[i] = (float)i;
    for (long it = 0; it < iters; it++)
        for (int i = 0; i < 16; i++) c[i] = c[i] * 0.999999f + 1e-7f;
    float s = 0.0f;
    for (int i = 0; i < 16; i++) s += c[i];
    return s;
}

static volatile float probe_sink;   /* keeps the FMA chains' result alive */

uint64_t lrt_probe_read(const void *buf, size_t n, int passes)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (lrt_isa_level() >= LRT_ISA_AVX2)
        return read_avx2((const uint8_t *)buf, n & ~(size_t)127, passes);
#endif
    return read_generic((const uint8_t *)buf, n & ~(size_t)31, passes);
}

double lrt_probe_fma(long iters)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (lrt_isa_level() >= LRT_ISA_AVX2) {
        probe_sink = fma_avx2(iters);
        return 192.0 * (double)iters;
    }
#endif
    probe_sink = fma_generic(iters);
    return 32.0 * (double)iters;
}
