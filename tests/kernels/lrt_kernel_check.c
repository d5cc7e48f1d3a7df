/* Checks every kernel level this CPU runs against the generic (portable C) kernels, in C,
 * so that it runs the same natively (x86-64: avx2, avx512vnni) and cross-compiled under
 * qemu-aarch64 (neon, neondot), where no Python is at hand. Built and run by
 * tests/kernels/run_checks.sh and tests/test_kernel_check.py.
 *
 * For each level (lrt_init(name) switches the active table; one thread):
 *   products   fp32 / fp16 / int8 (12-bit and act8 activations) through lrt_matmul_with,
 *              random shapes (1-4 gates, odd K, ragged column counts, lda > K, ldc > ncols,
 *              1 to 200 rows so the row chunks split), zero / NaN rows:
 *              - int8: bit for bit the generic kernel's floats (the sums are exact);
 *              - fp32 / fp16: |level - generic| <= (K + 1) FLT_EPSILON (|bias| + sum |a w|)
 *                per output (the two sum the same terms in the same order, one with fused
 *                multiply-adds: each rounding differs by at most that);
 *              - every level: each row of a batch equals that row alone, bit for bit (a
 *                streaming step and a whole sequence give the same bits);
 *              - nothing is written past ncols columns or M rows.
 *   activations  all 11 kinds over 0-40 values (every vector tail): sigmoid and tanh within
 *              1e-6 of the exact function (double libm) over -100..100, a fine grid near 0
 *              and the specials; NaN stays NaN; the other kinds bit for bit the generic's.
 *              lrt_exp_sum (softmax sums): terms within 1e-6 relative, sums within
 *              (n + 8) FLT_EPSILON of the exact ones, every tail length.
 *   cells      LSTM (with / without projection, peepholes, clip, other activations), GRU
 *              (both reset forms), RNN; fp32 / fp16 / int8 weights; H and inputs odd:
 *              - a whole sequence == the same steps one call each, bit for bit;
 *              - the fused cell update == the portable cell math (forced by a no-op clip)
 *                with the same level's activations, bit for bit;
 *              - == the generic level within 2e-5 (max abs; seen: 3e-6 over 40 seeds),
 *                with lengths, both directions. int8 cells too: their products are exact,
 *                and though a sigmoid/tanh 1e-7 apart could round an 8-bit state to the
 *                next level (then ~1e-2 apart), no seed of 40 did (worst 2.4e-7).
 *   top-k      scores with ties and NaN, ids or none, bit for bit the generic's.
 * --digest prints a hash of each kernel family's outputs on fixed inputs, so runs on two
 * architectures can be compared (run_checks.sh: avx2 == neon == neondot, and the int8 and
 * generic products equal everywhere).
 *
 * Usage: lrt_kernel_check [--expect LEVEL,LEVEL...] [--digest] [--seed N]
 *   --expect  the levels above generic this CPU must offer (catches a probe that fails
 *             and silently leaves only generic): e.g. --expect neon on a Cortex-A53. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lrt_kernels.h"

static const char *level_name = "";
static long checks, failures;
/* the largest differences seen against generic, per level (printed: the tolerances' margins) */
static double worst_product_rel, worst_act, worst_cell_fp, worst_cell_i8;

#define CHECK(cond, ...)                                                                 \
    do {                                                                                 \
        checks++;                                                                        \
        if (!(cond)) {                                                                   \
            if (++failures <= 40) {                                                      \
                fprintf(stderr, "FAIL [%s] %s:%d: ", level_name, __func__, __LINE__);    \
                fprintf(stderr, __VA_ARGS__);                                            \
                fputc('\n', stderr);                                                     \
            }                                                                            \
        }                                                                                \
    } while (0)

/* ---- deterministic inputs: splitmix64, the same numbers on every platform ---- */

static uint64_t rng;
static uint64_t next_u64(void)
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static int irange(int lo, int hi) { return lo + (int)(next_u64() % (uint64_t)(hi - lo + 1)); }
static float unif(void) { return (float)((int32_t)(next_u64() >> 40) - (1 << 23)) * (1.0f / (1 << 23)); } /* [-1, 1) exactly */
static int pick(const int *v, int n) { return v[next_u64() % (uint64_t)n]; }
#define PICK(arr) pick(arr, (int)(sizeof(arr) / sizeof(arr[0])))

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(2); }
    return p;
}

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (e == 0x1f) bits = sign | 0x7f800000 | (man << 13);
    else if (e) bits = sign | ((e + 112) << 23) | (man << 13);
    else if (!man) bits = sign;
    else {
        int s = -1;
        do { man <<= 1; s++; } while (!(man & 0x400));
        bits = sign | ((uint32_t)(112 - s) << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static int same_bits(float a, float b)
{
    if (a != a && b != b) return 1;  /* NaN is NaN, whatever its payload */
    return memcmp(&a, &b, 4) == 0;
}

/* ---- weight matrices ---- */

typedef struct { lrt_mat m; void *data; float *scale; int32_t *colsum; } owned_mat;

/* A random packed matrix, every byte of it (padding rows and columns too) random.
 * extreme: int8 weights all +-127 (the largest sums). */
static void make_mat(owned_mat *o, int dtype, int K, int gw, int nblk, int act8, int extreme)
{
    memset(o, 0, sizeof(*o));
    int K4 = (K + 3) / 4;
    size_t n = (size_t)nblk * gw * (dtype == LRT_I8 ? 4 * (size_t)K4 : (size_t)K);
    float wmag = 1.0f / sqrtf((float)K);
    if (dtype == LRT_F32) {
        float *d = xmalloc(n * sizeof(float));
        for (size_t i = 0; i < n; i++) d[i] = unif() * wmag;
        o->data = d;
    } else if (dtype == LRT_F16) {
        uint16_t *d = xmalloc(n * sizeof(uint16_t));
        for (size_t i = 0; i < n; i++) {
            uint64_t r = next_u64();
            uint16_t sign = (uint16_t)((r & 1) << 15), man = (uint16_t)((r >> 1) & 0x3ff);
            int kind = (int)((r >> 11) % 64);
            if (kind == 0) d[i] = sign;                                  /* zero */
            else if (kind == 1) d[i] = sign | (man ? man : 1);            /* subnormal */
            else d[i] = sign | (uint16_t)((9 + (r >> 17) % 7) << 10) | man;  /* 2^-6 .. 2^0 */
        }
        o->data = d;
    } else {
        int8_t *d = xmalloc(n);
        for (size_t i = 0; i < n; i++) {
            int v = extreme ? ((next_u64() & 1) ? 127 : -127) : irange(-127, 127);
            if (!extreme && next_u64() % 16 == 0) v = (next_u64() & 1) ? 127 : -127;
            d[i] = (int8_t)v;
        }
        o->data = d;
        o->scale = xmalloc((size_t)nblk * gw * sizeof(float));
        for (int j = 0; j < nblk * gw; j++) o->scale[j] = (0.5f + 0.5f * fabsf(unif())) * wmag / 64.0f;
        o->colsum = xmalloc((size_t)nblk * gw * sizeof(int32_t));
    }
    o->m.dtype = dtype;
    o->m.data = o->data;
    o->m.scale = o->scale;
    o->m.colsum = NULL;
    o->m.nblk = nblk;
    o->m.K = K;
    o->m.gw = gw;
    o->m.act8 = act8;
    if (dtype == LRT_I8) {
        int lowest = lrt_i8_colsums(&o->m, o->colsum);
        if (lowest) { fprintf(stderr, "test bug: -128 weights\n"); exit(2); }
        o->m.colsum = o->colsum;
    }
}

static void free_mat(owned_mat *o)
{
    free(o->data);
    free(o->scale);
    free(o->colsum);
}

/* W[k, j] as a float (fp32 / fp16), j a column over all panels. */
static float weight_at(const lrt_mat *W, int k, int j)
{
    size_t i = (size_t)(j / W->gw) * W->K * W->gw + (size_t)k * W->gw + j % W->gw;
    return W->dtype == LRT_F32 ? ((const float *)W->data)[i] : half_to_float(((const uint16_t *)W->data)[i]);
}

/* ---- products ---- */

static const float SENTINEL = -12345.678f;

static void product(const lrt_kernels *k, int M, const float *A, int lda, const lrt_mat *W,
                    const float *bias, float *C, int ldc, int ncols)
{
    float *scratch = xmalloc(lrt_matmul_scratch_floats(M, W->K) * sizeof(float));
    lrt_matmul_with(k, M, A, lda, W, bias, C, ldc, ncols, scratch);
    free(scratch);
}

/* One random product: the level against generic, the row invariance, no stray writes. */
static void product_case(const lrt_kernels *lvl, int dtype, int act8, int gates, int K, int M,
                         int ncols, int nblk, int with_bias, int special_rows, int extreme)
{
    const lrt_kernels *gen = lrt_kernels_of(LRT_ISA_GENERIC);
    int gw = gates * 8, lda = K + irange(0, 3), ldc = ncols + irange(0, 3);
    owned_mat W;
    make_mat(&W, dtype, K, gw, nblk, act8, extreme);
    float *A = xmalloc((size_t)(M + 1) * lda * sizeof(float));
    for (int m = 0; m < M + 1; m++) {
        float rs = powf(10.0f, (float)irange(-3, 2));  /* rows of very different ranges */
        for (int i = 0; i < lda; i++) A[(size_t)m * lda + i] = extreme ? 1.0f : unif() * rs;
    }
    if (special_rows && M >= 3) {
        for (int i = 0; i < K; i++) A[(size_t)1 * lda + i] = 0.0f;  /* amax 0 */
        A[(size_t)2 * lda + K / 2] = NAN;                             /* NaN in, NaN out */
    }
    float *bias = NULL;
    if (with_bias) {
        bias = xmalloc((size_t)nblk * gw * sizeof(float));
        for (int j = 0; j < nblk * gw; j++) bias[j] = unif();
    }
    size_t csize = (size_t)(M + 1) * ldc;
    float *Cg = xmalloc(csize * sizeof(float)), *Cl = xmalloc(csize * sizeof(float));
    float *C1 = xmalloc((size_t)(ncols + 1) * sizeof(float));
    for (size_t i = 0; i < csize; i++) Cg[i] = Cl[i] = SENTINEL;
    product(gen, M, A, lda, &W.m, bias, Cg, ldc, ncols);
    product(lvl, M, A, lda, &W.m, bias, Cl, ldc, ncols);

    int bad_guard = 0, bad_val = 0, bad_row = 0;
    double worst = 0.0;
    for (int m = 0; m < M + 1; m++)
        for (int j = 0; j < ldc; j++) {
            size_t i = (size_t)m * ldc + j;
            if (m == M || j >= ncols) { bad_guard += !same_bits(Cl[i], SENTINEL); continue; }
            if (dtype == LRT_I8) { bad_val += !same_bits(Cl[i], Cg[i]); continue; }
            const float *a = A + (size_t)m * lda;
            double mag = bias ? fabs(bias[j]) : 0.0, d;
            for (int kk = 0; kk < K; kk++) mag += fabs((double)a[kk] * weight_at(&W.m, kk, j));
            if (Cg[i] != Cg[i] || Cl[i] != Cl[i]) { bad_val += (Cg[i] == Cg[i]) != (Cl[i] == Cl[i]); continue; }
            d = fabs((double)Cl[i] - Cg[i]);
            if (d > (K + 1) * (double)FLT_EPSILON * mag + FLT_MIN) bad_val++;
            if (mag > 0 && d / mag > worst) worst = d / mag;
        }
    if (worst > worst_product_rel) worst_product_rel = worst;
    /* each row alone (a step) == that row of the batch (a sequence), bit for bit; and the
     * batch shifted by one row (other tiles) too */
    for (int m = 0; m < M; m++) {
        for (int j = 0; j <= ncols; j++) C1[j] = SENTINEL;
        product(lvl, 1, A + (size_t)m * lda, lda, &W.m, bias, C1, ncols, ncols);
        for (int j = 0; j < ncols; j++) bad_row += !same_bits(C1[j], Cl[(size_t)m * ldc + j]);
        bad_guard += !same_bits(C1[ncols], SENTINEL);
    }
    if (M > 1) {
        float *Cs = xmalloc(csize * sizeof(float));
        product(lvl, M - 1, A + lda, lda, &W.m, bias, Cs, ldc, ncols);
        for (int m = 0; m + 1 < M; m++)
            for (int j = 0; j < ncols; j++) bad_row += !same_bits(Cs[(size_t)m * ldc + j], Cl[(size_t)(m + 1) * ldc + j]);
        free(Cs);
    }
    CHECK(!bad_val && !bad_row && !bad_guard,
          "dtype %d act8 %d gates %d K %d M %d ncols %d nblk %d bias %d: %d values off generic "
          "(worst rel %.3g), %d rows differ alone, %d stray writes",
          dtype, act8, gates, K, M, ncols, nblk, with_bias, bad_val, worst, bad_row, bad_guard);
    free(A); free(bias); free(Cg); free(Cl); free(C1);
    free_mat(&W);
}

static void check_products(const lrt_kernels *lvl)
{
    static const int Ks[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 45, 64, 100, 257};
    static const int Ms[] = {1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 33};
    for (int dtype = LRT_F32; dtype <= LRT_I8; dtype++)
        for (int act8 = 0; act8 <= (dtype == LRT_I8); act8++)
            for (int gates = 1; gates <= 4; gates++)
                for (int rep = 0; rep < 12; rep++) {
                    int K = PICK(Ks), M = PICK(Ms), nblk = irange(1, gates == 1 ? 12 : 4);
                    /* whole panels (recurrent products) or a ragged Dense width, in the
                     * last panel (the contract: ncols > (nblk - 1) * gw) */
                    int gw = gates * 8, ncols = rep % 2 ? nblk * gw : irange((nblk - 1) * gw + 1, nblk * gw);
                    product_case(lvl, dtype, act8, gates, K, M, ncols, nblk, rep % 3 != 0, rep % 4 == 1, 0);
                }
    /* fp32 matrices past LRT_SPLIT_BYTES take every k in order (a single row: three panels
     * at once), those up to it the even and the odd k's apart: both sides of the line (a
     * 4-panel LSTM matrix of K = 512 is exactly 256 KiB) and every panel width past it */
    for (int K = 512; K <= 513; K++) product_case(lvl, LRT_F32, 0, 4, K, 3, 4 * 32, 4, 1, 0, 0);
    product_case(lvl, LRT_F32, 0, 3, 1000, 2, 3 * 24, 3, 1, 0, 0);
    product_case(lvl, LRT_F32, 0, 2, 900, 4, 5 * 16 - 5, 5, 1, 0, 0);
    product_case(lvl, LRT_F32, 0, 1, 1100, 3, 8 * 8 - 3, 8, 1, 0, 0);
    /* many rows: lrt_matmul splits them into chunks (at least 48 rows each) */
    for (int dtype = LRT_F32; dtype <= LRT_I8; dtype++)
        product_case(lvl, dtype, 0, 4, 23, 200, 64, 2, 1, 1, 0);
    /* the largest int8 sums: every weight +-127, every activation at qmax; K from 8,261 on,
     * lrt_act_qmax binds below LRT_ACT12_QMAX, and the AVX2 kernel's offset sums
     * (sum w (q + 2048)) wrap around int32 before the offset comes off; 9 rows take the
     * AVX2 level's widened batch path */
    for (int act8 = 0; act8 <= 1; act8++)
        for (int K = 8259; K <= 8264; K++) product_case(lvl, LRT_I8, act8, 1, K, act8 ? 3 : K % 2 ? 3 : 9, 16, 2, 1, 0, 1);
    /* int8 batches with long rows: the AVX2 level widens the weights of a pass in chunks of
     * K (64 to 256 quad-rows by the pass's width), so every pass width spans several */
    for (int gates = 1; gates <= 4; gates++)
        product_case(lvl, LRT_I8, 0, gates, 1027, 8 + gates, irange((3 - 1) * 8 * gates + 1, 3 * 8 * gates), 3, 1, 0, 0);
}

/* ---- activations ---- */

static void check_activations(void)
{
    /* sigmoid and tanh against the exact function (as tests/test_core.py does for Python) */
    int n = 400001 + 40001 + 8;
    float *x = xmalloc((size_t)n * sizeof(float)), *y = xmalloc((size_t)n * sizeof(float));
    int i = 0;
    for (int j = 0; j < 400001; j++) x[i++] = (float)(-100.0 + 200.0 * j / 400000.0);
    for (int j = 0; j < 40001; j++) x[i++] = (float)(-0.2 + 0.4 * j / 40000.0);
    const float specials[8] = {0.0f, -0.0f, 1e-30f, -1e-30f, 3e38f, -3e38f, INFINITY, -INFINITY};
    memcpy(x + i, specials, sizeof(specials));
    for (int kind = LRT_SIGMOID; kind <= LRT_TANH; kind++) {
        memcpy(y, x, (size_t)n * sizeof(float));
        lrt_activate((lrt_act){kind, 0, 0}, y, n);
        double worst = 0.0;
        for (int j = 0; j < n; j++) {
            double want = kind == LRT_SIGMOID ? 1.0 / (1.0 + exp(-(double)x[j])) : tanh((double)x[j]);
            double d = fabs(y[j] - want);
            if (!(d <= worst)) worst = d;
        }
        CHECK(worst <= 1e-6, "%s: max abs error %.3g > 1e-6", kind == LRT_SIGMOID ? "sigmoid" : "tanh", worst);
        if (worst > worst_act) worst_act = worst;
        float nan[19];
        for (int j = 0; j < 19; j++) nan[j] = NAN;
        lrt_activate((lrt_act){kind, 0, 0}, nan, 19);
        int nans = 0;
        for (int j = 0; j < 19; j++) nans += nan[j] != nan[j];
        CHECK(nans == 19, "kind %d: NaN in, %d NaN out of 19", kind, nans);
    }
    free(x);
    free(y);
    /* every kind, every tail length: a value's result does not depend on where it sits,
     * and the kinds without a vector version are the generic loop's */
    const lrt_kernels *mine = lrt_kernels_active();
    for (int kind = LRT_SIGMOID; kind <= LRT_SOFTPLUS; kind++)
        for (int len = 0; len <= 40; len++) {
            float v[40], alone[40], gen[40];
            lrt_act act = {kind, 0.7f, 1.3f};
            for (int j = 0; j < len; j++) v[j] = unif() * 12.0f;
            memcpy(alone, v, sizeof(v));
            memcpy(gen, v, sizeof(v));
            lrt_activate(act, v, len);
            for (int j = 0; j < len; j++) lrt_activate(act, alone + j, 1);
            int off = 0;
            for (int j = 0; j < len; j++) off += !same_bits(v[j], alone[j]);
            if (kind != LRT_SIGMOID && kind != LRT_TANH) {
                lrt_init("generic");
                lrt_activate(act, gen, len);
                lrt_init(mine->name);
                for (int j = 0; j < len; j++) off += !same_bits(v[j], gen[j]);
            }
            CHECK(off == 0, "kind %d, %d values: %d differ alone or from generic", kind, len, off);
        }
    /* lrt_exp_sum (softmax denominators): every tail length and a long row; each term within
     * 1e-6 relative of exp (double libm) of x - shift and the same bits alone as in the row; the sum
     * within (n + 8) FLT_EPSILON relative of the exact one; store = 0 leaves x as it was */
    for (int len = 0; len <= 1100; len += len < 40 ? 1 : 353) {
        float *v = xmalloc((size_t)(len + 1) * sizeof(float)), *keep = xmalloc((size_t)(len + 1) * sizeof(float));
        float shift = 3.0f * unif();
        for (int j = 0; j < len; j++) v[j] = keep[j] = 20.0f * unif();
        float sum0 = lrt_exp_sum(v, len, shift, 0);
        int moved = 0;
        for (int j = 0; j < len; j++) moved += !same_bits(v[j], keep[j]);
        float sum1 = lrt_exp_sum(v, len, shift, 1);
        double exact = 0.0, worst = 0.0;
        int off = 0;
        for (int j = 0; j < len; j++) {
            double want = exp((double)(keep[j] - shift));   /* of the float difference the kernel takes */
            exact += want;
            double d = fabs(v[j] - want) / want;
            if (!(d <= worst)) worst = d;
            float alone = keep[j];
            lrt_exp_sum(&alone, 1, shift, 1);
            off += !same_bits(alone, v[j]);
        }
        CHECK(moved == 0 && same_bits(sum0, sum1), "exp_sum, %d values: store=0 moved %d, sums %g %g", len, moved, sum0, sum1);
        CHECK(worst <= 1e-6 && off == 0, "exp_sum, %d values: term error %.3g, %d differ alone", len, worst, off);
        CHECK(fabs(sum1 - exact) <= (len + 8) * FLT_EPSILON * exact, "exp_sum, %d values: sum %.9g, exact %.9g", len, sum1, exact);
        free(v);
        free(keep);
    }
    {
        float nan[11];
        for (int j = 0; j < 11; j++) nan[j] = j == 9 ? NAN : 0.5f;
        CHECK(isnan(lrt_exp_sum(nan, 11, 0.5f, 1)) && isnan(nan[9]) && nan[0] == 1.0f, "exp_sum: NaN in, not NaN out");
    }
}

/* ---- recurrent cells ---- */

typedef struct {
    lrt_cell cell;
    owned_mat w, r, r_h, proj;
    float *bias, *bias_rh, *peep;
} owned_cell;

static void make_cell(owned_cell *o, int kind, int dtype, int in_size, int H, int variant)
{
    memset(o, 0, sizeof(*o));
    lrt_cell *c = &o->cell;
    int gates = kind == LRT_CELL_LSTM ? 4 : kind == LRT_CELL_GRU ? 3 : 1, nblk = (H + 7) / 8;
    int has_proj = kind == LRT_CELL_LSTM && variant == 1, lbr = kind == LRT_CELL_GRU && variant != 1;
    int Hr = has_proj ? irange(1, H + 3) : H;
    c->kind = kind;
    c->in_size = in_size;
    c->H = H;
    c->Hr = Hr;
    c->nblk = nblk;
    c->gates = gates;
    make_mat(&o->w, dtype, in_size, gates * 8, nblk, 0, 0);
    c->w = o->w.m;
    o->bias = xmalloc((size_t)nblk * gates * 8 * sizeof(float));
    for (int j = 0; j < nblk * gates * 8; j++) o->bias[j] = 0.5f * unif();
    c->bias = o->bias;
    if (kind == LRT_CELL_GRU && !lbr) {
        make_mat(&o->r, dtype, H, 16, nblk, 1, 0);
        make_mat(&o->r_h, dtype, H, 8, nblk, 1, 0);
        c->r_h = o->r_h.m;
    } else {
        make_mat(&o->r, dtype, Hr, gates * 8, nblk, 1, 0);
    }
    c->r = o->r.m;
    if (lbr) {
        o->bias_rh = xmalloc((size_t)nblk * 24 * sizeof(float));
        for (int j = 0; j < nblk * 24; j++) o->bias_rh[j] = (j % 24) >= 16 ? 0.5f * unif() : 0.0f;
        c->bias_rh = o->bias_rh;
    }
    c->linear_before_reset = lbr;
    if (has_proj) {
        make_mat(&o->proj, dtype, H, 8, (Hr + 7) / 8, 1, 0);
        c->proj = o->proj.m;
    }
    for (int a = 0; a < 3; a++) c->act[a] = (lrt_act){a == 0 ? LRT_SIGMOID : LRT_TANH, 0, 0};
    if (kind == LRT_CELL_LSTM && variant == 2) {  /* the portable path's extras */
        o->peep = xmalloc((size_t)3 * H * sizeof(float));
        for (int j = 0; j < 3 * H; j++) o->peep[j] = 0.3f * unif();
        c->peep = o->peep;
        c->clip = 2.5f;
    }
    if (variant == 3) {  /* other activations: the portable cell math */
        c->act[0] = (lrt_act){LRT_HARDSIGMOID, 0.2f, 0.5f};
        c->act[1] = (lrt_act){LRT_SOFTSIGN, 0, 0};
        c->act[2] = (lrt_act){LRT_ELU, 1.0f, 0};
        c->input_forget = kind == LRT_CELL_LSTM;
    }
}

static void free_cell(owned_cell *o)
{
    free_mat(&o->w); free_mat(&o->r); free_mat(&o->r_h); free_mat(&o->proj);
    free(o->bias); free(o->bias_rh); free(o->peep);
}

/* Run T steps of B rows from the given state; y [T][B][Hr]. */
static void run_cell(const lrt_cell *c, int T, int B, const float *x, const int32_t *lens, int reverse,
                     float *h, float *cs, float *y)
{
    float *ws = xmalloc(lrt_workspace_floats(c, T, B) * sizeof(float));
    int rc = lrt_recurrent_sequence(c, T, B, x, c->in_size, lens, NULL, reverse, h, cs, y, c->Hr, ws);
    if (rc != LRT_OK) { fprintf(stderr, "lrt_recurrent_sequence: %d\n", rc); exit(2); }
    free(ws);
}

static void check_cells(const lrt_kernels *lvl)
{
    static const int Hs[] = {1, 2, 4, 5, 7, 8, 11, 13, 16, 17, 24, 30, 33};  /* every H % 8 */
    static const int Is[] = {1, 3, 7, 20};
    for (int kind = LRT_CELL_LSTM; kind <= LRT_CELL_RNN; kind++)
        for (int dtype = LRT_F32; dtype <= LRT_I8; dtype++)
            for (int variant = 0; variant < 4; variant++) {
                if (kind == LRT_CELL_RNN && (variant == 1 || variant == 2)) continue;
                if (kind == LRT_CELL_GRU && variant == 2) continue;
                owned_cell oc;
                int H = PICK(Hs), I = PICK(Is), T = irange(1, 7), B = irange(1, 3);
                make_cell(&oc, kind, dtype, I, H, variant);
                lrt_cell *c = &oc.cell;
                int Hr = c->Hr, has_c = kind == LRT_CELL_LSTM;
                size_t ny = (size_t)T * B * Hr;
                float *x = xmalloc((size_t)T * B * I * sizeof(float));
                for (size_t i = 0; i < (size_t)T * B * I; i++) x[i] = 1.5f * unif();
                float *h0 = xmalloc((size_t)B * Hr * sizeof(float)), *c0 = xmalloc((size_t)B * H * sizeof(float));
                for (int i = 0; i < B * Hr; i++) h0[i] = 0.8f * unif();
                for (int i = 0; i < B * H; i++) c0[i] = unif();
                float *hw = xmalloc((size_t)B * Hr * sizeof(float)), *cw = xmalloc((size_t)B * H * sizeof(float));
                float *hs = xmalloc((size_t)B * Hr * sizeof(float)), *cst = xmalloc((size_t)B * H * sizeof(float));
                float *yw = xmalloc(ny * sizeof(float)), *ys = xmalloc(ny * sizeof(float));

                /* whole sequence */
                memcpy(hw, h0, (size_t)B * Hr * sizeof(float));
                memcpy(cw, c0, (size_t)B * H * sizeof(float));
                run_cell(c, T, B, x, NULL, 0, hw, has_c ? cw : NULL, yw);
                /* the same steps one call each */
                memcpy(hs, h0, (size_t)B * Hr * sizeof(float));
                memcpy(cst, c0, (size_t)B * H * sizeof(float));
                for (int t = 0; t < T; t++)
                    run_cell(c, 1, B, x + (size_t)t * B * I, NULL, 0, hs, has_c ? cst : NULL, ys + (size_t)t * B * Hr);
                int off = 0;
                for (size_t i = 0; i < ny; i++) off += !same_bits(yw[i], ys[i]);
                for (int i = 0; i < B * Hr; i++) off += !same_bits(hw[i], hs[i]);
                if (has_c) for (int i = 0; i < B * H; i++) off += !same_bits(cw[i], cst[i]);
                CHECK(off == 0, "cell %d dtype %d variant %d H %d I %d T %d B %d: steps differ from "
                      "the whole sequence in %d values", kind, dtype, variant, H, I, T, B, off);

                /* fused == portable (a clip that clips nothing turns the fused path off) */
                if (lrt_cell_fused_ok(c)) {
                    lrt_cell portable = *c;
                    portable.clip = FLT_MAX;
                    memcpy(hs, h0, (size_t)B * Hr * sizeof(float));
                    memcpy(cst, c0, (size_t)B * H * sizeof(float));
                    run_cell(&portable, T, B, x, NULL, 0, hs, has_c ? cst : NULL, ys);
                    off = 0;
                    for (size_t i = 0; i < ny; i++) off += !same_bits(yw[i], ys[i]);
                    if (has_c) for (int i = 0; i < B * H; i++) off += !same_bits(cw[i], cst[i]);
                    CHECK(off == 0, "cell %d dtype %d H %d: fused differs from the portable cell math in %d values",
                          kind, dtype, H, off);
                }

                /* against the generic level, with lengths and both directions */
                int32_t lens[3];
                for (int b = 0; b < B; b++) lens[b] = irange(0, T);
                for (int reverse = 0; reverse <= 1; reverse++) {
                    memcpy(hw, h0, (size_t)B * Hr * sizeof(float));
                    memcpy(cw, c0, (size_t)B * H * sizeof(float));
                    run_cell(c, T, B, x, lens, reverse, hw, has_c ? cw : NULL, yw);
                    lrt_init("generic");
                    memcpy(hs, h0, (size_t)B * Hr * sizeof(float));
                    memcpy(cst, c0, (size_t)B * H * sizeof(float));
                    run_cell(c, T, B, x, lens, reverse, hs, has_c ? cst : NULL, ys);
                    lrt_init(lvl->name);
                    double worst = 0.0, tol = 2e-5;
                    for (size_t i = 0; i < ny; i++) { double d = fabs((double)yw[i] - ys[i]); if (!(d <= worst)) worst = d; }
                    for (int i = 0; i < B * Hr; i++) { double d = fabs((double)hw[i] - hs[i]); if (!(d <= worst)) worst = d; }
                    if (has_c) for (int i = 0; i < B * H; i++) { double d = fabs((double)cw[i] - cst[i]); if (!(d <= worst)) worst = d; }
                    double *w = dtype == LRT_I8 ? &worst_cell_i8 : &worst_cell_fp;
                    if (worst > *w) *w = worst;
                    CHECK(worst <= tol, "cell %d dtype %d variant %d H %d T %d B %d reverse %d: %.3g off generic (> %g)",
                          kind, dtype, variant, H, T, B, reverse, worst, tol);
                }
                free(x); free(h0); free(c0); free(hw); free(cw); free(hs); free(cst); free(yw); free(ys);
                free_cell(&oc);
            }
}

/* A stream's step of one row (the fused step where the level has one, lrt_step_fused_with)
 * against the same row stepped beside a copy of itself (two rows: products, then the cell):
 * bit for bit, on both sides of the split line and with every H % 8. */
static void check_fused_step(const lrt_kernels *lvl)
{
    static const int Hs[] = {5, 8, 16, 24, 33, 64, 130, 170};
    static const int Is[] = {3, 20, 300};
    int fused = 0, unfused = 0;
    for (int kind = LRT_CELL_LSTM; kind <= LRT_CELL_GRU; kind++)
        for (size_t hi = 0; hi < sizeof(Hs) / sizeof(Hs[0]); hi++)
            for (size_t ii = 0; ii < sizeof(Is) / sizeof(Is[0]); ii++) {
                int H = Hs[hi], I = Is[ii], has_c = kind == LRT_CELL_LSTM;
                owned_cell oc;
                make_cell(&oc, kind, LRT_F32, I, H, 0);
                lrt_cell *c = &oc.cell;
                if (lrt_step_fused_with(lvl, c)) fused++; else unfused++;
                float *x = xmalloc(2 * (size_t)I * sizeof(float)), *h = xmalloc(2 * (size_t)H * sizeof(float));
                float *cs = xmalloc(2 * (size_t)H * sizeof(float)), *y = xmalloc(2 * (size_t)H * sizeof(float));
                float *h1 = xmalloc((size_t)H * sizeof(float)), *c1 = xmalloc((size_t)H * sizeof(float));
                float *y1 = xmalloc((size_t)H * sizeof(float));
                for (int i = 0; i < I; i++) x[i] = x[I + i] = 1.5f * unif();
                for (int i = 0; i < H; i++) {
                    h[i] = h[H + i] = h1[i] = 0.8f * unif();
                    cs[i] = cs[H + i] = c1[i] = unif();
                }
                for (int t = 0; t < 3; t++) {   /* three steps: the state carries */
                    run_cell(c, 1, 1, x, NULL, 0, h1, has_c ? c1 : NULL, y1);
                    run_cell(c, 1, 2, x, NULL, 0, h, has_c ? cs : NULL, y);
                }
                int off = 0;
                for (int i = 0; i < H; i++)
                    off += !same_bits(y1[i], y[i]) || !same_bits(h1[i], h[i]) || !same_bits(h[i], h[H + i]) ||
                           (has_c && !same_bits(c1[i], cs[i]));
                CHECK(off == 0, "cell %d H %d I %d (fused step: %d): one row differs from two rows in %d units",
                      kind, H, I, lrt_step_fused_with(lvl, c), off);
                free(x); free(h); free(cs); free(y); free(h1); free(c1); free(y1);
                free_cell(&oc);
            }
    /* the x86 vector levels fuse the small cases and not the ones past the split line */
    CHECK(!lvl->step_f32 || (fused > 0 && unfused > 0), "fused steps: %d fused, %d not", fused, unfused);
}

/* ---- top-k ---- */

static void check_top_k(const lrt_kernels *lvl)
{
    static const int ns[] = {0, 1, 5, 7, 8, 9, 16, 17, 100, 1001};
    static const int ks[] = {1, 3, 10};
    for (int rep = 0; rep < 60; rep++) {
        int n = PICK(ns), k = PICK(ks), with_ids = rep % 3 == 0;
        float *s = xmalloc((size_t)(n + 1) * sizeof(float));
        int64_t *ids = xmalloc((size_t)(n + 1) * sizeof(int64_t));
        for (int i = 0; i < n; i++) {
            s[i] = (float)irange(-20, 20) * 0.25f;  /* many ties */
            if (next_u64() % 13 == 0) s[i] = NAN;
            ids[i] = n - 1 - i;
        }
        int64_t out_l[10], out_g[10];
        float best_l[10], best_g[10];
        int got = lrt_top_k(s, n, with_ids ? ids : NULL, k, out_l, best_l);
        lrt_init("generic");
        int want = lrt_top_k(s, n, with_ids ? ids : NULL, k, out_g, best_g);
        lrt_init(lvl->name);
        int off = got != want;
        for (int i = 0; i < want && i < got; i++) off += out_l[i] != out_g[i] || !same_bits(best_l[i], best_g[i]);
        CHECK(off == 0, "n %d k %d ids %d: top-k differs from generic", n, k, with_ids);
        free(s);
        free(ids);
    }
}

/* ---- digests: the same fixed inputs on every platform, FNV-1a over the output bits ---- */

static uint64_t fnv(uint64_t h, const float *v, size_t n)
{
    const unsigned char *p = (const unsigned char *)v;
    for (size_t i = 0; i < n * 4; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static void print_digests(const lrt_kernels *lvl)
{
    uint64_t h[5];
    const char *family[5] = {"f32", "f16", "i8", "i8a8", "act+cells"};
    for (int f = 0; f < 4; f++) {
        rng = 1000 + (uint64_t)f;
        h[f] = 0xcbf29ce484222325ull;
        int dtype = f == 0 ? LRT_F32 : f == 1 ? LRT_F16 : LRT_I8;
        /* fp32 also past LRT_SPLIT_BYTES (288 KiB), where the k order changes */
        for (int big = 0; big <= (f == 0); big++)
        for (int gates = 1; gates <= 4; gates++)
            for (int M = 1; M <= 9; M += 4) {
                int K = big ? 3000 / gates : 37 + 10 * gates, nblk = 3, ncols = nblk * gates * 8 - 3;
                owned_mat W;
                make_mat(&W, dtype, K, gates * 8, nblk, f == 3, 0);
                float *A = xmalloc((size_t)M * K * sizeof(float)), *bias = xmalloc((size_t)nblk * gates * 8 * sizeof(float));
                float *C = xmalloc((size_t)M * ncols * sizeof(float));
                for (int i = 0; i < M * K; i++) A[i] = 2.0f * unif();
                for (int j = 0; j < nblk * gates * 8; j++) bias[j] = unif();
                product(lvl, M, A, K, &W.m, bias, C, ncols, ncols);
                h[f] = fnv(h[f], C, (size_t)M * ncols);
                free(A); free(bias); free(C);
                free_mat(&W);
            }
    }
    /* activations on a grid, then standard LSTM / GRU cells (fused where the level has them) */
    rng = 2000;
    h[4] = 0xcbf29ce484222325ull;
    float grid[2001];
    for (int i = 0; i < 2001; i++) grid[i] = (float)(i - 1000) / 50.0f;
    for (int kind = LRT_SIGMOID; kind <= LRT_TANH; kind++) {
        float v[2001];
        memcpy(v, grid, sizeof(v));
        lrt_activate((lrt_act){kind, 0, 0}, v, 2001);
        h[4] = fnv(h[4], v, 2001);
    }
    {
        float v[2001];
        memcpy(v, grid, sizeof(v));
        float sum = lrt_exp_sum(v, 2001, 7.0f, 1);
        h[4] = fnv(fnv(h[4], v, 2001), &sum, 1);
    }
    for (int variant = 0; variant < 3; variant++) {
        owned_cell oc;
        int kind = variant == 0 ? LRT_CELL_LSTM : LRT_CELL_GRU, T = 5, B = 2, I = 11, H = 21;
        make_cell(&oc, kind, LRT_F32, I, H, variant == 2 ? 1 : 0);
        float x[5 * 2 * 11], hh[2 * 21], cc[2 * 21], y[5 * 2 * 21];
        for (int i = 0; i < T * B * I; i++) x[i] = unif();
        for (int i = 0; i < B * H; i++) hh[i] = cc[i] = 0.5f * unif();
        run_cell(&oc.cell, T, B, x, NULL, 0, hh, kind == LRT_CELL_LSTM ? cc : NULL, y);
        h[4] = fnv(h[4], y, (size_t)T * B * H);
        free_cell(&oc);
    }
    for (int f = 0; f < 5; f++) printf("digest %s %s %016llx\n", lvl->name, family[f], (unsigned long long)h[f]);
}

int main(int argc, char **argv)
{
    const char *expect = NULL;
    int digest = 0;
    uint64_t seed = 20261204;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--expect") && i + 1 < argc) expect = argv[++i];
        else if (!strcmp(argv[i], "--digest")) digest = 1;
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
        else { fprintf(stderr, "usage: %s [--expect LEVEL,...] [--digest] [--seed N]\n", argv[0]); return 2; }
    }
    int cpu = lrt_cpu_isa_level();
    char have[256] = "";
    for (int l = 1; l <= cpu; l++) {
        if (have[0]) strcat(have, ",");
        strcat(have, lrt_kernels_of(l)->name);
    }
    printf("levels in this build:");
    for (int l = 0; l < lrt_isa_count(); l++) printf(" %s", lrt_kernels_of(l)->name);
    printf("; this CPU runs: generic%s%s\n", have[0] ? "," : "", have);
    if (expect && strcmp(expect, have) != 0) {
        fprintf(stderr, "FAIL: expected the levels above generic to be '%s', the CPU probe found '%s'\n", expect, have);
        return 1;
    }
    for (int l = 0; l <= cpu; l++) {
        const lrt_kernels *lvl = lrt_kernels_of(l);
        long c0 = checks, f0 = failures;
        level_name = lvl->name;
        if (lrt_init(lvl->name) != 0) { fprintf(stderr, "lrt_init(%s) failed\n", lvl->name); return 1; }
        rng = seed;
        worst_product_rel = worst_act = worst_cell_fp = worst_cell_i8 = 0.0;
        check_products(lvl);
        check_activations();
        check_cells(lvl);
        check_fused_step(lvl);
        check_top_k(lvl);
        printf("level %-10s %5ld checks, %ld failed; worst: fp32/fp16 products %.2g x (|bias| + sum |a w|), "
               "sigmoid/tanh %.2g, cells fp32/fp16 %.2g, int8 %.2g (vs generic)\n", lvl->name, checks - c0,
               failures - f0, worst_product_rel, worst_act, worst_cell_fp, worst_cell_i8);
        if (digest) print_digests(lvl);
    }
    printf("%s: %ld checks, %ld failed\n", failures ? "FAILED" : "ok", checks, failures);
    return failures ? 1 : 0;
}
