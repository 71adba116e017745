// ops.c — the float operations of the forward pass besides matrix products:
// RMS norm, rotary embedding, softmax, SwiGLU. Plain C; rows are independent.
#include <math.h>

#include "lp.h"

// out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i], for each of n rows of dim values.
void lp_rmsnorm(float *out, const float *x, const float *w, int64_t n, int64_t dim, float eps) {
    for (int64_t r = 0; r < n; r++, x += dim, out += dim) {
        double ss = 0.0;
        for (int64_t i = 0; i < dim; i++) ss += (double)x[i] * x[i];
        const float scale = 1.0f / sqrtf((float)(ss / dim) + eps);
        for (int64_t i = 0; i < dim; i++) out[i] = (x[i] * scale) * w[i];
    }
}

// Rotary embedding, GGML's "normal" mode (adjacent pairs), for n rows of n_head
// heads of head_dim values; row r sits at position pos0 + r. The first n_rot
// values of each head rotate: pair i by angle pos * freq_scale * base^(-2i/n_rot),
// the per-pair factor built by repeated multiplication as GGML does.
void lp_rope(float *x, int64_t n, int n_head, int head_dim, int n_rot, int64_t pos0, float freq_base,
             float freq_scale) {
    const float theta_scale = powf(freq_base, -2.0f / (float)n_rot);
    for (int64_t r = 0; r < n; r++) {
        const float pos = (float)(pos0 + r);
        for (int h = 0; h < n_head; h++) {
            float *v = x + (r * n_head + h) * head_dim;
            float theta = pos;
            for (int i = 0; i < n_rot; i += 2) {
                const float a = freq_scale * theta;
                const float c = cosf(a), s = sinf(a);
                const float x0 = v[i], x1 = v[i + 1];
                v[i] = x0 * c - x1 * s;
                v[i + 1] = x0 * s + x1 * c;
                theta *= theta_scale;
            }
        }
    }
}

// In place: x = softmax(x) over n values. Returns nothing; sums in double.
void lp_softmax(float *x, int64_t n) {
    float max = -INFINITY;
    for (int64_t i = 0; i < n; i++) max = x[i] > max ? x[i] : max;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

// gate[i] = silu(gate[i]) * up[i]  (SwiGLU), n values.
void lp_swiglu(float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}
