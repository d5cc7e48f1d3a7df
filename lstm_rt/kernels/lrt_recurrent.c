/* Recurrent layers over a sequence: one gemm for the input projection of every step,
 * then per step one gemm for R h and the cell's elementwise math. Portable C. */
#include <math.h>
#include <string.h>
#include "lrt_kernels.h"

static inline int imax(int a, int b) { return a > b ? a : b; }

/* Offsets of the pieces of the workspace, in floats. */
typedef struct { size_t xproj, pre, hc, hnew, zbuf, hn, tmp, quant, total; int hs; } ws_layout;

static ws_layout layout_of(const lrt_cell *cell, int T, int B)
{
    ws_layout L;
    size_t Hp = (size_t)cell->nblk * LRT_LANES, G8 = (size_t)cell->gates * LRT_LANES;
    L.hs = imax((int)Hp, cell->proj.data ? cell->proj.nblk * LRT_LANES : 0);
    L.xproj = 0;
    L.pre = L.xproj + (size_t)T * B * cell->nblk * G8;
    L.hc = L.pre + (size_t)B * cell->nblk * G8;
    L.hnew = L.hc + (size_t)B * Hp;
    L.zbuf = L.hnew + (size_t)B * L.hs;
    L.hn = L.zbuf + (size_t)B * Hp;
    L.tmp = L.hn + (size_t)B * Hp;
    L.quant = L.tmp + 5 * Hp;
    int kmax = imax(cell->in_size, imax(cell->H, cell->Hr));
    L.total = L.quant + lrt_matmul_scratch_floats(imax(T * B, B), kmax);
    return L;
}

size_t lrt_workspace_floats(const lrt_cell *cell, int T, int B) { return layout_of(cell, T, B).total; }

static inline void clip_n(float *x, int n, float clip)
{
    if (clip <= 0.0f) return;
    for (int i = 0; i < n; i++) x[i] = x[i] > clip ? clip : (x[i] < -clip ? -clip : x[i]);
}

/* Gather gate g of a gate-blocked row (xp + pr) into a plain vector: block k of 8 units
 * sits at k * gates * 8 + g * 8, so each block is one contiguous 8-float add (which the
 * compiler vectorizes). Writes whole blocks: out holds nblk * 8 floats. */
static inline void gather_gate(const float *xp, const float *pr, int gates, int g, int nblk, float *out)
{
    for (int k = 0; k < nblk; k++) {
        const float *a = xp + (size_t)k * gates * LRT_LANES + g * LRT_LANES;
        float *o = out + (size_t)k * LRT_LANES;
        if (pr) {
            const float *b = pr + (size_t)k * gates * LRT_LANES + g * LRT_LANES;
            for (int j = 0; j < LRT_LANES; j++) o[j] = a[j] + b[j];
        } else {
            for (int j = 0; j < LRT_LANES; j++) o[j] = a[j];
        }
    }
}

/* LSTM: c and hc (= o * h(c)) of one row. tmp holds 4 * Hp floats. */
static void lstm_row(const lrt_cell *cl, const float *xp, const float *pr, float *c, float *hc, float *tmp)
{
    int H = cl->H, Hp = cl->nblk * LRT_LANES;
    float *gi = tmp, *gf = tmp + Hp, *gc = tmp + 2 * Hp, *go = tmp + 3 * Hp;
    const float *pi = cl->peep, *po = cl->peep ? cl->peep + H : NULL, *pf = cl->peep ? cl->peep + 2 * H : NULL;
    gather_gate(xp, pr, 4, 0, cl->nblk, gi);
    gather_gate(xp, pr, 4, 1, cl->nblk, go);
    gather_gate(xp, pr, 4, 2, cl->nblk, gf);
    gather_gate(xp, pr, 4, 3, cl->nblk, gc);
    if (pi) for (int u = 0; u < H; u++) { gi[u] += pi[u] * c[u]; gf[u] += pf[u] * c[u]; }
    clip_n(gi, H, cl->clip); clip_n(gf, H, cl->clip); clip_n(gc, H, cl->clip);
    lrt_activate(cl->act[0], gi, H);
    if (cl->input_forget) for (int u = 0; u < H; u++) gf[u] = 1.0f - gi[u];
    else lrt_activate(cl->act[0], gf, H);
    lrt_activate(cl->act[1], gc, H);
    for (int u = 0; u < H; u++) c[u] = gf[u] * c[u] + gi[u] * gc[u];
    if (po) for (int u = 0; u < H; u++) go[u] += po[u] * c[u];  /* the new cell state */
    clip_n(go, H, cl->clip);
    lrt_activate(cl->act[0], go, H);
    memcpy(hc, c, (size_t)H * sizeof(float));
    lrt_activate(cl->act[2], hc, H);
    for (int u = 0; u < H; u++) hc[u] *= go[u];
}

/* GRU: z (into zbuf) and r; with linear_before_reset also the candidate and the new h. */
static void gru_row_a(const lrt_cell *cl, const float *xp, const float *pr, const float *h,
                      float *z, float *rh, float *hnew, float *tmp)
{
    int H = cl->H, Hp = cl->nblk * LRT_LANES;
    float *r = tmp, *n = tmp + Hp;
    if (cl->linear_before_reset) {
        gather_gate(xp, pr, 3, 0, cl->nblk, z);
        gather_gate(xp, pr, 3, 1, cl->nblk, r);
        clip_n(z, H, cl->clip); clip_n(r, H, cl->clip);
        lrt_activate(cl->act[0], z, H);
        lrt_activate(cl->act[0], r, H);
        gather_gate(xp, NULL, 3, 2, cl->nblk, n);       /* W_n x + b_in */
        gather_gate(pr, NULL, 3, 2, cl->nblk, rh);      /* R_n h + b_hn (rh is free here) */
        for (int u = 0; u < H; u++) n[u] += r[u] * rh[u];
        clip_n(n, H, cl->clip);
        lrt_activate(cl->act[1], n, H);
        for (int u = 0; u < H; u++) hnew[u] = (1.0f - z[u]) * n[u] + z[u] * h[u];
    } else {
        /* pr is R_zr h, gate-blocked with 2 gates; xp has 3 */
        gather_gate(xp, NULL, 3, 0, cl->nblk, z);
        gather_gate(xp, NULL, 3, 1, cl->nblk, r);
        gather_gate(pr, NULL, 2, 0, cl->nblk, n);
        for (int u = 0; u < H; u++) z[u] += n[u];
        gather_gate(pr, NULL, 2, 1, cl->nblk, n);
        for (int u = 0; u < H; u++) r[u] += n[u];
        clip_n(z, H, cl->clip); clip_n(r, H, cl->clip);
        lrt_activate(cl->act[0], z, H);
        lrt_activate(cl->act[0], r, H);
        for (int u = 0; u < H; u++) rh[u] = r[u] * h[u];
    }
}

/* GRU without linear_before_reset, after hn = R_h (r * h). */
static void gru_row_b(const lrt_cell *cl, const float *xp, const float *hn, const float *z,
                      const float *h, float *hnew, float *tmp)
{
    int H = cl->H;
    float *n = tmp;
    gather_gate(xp, NULL, 3, 2, cl->nblk, n);
    for (int u = 0; u < H; u++) n[u] += hn[u];
    clip_n(n, H, cl->clip);
    lrt_activate(cl->act[1], n, H);
    for (int u = 0; u < H; u++) hnew[u] = (1.0f - z[u]) * n[u] + z[u] * h[u];
}

static void rnn_row(const lrt_cell *cl, const float *xp, const float *pr, float *hnew)
{
    int H = cl->H;
    for (int u = 0; u < H; u++) hnew[u] = xp[u] + pr[u];
    clip_n(hnew, H, cl->clip);
    lrt_activate(cl->act[0], hnew, H);
}

/* Time index of step s for row b, or -1 when row b does not advance at step s. */
static inline int step_time(int s, int b, int T, int B, const int32_t *lens, const uint8_t *mask,
                            int reverse)
{
    if (mask) {
        int t = reverse ? T - 1 - s : s;
        return mask[(size_t)t * B + b] ? t : -1;
    }
    int len = lens ? lens[b] : T;
    if (s >= len) return -1;
    return reverse ? len - 1 - s : s;
}

#if defined(__GNUC__) || defined(__clang__)
#define LRT_ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define LRT_ALWAYS_INLINE static __forceinline
#endif

/* The body of lrt_recurrent_sequence, inlined into it three times: as is, and for a
 * stream's step (T = 1, no lengths, no mask; `reverse` is moot for one step) of B rows
 * and of one row, where the constants fold away the bookkeeping the general loop sets up
 * (~300 instructions a call for one row, more than a tiny step's cell update). */
LRT_ALWAYS_INLINE int sequence(const lrt_cell *cl, int T, int B, const float *x, int ldx,
                               const int32_t *lens, const uint8_t *mask, int reverse, float *h,
                               float *c, float *y, int ldy, float *ws)
{
    if (lens && !mask)
        for (int b = 0; b < B; b++)
            if (lens[b] < 0 || lens[b] > T) return LRT_ERR_LENS;

    ws_layout L = layout_of(cl, T, B);
    int H = cl->H, Hr = cl->Hr, Hp = cl->nblk * LRT_LANES, G8 = cl->gates * LRT_LANES;
    int width = cl->nblk * G8;           /* floats per gate-blocked row */
    float *xproj = ws + L.xproj, *pre = ws + L.pre, *hc = ws + L.hc, *hnew = ws + L.hnew;
    float *zbuf = ws + L.zbuf, *hn = ws + L.hn, *tmp = ws + L.tmp, *quant = ws + L.quant;
    int steps = T;

    if (lens && !mask) {
        steps = 0;
        for (int b = 0; b < B; b++) steps = imax(steps, lens[b]);
        if (y)  /* outputs past a sequence's length are zero */
            for (int b = 0; b < B; b++)
                for (int t = lens[b]; t < T; t++)
                    memset(y + ((size_t)t * B + b) * ldy, 0, (size_t)Hr * sizeof(float));
    }
    const lrt_kernels *kern = lrt_kernels_active();  /* its fused cell updates, when fused */
    if (T == 1 && B == 1 && !lens && !mask && lrt_step_fused_with(kern, cl)) {
        /* a stream's step of one row: products and cell block by block, the same bits */
        kern->step_f32(cl, x, h, c, hnew, xproj);
        memcpy(h, hnew, (size_t)Hr * sizeof(float));
        if (y) memcpy(y, hnew, (size_t)Hr * sizeof(float));
        return LRT_OK;
    }
    /* The input projection of every step at once: W x + biases. */
    lrt_matmul(T * B, x, ldx, &cl->w, cl->bias, xproj, width, width, quant);

    int gru_split = cl->kind == LRT_CELL_GRU && !cl->linear_before_reset;
    int fused = lrt_cell_fused_with(kern, cl);
    for (int s = 0; s < steps; s++) {
        /* R h for every row (rows past their length compute too; their result is dropped) */
        lrt_matmul(B, h, Hr, &cl->r, gru_split ? NULL : cl->bias_rh, pre, width,
                   gru_split ? cl->nblk * 16 : width, quant);

        for (int b = 0; b < B; b++) {
            int t = step_time(s, b, T, B, lens, mask, reverse);
            if (t < 0) { if (gru_split) memset(hc + (size_t)b * Hp, 0, (size_t)H * sizeof(float)); continue; }
            const float *xp = xproj + ((size_t)t * B + b) * width, *pr = pre + (size_t)b * width;
            float *hb = h + (size_t)b * Hr, *hnb = hnew + (size_t)b * L.hs;
            float *cb = c + (size_t)b * H, *zb = zbuf + (size_t)b * Hp, *hcb = hc + (size_t)b * Hp;
            switch (cl->kind) {
            case LRT_CELL_LSTM:
                if (fused) kern->lstm_cell(cl, xp, pr, cb, cl->proj.data ? hcb : hnb);
                else lstm_row(cl, xp, pr, cb, cl->proj.data ? hcb : hnb, tmp);
                break;
            case LRT_CELL_GRU:
                if (fused) kern->gru_cell_a(cl, xp, pr, hb, zb, hcb, hnb);
                else gru_row_a(cl, xp, pr, hb, zb, hcb, hnb, tmp);
                break;
            default:
                rnn_row(cl, xp, pr, hnb);
            }
        }
        if (gru_split)
            lrt_matmul(B, hc, Hp, &cl->r_h, NULL, hn, Hp, Hp, quant);
        if (cl->kind == LRT_CELL_LSTM && cl->proj.data)
            lrt_matmul(B, hc, Hp, &cl->proj, NULL, hnew, L.hs, Hr, quant);

        for (int b = 0; b < B; b++) {
            int t = step_time(s, b, T, B, lens, mask, reverse);
            if (t < 0) {
                /* a masked step (Keras): the state stays, the output repeats it */
                if (mask && y) {
                    float *yr = y + ((size_t)(reverse ? T - 1 - s : s) * B + b) * ldy;
                    if (cl->zero_masked_output) memset(yr, 0, (size_t)Hr * sizeof(float));
                    else memcpy(yr, h + (size_t)b * Hr, (size_t)Hr * sizeof(float));
                }
                continue;
            }
            float *hb = h + (size_t)b * Hr, *hnb = hnew + (size_t)b * L.hs;
            if (gru_split) {
                const float *xp = xproj + ((size_t)t * B + b) * width, *hnr = hn + (size_t)b * Hp,
                            *zb = zbuf + (size_t)b * Hp;
                if (fused) kern->gru_cell_b(cl, xp, hnr, zb, hb, hnb);
                else gru_row_b(cl, xp, hnr, zb, hb, hnb, tmp);
            }
            memcpy(hb, hnb, (size_t)Hr * sizeof(float));
            if (y) memcpy(y + ((size_t)t * B + b) * ldy, hnb, (size_t)Hr * sizeof(float));
        }
    }
    if (lens && !mask)
        for (int b = 0; b < B; b++)
            if (lens[b] == 0) {
                memset(h + (size_t)b * Hr, 0, (size_t)Hr * sizeof(float));
                if (c) memset(c + (size_t)b * H, 0, (size_t)H * sizeof(float));
            }
    return LRT_OK;
}

int lrt_recurrent_sequence(const lrt_cell *cl, int T, int B, const float *x, int ldx,
                           const int32_t *lens, const uint8_t *mask, int reverse, float *h, float *c,
                           float *y, int ldy, float *ws)
{
    if (T == 1 && !lens && !mask)
        return B == 1 ? sequence(cl, 1, 1, x, ldx, NULL, NULL, 0, h, c, y, ldy, ws)
                      : sequence(cl, 1, B, x, ldx, NULL, NULL, 0, h, c, y, ldy, ws);
    return sequence(cl, T, B, x, ldx, lens, mask, reverse, h, c, y, ldy, ws);
}
