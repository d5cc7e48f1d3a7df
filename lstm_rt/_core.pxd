# Declarations of the C kernels (lstm_rt/kernels/lrt_kernels.h); nothing else.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t

cdef extern from "lrt_kernels.h" nogil:
    enum: LRT_LANES
    enum: LRT_SIGMOID, LRT_TANH, LRT_RELU, LRT_AFFINE, LRT_LEAKYRELU, LRT_THRESHOLDEDRELU
    enum: LRT_SCALEDTANH, LRT_HARDSIGMOID, LRT_ELU, LRT_SOFTSIGN, LRT_SOFTPLUS
    enum: LRT_DENSE_LINEAR, LRT_DENSE_RELU, LRT_DENSE_TANH, LRT_DENSE_SIGMOID, LRT_DENSE_SOFTMAX
    enum: LRT_DENSE_LOG_SOFTMAX
    ctypedef struct lrt_act:
        int kind
        float alpha
        float beta
    enum: LRT_CELL_LSTM, LRT_CELL_GRU, LRT_CELL_RNN
    enum: LRT_F32, LRT_F16, LRT_I8
    ctypedef struct lrt_mat:
        int dtype
        const void *data
        const float *scale
        const int32_t *colsum
        int nblk, K, gw
        int act8
    ctypedef struct lrt_cell:
        int kind
        int in_size, H, Hr, nblk
        int gates
        lrt_mat w
        const float *bias
        lrt_mat r
        lrt_mat r_h
        const float *bias_rh
        const float *peep
        lrt_mat proj
        lrt_act act[3]
        float clip
        int input_forget
        int linear_before_reset
        int zero_masked_output
    const char *lrt_isa_name()
    int lrt_top_k(const float *scores, int n, const int64_t *ids, int k, int64_t *out, float *best)
    uint64_t lrt_probe_read(const void *buf, size_t n, int passes)
    double lrt_probe_fma(long iters)
    int lrt_init(const char *force)
    int lrt_cpu_has_avx2_fma()
    int lrt_cpu_isa_level()
    int lrt_isa_level()
    int lrt_isa_count()
    void lrt_gemm_panels_generic(int M, int K, const float *A, int lda, const float *Wp, int nblk, int gw,
                                 const float *bias, float *C, int ldc, int ncols)
    void lrt_gemm_panels_avx2(int M, int K, const float *A, int lda, const float *Wp, int nblk, int gw,
                              const float *bias, float *C, int ldc, int ncols)
    void lrt_gemm_panels(int M, int K, const float *A, int lda, const float *Wp, int nblk, int gw,
                         const float *bias, float *C, int ldc, int ncols)
    void lrt_activate(lrt_act act, float *x, int n)
    size_t lrt_workspace_floats(const lrt_cell *cell, int T, int B)
    enum: LRT_OK, LRT_ERR_LENS
    int lrt_recurrent_sequence(const lrt_cell *cell, int T, int B, const float *x, int ldx,
                                const int32_t *lens, const uint8_t *mask, int reverse, float *h, float *c,
                                float *y, int ldy, float *ws)
    void lrt_matmul(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                    float *C, int ldc, int ncols, float *scratch)
    size_t lrt_matmul_scratch_floats(int M, int K)
    void lrt_embed(int dtype, const void *table, const float *scale, int E, const int64_t *ids, int n,
                   float *out, int ldo)
    ctypedef struct lrt_kernels:
        const char *name
        int level
    const lrt_kernels *lrt_kernels_of(int level)
    void lrt_matmul_with(const lrt_kernels *k, int M, const float *A, int lda, const lrt_mat *W,
                         const float *bias, float *C, int ldc, int ncols, float *scratch)
    double lrt_act_qmax(const lrt_mat *W)
    int lrt_i8_colsums(const lrt_mat *W, int32_t *out)
    void lrt_dense(int M, int O, const float *x, int ldx, const lrt_mat *W, const float *bias,
                   int act, float *y, int ldy, float *scratch)

cdef extern from "lrt_plan.h" nogil:
    enum: LRT_OP_EMBED, LRT_OP_RECURRENT, LRT_OP_DENSE, LRT_OP_MERGE, LRT_OP_MASK_IDS, LRT_OP_MASK_VALUE
    enum: LRT_OP_LAST_STATE, LRT_OP_SELECT_DIRECTION, LRT_OP_COPY_STATE, LRT_OP_REVERSE_TIME, LRT_OP_JOIN
    enum: LRT_JOIN_CONCAT, LRT_JOIN_SUM, LRT_JOIN_SUB, LRT_JOIN_MUL, LRT_JOIN_AVE, LRT_JOIN_MAX, LRT_JOIN_MIN
    enum: LRT_MERGE_SUM, LRT_MERGE_MUL, LRT_MERGE_AVE
    ctypedef struct lrt_op:
        int kind, time, x, y, in_f, out_f
        int lens, mask, h, c, ndir
        const lrt_cell *cells
        const int *reverse
        const lrt_mat *mat
        const float *bias
        int act, dtype
        const void *table
        const float *scale
        int mode, parts, n_in
        const int *ins
        const int *in_feats
        float value
        int dir, mask_out
    int lrt_plan_run(const lrt_op *ops, int nops, void *const *bufs, const int *T, int B, int bcap,
                     float *ws, int *failed)
    size_t lrt_plan_workspace_floats(const lrt_op *ops, int nops, const int *T, int B)
