/* kernels.h - the compute kernels of the U-Net layers.
 *
 * Layout: activations are (B, C, D, H, W) contiguous with W fastest (NCDHW); 2D data has D = 1
 * and kernels with kd = 1. Weights of a convolution are (Co, Ci, kd, kh, kw); of a transposed
 * convolution (Ci, Co, 2, 2, 2) (or (Ci, Co, 1, 2, 2) in 2D), as in PyTorch.
 *
 * Every kernel exists twice: a plain reference (`_ref`, kernels_ref.c) that reads top to bottom
 * and a fast one (no suffix) chosen at run time for the CPU (AVX-512, AVX2+FMA, portable C).
 * Tests hold them equal. Forward kernels overwrite their outputs; backward kernels ADD into the
 * gradients they produce (a separate memset zeroes them), as in llm.c, except the convolution's
 * data gradient, which overwrites grad_in: it is its target's only gradient in the U-Net, and
 * storing without a load and add made the 16-channel pass 6% faster.
 */
#ifndef COMBOSEG_KERNELS_H
#define COMBOSEG_KERNELS_H

#include <stdint.h>

/* Parallelises the following for loop over the caller's `threads` variable (static schedule:
 * each thread's share is fixed by the thread count, which keeps reductions deterministic). */
#ifdef _OPENMP
#define CS_OMP_FOR _Pragma("omp parallel for num_threads(threads) schedule(static)")
#else
#define CS_OMP_FOR (void)threads;
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* A convolution with stride 1 and "same" padding (k/2 on each side); kd, kh, kw are 3 or 1. */
typedef struct cs_conv_shape {
    int32_t batch, in_channels, out_channels;
    int32_t d, h, w;    /* spatial size of input and output */
    int32_t kd, kh, kw; /* kernel size */
} cs_conv_shape;

/* out (B, Co, D, H, W) = conv(in (B, Ci, D, H, W), weight (Co, Ci, kd, kh, kw)) + bias (Co) */
void cs_conv_forward_ref(float *out, const float *in, const float *weight, const float *bias,
                         const cs_conv_shape *s, int threads);
/* grad_in (B, Ci, D, H, W) = conv_transpose(grad_out (B, Co, D, H, W), weight): written, not
 * added (every caller's target holds no other gradient, and the fast kernels store where they
 * would load and add) */
void cs_conv_backward_data_ref(float *grad_in, const float *grad_out, const float *weight,
                               const cs_conv_shape *s, int threads);
/* grad_weight (Co, Ci, kd, kh, kw) += correlation of grad_out and in; grad_bias (Co) += sums of
 * grad_out (grad_bias may be NULL) */
void cs_conv_backward_weights_ref(float *grad_weight, float *grad_bias, const float *grad_out,
                                  const float *in, const cs_conv_shape *s, int threads);

/* The dispatched fast versions, same contracts. */
void cs_conv_forward(float *out, const float *in, const float *weight, const float *bias,
                     const cs_conv_shape *s, int threads);
void cs_conv_backward_data(float *grad_in, const float *grad_out, const float *weight,
                           const cs_conv_shape *s, int threads);
void cs_conv_backward_weights(float *grad_weight, float *grad_bias, const float *grad_out,
                              const float *in, const cs_conv_shape *s, int threads);

/* The forward convolution for inference with its inputs and weights rounded to bfloat16 (8
 * significant bits) and its sums in float: twice the products per instruction where the CPU
 * has AVX512_BF16 (cs_isa_bf16_available); elsewhere, for a first layer (at most 2 input
 * channels), or without scratch memory, it is float inference's cs_conv_forward_winograd. Not
 * for training: the gradients would see the rounding. */
void cs_conv_forward_bf16(float *out, const float *in, const float *weight, const float *bias,
                          const cs_conv_shape *s, int threads);

/* The forward convolution for float inference by Winograd's minimal filtering F(2x2x2, 3x3x3)
 * (kernels_winograd.inc): 64 products per tile of 8 outputs and channel pair where the direct
 * convolution takes 216. Its transforms add and subtract, so results differ from
 * cs_conv_forward's by rounding (within the same tolerance of the reference). It takes 3x3x3
 * kernels with at least a vector of input and output channels, even sizes, and rows of whole
 * vectors or enough tiles to pay for a call (cs_conv_winograd_takes, kernels_isa.h); elsewhere,
 * or without scratch memory, it is cs_conv_forward. Not for training: the backward kernels are
 * those of the direct convolution. */
void cs_conv_forward_winograd(float *out, const float *in, const float *weight, const float *bias,
                              const cs_conv_shape *s, int threads);

/* The other layers' kernels are declared below by net.c's author (instance norm, LeakyReLU,
 * max pooling, transposed convolution, concatenation, softmax), each with a _ref version. */

/* The transposed convolution of the decoder (kernel 2, stride 2) reuses cs_conv_shape with d, h, w
 * the INPUT size, kd = 2 (3D) or 1 (2D) and kh = kw = 2; its output is (B, Co, d*kd, 2h, 2w).
 * out[b, co, kd*z + i, 2y + j, 2x + k] = bias[co] + sum_ci in[b, ci, z, y, x] * weight[ci, co, i, j, k] */
void cs_upconv_forward_ref(float *out, const float *in, const float *weight, const float *bias,
                           const cs_conv_shape *s, int threads);
/* grad_in (B, Ci, d, h, w) += adjoint of the above applied to grad_out (B, Co, d*kd, 2h, 2w) */
void cs_upconv_backward_data_ref(float *grad_in, const float *grad_out, const float *weight,
                                 const cs_conv_shape *s, int threads);
/* grad_weight (Ci, Co, kd, 2, 2) += ...; grad_bias (Co) += sums of grad_out (may be NULL) */
void cs_upconv_backward_weights_ref(float *grad_weight, float *grad_bias, const float *grad_out,
                                    const float *in, const cs_conv_shape *s, int threads);

/* Instance norm over the n voxels of each (batch item, channel), affine per channel:
 * out = gamma[c] * (in - mean) * rstd + beta[c], rstd = 1 / sqrt(biased variance + eps).
 * in, out (B, C, n); out may equal in (inference runs it in place); saves mean, rstd (B, C)
 * for the backward pass. */
void cs_instnorm_forward_ref(float *out, float *mean, float *rstd, const float *in,
                             const float *gamma, const float *beta, int32_t batch, int32_t channels,
                             int64_t n, float eps, int threads);
/* grad_in (B, C, n) += ..., grad_gamma (C) += sum grad_out * xhat, grad_beta (C) += sum grad_out;
 * in, mean, rstd as in (and from) the forward pass. */
void cs_instnorm_backward_ref(float *grad_in, float *grad_gamma, float *grad_beta,
                              const float *grad_out, const float *in, const float *mean,
                              const float *rstd, const float *gamma, int32_t batch,
                              int32_t channels, int64_t n, int threads);

/* LeakyReLU, slope in [0, 1): out = in > 0 ? in : slope * in, n floats; out may equal in. */
void cs_leaky_relu_forward_ref(float *out, const float *in, int64_t n, float slope, int threads);
/* grad_in += grad_out * (x > 0 ? 1 : slope), where x is the forward input OR output (same sign
 * for slope >= 0, which lets the forward run in place). */
void cs_leaky_relu_backward_ref(float *grad_in, const float *grad_out, const float *x, int64_t n,
                                float slope, int threads);

/* Max pooling by 2 in h and w and by pd (2 in 3D, 1 in 2D) in d: in (P, d, h, w) with P = B * C
 * planes, out (P, d/pd, h/2, w/2); d, h, w are multiples of the window. */
void cs_maxpool_forward_ref(float *out, const float *in, int64_t planes, int32_t d, int32_t h,
                            int32_t w, int32_t pd, int threads);
/* grad_in (P, d, h, w) += grad_out routed to the first maximum of each window (recomputed from in). */
void cs_maxpool_backward_ref(float *grad_in, const float *grad_out, const float *in, int64_t planes,
                             int32_t d, int32_t h, int32_t w, int32_t pd, int threads);

/* Channel concatenation: out (B, ca + cb, n) = [a (B, ca, n), b (B, cb, n)], a first. */
void cs_concat_forward_ref(float *out, const float *a, const float *b, int32_t batch, int32_t ca,
                           int32_t cb, int64_t n, int threads);
/* grad_a (B, ca, n) += first ca channels of grad_out, grad_b (B, cb, n) += the rest. */
void cs_concat_backward_ref(float *grad_a, float *grad_b, const float *grad_out, int32_t batch,
                            int32_t ca, int32_t cb, int64_t n, int threads);

/* Softmax over channels: out (B, C, n) = softmax_c(in (B, C, n)) at each voxel; out may equal in. */
void cs_softmax_channels_ref(float *out, const float *in, int32_t batch, int32_t channels,
                             int64_t n, int threads);

/* One tile of a softmax over channels: out (C, CS_SOFTMAX_TILE) <- voxels [i0, i0 + CS_SOFTMAX_TILE)
 * (fewer at the end) of in (C, n), bit for bit the values cs_softmax_channels gives them on the
 * same path when i0 is a multiple of CS_SOFTMAX_TILE (its work items are these tiles).
 * *non_finite is set to whether any of the tile's inputs is NaN or infinite (checked in the pass
 * that reads them for the maximum: inference's blend had a pass of its own for it). */
#define CS_SOFTMAX_TILE 512
void cs_softmax_tile_ref(float *out, const float *in, int32_t channels, int64_t n, int64_t i0,
                         int *non_finite);

/* Instance norm then LeakyReLU in one pass (the conv block's tail): out = LeakyReLU(instance
 * norm(in)) with the arguments of both kernels above; out may equal in; saves mean, rstd. */
void cs_instnorm_leaky_forward_ref(float *out, float *mean, float *rstd, const float *in,
                                   const float *gamma, const float *beta, int32_t batch,
                                   int32_t channels, int64_t n, float eps, float slope,
                                   int threads);
/* Its backward in one pass from grad_out = dL/d out: out is the forward output (the LeakyReLU's
 * sign), in, mean, rstd the norm's input and saved statistics. Unlike the other backward
 * kernels it OVERWRITES grad_in (B, C, n) (no memset needed); grad_gamma, grad_beta (C) +=. */
void cs_instnorm_leaky_backward_ref(float *grad_in, float *grad_gamma, float *grad_beta,
                                    const float *grad_out, const float *out, const float *in,
                                    const float *mean, const float *rstd, const float *gamma,
                                    int32_t batch, int32_t channels, int64_t n, float slope,
                                    int threads);

/* The dispatched versions of the layers above, same contracts. */
void cs_upconv_forward(float *out, const float *in, const float *weight, const float *bias,
                       const cs_conv_shape *s, int threads);
void cs_upconv_backward_data(float *grad_in, const float *grad_out, const float *weight,
                             const cs_conv_shape *s, int threads);
void cs_upconv_backward_weights(float *grad_weight, float *grad_bias, const float *grad_out,
                                const float *in, const cs_conv_shape *s, int threads);
void cs_instnorm_forward(float *out, float *mean, float *rstd, const float *in, const float *gamma,
                         const float *beta, int32_t batch, int32_t channels, int64_t n, float eps,
                         int threads);
void cs_instnorm_backward(float *grad_in, float *grad_gamma, float *grad_beta,
                          const float *grad_out, const float *in, const float *mean,
                          const float *rstd, const float *gamma, int32_t batch, int32_t channels,
                          int64_t n, int threads);
void cs_instnorm_leaky_forward(float *out, float *mean, float *rstd, const float *in,
                               const float *gamma, const float *beta, int32_t batch,
                               int32_t channels, int64_t n, float eps, float slope, int threads);
void cs_instnorm_leaky_backward(float *grad_in, float *grad_gamma, float *grad_beta,
                                const float *grad_out, const float *out, const float *in,
                                const float *mean, const float *rstd, const float *gamma,
                                int32_t batch, int32_t channels, int64_t n, float slope,
                                int threads);
void cs_leaky_relu_forward(float *out, const float *in, int64_t n, float slope, int threads);
void cs_leaky_relu_backward(float *grad_in, const float *grad_out, const float *x, int64_t n,
                            float slope, int threads);
void cs_maxpool_forward(float *out, const float *in, int64_t planes, int32_t d, int32_t h,
                        int32_t w, int32_t pd, int threads);
void cs_maxpool_backward(float *grad_in, const float *grad_out, const float *in, int64_t planes,
                         int32_t d, int32_t h, int32_t w, int32_t pd, int threads);
void cs_concat_forward(float *out, const float *a, const float *b, int32_t batch, int32_t ca,
                       int32_t cb, int64_t n, int threads);
void cs_concat_backward(float *grad_a, float *grad_b, const float *grad_out, int32_t batch,
                        int32_t ca, int32_t cb, int64_t n, int threads);
void cs_softmax_channels(float *out, const float *in, int32_t batch, int32_t channels, int64_t n,
                         int threads);
/* Returns whether any of the tile's inputs is NaN or infinite. */
int cs_softmax_tile(float *out, const float *in, int32_t channels, int64_t n, int64_t i0);

#ifdef __cplusplus
}
#endif

#endif /* COMBOSEG_KERNELS_H */
