/* Dense (fully connected) layer over rows, with its activation; the product, the
 * activations and the softmax sums go through the active kernel table. */
#include <math.h>
#include "lrt_kernels.h"

static float row_max(const float *r, int n)
{
    float mx = -INFINITY;
    for (int j = 0; j < n; j++) mx = r[j] > mx ? r[j] : mx;
    return mx;
}

void lrt_dense(int M, int O, const float *x, int ldx, const lrt_mat *W, const float *bias,
               int act, float *y, int ldy, float *scratch)
{
    lrt_matmul(M, x, ldx, W, bias, y, ldy, O, scratch);
    for (int m = 0; m < M; m++) {
        float *r = y + (size_t)m * ldy;
        switch (act) {
        case LRT_DENSE_RELU:    for (int j = 0; j < O; j++) r[j] = r[j] > 0.0f ? r[j] : 0.0f; break;
        case LRT_DENSE_TANH:    lrt_activate((lrt_act){LRT_TANH, 0.0f, 0.0f}, r, O); break;
        case LRT_DENSE_SIGMOID: lrt_activate((lrt_act){LRT_SIGMOID, 0.0f, 0.0f}, r, O); break;
        case LRT_DENSE_SOFTMAX: {
            float inv = 1.0f / lrt_exp_sum(r, O, row_max(r, O), 1);
            for (int j = 0; j < O; j++) r[j] *= inv;
            break;
        }
        case LRT_DENSE_LOG_SOFTMAX: {   /* x - max - log(sum(exp(x - max))): no overflow, no log(0) */
            float mx = row_max(r, O), shift = mx + logf(lrt_exp_sum(r, O, mx, 0));
            for (int j = 0; j < O; j++) r[j] -= shift;
            break;
        }
        default: break;
        }
    }
}
