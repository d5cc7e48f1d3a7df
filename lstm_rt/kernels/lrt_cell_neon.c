/* The fused LSTM and GRU cell updates with NEON: lrt_cell_avx2.c's scheme (one pass over
 * 8-unit blocks of the gate-blocked pre-activations, activations in registers; see there),
 * an 8-unit block being two 4-lane vectors. Same arithmetic as the portable cell math of
 * lrt_recurrent.c with the NEON activations (multiplies and adds, no fused multiply-adds:
 * the build turns contraction off), so fused and portable agree bit for bit, and both
 * agree bit for bit with the avx2 level's. Only the standard cells come here
 * (lrt_cell_fused_ok). */
#include <string.h>
#include "lrt_kernels.h"

#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#include "lrt_vmath_neon.h"

#define L LRT_LANES

/* Blocks 0 .. full-1 in place; a last, partial block (H % 8 units) through 8-float copies
 * so that no state array is read or written past its H values. */
#define FOR_BLOCKS(H, BODY_FULL, BODY_TAIL)                             \
    do {                                                                \
        int full_ = (H) / L, k;                                         \
        for (k = 0; k < full_; k++) { BODY_FULL }                       \
        if ((H) % L) { k = full_; BODY_TAIL }                           \
    } while (0)

/* xp + pr, 8 units as two vectors into v[0], v[1] */
LRT_NEON_INLINE void gate8(const float *xp, const float *pr, float32x4_t *v)
{
    v[0] = vaddq_f32(vld1q_f32(xp), vld1q_f32(pr));
    v[1] = vaddq_f32(vld1q_f32(xp + 4), vld1q_f32(pr + 4));
}

/* NB blocks (1 or 2) of an LSTM: gates i, o, f, c of block b at b*32 + 0, 8, 16, 24;
 * c [NB * 8] updated; h out. Sigmoids of all gates at once, then the tanhs, so their
 * latency chains overlap (6 or 12 vectors). */
LRT_NEON_INLINE void lstm_blocks(int NB, const float *xp, const float *pr, float *c, float *h)
{
    float32x4_t s[12], t[4], cn[4];
    for (int b = 0; b < NB; b++) {
        const float *x = xp + b * 4 * L, *p = pr + b * 4 * L;
        gate8(x, p, s + 6 * b);           /* i */
        gate8(x + 8, p + 8, s + 6 * b + 2);   /* o */
        gate8(x + 16, p + 16, s + 6 * b + 4); /* f */
        gate8(x + 24, p + 24, t + 2 * b);     /* c candidate */
    }
    sigmoid4n(6 * NB, s);
    tanh4n(2 * NB, t);
    for (int b = 0; b < NB; b++)
        for (int v = 0; v < 2; v++) {
            float *cp = c + b * L + 4 * v;
            cn[2 * b + v] = vaddq_f32(vmulq_f32(s[6 * b + 4 + v], vld1q_f32(cp)),
                                      vmulq_f32(s[6 * b + v], t[2 * b + v]));
            vst1q_f32(cp, cn[2 * b + v]);
        }
    tanh4n(2 * NB, cn);
    for (int b = 0; b < NB; b++)
        for (int v = 0; v < 2; v++)
            vst1q_f32(h + b * L + 4 * v, vmulq_f32(cn[2 * b + v], s[6 * b + 2 + v]));
}

void lrt_lstm_cell_neon(const lrt_cell *cl, const float *xp, const float *pr, float *c, float *h)
{
    float ct[L], ht[L];
    int n = cl->H % L, pairs = cl->H / L / 2;
    for (int k = 0; k < 2 * pairs; k += 2)
        lstm_blocks(2, xp + k * 4 * L, pr + k * 4 * L, c + k * L, h + k * L);
    xp += 2 * pairs * 4 * L;
    pr += 2 * pairs * 4 * L;
    c += 2 * pairs * L;
    h += 2 * pairs * L;
    FOR_BLOCKS(cl->H - 2 * pairs * L,
        lstm_blocks(1, xp + k * 4 * L, pr + k * 4 * L, c + k * L, h + k * L);,
        memcpy(ct, c + k * L, n * sizeof(float));
        lstm_blocks(1, xp + k * 4 * L, pr + k * 4 * L, ct, ht);
        memcpy(c + k * L, ct, n * sizeof(float));
        memcpy(h + k * L, ht, L * sizeof(float)););  /* h has room for whole blocks */
}

/* (1 - z) n + z h, 4 units */
LRT_NEON_INLINE float32x4_t gru_mix(float32x4_t z, float32x4_t n, const float *h)
{
    return vaddq_f32(vmulq_f32(vsubq_f32(vdupq_n_f32(1.0f), z), n), vmulq_f32(z, vld1q_f32(h)));
}

/* NB linear_before_reset blocks: gates z, r, n of block b at b*24 + 0, 8, 16; xp holds
 * W x + b for all three, pr R h + b for z and r and R_n h + b_hn in its n slot. */
LRT_NEON_INLINE void gru_lbr_blocks(int NB, const float *xp, const float *pr, const float *h, float *hnew)
{
    float32x4_t zr[8], n[4];
    for (int b = 0; b < NB; b++) {
        gate8(xp + b * 3 * L, pr + b * 3 * L, zr + 4 * b);
        gate8(xp + b * 3 * L + 8, pr + b * 3 * L + 8, zr + 4 * b + 2);
    }
    sigmoid4n(4 * NB, zr);
    for (int b = 0; b < NB; b++)
        for (int v = 0; v < 2; v++)
            n[2 * b + v] = vaddq_f32(vld1q_f32(xp + b * 3 * L + 16 + 4 * v),
                                     vmulq_f32(zr[4 * b + 2 + v], vld1q_f32(pr + b * 3 * L + 16 + 4 * v)));
    tanh4n(2 * NB, n);
    for (int b = 0; b < NB; b++)
        for (int v = 0; v < 2; v++)
            vst1q_f32(hnew + b * L + 4 * v, gru_mix(zr[4 * b + v], n[2 * b + v], h + b * L + 4 * v));
}

/* without linear_before_reset, first half: z (kept) and r * h, from xp (3 gates) and
 * pr = R_zr h (2 gates: k*16 + 0, 8) */
LRT_NEON_INLINE void gru_zr_block(const float *xp, const float *pr, const float *h, float *z, float *rh)
{
    float32x4_t zr[4];
    gate8(xp, pr, zr);
    gate8(xp + 8, pr + 8, zr + 2);
    sigmoid4n(4, zr);
    for (int v = 0; v < 2; v++) {
        vst1q_f32(z + 4 * v, zr[v]);
        vst1q_f32(rh + 4 * v, vmulq_f32(zr[2 + v], vld1q_f32(h + 4 * v)));
    }
}

/* second half, after hn = R_h (r * h): n = tanh(W_n x + b + hn), the new h */
LRT_NEON_INLINE void gru_n_block(const float *xp, const float *hn, const float *z, const float *h, float *hnew)
{
    float32x4_t n[2];
    gate8(xp + 16, hn, n);
    tanh4n(2, n);
    for (int v = 0; v < 2; v++)
        vst1q_f32(hnew + 4 * v, gru_mix(vld1q_f32(z + 4 * v), n[v], h + 4 * v));
}

void lrt_gru_cell_a_neon(const lrt_cell *cl, const float *xp, const float *pr, const float *h,
                         float *z, float *rh, float *hnew)
{
    float ht[L] = {0};
    int n = cl->H % L;
    if (cl->linear_before_reset) {
        int pairs = cl->H / L / 2;
        for (int k = 0; k < 2 * pairs; k += 2)
            gru_lbr_blocks(2, xp + k * 3 * L, pr + k * 3 * L, h + k * L, hnew + k * L);
        xp += 2 * pairs * 3 * L;
        pr += 2 * pairs * 3 * L;
        h += 2 * pairs * L;
        hnew += 2 * pairs * L;
        FOR_BLOCKS(cl->H - 2 * pairs * L,
            gru_lbr_blocks(1, xp + k * 3 * L, pr + k * 3 * L, h + k * L, hnew + k * L);,
            memcpy(ht, h + k * L, n * sizeof(float));
            gru_lbr_blocks(1, xp + k * 3 * L, pr + k * 3 * L, ht, hnew + k * L););
    } else
        FOR_BLOCKS(cl->H,
            gru_zr_block(xp + k * 3 * L, pr + k * 2 * L, h + k * L, z + k * L, rh + k * L);,
            memcpy(ht, h + k * L, n * sizeof(float));
            gru_zr_block(xp + k * 3 * L, pr + k * 2 * L, ht, z + k * L, rh + k * L););
}

void lrt_gru_cell_b_neon(const lrt_cell *cl, const float *xp, const float *hn, const float *z,
                         const float *h, float *hnew)
{
    float ht[L] = {0};
    int n = cl->H % L;
    FOR_BLOCKS(cl->H,
        gru_n_block(xp + k * 3 * L, hn + k * L, z + k * L, h + k * L, hnew + k * L);,
        memcpy(ht, h + k * L, n * sizeof(float));
        gru_n_block(xp + k * 3 * L, hn + k * L, z + k * L, ht, hnew + k * L););
}

#else
typedef int lrt_cell_neon_unused;  /* not aarch64: nothing here (ISO C wants a declaration) */
#endif
