/* lstm_rt C kernels: packed-panel matrix products, activations, recurrent cells.
 *
 * Design:
 * - Weights arrive packed once, at conversion time, in "panels": a matrix M [G*H, K]
 *   holding G gates of H units becomes [nblk][K][G][8] with nblk = ceil(H/8). One pass
 *   over k then yields an 8-unit block of every gate, so a cell's nonlinearity runs on
 *   values still hot in cache, and a SIMD kernel loads each weight exactly once.
 *   Gate-blocked vectors (biases, pre-activations) use the matching [nblk][G][8] order:
 *   unit u of gate g lives at (u / 8) * G * 8 + g * 8 + u % 8. For G = 1 that is simply
 *   the unit index, padded to a multiple of 8.
 * - Kernels never allocate; callers hand in a workspace sized by lrt_workspace_floats.
 * - Every function here is safe to call without the GIL: no Python, no globals written
 *   after lrt_init().
 * - Kernel levels, each a table of function pointers (lrt_kernels), one picked once by
 *   lrt_init. Every build has generic (portable C, every file); x86-64 adds avx2 (the
 *   *_avx2.c files) and avx512vnni (avx2 plus lrt_matmul_vnni.c for int8 products and
 *   lrt_gemm_avx512.c for fp32 batches);
 *   aarch64 adds neon (the *_neon.c files: ARMv8.0 Advanced SIMD, which every AArch64
 *   Linux CPU has) and neondot (neon plus SDOT int8 products, for CPUs with the ARMv8.2
 *   dot-product extension). lrt_dispatch.c holds them. The SIMD files compile with
 *   per-function target attributes, never -march, so one build runs on every CPU of its
 *   architecture; off their architecture they compile to nothing (or portable stand-ins).
 *
 * Files: lrt_dispatch.c the kernel tables, lrt_init, lrt_matmul; lrt_gemm*.c fp32
 * products (lrt_gemm_neon.c also fp16, and the aarch64 CPU probe); lrt_matmul*.c
 * fp16/int8 products and the activation quantizer; lrt_recurrent.c a layer over a
 * sequence (portable cell math); lrt_cell_avx2.c / lrt_cell_neon.c fused cell updates;
 * lrt_act*.c activations (vector math in lrt_vmath_avx2.h / lrt_vmath_neon.h);
 * lrt_dense.c; lrt_topk.c; lrt_probe.c (benchmark probes). tests/kernels/ holds a C
 * driver that checks every level's kernels against the generic ones (also under
 * qemu-aarch64).
 */
#ifndef LRT_KERNELS_H
#define LRT_KERNELS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define LRT_LANES 8

/* Activation kinds: the ONNX recurrent-operator activation functions. */
enum {
    LRT_SIGMOID = 0, LRT_TANH, LRT_RELU, LRT_AFFINE, LRT_LEAKYRELU, LRT_THRESHOLDEDRELU,
    LRT_SCALEDTANH, LRT_HARDSIGMOID, LRT_ELU, LRT_SOFTSIGN, LRT_SOFTPLUS
};

typedef struct { int kind; float alpha, beta; } lrt_act;

/* Weight storage types. */
enum { LRT_F32 = 0, LRT_F16 = 1, LRT_I8 = 2 };

/* A packed weight matrix: nblk panels of K rows by gw (= gates * 8) columns.
 *   LRT_F32  float    [nblk][K][gw]
 *   LRT_F16  uint16_t [nblk][K][gw]       IEEE half, widened to float on the fly
 *   LRT_I8   int8_t   [nblk][K4][gw][4]   K4 = ceil(K / 4): the weights of rows 4p..4p+3
 *            sit side by side, the operand order of the 4-way byte dot product (VNNI)
 *            and of two byte pair multiply-adds (AVX2);
 *            every weight in [-127, 127] (the Cython boundary refuses -128);
 *            scale [nblk * gw] floats, one per output column (symmetric, zero point 0);
 *            colsum [nblk * gw] int32, each column's sum of int8 weights (the VNNI kernels
 *            need it to undo the offset that makes activation bytes unsigned).
 *
 * int8 products, the sums every kernel level computes (bit for bit the same floats):
 *   each row a of A is quantized with one scale, s = amax / qmax, q_k = rint(a_k / s)
 *   (computed as a_k * (float)(qmax / amax), ties to even; a row holding NaN/inf gives NaN),
 *   C[m, j] = (float)(sum_k W[k, j] q_k) * (s * scale[j]) + bias[j], the sum exact in int32.
 *   qmax = lrt_act_qmax(W): 64 when act8 (|q| <= 64 fits a byte), else 2047 (12 bits: two
 *   6-bit planes), the bounds of the AVX2 byte kernels; in both cases capped so that no
 *   int32 sum can overflow. */
typedef struct {
    int dtype;
    const void *data;
    const float *scale;
    const int32_t *colsum;
    int nblk, K, gw;
    int act8;   /* int8 weights meet 8-bit activations (|q| <= LRT_ACT8_QMAX): set for the
                 * recurrent products (R h, the projection), whose operands are bounded states */
} lrt_mat;

/* The activation range of act8 matrices. Why 64: the AVX2 and VNNI kernels take unsigned
 * bytes u = q + 64 in [0, 128] and multiply them by |w| <= 127 in vpmaddubsw, whose lanes
 * hold two products: |lane| <= 2 * 128 * 127 = 32512 < 32767, so the instruction never
 * saturates (u up to 129 would still fit; a wider symmetric range would not). 129 levels
 * on a bounded state cost no accuracy that bench_accuracy can see; 8-bit inputs x (no
 * bound, Gaussian tails) doubled the error of h, so the input products keep 12-bit
 * activations. */
#define LRT_ACT8_QMAX 64

/* The activation range of every other int8 matrix (input products, Dense layers). Why
 * 2047: the AVX2 kernel takes u = q + 2048 in [1, 4095] as two unsigned 6-bit planes,
 * u = 64 hi + lo, and multiplies each plane byte (<= 63) by the weights in vpmaddubsw:
 * |lane| <= 2 * 63 * 127 = 16002, two quad-rows add in int16 (<= 32004), and no weight is
 * widened, so a single row costs 6 integer multiplies per 64 products against 8 for 16-bit
 * activations (batches of 8 rows or more widen each pass's weights once and take the same
 * q as int16 in vpmaddwd: 4 per 64). 4095 levels on one row's range are 32 times finer
 * than the 8-bit weights' 255 on one column's; bench_accuracy sees no change from 15 bits. */
#define LRT_ACT12_QMAX 2047

/* The largest activation for K inputs: K4 * 4 products of |w| <= 127 times |q| <= qmax
 * stay below 2^31, so every int32 sum is exact. At most LRT_ACT8_QMAX (act8 matrices) or
 * LRT_ACT12_QMAX (see above); the int32 cap binds only past K = 8,260 (264,000 for act8). */
static inline double lrt_act_qmax(const lrt_mat *W)
{
    /* floor(2^31-1 / (127 * 4 * K4)), in integers and without a division where the cap binds
     * (every K below 516): a double division and libm's floor were ~5% of a small int8 step,
     * asked for once per product; inline, as a call was ~20 more */
    unsigned cap = W->act8 ? LRT_ACT8_QMAX : LRT_ACT12_QMAX;
    uint64_t k4 = W->K > 0 ? (uint64_t)(W->K + 3) / 4 : 0;
    if (k4 == 0 || 508u * k4 * cap <= 2147483647u) return cap;
    return (double)(2147483647u / (508u * k4));
}

/* Recurrent cell kinds. */
enum { LRT_CELL_LSTM = 0, LRT_CELL_GRU = 1, LRT_CELL_RNN = 2 };

/* One direction of one recurrent layer: borrowed pointers into packed weights that the
 * Python objects own. Sizes: in_size inputs, H units, Hr = size of h (projection or H). */
typedef struct {
    int kind;
    int in_size, H, Hr, nblk; /* inputs, units, size of h; nblk = ceil(H / 8) */
    int gates;               /* 4 (LSTM), 3 (GRU), 1 (RNN) */
    lrt_mat w;               /* K = in_size, gw = gates*8                                  */
    const float *bias;       /* [nblk*gates*8]: Wb + Rb (GRU with lbr: Wb+Rb for z, r; Wb for h) */
    lrt_mat r;               /* LSTM/RNN/GRU-lbr: K = Hr, gw = gates*8; GRU no lbr: K = H, gw = 16 (z, r) */
    lrt_mat r_h;             /* GRU without lbr: K = H, gw = 8, applied to r * h; else data NULL */
    const float *bias_rh;    /* GRU with lbr: bias added to R h, [nblk*24] (zero for z, r; Rb_h for h); else NULL */
    const float *peep;       /* LSTM: [3][H] peepholes i, o, f; or NULL */
    lrt_mat proj;            /* LSTM: K = H, gw = 8, nblk = ceil(Hr / 8) output projection; else data NULL */
    lrt_act act[3];          /* LSTM f, g, h; GRU f, g; RNN f */
    float clip;              /* <= 0: no clipping */
    int input_forget;        /* LSTM: f = 1 - i */
    int linear_before_reset; /* GRU */
    int zero_masked_output;  /* with a mask: masked steps output 0 instead of repeating h */
} lrt_cell;

/* Pick the kernels for this CPU, once, before any other call. x86-64: "avx512vnni" (the
 * AVX2 + FMA kernels, int8 products by AVX-512 VNNI byte dot products on 256-bit vectors)
 * when the CPU has it, else "avx2" (AVX2 + FMA + F16C), else "generic" (portable C).
 * aarch64: "neondot" (the NEON kernels, int8 products by SDOT) when the CPU has the
 * dot-product extension, else "neon", else "generic". force: NULL/"" = detect, or one of
 * the names of this build's levels (lrt_kernels_of). Returns 0, -1 for an unknown name,
 * -2 when the CPU lacks the forced ISA. Not thread-safe: call it before any kernel runs
 * (the test driver calls it again between checks, on one thread). */
int lrt_init(const char *force);
const char *lrt_isa_name(void);

/* The kernels of one level, chosen once (as onnxruntime's MLAS platform table): lrt_init
 * points the active table at the best level the CPU runs (or the forced one), and the hot
 * entry points call through it without asking the CPU again. */
typedef void (*lrt_matmul_fn)(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                              float *C, int ldc, int ncols, float *scratch);
typedef void (*lrt_gemm_fn)(int M, int K, const float *A, int lda, const float *Wp, int nblk, int gw,
                            const float *bias, float *C, int ldc, int ncols);
typedef struct {
    const char *name;
    int level;                          /* LRT_ISA_* */
    lrt_matmul_fn matmul[3];            /* by weight type LRT_F32, LRT_F16, LRT_I8 */
    lrt_gemm_fn gemm_panels;            /* fp32 products (matmul[LRT_F32] wraps it) */
    void (*sigmoid)(float *x, int n);   /* NULL: the portable activation loop */
    void (*tanh)(float *x, int n);
    float (*exp_sum)(float *x, int n, float shift, int store);  /* lrt_exp_sum */
    /* the fused cell updates (lrt_cell_avx2.c, lrt_cell_neon.c; see lrt_cell_fused_ok);
     * NULL: the portable cell math of lrt_recurrent.c */
    void (*lstm_cell)(const lrt_cell *cl, const float *xp, const float *pr, float *c, float *h);
    void (*gru_cell_a)(const lrt_cell *cl, const float *xp, const float *pr, const float *h,
                       float *z, float *rh, float *hnew);
    void (*gru_cell_b)(const lrt_cell *cl, const float *xp, const float *hn, const float *z,
                       const float *h, float *hnew);
    /* one step of one row with fp32 weights, R h and the cell update block by block
     * (lrt_step_fused_with says for which cells): reads x and h, writes W x + bias to xp
     * (nblk * gw floats), c in place and the new h to hnew (whole 8-unit blocks); the bits
     * of products then cell. NULL: products, then the cell */
    void (*step_f32)(const lrt_cell *cl, const float *x, const float *h, float *c, float *hnew,
                     float *xp);
} lrt_kernels;

/* Level `level`'s table (NULL past this build's last level); run its kernels only on a
 * CPU with that level (lrt_cpu_isa_level). lrt_kernels_active: the table lrt_init chose.
 * lrt_isa_count: how many levels this build has (3: the aarch64 ones in an aarch64 build,
 * else the x86-64 ones, which on any other CPU report that they cannot run). */
int lrt_isa_count(void);
const lrt_kernels *lrt_kernels_of(int level);
const lrt_kernels *lrt_kernels_active(void);
/* lrt_matmul with a given level's kernels (tests compare the levels with it). */
void lrt_matmul_with(const lrt_kernels *k, int M, const float *A, int lda, const lrt_mat *W,
                     const float *bias, float *C, int ldc, int ncols, float *scratch);

/* The k largest of scores[ids[i]] (or scores[i] when ids is NULL) for i < n, best first:
 * writes their ids to out and scores to best (k slots each); returns how many (< k when
 * n < k or scores are NaN). */
int lrt_top_k(const float *scores, int n, const int64_t *ids, int k, int64_t *out, float *best);

/* Benchmark probes (lrt_probe.c): XOR-reads a 32-byte aligned buf of n bytes `passes`
 * times; runs `iters` rounds of independent FMA chains and returns the FLOPs done. */
uint64_t lrt_probe_read(const void *buf, size_t n, int passes);
double lrt_probe_fma(long iters);
int lrt_cpu_has_avx2_fma(void);
int lrt_cpu_has_avx512vnni(void);  /* with AVX-512 VL and BW, and the OS saving their state */

/* C[m, j] = bias[j] + sum_k A[m, k] * panel(Wp)[k, j] for m < M and j < ncols, where the
 * panel matrix has nblk * gw columns (gw = gates * 8) and ncols falls in the last panel,
 * (nblk - 1) * gw < ncols <= nblk * gw (as for every product here: the AVX2 kernels rely
 * on it). bias may be NULL (zero). */
void lrt_gemm_panels(int M, int K, const float *A, int lda, const float *Wp, int nblk, int gw,
                     const float *bias, float *C, int ldc, int ncols);

/* The implementations behind lrt_gemm_panels (tests call both). */
void lrt_gemm_panels_generic(int M, int K, const float *A, int lda, const float *Wp, int nblk, int gw,
                             const float *bias, float *C, int ldc, int ncols);
/* The vector levels' order (avx2, avx512vnni, neon: the same bits). A matrix of at most
 * LRT_SPLIT_BYTES (lrt_f32_split): each column's sum is S_even + S_odd, S_even = bias, then
 * one fused multiply-add per even k in order, S_odd = 0, then one per odd k in order; the
 * two independent sums per column let a single row (a streaming step) read such a matrix,
 * which sits in L2, one panel at a time as one stream. A larger one: bias, then one fused
 * multiply-add per k in order (a single row reads three panels at once: more misses in
 * flight from L3 or memory). The generic kernel sums in k order, multiply then add
 * (within rounding). */
#define LRT_SPLIT_BYTES (256 << 10)
static inline int lrt_f32_split(int K, int nblk, int gw)
{
    return (size_t)K * (size_t)nblk * (size_t)gw * sizeof(float) <= LRT_SPLIT_BYTES;
}
void lrt_gemm_panels_avx2(int M, int K, const float *A, int lda, const float *Wp, int nblk, int gw,
                          const float *bias, float *C, int ldc, int ncols);
/* avx512vnni level (lrt_gemm_avx512.c): batches in 8-row tiles of 512-bit FMAs, the other
 * rows by lrt_gemm_panels_avx2; the same bits. */
void lrt_gemm_panels_avx512(int M, int K, const float *A, int lda, const float *Wp, int nblk, int gw,
                            const float *bias, float *C, int ldc, int ncols);

/* C[m, j] = bias[j] + sum_k A[m, k] W[k, j] for m < M, j < ncols, any weight type.
 * scratch: lrt_matmul_scratch_floats(M, K) floats (int8 weights quantize A into it). */
void lrt_matmul(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                float *C, int ldc, int ncols, float *scratch);
size_t lrt_matmul_scratch_floats(int M, int K);

/* Embedding lookup: out row i = table[ids[i]] widened to float (ids already range-checked).
 * table [V][E] as dtype; int8 rows have one scale each (scale [V]). */
void lrt_embed(int dtype, const void *table, const float *scale, int E, const int64_t *ids, int n,
               float *out, int ldo);

/* Per-type implementations behind lrt_matmul (the tests call each). */
void lrt_matmul_f16_generic(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                            float *C, int ldc, int ncols);
void lrt_matmul_f16_avx2(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                         float *C, int ldc, int ncols);
/* int8, A already quantized: q [M][K4 * 4] int16 (zero padded), ascale [M] */
void lrt_matmul_i8_generic(int M, const int16_t *q, const float *ascale, const lrt_mat *W,
                           const float *bias, float *C, int ldc, int ncols);
/* A row quantizer: a's K values with one scale (into *scale) as the level's kernels take
 * them, written to q (int16 values, act8 bytes or the AVX2 12-bit planes, zero padded to
 * K4 * 4 values); returns 1 for a row with NaN/inf. */
typedef int (*lrt_quantize_fn)(const float *a, int K, double qmax, void *q, float *scale);
/* Every row of A quantized by `quantize` into qs bytes per row of q, its scale into ascale;
 * rows with NaN/inf get scale NaN and zero bytes (NaN in, NaN out). Inline: with the
 * quantizer a constant the call is direct (through the pointer a tiny step paid ~60
 * instructions a product). */
static inline void lrt_quantize_rows(int M, const float *A, int lda, const lrt_mat *W, void *q, size_t qs,
                                     float *ascale, lrt_quantize_fn quantize)
{
    double qmax = lrt_act_qmax(W);
    for (int m = 0; m < M; m++)
        if (quantize(A + (size_t)m * lda, W->K, qmax, (char *)q + m * qs, ascale + m)) {
            ascale[m] = NAN;
            memset((char *)q + m * qs, 0, qs);
        }
}
/* The whole int8 product of each level (quantize A into scratch, then the kernel): the
 * lrt_kernels.matmul[LRT_I8] entries. */
void lrt_i8_generic(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                    float *C, int ldc, int ncols, float *scratch);
void lrt_i8_avx2(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                 float *C, int ldc, int ncols, float *scratch);
void lrt_i8_vnni(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                 float *C, int ldc, int ncols, float *scratch);
/* lrt_matmul's activation quantizer with AVX2 (same results as the portable one), to
 * int16 and (act8, |q| <= 64) to bytes u = q + 64 (lrt_quantize_fn); and the VNNI byte
 * split. */
int lrt_quantize_row_avx2(const float *a, int K, double qmax, void *q, float *scale);
int lrt_quantize_row_u8_avx2(const float *a, int K, double qmax, void *q, float *scale);
void lrt_split_bytes_avx2(const int16_t *q, int n, uint8_t *hi, uint8_t *lo);
/* out [nblk * gw]: each column's sum of int8 weights (lrt_mat.colsum). Returns how many
 * weights are -128 (the kernels need [-127, 127]; the caller refuses such matrices). */
int lrt_i8_colsums(const lrt_mat *W, int32_t *out);
/* VNNI: each int16 activation q = 256 * (hi - 128) + lo as two unsigned byte planes,
 * bytes [M][2][K4 * 4] (hi plane, then lo plane, per row); act8 matrices one plane,
 * u = q + 64, bytes [M][K4 * 4]; exact like the others. */
void lrt_matmul_i8_vnni(int M, const uint8_t *planes, const float *ascale, const lrt_mat *W,
                        const float *bias, float *C, int ldc, int ncols);
/* Kernel levels, in order: each one's CPU also runs the ones below it. The levels above
 * generic belong to one architecture each, so their numbers overlap: a build has either
 * the x86-64 ones or the aarch64 ones (lrt_kernels_of(level)->name tells which). */
enum { LRT_ISA_GENERIC = 0, LRT_ISA_AVX2 = 1, LRT_ISA_AVX512VNNI = 2 };  /* x86-64 */
enum { LRT_ISA_NEON = 1, LRT_ISA_NEONDOT = 2 };                           /* aarch64 */
int lrt_isa_level(void);  /* the active table's level */
int lrt_cpu_isa_level(void);

/* In-place activation of n values (sigmoid and tanh vectorized when lrt_init chose avx2). */
void lrt_activate(lrt_act act, float *x, int n);
void lrt_sigmoid_avx2(float *x, int n);
void lrt_tanh_avx2(float *x, int n);

/* sum_j e^(x[j] - shift) over n values, the softmax denominator (shift: their max, so no
 * term overflows); store: also write each e^(x[j] - shift) over x[j]. With the active
 * table's kernel: the vector exp of sigmoid/tanh (libm's expf costs 5-20 ns a value, and a
 * next-word head has thousands), the terms summed in 8 lanes then pairwise, the same order
 * at every vector level. */
float lrt_exp_sum(float *x, int n, float shift, int store);
float lrt_exp_sum_generic(float *x, int n, float shift, int store);
float lrt_exp_sum_avx2(float *x, int n, float shift, int store);

/* The fused AVX2 cell updates (lrt_cell_avx2.c) for one row of a step, and whether a cell
 * can use the active table's fused updates. xp, pr: gate-blocked W x + b and R h (+ b);
 * outputs padded to whole blocks. */
int lrt_cell_fused_ok(const lrt_cell *cl);  /* with the active table */
static inline int lrt_cell_fused_with(const lrt_kernels *k, const lrt_cell *cl)
{
    if (!k->lstm_cell || cl->clip > 0.0f) return 0;
    if (cl->act[0].kind != LRT_SIGMOID || cl->act[1].kind != LRT_TANH) return 0;
    if (cl->kind == LRT_CELL_LSTM)
        return cl->act[2].kind == LRT_TANH && !cl->peep && !cl->input_forget;
    return cl->kind == LRT_CELL_GRU;
}
/* k's fused step serves cl: fused cells, fp32 weights, an LSTM without projection or a
 * GRU with linear_before_reset (the other GRU needs all of r * h before its second product) */
static inline int lrt_step_fused_with(const lrt_kernels *k, const lrt_cell *cl)
{
    if (!k->step_f32 || !lrt_cell_fused_with(k, cl)) return 0;
    if (cl->w.dtype != LRT_F32 || cl->r.dtype != LRT_F32 || cl->w.gw != cl->r.gw || cl->w.nblk != cl->r.nblk)
        return 0;
    if (!lrt_f32_split(cl->w.K, cl->w.nblk, cl->w.gw) || !lrt_f32_split(cl->r.K, cl->r.nblk, cl->r.gw))
        return 0;
    if (cl->kind == LRT_CELL_LSTM) return !cl->proj.data && cl->w.gw == 32;
    return cl->kind == LRT_CELL_GRU && cl->linear_before_reset && cl->w.gw == 24;
}
void lrt_step_f32_avx2(const lrt_cell *cl, const float *x, const float *h, float *c, float *hnew,
                       float *xp);
void lrt_lstm_cell_avx2(const lrt_cell *cl, const float *xp, const float *pr, float *c, float *h);
void lrt_gru_cell_a_avx2(const lrt_cell *cl, const float *xp, const float *pr, const float *h,
                         float *z, float *rh, float *hnew);
void lrt_gru_cell_b_avx2(const lrt_cell *cl, const float *xp, const float *hn, const float *z,
                         const float *h, float *hnew);

/* ---- aarch64 (the *_neon.c files; defined only in aarch64 builds) ----
 * The neon level: fp32 and fp16 products (lrt_gemm_neon.c: the panel sums of the AVX2
 * kernels in their order, see lrt_f32_split; fp16 in k order; so the two levels give the
 * same bits), int8 products (lrt_matmul_neon.c: the documented exact sums, plain NEON
 * widening multiply-adds; the neondot level's by SDOT), sigmoid/tanh (lrt_act_neon.c, the
 * AVX2 algorithm step for step), fused cells (lrt_cell_neon.c). */
int lrt_cpu_has_neon(void);     /* Advanced SIMD (HWCAP_ASIMD on Linux) */
int lrt_cpu_has_neondot(void);  /* and the dot-product extension (HWCAP_ASIMDDP) */
void lrt_gemm_panels_neon(int M, int K, const float *A, int lda, const float *Wp, int nblk, int gw,
                          const float *bias, float *C, int ldc, int ncols);
void lrt_matmul_f16_neon(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                         float *C, int ldc, int ncols);
void lrt_i8_neon(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                 float *C, int ldc, int ncols, float *scratch);
void lrt_i8_neondot(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                    float *C, int ldc, int ncols, float *scratch);
void lrt_sigmoid_neon(float *x, int n);
void lrt_tanh_neon(float *x, int n);
float lrt_exp_sum_neon(float *x, int n, float shift, int store);
void lrt_lstm_cell_neon(const lrt_cell *cl, const float *xp, const float *pr, float *c, float *h);
void lrt_gru_cell_a_neon(const lrt_cell *cl, const float *xp, const float *pr, const float *h,
                         float *z, float *rh, float *hnew);
void lrt_gru_cell_b_neon(const lrt_cell *cl, const float *xp, const float *hn, const float *z,
                         const float *h, float *hnew);

/* Floats of workspace lrt_recurrent_sequence needs for T steps of B rows. */
size_t lrt_workspace_floats(const lrt_cell *cell, int T, int B);

/* Run one direction over a sequence.
 *   x      [T][B] rows of I floats, row (t, b) at x + (t*B + b) * ldx
 *   lens   [B] valid lengths (each <= T) or NULL (all T): steps past a length are skipped,
 *          their y rows zeroed; a length-0 row ends with h = c = 0 (onnxruntime's choice)
 *   mask   [T][B] 0/1 or NULL (Keras masking; lens is then ignored): a masked step keeps
 *          the state and outputs it again
 *   reverse  walk each sequence from its last valid step to its first
 *   h      [B][Hr] initial state in, final state out;  c [B][H] likewise (LSTM; else NULL)
 *   y      row (t, b) at y + (t*B + b) * ldy receives h_t (Hr floats); may be NULL
 *   ws     lrt_workspace_floats(cell, T, B) floats
 * Returns 0, or LRT_ERR_LENS (nothing computed, nothing written) when a length is negative
 * or past T: the lengths come from user input and are never trusted as loop bounds. */
enum { LRT_OK = 0, LRT_ERR_LENS = -1 };
int lrt_recurrent_sequence(const lrt_cell *cell, int T, int B, const float *x, int ldx,
                            const int32_t *lens, const uint8_t *mask, int reverse, float *h, float *c,
                            float *y, int ldy, float *ws);

/* y[m, :O] = act(x[m] @ W^T + bias), W packed with gw = 8, K = F; act is one of
 * LRT_DENSE_*. scratch: lrt_matmul_scratch_floats(M, F) floats. */
enum { LRT_DENSE_LINEAR = 0, LRT_DENSE_RELU, LRT_DENSE_TANH, LRT_DENSE_SIGMOID, LRT_DENSE_SOFTMAX,
       LRT_DENSE_LOG_SOFTMAX };
void lrt_dense(int M, int O, const float *x, int ldx, const lrt_mat *W, const float *bias,
               int act, float *y, int ldy, float *scratch);

#endif
