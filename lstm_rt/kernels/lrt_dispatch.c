/* The kernel tables, one per level, and the entry points that call through the active one.
 * Like onnxruntime's MLAS platform table: start from the portable table, probe the CPU once
 * (lrt_init, at import), point `active` at the best level it runs; afterwards a call costs
 * one indirect jump instead of a test of the CPU level per product. */
#include <string.h>
#include "lrt_kernels.h"

static void f32_product(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                        float *C, int ldc, int ncols, float *scratch, lrt_gemm_fn gemm)
{
    (void)scratch;
    gemm(M, W->K, A, lda, (const float *)W->data, W->nblk, W->gw, bias, C, ldc, ncols);
}

static void f32_generic(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                        float *C, int ldc, int ncols, float *scratch)
{
    f32_product(M, A, lda, W, bias, C, ldc, ncols, scratch, lrt_gemm_panels_generic);
}

static void f16_generic(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                        float *C, int ldc, int ncols, float *scratch)
{
    (void)scratch;
    lrt_matmul_f16_generic(M, A, lda, W, bias, C, ldc, ncols);
}

#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))

static void f32_neon(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                     float *C, int ldc, int ncols, float *scratch)
{
    f32_product(M, A, lda, W, bias, C, ldc, ncols, scratch, lrt_gemm_panels_neon);
}

static void f16_neon(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                     float *C, int ldc, int ncols, float *scratch)
{
    (void)scratch;
    lrt_matmul_f16_neon(M, A, lda, W, bias, C, ldc, ncols);
}

/* neondot differs from neon in its int8 products only. */
static const lrt_kernels tables[] = {
    {"generic", LRT_ISA_GENERIC, {f32_generic, f16_generic, lrt_i8_generic},
     lrt_gemm_panels_generic, NULL, NULL, lrt_exp_sum_generic, NULL, NULL, NULL, NULL},
    {"neon", LRT_ISA_NEON, {f32_neon, f16_neon, lrt_i8_neon},
     lrt_gemm_panels_neon, lrt_sigmoid_neon, lrt_tanh_neon, lrt_exp_sum_neon,
     lrt_lstm_cell_neon, lrt_gru_cell_a_neon, lrt_gru_cell_b_neon, NULL},
    {"neondot", LRT_ISA_NEONDOT, {f32_neon, f16_neon, lrt_i8_neondot},
     lrt_gemm_panels_neon, lrt_sigmoid_neon, lrt_tanh_neon, lrt_exp_sum_neon,
     lrt_lstm_cell_neon, lrt_gru_cell_a_neon, lrt_gru_cell_b_neon, NULL},
};

int lrt_cpu_isa_level(void)
{
    if (!lrt_cpu_has_neon()) return LRT_ISA_GENERIC;
    return lrt_cpu_has_neondot() ? LRT_ISA_NEONDOT : LRT_ISA_NEON;
}

#else  /* x86-64; on any other CPU the avx2 stand-ins report no AVX2, so generic runs */

static void f32_avx2(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                     float *C, int ldc, int ncols, float *scratch)
{
    f32_product(M, A, lda, W, bias, C, ldc, ncols, scratch, lrt_gemm_panels_avx2);
}

static void f32_avx512(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                       float *C, int ldc, int ncols, float *scratch)
{
    f32_product(M, A, lda, W, bias, C, ldc, ncols, scratch, lrt_gemm_panels_avx512);
}

static void f16_avx2(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                     float *C, int ldc, int ncols, float *scratch)
{
    (void)scratch;
    lrt_matmul_f16_avx2(M, A, lda, W, bias, C, ldc, ncols);
}

static const lrt_kernels tables[] = {
    {"generic", LRT_ISA_GENERIC, {f32_generic, f16_generic, lrt_i8_generic},
     lrt_gemm_panels_generic, NULL, NULL, lrt_exp_sum_generic, NULL, NULL, NULL, NULL},
    {"avx2", LRT_ISA_AVX2, {f32_avx2, f16_avx2, lrt_i8_avx2},
     lrt_gemm_panels_avx2, lrt_sigmoid_avx2, lrt_tanh_avx2, lrt_exp_sum_avx2,
     lrt_lstm_cell_avx2, lrt_gru_cell_a_avx2, lrt_gru_cell_b_avx2, lrt_step_f32_avx2},
    {"avx512vnni", LRT_ISA_AVX512VNNI, {f32_avx512, f16_avx2, lrt_i8_vnni},
     lrt_gemm_panels_avx512, lrt_sigmoid_avx2, lrt_tanh_avx2, lrt_exp_sum_avx2,
     lrt_lstm_cell_avx2, lrt_gru_cell_a_avx2, lrt_gru_cell_b_avx2, lrt_step_f32_avx2},
};

int lrt_cpu_isa_level(void)
{
    if (!lrt_cpu_has_avx2_fma()) return LRT_ISA_GENERIC;
    return lrt_cpu_has_avx512vnni() ? LRT_ISA_AVX512VNNI : LRT_ISA_AVX2;
}

#endif

#define NLEVELS ((int)(sizeof(tables) / sizeof(tables[0])))

static const lrt_kernels *active = &tables[LRT_ISA_GENERIC];  /* written by lrt_init */

int lrt_isa_count(void) { return NLEVELS; }

const lrt_kernels *lrt_kernels_of(int level)
{
    return level >= 0 && level < NLEVELS ? &tables[level] : NULL;
}

const lrt_kernels *lrt_kernels_active(void) { return active; }
const char *lrt_isa_name(void) { return active->name; }
int lrt_isa_level(void) { return active->level; }

int lrt_init(const char *force)
{
    int cpu = lrt_cpu_isa_level(), level = cpu;
    if (force && force[0]) {
        for (level = 0; level < NLEVELS && strcmp(force, tables[level].name) != 0; level++) {}
        if (level == NLEVELS) return -1;
        if (level > cpu) return -2;
    }
    active = &tables[level];
    return 0;
}

void lrt_gemm_panels(int M, int K, const float *A, int lda, const float *Wp, int nblk, int gw,
                     const float *bias, float *C, int ldc, int ncols)
{
    active->gemm_panels(M, K, A, lda, Wp, nblk, gw, bias, C, ldc, ncols);
}

/* Rows of A per kernel call: a chunk of A (<= 192 KiB as floats) stays in L2 while every
 * panel of W streams past it. The kernels walk panel by panel over all the rows they are
 * given, so without chunks a whole-sequence input projection (T * B rows) re-read all of A
 * from L3 once per panel: fp32 1600 x 256 @ 256 x 2048 ran at half the rate of 16 rows.
 * A multiple of 6 rows keeps the kernels' 2- and 3-row tiles whole. */
static int rows_per_chunk(int K)
{
    int rows = (192 * 1024) / (4 * (K > 0 ? K : 1));
    rows -= rows % 6;
    return rows < 48 ? 48 : rows;
}

void lrt_matmul_with(const lrt_kernels *k, int M, const float *A, int lda, const lrt_mat *W,
                     const float *bias, float *C, int ldc, int ncols, float *scratch)
{
    if (M <= 0 || W->nblk <= 0 || W->dtype < LRT_F32 || W->dtype > LRT_I8) return;
    if (M <= 48) {   /* one chunk (a step's rows): no division for its size */
        k->matmul[W->dtype](M, A, lda, W, bias, C, ldc, ncols, scratch);
        return;
    }
    int chunk = rows_per_chunk(W->K);
    for (int m = 0; m < M; m += chunk)   /* scratch serves each chunk in turn */
        k->matmul[W->dtype](M - m < chunk ? M - m : chunk, A + (size_t)m * lda, lda, W, bias,
                            C + (size_t)m * ldc, ldc, ncols, scratch);
}

void lrt_matmul(int M, const float *A, int lda, const lrt_mat *W, const float *bias,
                float *C, int ldc, int ncols, float *scratch)
{
    lrt_matmul_with(active, M, A, lda, W, bias, C, ldc, ncols, scratch);
}

int lrt_cell_fused_ok(const lrt_cell *cl) { return lrt_cell_fused_with(active, cl); }
