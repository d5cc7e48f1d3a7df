/* Dense (fully connected) layer over rows, with its activation. Portable C. */
#include <math.h>
#include "lrt_kernels.h"

void lrt_dense(int M, int O, const float *x, int ldx, const lrt_mat *W, const float *bias,
               int act, float *y, int ldy, float *scratch)
{
    lrt_matmul(M, x, ldx, W, bias, y, ldy, O, scratch);
    for (int m = 0; m < M; m++) {
        float *r = y + (size_t)m * ldy;
        switch (act) {
        case LRT_DENSE_RELU:    for (int j = 0; j < O; j++) r[j] = r[j] > 0.0f ? r[j] : 0.0f; break;
        case LRT_DENSE_TANH:    for (int j = 0; j < O; j++) r[j] = tanhf(r[j]); break;
        case LRT_DENSE_SIGMOID: for (int j = 0; j < O; j++) r[j] = 1.0f / (1.0f + expf(-r[j])); break;
        case LRT_DENSE_SOFTMAX: {
            float mx = -INFINITY, sum = 0.0f;
            for (int j = 0; j < O; j++) mx = r[j] > mx ? r[j] : mx;
            for (int j = 0; j < O; j++) { r[j] = expf(r[j] - mx); sum += r[j]; }
            float inv = 1.0f / sum;
            for (int j = 0; j < O; j++) r[j] *= inv;
            break;
        }
        case LRT_DENSE_LOG_SOFTMAX: {   /* x - max - log(sum(exp(x - max))): no overflow, no log(0) */
            float mx = -INFINITY, sum = 0.0f;
            for (int j = 0; j < O; j++) mx = r[j] > mx ? r[j] : mx;
            for (int j = 0; j < O; j++) sum += expf(r[j] - mx);
            float shift = mx + logf(sum);
            for (int j = 0; j < O; j++) r[j] -= shift;
            break;
        }
        default: break;
        }
    }
}
