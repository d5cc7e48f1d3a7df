/* The plan interpreter: runs a compiled model's operations back to back (see lrt_plan.h).
 * The layers' work is in the kernels (lrt_recurrent_sequence, lrt_dense, lrt_embed); the
 * glue here only moves and combines rows, in the order numpy did before it (so results
 * did not change when the graph moved from Python into this loop). Portable C. */
#include <math.h>
#include <string.h>
#include "lrt_plan.h"

static inline size_t rows_of(const lrt_op *op, const int *T, int B)
{
    return op->time < 0 ? (size_t)B : (size_t)T[op->time] * B;
}

/* numpy's maximum/minimum: NaN wins, either side */
static inline float max_nan(float a, float b) { return (a >= b || a != a) ? a : b; }
static inline float min_nan(float a, float b) { return (a <= b || a != a) ? a : b; }

static void join(const lrt_op *op, void *const *bufs, size_t rows)
{
    float *y = (float *)bufs[op->y];
    if (op->mode == LRT_JOIN_CONCAT) {
        size_t off = 0;
        for (int i = 0; i < op->n_in; i++) {
            const float *x = (const float *)bufs[op->ins[i]];
            size_t f = (size_t)op->in_feats[i];
            for (size_t r = 0; r < rows; r++)
                memcpy(y + r * op->out_f + off, x + r * f, f * sizeof(float));
            off += f;
        }
        return;
    }
    size_t n = rows * (size_t)op->out_f;
    memcpy(y, bufs[op->ins[0]], n * sizeof(float));
    for (int i = 1; i < op->n_in; i++) {     /* ((x0 op x1) op x2) ..., as functools.reduce */
        const float *x = (const float *)bufs[op->ins[i]];
        switch (op->mode) {
        case LRT_JOIN_SUB: for (size_t j = 0; j < n; j++) y[j] = y[j] - x[j]; break;
        case LRT_JOIN_MUL: for (size_t j = 0; j < n; j++) y[j] = y[j] * x[j]; break;
        case LRT_JOIN_MAX: for (size_t j = 0; j < n; j++) y[j] = max_nan(y[j], x[j]); break;
        case LRT_JOIN_MIN: for (size_t j = 0; j < n; j++) y[j] = min_nan(y[j], x[j]); break;
        default:           for (size_t j = 0; j < n; j++) y[j] = y[j] + x[j]; break;  /* sum, ave */
        }
    }
    if (op->mode == LRT_JOIN_AVE) {
        float k = (float)op->n_in;
        for (size_t j = 0; j < n; j++) y[j] = y[j] / k;
    }
}

static void merge(const lrt_op *op, const float *x, float *y, size_t rows)
{
    size_t F = (size_t)op->out_f, W = (size_t)op->in_f;
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * W;
        float *yr = y + r * F;
        memcpy(yr, xr, F * sizeof(float));
        for (int p = 1; p < op->parts; p++) {
            const float *xp = xr + p * F;
            if (op->mode == LRT_MERGE_MUL) for (size_t j = 0; j < F; j++) yr[j] = yr[j] * xp[j];
            else for (size_t j = 0; j < F; j++) yr[j] = yr[j] + xp[j];
        }
        if (op->mode == LRT_MERGE_AVE) {
            float k = (float)op->parts;
            for (size_t j = 0; j < F; j++) yr[j] = yr[j] / k;
        }
    }
}

static void mask_value(const lrt_op *op, const float *x, uint8_t *mask, float *out, size_t rows)
{
    size_t F = (size_t)op->in_f;
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * F;
        uint8_t keep = 0;
        for (size_t j = 0; j < F; j++) keep |= xr[j] != op->value;
        mask[r] = keep;
        if (out)
            for (size_t j = 0; j < F; j++) out[r * F + j] = xr[j] * (float)keep;
    }
}

static int recurrent(const lrt_op *op, void *const *bufs, const int *T, int B, int bcap, float *ws)
{
    int t = T[op->time], Hr = op->cells[0].Hr, H = op->cells[0].H;
    const float *x = (const float *)bufs[op->x];
    const int32_t *lens = op->lens >= 0 ? (const int32_t *)bufs[op->lens] : NULL;
    const uint8_t *mask = op->mask >= 0 ? (const uint8_t *)bufs[op->mask] : NULL;
    float *h = (float *)bufs[op->h];
    float *c = op->c >= 0 ? (float *)bufs[op->c] : NULL;
    float *y = op->y >= 0 ? (float *)bufs[op->y] : NULL;
    for (int d = 0; d < op->ndir; d++) {
        int rc = lrt_recurrent_sequence(&op->cells[d], t, B, x, op->in_f, lens, mask, op->reverse[d],
                                        h + (size_t)d * bcap * Hr, c ? c + (size_t)d * bcap * H : NULL,
                                        y ? y + (size_t)d * Hr : NULL, op->ndir * Hr, ws);
        if (rc != LRT_OK) return rc;
    }
    return LRT_OK;
}

int lrt_plan_run(const lrt_op *ops, int nops, void *const *bufs, const int *T, int B, int bcap,
                 float *ws, int *failed)
{
    for (int i = 0; i < nops; i++) {
        const lrt_op *op = &ops[i];
        size_t rows = rows_of(op, T, B), H = (size_t)op->in_f;
        int rc = LRT_OK;
        switch (op->kind) {
        case LRT_OP_EMBED:
            lrt_embed(op->dtype, op->table, op->scale, op->out_f, (const int64_t *)bufs[op->x], (int)rows,
                      (float *)bufs[op->y], op->out_f);
            break;
        case LRT_OP_RECURRENT:
            rc = recurrent(op, bufs, T, B, bcap, ws);
            break;
        case LRT_OP_DENSE:
            lrt_dense((int)rows, op->out_f, (const float *)bufs[op->x], op->in_f, op->mat, op->bias, op->act,
                      (float *)bufs[op->y], op->out_f, ws);
            break;
        case LRT_OP_MERGE:
            merge(op, (const float *)bufs[op->x], (float *)bufs[op->y], rows);
            break;
        case LRT_OP_MASK_IDS: {
            const int64_t *ids = (const int64_t *)bufs[op->x];
            uint8_t *mask = (uint8_t *)bufs[op->y];
            for (size_t r = 0; r < rows; r++) mask[r] = ids[r] != 0;
            break;
        }
        case LRT_OP_MASK_VALUE:
            mask_value(op, (const float *)bufs[op->x], (uint8_t *)bufs[op->y],
                       op->mask_out >= 0 ? (float *)bufs[op->mask_out] : NULL, rows);
            break;
        case LRT_OP_LAST_STATE: {
            const float *s = (const float *)bufs[op->x];
            float *y = (float *)bufs[op->y];
            for (int d = 0; d < op->ndir; d++)
                for (int b = 0; b < B; b++)
                    memcpy(y + (size_t)b * op->ndir * H + d * H, s + ((size_t)d * bcap + b) * H, H * sizeof(float));
            break;
        }
        case LRT_OP_SELECT_DIRECTION:
            memcpy(bufs[op->y], (const float *)bufs[op->x] + (size_t)op->dir * bcap * H, (size_t)B * H * sizeof(float));
            break;
        case LRT_OP_COPY_STATE:
            if (bufs[op->x])
                for (int d = 0; d < op->ndir; d++)
                    memcpy((float *)bufs[op->y] + (size_t)d * bcap * H, (const float *)bufs[op->x] + (size_t)d * bcap * H,
                           (size_t)B * H * sizeof(float));
            break;
        case LRT_OP_REVERSE_TIME: {
            size_t step = (size_t)B * op->in_f;
            int t = T[op->time];
            const float *x = (const float *)bufs[op->x];
            float *y = (float *)bufs[op->y];
            for (int s = 0; s < t; s++)
                memcpy(y + (size_t)s * step, x + (size_t)(t - 1 - s) * step, step * sizeof(float));
            break;
        }
        case LRT_OP_JOIN:
            join(op, bufs, rows);
            break;
        default:
            rc = -99;
        }
        if (rc != LRT_OK) {
            if (failed) *failed = i;
            return rc;
        }
    }
    return LRT_OK;
}

size_t lrt_plan_workspace_floats(const lrt_op *ops, int nops, const int *T, int B)
{
    size_t need = 16;
    for (int i = 0; i < nops; i++) {
        const lrt_op *op = &ops[i];
        size_t n = 0;
        if (op->kind == LRT_OP_RECURRENT)
            for (int d = 0; d < op->ndir; d++) {
                size_t w = lrt_workspace_floats(&op->cells[d], T[op->time], B);
                n = w > n ? w : n;
            }
        else if (op->kind == LRT_OP_DENSE)
            n = lrt_matmul_scratch_floats((int)rows_of(op, T, B), op->in_f);
        need = n > need ? n : need;
    }
    return need;
}
