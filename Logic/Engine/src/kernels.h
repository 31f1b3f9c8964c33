/* kernels.h - the compute kernels of the U-Net layers.
 *
 * Layout: activations are (B, C, D, H, W) contiguous with W fastest (NCDHW); 2D data has D = 1
 * and kernels with kd = 1. Weights of a convolution are (Co, Ci, kd, kh, kw); of a transposed
 * convolution (Ci, Co, 2, 2, 2) (or (Ci, Co, 1, 2, 2) in 2D), as in PyTorch.
 *
 * Every kernel exists twice: a plain reference (`_ref`, kernels_ref.c) that reads top to bottom
 * and a fast one (no suffix) chosen at run time for the CPU (AVX-512, AVX2+FMA, portable C).
 * Tests hold them equal. Forward kernels overwrite their outputs; backward kernels ADD into the
 * gradients they produce (a separate memset zeroes them), as in llm.c.
 */
#ifndef COMBOSEG_KERNELS_H
#define COMBOSEG_KERNELS_H

#include <stdint.h>

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
/* grad_in (B, Ci, D, H, W) += conv_transpose(grad_out (B, Co, D, H, W), weight) */
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

/* The other layers' kernels are declared below by net.c's author (instance norm, LeakyReLU,
 * max pooling, transposed convolution, concatenation, softmax), each with a _ref version. */

#ifdef __cplusplus
}
#endif

#endif /* COMBOSEG_KERNELS_H */
