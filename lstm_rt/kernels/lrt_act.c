/* The ONNX recurrent-operator activation functions, portable C (libm). */
#include <math.h>
#include "lrt_kernels.h"

static inline float act1(lrt_act a, float x)
{
    switch (a.kind) {
    case LRT_SIGMOID:         return 1.0f / (1.0f + expf(-x));
    case LRT_TANH:            return tanhf(x);
    case LRT_RELU:            return x > 0.0f ? x : 0.0f;
    case LRT_AFFINE:          return a.alpha * x + a.beta;
    case LRT_LEAKYRELU:       return x >= 0.0f ? x : a.alpha * x;
    case LRT_THRESHOLDEDRELU: return x > a.alpha ? x : 0.0f;
    case LRT_SCALEDTANH:      return a.alpha * tanhf(a.beta * x);
    case LRT_HARDSIGMOID: {
        float v = a.alpha * x + a.beta;
        return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
    }
    case LRT_ELU:             return x >= 0.0f ? x : a.alpha * expm1f(x);
    case LRT_SOFTSIGN:        return x / (1.0f + fabsf(x));
    case LRT_SOFTPLUS:        /* log(1 + e^x) without overflow */
        return x > 0.0f ? x + log1pf(expf(-x)) : log1pf(expf(x));
    default:                  return x;
    }
}

static void activate_generic(lrt_act act, float *x, int n)
{
    /* One switch per call, not per element: the loops below are what runs. */
    switch (act.kind) {
    case LRT_SIGMOID: for (int i = 0; i < n; i++) x[i] = 1.0f / (1.0f + expf(-x[i])); break;
    case LRT_TANH:    for (int i = 0; i < n; i++) x[i] = tanhf(x[i]); break;
    default:          for (int i = 0; i < n; i++) x[i] = act1(act, x[i]); break;
    }
}

float lrt_exp_sum_generic(float *x, int n, float shift, int store)
{
    float sum = 0.0f;
    for (int j = 0; j < n; j++) {
        float e = expf(x[j] - shift);
        if (store) x[j] = e;
        sum += e;
    }
    return sum;
}

float lrt_exp_sum(float *x, int n, float shift, int store)
{
    return lrt_kernels_active()->exp_sum(x, n, shift, store);
}

void lrt_activate(lrt_act act, float *x, int n)
{
    const lrt_kernels *k = lrt_kernels_active();
    if (act.kind == LRT_SIGMOID && k->sigmoid) k->sigmoid(x, n);
    else if (act.kind == LRT_TANH && k->tanh) k->tanh(x, n);
    else activate_generic(act, x, n);
}
