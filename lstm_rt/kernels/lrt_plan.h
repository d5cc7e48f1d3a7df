/* A compiled model: a list of operations over numbered buffers, run in one call without
 * the GIL. lstm_rt.plan compiles a model's graph into this form once; Model.run,
 * Stream.step/feed and StreamPool all execute it, so they compute the same numbers by
 * construction.
 *
 * Buffers (bufs[i], NULL = absent: an optional input that was not given):
 *   sequence  float [T][B][F]     rows (t, b) contiguous; T of the op's time slot
 *   ids       int64 [T][B]        token ids, range-checked by the caller
 *   mask      uint8 [T][B]        1 = the step counts (Keras masking)
 *   lens      int32 [B]           sequence lengths (checked against T by the recurrent kernel)
 *   static    float [B][F]        a layer's last output (no time axis)
 *   state     float [D][bcap][H]  direction d's rows at d * bcap * H: a state buffer is
 *                                 allocated for bcap rows and a run uses the first B
 */
#ifndef LRT_PLAN_H
#define LRT_PLAN_H

#include "lrt_kernels.h"

enum {
    LRT_OP_EMBED = 0,         /* y[r] = table[ids[r]]                          x ids -> y seq        */
    LRT_OP_RECURRENT,         /* every direction of a layer over x; h, c: its state buffers      */
    LRT_OP_DENSE,             /* y[r] = act(x[r] W + b) over rows (T*B, or B without time)       */
    LRT_OP_MERGE,             /* y[r] = x[r][0:F] op x[r][F:2F] op ...  (parts slices; sum/mul/ave) */
    LRT_OP_MASK_IDS,          /* mask = ids != 0                              x ids -> y mask      */
    LRT_OP_MASK_VALUE,        /* keep = any(x[r] != value): mask = keep, out = x * keep          */
    LRT_OP_LAST_STATE,        /* y[b] = [s[0][b], s[1][b], ...]               x state -> y static  */
    LRT_OP_SELECT_DIRECTION,  /* y[0][b] = s[dir][b]                          x state -> y state   */
    LRT_OP_COPY_STATE,        /* y = x (all directions, B rows); skipped when x is absent         */
    LRT_OP_REVERSE_TIME,      /* y[t] = x[T - 1 - t]                                              */
    LRT_OP_JOIN               /* y[r] = join(ins[0][r], ins[1][r], ...)  (concat or elementwise)  */
};

enum { LRT_JOIN_CONCAT = 0, LRT_JOIN_SUM, LRT_JOIN_SUB, LRT_JOIN_MUL, LRT_JOIN_AVE, LRT_JOIN_MAX,
       LRT_JOIN_MIN };
enum { LRT_MERGE_SUM = 0, LRT_MERGE_MUL, LRT_MERGE_AVE };

typedef struct {
    int kind;
    int time;              /* time slot of the op's sequences; -1: rows are B (no time axis)    */
    int x, y;              /* main input and output buffers (-1: none)                          */
    int in_f, out_f;       /* features of x and y rows (states: H)                              */
    /* LRT_OP_RECURRENT */
    int lens, mask, h, c;  /* buffers, -1: none (c only for LSTM)                               */
    int ndir;              /* directions (also of states in LAST_STATE / COPY_STATE)            */
    const lrt_cell *cells; /* [ndir]                                                            */
    const int *reverse;    /* [ndir]: 1 = walk the sequence backwards                           */
    /* LRT_OP_DENSE */
    const lrt_mat *mat;
    const float *bias;
    int act;
    /* LRT_OP_EMBED */
    int dtype;
    const void *table;
    const float *scale;
    /* glue */
    int mode, parts, n_in; /* MERGE/JOIN mode; MERGE slices; JOIN inputs                         */
    const int *ins;        /* JOIN: input buffers [n_in]                                        */
    const int *in_feats;   /* JOIN: their features [n_in]                                       */
    float value;           /* MASK_VALUE                                                        */
    int dir;               /* SELECT_DIRECTION                                                  */
    int mask_out;          /* MASK_VALUE: buffer of the masked features (-1: none)              */
} lrt_op;

/* Run ops[0..nops) over bufs with T[slot] time steps per time slot and B rows. ws holds
 * lrt_plan_workspace_floats(...) floats. Returns 0, or an LRT_ERR_* code with *failed set to
 * the index of the op that refused (nothing after it ran). */
int lrt_plan_run(const lrt_op *ops, int nops, void *const *bufs, const int *T, int B, int bcap,
                 float *ws, int *failed);

/* Floats of workspace lrt_plan_run needs for these sizes. */
size_t lrt_plan_workspace_floats(const lrt_op *ops, int nops, const int *T, int B);

#endif
