/* The elementwise part of an LSTM or GRU step, fused: one pass over 8-unit blocks reads
 * the gate pre-activations where the matrix products left them (gate-blocked rows, see
 * lrt_kernels.h), applies the activations in registers and writes the new state. The
 * portable path (lrt_recurrent.c) gathers each gate into a buffer and makes a pass per
 * activation. Only the standard cells come here (sigmoid/tanh, no clip, no peepholes, no
 * coupled input-forget); lrt_cell_fused_ok (lrt_dispatch.c) says which. Same arithmetic as the portable
 * path with the AVX2 activations (no fused multiply-adds), so the two agree bit for bit. */
#include "lrt_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include "lrt_part_avx2.h"
#include "lrt_row_avx2.h"
#include "lrt_vmath_avx2.h"

#define LRT_AVX2_FN __attribute__((target("avx2,fma")))
#define L LRT_LANES

/* Blocks 0 .. full-1 work in place; a last, partial block (H % 8 units) reads and writes
 * the state in pieces (lrt_load_part / lrt_store_part), so that no state array is touched
 * past its H values. (Copies through an 8-float buffer cost a store-forwarding stall per
 * step; masked loads and stores are microcode on AMD Zen 1.) */
#define FOR_BLOCKS(H, BODY_FULL, BODY_TAIL)                             \
    do {                                                                \
        int full_ = (H) / L, k;                                         \
        for (k = 0; k < full_; k++) { BODY_FULL }                       \
        if ((H) % L) { k = full_; BODY_TAIL }                           \
    } while (0)

LRT_AVX2_INLINE __m256 gate(const float *xp, const float *pr)
{
    return _mm256_add_ps(_mm256_loadu_ps(xp), _mm256_loadu_ps(pr));
}

/* gates i, o, f, c of block k at k*32 + 0, 8, 16, 24 (xp + pr), the block's old c; writes
 * h (8 floats), returns the new c. */
LRT_AVX2_INLINE __m256 lstm_block(const float *xp, const float *pr, __m256 c, float *h)
{
    __m256 i = sigmoid256(gate(xp, pr)), o = sigmoid256(gate(xp + 8, pr + 8));
    __m256 f = sigmoid256(gate(xp + 16, pr + 16)), g = tanh256(gate(xp + 24, pr + 24));
    __m256 cn = _mm256_add_ps(_mm256_mul_ps(f, c), _mm256_mul_ps(i, g));
    _mm256_storeu_ps(h, _mm256_mul_ps(tanh256(cn), o));
    return cn;
}

/* NB blocks at once (k .. k + NB - 1): their activation chains overlap (one block's alone
 * is latency-bound: ~100 cycles per 8 units). */
LRT_AVX2_INLINE void lstm_blocks(int NB, const float *xp, const float *pr, float *c, float *h)
{
    __m256 s[12], t[4];
    for (int b = 0; b < NB; b++) {
        const float *x = xp + b * 4 * L, *p = pr + b * 4 * L;
        s[3 * b] = gate(x, p);
        s[3 * b + 1] = gate(x + 8, p + 8);
        s[3 * b + 2] = gate(x + 16, p + 16);
        t[b] = gate(x + 24, p + 24);
    }
    sigmoid256n(3 * NB, s);
    tanh256n(NB, t);
    __m256 cn[4];
    for (int b = 0; b < NB; b++) {
        cn[b] = _mm256_add_ps(_mm256_mul_ps(s[3 * b + 2], _mm256_loadu_ps(c + b * L)), _mm256_mul_ps(s[3 * b], t[b]));
        _mm256_storeu_ps(c + b * L, cn[b]);
    }
    tanh256n(NB, cn);
    for (int b = 0; b < NB; b++) _mm256_storeu_ps(h + b * L, _mm256_mul_ps(cn[b], s[3 * b + 1]));
}

LRT_AVX2_FN void lrt_lstm_cell_avx2(const lrt_cell *cl, const float *xp, const float *pr, float *c, float *h)
{
    int full = cl->H / L, k = 0;
    for (; k + 4 <= full; k += 4) lstm_blocks(4, xp + k * 4 * L, pr + k * 4 * L, c + k * L, h + k * L);
    for (; k + 2 <= full; k += 2) lstm_blocks(2, xp + k * 4 * L, pr + k * 4 * L, c + k * L, h + k * L);
    xp += k * 4 * L;
    pr += k * 4 * L;
    c += k * L;
    h += k * L;
    const int tail = cl->H % L;
    FOR_BLOCKS(cl->H - k * L,
        _mm256_storeu_ps(c + k * L, lstm_block(xp + k * 4 * L, pr + k * 4 * L, _mm256_loadu_ps(c + k * L), h + k * L));,
        /* h has room for whole blocks */
        lrt_store_part(c + k * L, lstm_block(xp + k * 4 * L, pr + k * 4 * L, lrt_load_part(c + k * L, tail), h + k * L), tail););
}

/* (1 - z) n + z h */
LRT_AVX2_INLINE __m256 gru_mix(__m256 z, __m256 n, __m256 h)
{
    return _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_set1_ps(1.0f), z), n), _mm256_mul_ps(z, h));
}

/* linear_before_reset: gates z, r, n of block k at k*24 + 0, 8, 16; xp holds W x + b for all
 * three and R h + b for z and r are in pr, R_n h + b_hn in pr's n slot. */
LRT_AVX2_INLINE void gru_lbr_block(const float *xp, const float *pr, __m256 h, float *hnew)
{
    __m256 z = sigmoid256(gate(xp, pr)), r = sigmoid256(gate(xp + 8, pr + 8));
    __m256 n = tanh256(_mm256_add_ps(_mm256_loadu_ps(xp + 16), _mm256_mul_ps(r, _mm256_loadu_ps(pr + 16))));
    _mm256_storeu_ps(hnew, gru_mix(z, n, h));
}

/* without linear_before_reset, first half: z (kept) and r * h, from xp (3 gates) and
 * pr = R_zr h (2 gates: k*16 + 0, 8) */
LRT_AVX2_INLINE void gru_zr_block(const float *xp, const float *pr, __m256 h, float *z, float *rh)
{
    __m256 zv = sigmoid256(gate(xp, pr)), r = sigmoid256(gate(xp + 8, pr + 8));
    _mm256_storeu_ps(z, zv);
    _mm256_storeu_ps(rh, _mm256_mul_ps(r, h));
}

/* second half, after hn = R_h (r * h): n = tanh(W_n x + b + hn), the new h */
LRT_AVX2_INLINE void gru_n_block(const float *xp, const float *hn, const float *z, __m256 h, float *hnew)
{
    __m256 n = tanh256(_mm256_add_ps(_mm256_loadu_ps(xp + 16), _mm256_loadu_ps(hn)));
    _mm256_storeu_ps(hnew, gru_mix(_mm256_loadu_ps(z), n, h));
}

/* NB linear_before_reset blocks at once, as lstm_blocks. */
LRT_AVX2_INLINE void gru_lbr_blocks(int NB, const float *xp, const float *pr, const float *h, float *hnew)
{
    __m256 zr[8], n[4];
    for (int b = 0; b < NB; b++) {
        zr[2 * b] = gate(xp + b * 3 * L, pr + b * 3 * L);
        zr[2 * b + 1] = gate(xp + b * 3 * L + 8, pr + b * 3 * L + 8);
    }
    sigmoid256n(2 * NB, zr);
    for (int b = 0; b < NB; b++)
        n[b] = _mm256_add_ps(_mm256_loadu_ps(xp + b * 3 * L + 16),
                             _mm256_mul_ps(zr[2 * b + 1], _mm256_loadu_ps(pr + b * 3 * L + 16)));
    tanh256n(NB, n);
    for (int b = 0; b < NB; b++) _mm256_storeu_ps(hnew + b * L, gru_mix(zr[2 * b], n[b], _mm256_loadu_ps(h + b * L)));
}

LRT_AVX2_FN void lrt_gru_cell_a_avx2(const lrt_cell *cl, const float *xp, const float *pr, const float *h,
                                     float *z, float *rh, float *hnew)
{
    const int tail = cl->H % L;
    if (cl->linear_before_reset) {
        int full = cl->H / L, k = 0;
        for (; k + 4 <= full; k += 4) gru_lbr_blocks(4, xp + k * 3 * L, pr + k * 3 * L, h + k * L, hnew + k * L);
        for (; k + 2 <= full; k += 2) gru_lbr_blocks(2, xp + k * 3 * L, pr + k * 3 * L, h + k * L, hnew + k * L);
        xp += k * 3 * L;
        pr += k * 3 * L;
        h += k * L;
        hnew += k * L;
        FOR_BLOCKS(cl->H - k * L,
            gru_lbr_block(xp + k * 3 * L, pr + k * 3 * L, _mm256_loadu_ps(h + k * L), hnew + k * L);,
            gru_lbr_block(xp + k * 3 * L, pr + k * 3 * L, lrt_load_part(h + k * L, tail), hnew + k * L););
    } else
        FOR_BLOCKS(cl->H,
            gru_zr_block(xp + k * 3 * L, pr + k * 2 * L, _mm256_loadu_ps(h + k * L), z + k * L, rh + k * L);,
            gru_zr_block(xp + k * 3 * L, pr + k * 2 * L, lrt_load_part(h + k * L, tail), z + k * L, rh + k * L););
}

LRT_AVX2_FN void lrt_gru_cell_b_avx2(const lrt_cell *cl, const float *xp, const float *hn, const float *z,
                                     const float *h, float *hnew)
{
    const int tail = cl->H % L;
    FOR_BLOCKS(cl->H,
        gru_n_block(xp + k * 3 * L, hn + k * L, z + k * L, _mm256_loadu_ps(h + k * L), hnew + k * L);,
        gru_n_block(xp + k * 3 * L, hn + k * L, z + k * L, lrt_load_part(h + k * L, tail), hnew + k * L););
}

/* ---- One fp32 step of one row, products and cell together (lrt_step_fused_with) ----
 * A step of a small model otherwise runs W x, then R h, then the cell alone (on Zen 5, 10%
 * of a 64/128 LSTM step). Here W x comes first (one stream, into xp), then R h two 8-unit
 * blocks at a time, each pair followed by its cell update, so the out-of-order core runs a
 * pair's cell while the next pair's weights stream in (measured: steps 3-14% faster up to
 * 64/128; interleaving the W and R panels instead made no difference). The row kernels are
 * lrt_gemm_panels_avx2's (lrt_row_avx2.h) and the cell's operations are the same: the same
 * bits as products then cell. Larger matrices (not split) keep the separate products:
 * their three-panel reads from L3 ran 1.3x slower in groups of two panels. */

/* NB panels from block blk of the split matrix m against the row a, into out (NB * gw
 * floats), one panel at a time as lrt_gemm_panels_avx2 reads them */
LRT_AVX2_INLINE void step_panels(int NB, int NV, const lrt_mat *m, const float *a, int blk,
                                 const float *bias, float *out)
{
    const int gw = NV * L;
    const size_t pstride = (size_t)m->K * gw;
    const float *wp = (const float *)m->data + blk * pstride, *bb = bias ? bias + blk * gw : NULL;
    for (int p = 0; p < NB; p++)
        row_split(1, NV, m->K, a, wp + p * pstride, 0, bb ? bb + p * gw : NULL, out + p * gw);
}

/* blocks per cell update */
#define STEP_GROUP 2

LRT_AVX2_FN static void step_lstm(const lrt_cell *cl, const float *x, const float *h, float *c, float *hnew,
                                  float *xp)
{
    float pr[STEP_GROUP * 4 * L];
    int full = cl->H / L, k = 0;
    step_panels(cl->nblk, 4, &cl->w, x, 0, cl->bias, xp);
    for (; k + STEP_GROUP <= full; k += STEP_GROUP) {
        step_panels(STEP_GROUP, 4, &cl->r, h, k, cl->bias_rh, pr);
        lstm_blocks(STEP_GROUP, xp + k * 4 * L, pr, c + k * L, hnew + k * L);
    }
    for (; k < cl->nblk; k++) {
        step_panels(1, 4, &cl->r, h, k, cl->bias_rh, pr);
        if (k < full)
            _mm256_storeu_ps(c + k * L, lstm_block(xp + k * 4 * L, pr, _mm256_loadu_ps(c + k * L), hnew + k * L));
        else   /* the partial last block; hnew has room for whole blocks */
            lrt_store_part(c + k * L, lstm_block(xp + k * 4 * L, pr, lrt_load_part(c + k * L, cl->H % L), hnew + k * L),
                           cl->H % L);
    }
}

LRT_AVX2_FN static void step_gru_lbr(const lrt_cell *cl, const float *x, const float *h, float *hnew, float *xp)
{
    float pr[STEP_GROUP * 3 * L];
    int full = cl->H / L, k = 0;
    step_panels(cl->nblk, 3, &cl->w, x, 0, cl->bias, xp);
    for (; k + STEP_GROUP <= full; k += STEP_GROUP) {
        step_panels(STEP_GROUP, 3, &cl->r, h, k, cl->bias_rh, pr);
        gru_lbr_blocks(STEP_GROUP, xp + k * 3 * L, pr, h + k * L, hnew + k * L);
    }
    for (; k < cl->nblk; k++) {
        step_panels(1, 3, &cl->r, h, k, cl->bias_rh, pr);
        gru_lbr_block(xp + k * 3 * L, pr, k < full ? _mm256_loadu_ps(h + k * L) : lrt_load_part(h + k * L, cl->H % L),
                      hnew + k * L);
    }
}

LRT_AVX2_FN void lrt_step_f32_avx2(const lrt_cell *cl, const float *x, const float *h, float *c, float *hnew,
                                   float *xp)
{
    if (cl->kind == LRT_CELL_LSTM) step_lstm(cl, x, h, c, hnew, xp);
    else step_gru_lbr(cl, x, h, hnew, xp);
}

#else  /* lrt_cell_fused_ok is 0 here (no AVX2 level), so these are never called */

void lrt_step_f32_avx2(const lrt_cell *cl, const float *x, const float *h, float *c, float *hnew,
                       float *xp)
{
    (void)cl; (void)x; (void)h; (void)c; (void)hnew; (void)xp;
}

void lrt_lstm_cell_avx2(const lrt_cell *cl, const float *xp, const float *pr, float *c, float *h)
{
    (void)cl; (void)xp; (void)pr; (void)c; (void)h;
}

void lrt_gru_cell_a_avx2(const lrt_cell *cl, const float *xp, const float *pr, const float *h,
                         float *z, float *rh, float *hnew)
{
    (void)cl; (void)xp; (void)pr; (void)h; (void)z; (void)rh; (void)hnew;
}

void lrt_gru_cell_b_avx2(const lrt_cell *cl, const float *xp, const float *hn, const float *z,
                         const float *h, float *hnew)
{
    (void)cl; (void)xp; (void)hn; (void)z; (void)h; (void)hnew;
}

#endif
