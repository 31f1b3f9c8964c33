/* kernels_ref.c - the reference kernels of the U-Net layers: plain loops that read top to bottom.
 *
 * Parallelism: each kernel splits its outer loop over independent outputs (a (batch, channel)
 * plane, a weight), so every output is computed by one thread in a fixed order. Results are
 * therefore bit-identical for any thread count. Long sums (weight gradients, statistics) run in
 * double. */
#include "kernels.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Convolution, stride 1, same padding                                                         */

/* The range [lo, hi) of output positions o in [0, n) whose source o + shift lies in [0, n). */
static void valid_range(int32_t n, int32_t shift, int32_t *lo, int32_t *hi)
{
    *lo = shift < 0 ? -shift : 0;
    *hi = shift > 0 ? n - shift : n;
    if (*hi < *lo) *hi = *lo;
}

/* dst[z, y, x] += wv * src[z + sz, y + sy, x + sx] wherever the source is inside the volume;
 * dst and src are (d, h, w). Forward convolution adds shifted inputs, its data gradient adds
 * inversely shifted output gradients. */
static void add_shifted(float *restrict dst, const float *restrict src, float wv, int32_t sz,
                        int32_t sy, int32_t sx, int32_t d, int32_t h, int32_t w)
{
    int32_t z0, z1, y0, y1, x0, x1;
    valid_range(d, sz, &z0, &z1);
    valid_range(h, sy, &y0, &y1);
    valid_range(w, sx, &x0, &x1);
    for (int32_t z = z0; z < z1; z++) {
        for (int32_t y = y0; y < y1; y++) {
            float *restrict dr = dst + ((int64_t)z * h + y) * w;
            const float *restrict sr = src + ((int64_t)(z + sz) * h + (y + sy)) * w + sx;
            for (int32_t x = x0; x < x1; x++) dr[x] += wv * sr[x];
        }
    }
}

/* sum over positions q of a[q] * b[q + shift] where q + shift is inside; a and b are (d, h, w). */
static double dot_shifted(const float *a, const float *b, int32_t sz, int32_t sy, int32_t sx,
                          int32_t d, int32_t h, int32_t w)
{
    int32_t z0, z1, y0, y1, x0, x1;
    valid_range(d, sz, &z0, &z1);
    valid_range(h, sy, &y0, &y1);
    valid_range(w, sx, &x0, &x1);
    double total = 0.0;
    for (int32_t z = z0; z < z1; z++) {
        for (int32_t y = y0; y < y1; y++) {
            const float *ar = a + ((int64_t)z * h + y) * w;
            const float *br = b + ((int64_t)(z + sz) * h + (y + sy)) * w + sx;
            float row = 0.0f; /* a row is short; the double total keeps long sums accurate */
            for (int32_t x = x0; x < x1; x++) row += ar[x] * br[x];
            total += row;
        }
    }
    return total;
}

void cs_conv_forward_ref(float *out, const float *in, const float *weight, const float *bias,
                         const cs_conv_shape *s, int threads)
{
    const int64_t n = (int64_t)s->d * s->h * s->w;
    const int64_t kvol = (int64_t)s->kd * s->kh * s->kw;
    const int64_t planes = (int64_t)s->batch * s->out_channels;
    CS_OMP_FOR
    for (int64_t p = 0; p < planes; p++) {
        const int64_t b = p / s->out_channels, co = p % s->out_channels;
        float *o = out + p * n; // (D, H, W)
        const float bv = bias ? bias[co] : 0.0f;
        for (int64_t i = 0; i < n; i++) o[i] = bv;
        for (int64_t ci = 0; ci < s->in_channels; ci++) {
            const float *x = in + (b * s->in_channels + ci) * n;
            const float *wk = weight + (co * s->in_channels + ci) * kvol; // (kd, kh, kw)
            for (int32_t kz = 0; kz < s->kd; kz++)
                for (int32_t ky = 0; ky < s->kh; ky++)
                    for (int32_t kx = 0; kx < s->kw; kx++)
                        add_shifted(o, x, wk[(kz * s->kh + ky) * s->kw + kx], kz - s->kd / 2,
                                    ky - s->kh / 2, kx - s->kw / 2, s->d, s->h, s->w);
        }
    }
}

void cs_conv_backward_data_ref(float *grad_in, const float *grad_out, const float *weight,
                               const cs_conv_shape *s, int threads)
{
    const int64_t n = (int64_t)s->d * s->h * s->w;
    const int64_t kvol = (int64_t)s->kd * s->kh * s->kw;
    const int64_t planes = (int64_t)s->batch * s->in_channels;
    CS_OMP_FOR
    for (int64_t p = 0; p < planes; p++) {
        const int64_t b = p / s->in_channels, ci = p % s->in_channels;
        float *gi = grad_in + p * n; // (D, H, W)
        memset(gi, 0, (size_t)n * sizeof(float));
        for (int64_t co = 0; co < s->out_channels; co++) {
            const float *go = grad_out + (b * s->out_channels + co) * n;
            const float *wk = weight + (co * s->in_channels + ci) * kvol;
            /* out[q] used in[q + k - k/2], so in[p] receives grad_out[p - (k - k/2)] */
            for (int32_t kz = 0; kz < s->kd; kz++)
                for (int32_t ky = 0; ky < s->kh; ky++)
                    for (int32_t kx = 0; kx < s->kw; kx++)
                        add_shifted(gi, go, wk[(kz * s->kh + ky) * s->kw + kx], s->kd / 2 - kz,
                                    s->kh / 2 - ky, s->kw / 2 - kx, s->d, s->h, s->w);
        }
    }
}

void cs_conv_backward_weights_ref(float *grad_weight, float *grad_bias, const float *grad_out,
                                  const float *in, const cs_conv_shape *s, int threads)
{
    const int64_t n = (int64_t)s->d * s->h * s->w;
    const int64_t kvol = (int64_t)s->kd * s->kh * s->kw;
    const int64_t pairs = (int64_t)s->out_channels * s->in_channels;
    CS_OMP_FOR
    for (int64_t p = 0; p < pairs; p++) {
        const int64_t co = p / s->in_channels, ci = p % s->in_channels;
        float *gw = grad_weight + p * kvol; // (kd, kh, kw)
        for (int32_t kz = 0; kz < s->kd; kz++)
            for (int32_t ky = 0; ky < s->kh; ky++)
                for (int32_t kx = 0; kx < s->kw; kx++) {
                    double total = 0.0;
                    for (int64_t b = 0; b < s->batch; b++)
                        total += dot_shifted(grad_out + (b * s->out_channels + co) * n,
                                             in + (b * s->in_channels + ci) * n, kz - s->kd / 2,
                                             ky - s->kh / 2, kx - s->kw / 2, s->d, s->h, s->w);
                    gw[(kz * s->kh + ky) * s->kw + kx] += (float)total;
                }
    }
    if (!grad_bias) return;
    const int64_t co_count = s->out_channels;
    CS_OMP_FOR
    for (int64_t co = 0; co < co_count; co++) {
        double total = 0.0;
        for (int64_t b = 0; b < s->batch; b++) {
            const float *go = grad_out + (b * s->out_channels + co) * n;
            for (int64_t i = 0; i < n; i++) total += go[i];
        }
        grad_bias[co] += (float)total;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Transposed convolution, kernel 2, stride 2                                                  */

void cs_upconv_forward_ref(float *out, const float *in, const float *weight, const float *bias,
                           const cs_conv_shape *s, int threads)
{
    const int32_t d = s->d, h = s->h, w = s->w, kd = s->kd;
    const int32_t od = d * kd, oh = 2 * h, ow = 2 * w;
    const int64_t n = (int64_t)d * h * w, on = (int64_t)od * oh * ow;
    const int64_t kvol = (int64_t)kd * 4;
    const int64_t planes = (int64_t)s->batch * s->out_channels;
    CS_OMP_FOR
    for (int64_t p = 0; p < planes; p++) {
        const int64_t b = p / s->out_channels, co = p % s->out_channels;
        float *o = out + p * on; // (d*kd, 2h, 2w)
        const float bv = bias ? bias[co] : 0.0f;
        for (int64_t i = 0; i < on; i++) o[i] = bv;
        for (int64_t ci = 0; ci < s->in_channels; ci++) {
            const float *x = in + (b * s->in_channels + ci) * n;
            const float *wk = weight + (ci * s->out_channels + co) * kvol; // (kd, 2, 2)
            for (int32_t z = 0; z < d; z++)
                for (int32_t i = 0; i < kd; i++)
                    for (int32_t y = 0; y < h; y++)
                        for (int32_t j = 0; j < 2; j++) {
                            const float *xr = x + ((int64_t)z * h + y) * w;
                            float *orow = o + ((int64_t)(z * kd + i) * oh + 2 * y + j) * ow;
                            const float w0 = wk[(i * 2 + j) * 2], w1 = wk[(i * 2 + j) * 2 + 1];
                            for (int32_t xx = 0; xx < w; xx++) {
                                orow[2 * xx] += w0 * xr[xx];
                                orow[2 * xx + 1] += w1 * xr[xx];
                            }
                        }
        }
    }
}

void cs_upconv_backward_data_ref(float *grad_in, const float *grad_out, const float *weight,
                                 const cs_conv_shape *s, int threads)
{
    const int32_t d = s->d, h = s->h, w = s->w, kd = s->kd;
    const int32_t oh = 2 * h, ow = 2 * w;
    const int64_t n = (int64_t)d * h * w, on = (int64_t)d * kd * oh * ow;
    const int64_t kvol = (int64_t)kd * 4;
    const int64_t planes = (int64_t)s->batch * s->in_channels;
    CS_OMP_FOR
    for (int64_t p = 0; p < planes; p++) {
        const int64_t b = p / s->in_channels, ci = p % s->in_channels;
        float *gi = grad_in + p * n; // (d, h, w)
        for (int64_t co = 0; co < s->out_channels; co++) {
            const float *go = grad_out + (b * s->out_channels + co) * on;
            const float *wk = weight + (ci * s->out_channels + co) * kvol;
            for (int32_t z = 0; z < d; z++)
                for (int32_t i = 0; i < kd; i++)
                    for (int32_t y = 0; y < h; y++)
                        for (int32_t j = 0; j < 2; j++) {
                            float *gr = gi + ((int64_t)z * h + y) * w;
                            const float *gor = go + ((int64_t)(z * kd + i) * oh + 2 * y + j) * ow;
                            const float w0 = wk[(i * 2 + j) * 2], w1 = wk[(i * 2 + j) * 2 + 1];
                            for (int32_t xx = 0; xx < w; xx++)
                                gr[xx] += w0 * gor[2 * xx] + w1 * gor[2 * xx + 1];
                        }
        }
    }
}

void cs_upconv_backward_weights_ref(float *grad_weight, float *grad_bias, const float *grad_out,
                                    const float *in, const cs_conv_shape *s, int threads)
{
    const int32_t d = s->d, h = s->h, w = s->w, kd = s->kd;
    const int32_t oh = 2 * h, ow = 2 * w;
    const int64_t n = (int64_t)d * h * w, on = (int64_t)d * kd * oh * ow;
    const int64_t kvol = (int64_t)kd * 4;
    const int64_t pairs = (int64_t)s->in_channels * s->out_channels;
    CS_OMP_FOR
    for (int64_t p = 0; p < pairs; p++) {
        const int64_t ci = p / s->out_channels, co = p % s->out_channels;
        double acc[8] = {0}; // (kd, 2, 2)
        for (int64_t b = 0; b < s->batch; b++) {
            const float *x = in + (b * s->in_channels + ci) * n;
            const float *go = grad_out + (b * s->out_channels + co) * on;
            for (int32_t z = 0; z < d; z++)
                for (int32_t i = 0; i < kd; i++)
                    for (int32_t y = 0; y < h; y++)
                        for (int32_t j = 0; j < 2; j++) {
                            const float *xr = x + ((int64_t)z * h + y) * w;
                            const float *gor = go + ((int64_t)(z * kd + i) * oh + 2 * y + j) * ow;
                            float r0 = 0.0f, r1 = 0.0f;
                            for (int32_t xx = 0; xx < w; xx++) {
                                r0 += xr[xx] * gor[2 * xx];
                                r1 += xr[xx] * gor[2 * xx + 1];
                            }
                            acc[(i * 2 + j) * 2] += r0;
                            acc[(i * 2 + j) * 2 + 1] += r1;
                        }
        }
        float *gw = grad_weight + p * kvol;
        for (int64_t k = 0; k < kvol; k++) gw[k] += (float)acc[k];
    }
    if (!grad_bias) return;
    const int64_t co_count = s->out_channels;
    CS_OMP_FOR
    for (int64_t co = 0; co < co_count; co++) {
        double total = 0.0;
        for (int64_t b = 0; b < s->batch; b++) {
            const float *go = grad_out + (b * s->out_channels + co) * on;
            for (int64_t i = 0; i < on; i++) total += go[i];
        }
        grad_bias[co] += (float)total;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Instance norm                                                                               */

void cs_instnorm_forward_ref(float *out, float *mean, float *rstd, const float *in,
                             const float *gamma, const float *beta, int32_t batch, int32_t channels,
                             int64_t n, float eps, int threads)
{
    const int64_t planes = (int64_t)batch * channels;
    CS_OMP_FOR
    for (int64_t p = 0; p < planes; p++) {
        const int64_t c = p % channels;
        const float *x = in + p * n;
        float *y = out + p * n;
        double sum = 0.0;
        for (int64_t i = 0; i < n; i++) sum += x[i];
        const double m = sum / (double)n;
        double sq = 0.0; /* two passes: no cancellation when the mean is large */
        for (int64_t i = 0; i < n; i++) sq += ((double)x[i] - m) * ((double)x[i] - m);
        const double r = 1.0 / sqrt(sq / (double)n + (double)eps);
        mean[p] = (float)m;
        rstd[p] = (float)r;
        const float scale = gamma[c] * (float)r, shift = beta[c] - (float)m * scale;
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * scale + shift;
    }
}

void cs_instnorm_backward_ref(float *grad_in, float *grad_gamma, float *grad_beta,
                              const float *grad_out, const float *in, const float *mean,
                              const float *rstd, const float *gamma, int32_t batch,
                              int32_t channels, int64_t n, int threads)
{
    /* Threads split channels, so grad_gamma[c] and grad_beta[c] sum batch items in order. */
    const int64_t c_count = channels;
    CS_OMP_FOR
    for (int64_t c = 0; c < c_count; c++) {
        for (int64_t b = 0; b < batch; b++) {
            const int64_t p = b * channels + c;
            const float *x = in + p * n, *dy = grad_out + p * n;
            float *dx = grad_in + p * n;
            const float m = mean[p], r = rstd[p];
            double sum_dy = 0.0, sum_dy_xhat = 0.0;
            for (int64_t i = 0; i < n; i++) {
                sum_dy += dy[i];
                sum_dy_xhat += (double)dy[i] * ((x[i] - m) * r);
            }
            grad_gamma[c] += (float)sum_dy_xhat;
            grad_beta[c] += (float)sum_dy;
            /* dx = gamma * rstd * (dy - mean(dy) - xhat * mean(dy * xhat)) */
            const float k = gamma[c] * r;
            const float mean_dy = (float)(sum_dy / (double)n);
            const float mean_dy_xhat = (float)(sum_dy_xhat / (double)n);
            for (int64_t i = 0; i < n; i++)
                dx[i] += k * (dy[i] - mean_dy - ((x[i] - m) * r) * mean_dy_xhat);
        }
    }
}

void cs_instnorm_leaky_forward_ref(float *out, float *mean, float *rstd, const float *in,
                                   const float *gamma, const float *beta, int32_t batch,
                                   int32_t channels, int64_t n, float eps, float slope, int threads)
{
    cs_instnorm_forward_ref(out, mean, rstd, in, gamma, beta, batch, channels, n, eps, threads);
    cs_leaky_relu_forward_ref(out, out, (int64_t)batch * channels * n, slope, threads);
}

void cs_instnorm_leaky_backward_ref(float *grad_in, float *grad_gamma, float *grad_beta,
                                    const float *grad_out, const float *out, const float *in,
                                    const float *mean, const float *rstd, const float *gamma,
                                    int32_t batch, int32_t channels, int64_t n, float slope,
                                    int threads)
{
    /* cs_instnorm_backward_ref with dy = LeakyReLU'(out) * grad_out, and = instead of += */
    const int64_t c_count = channels;
    CS_OMP_FOR
    for (int64_t c = 0; c < c_count; c++) {
        for (int64_t b = 0; b < batch; b++) {
            const int64_t p = b * channels + c;
            const float *x = in + p * n, *g = grad_out + p * n, *a = out + p * n;
            float *dx = grad_in + p * n;
            const float m = mean[p], r = rstd[p];
            double sum_dy = 0.0, sum_dy_xhat = 0.0;
            for (int64_t i = 0; i < n; i++) {
                const float dy = a[i] > 0.0f ? g[i] : slope * g[i];
                sum_dy += dy;
                sum_dy_xhat += (double)dy * ((x[i] - m) * r);
            }
            grad_gamma[c] += (float)sum_dy_xhat;
            grad_beta[c] += (float)sum_dy;
            const float k = gamma[c] * r;
            const float mean_dy = (float)(sum_dy / (double)n);
            const float mean_dy_xhat = (float)(sum_dy_xhat / (double)n);
            for (int64_t i = 0; i < n; i++) {
                const float dy = a[i] > 0.0f ? g[i] : slope * g[i];
                dx[i] = k * (dy - mean_dy - ((x[i] - m) * r) * mean_dy_xhat);
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* LeakyReLU                                                                                   */

void cs_leaky_relu_forward_ref(float *out, const float *in, int64_t n, float slope, int threads)
{
    CS_OMP_FOR
    for (int64_t i = 0; i < n; i++) out[i] = in[i] > 0.0f ? in[i] : slope * in[i];
}

void cs_leaky_relu_backward_ref(float *grad_in, const float *grad_out, const float *x, int64_t n,
                                float slope, int threads)
{
    CS_OMP_FOR
    for (int64_t i = 0; i < n; i++) grad_in[i] += x[i] > 0.0f ? grad_out[i] : slope * grad_out[i];
}

/* ------------------------------------------------------------------------------------------ */
/* Max pooling                                                                                 */

/* Index, in the plane (d, h, w), of the first maximum of the window of output voxel (z, y, x). */
static int64_t window_argmax(const float *x, int32_t z, int32_t y, int32_t xo, int32_t h, int32_t w,
                             int32_t pd)
{
    int64_t best = ((int64_t)z * pd * h + 2 * y) * w + 2 * xo;
    for (int32_t i = 0; i < pd; i++)
        for (int32_t j = 0; j < 2; j++)
            for (int32_t k = 0; k < 2; k++) {
                const int64_t idx = ((int64_t)(z * pd + i) * h + 2 * y + j) * w + 2 * xo + k;
                if (x[idx] > x[best]) best = idx;
            }
    return best;
}

void cs_maxpool_forward_ref(float *out, const float *in, int64_t planes, int32_t d, int32_t h,
                            int32_t w, int32_t pd, int threads)
{
    const int32_t od = d / pd, oh = h / 2, ow = w / 2;
    const int64_t n = (int64_t)d * h * w, on = (int64_t)od * oh * ow;
    /* (output slice, plane) position-major: the threads split the slices, as the convolutions
     * that wrote the input do, so that each reads what it wrote */
    CS_OMP_FOR
    for (int64_t it = 0; it < od * planes; it++) {
        const int32_t z = (int32_t)(it / planes);
        const int64_t p = it % planes;
        const float *x = in + p * n;
        float *o = out + p * on;
        for (int32_t y = 0; y < oh; y++)
            for (int32_t xo = 0; xo < ow; xo++)
                o[((int64_t)z * oh + y) * ow + xo] = x[window_argmax(x, z, y, xo, h, w, pd)];
    }
}

void cs_maxpool_backward_ref(float *grad_in, const float *grad_out, const float *in, int64_t planes,
                             int32_t d, int32_t h, int32_t w, int32_t pd, int threads)
{
    const int32_t od = d / pd, oh = h / 2, ow = w / 2;
    const int64_t n = (int64_t)d * h * w, on = (int64_t)od * oh * ow;
    CS_OMP_FOR
    for (int64_t p = 0; p < planes; p++) {
        const float *x = in + p * n;
        const float *go = grad_out + p * on;
        float *gi = grad_in + p * n;
        for (int32_t z = 0; z < od; z++)
            for (int32_t y = 0; y < oh; y++)
                for (int32_t xo = 0; xo < ow; xo++)
                    gi[window_argmax(x, z, y, xo, h, w, pd)] += go[((int64_t)z * oh + y) * ow + xo];
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Concatenation and softmax                                                                   */

void cs_concat_forward_ref(float *out, const float *a, const float *b, int32_t batch, int32_t ca,
                           int32_t cb, int64_t n, int threads)
{
    const int64_t planes = (int64_t)batch * (ca + cb);
    CS_OMP_FOR
    for (int64_t p = 0; p < planes; p++) {
        const int64_t item = p / (ca + cb), c = p % (ca + cb);
        const float *src = c < ca ? a + (item * ca + c) * n : b + (item * cb + (c - ca)) * n;
        memcpy(out + p * n, src, (size_t)n * sizeof(float));
    }
}

void cs_concat_backward_ref(float *grad_a, float *grad_b, const float *grad_out, int32_t batch,
                            int32_t ca, int32_t cb, int64_t n, int threads)
{
    const int64_t planes = (int64_t)batch * (ca + cb);
    CS_OMP_FOR
    for (int64_t p = 0; p < planes; p++) {
        const int64_t item = p / (ca + cb), c = p % (ca + cb);
        float *dst = c < ca ? grad_a + (item * ca + c) * n : grad_b + (item * cb + (c - ca)) * n;
        const float *src = grad_out + p * n;
        for (int64_t i = 0; i < n; i++) dst[i] += src[i];
    }
}

/* Softmax over channels of one voxel: channel c at x[c * xs], written to y[c * ys]. */
static void softmax_voxel_ref(float *y, int64_t ys, const float *x, int64_t xs, int32_t channels)
{
    float mx = x[0];
    for (int32_t c = 1; c < channels; c++) mx = x[c * xs] > mx ? x[c * xs] : mx;
    float sum = 0.0f;
    for (int32_t c = 0; c < channels; c++) {
        const float e = expf(x[c * xs] - mx);
        y[c * ys] = e;
        sum += e;
    }
    const float inv = 1.0f / sum;
    for (int32_t c = 0; c < channels; c++) y[c * ys] *= inv;
}

void cs_softmax_channels_ref(float *out, const float *in, int32_t batch, int32_t channels,
                             int64_t n, int threads)
{
    const int64_t voxels = (int64_t)batch * n;
    CS_OMP_FOR
    for (int64_t v = 0; v < voxels; v++) {
        const int64_t at = v / n * channels * n + v % n;
        softmax_voxel_ref(out + at, n, in + at, n, channels);
    }
}

void cs_softmax_tile_ref(float *out, const float *in, int32_t channels, int64_t n, int64_t i0,
                         int *non_finite)
{
    const int64_t cnt = n - i0 < CS_SOFTMAX_TILE ? n - i0 : CS_SOFTMAX_TILE;
    *non_finite = 0;
    for (int64_t j = 0; j < cnt; j++) {
        softmax_voxel_ref(out + j, CS_SOFTMAX_TILE, in + i0 + j, n, channels);
        for (int32_t c = 0; c < channels; c++) *non_finite |= !isfinite(in[c * n + i0 + j]);
    }
}
