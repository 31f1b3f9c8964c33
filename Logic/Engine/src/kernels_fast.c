/* kernels_fast.c - dispatched fast kernels. Until the optimised kernels land, each forwards to
 * its reference. */
#include "kernels.h"

void cs_conv_forward(float *out, const float *in, const float *weight, const float *bias,
                     const cs_conv_shape *s, int threads)
{
    cs_conv_forward_ref(out, in, weight, bias, s, threads);
}

void cs_conv_backward_data(float *grad_in, const float *grad_out, const float *weight,
                           const cs_conv_shape *s, int threads)
{
    cs_conv_backward_data_ref(grad_in, grad_out, weight, s, threads);
}

void cs_conv_backward_weights(float *grad_weight, float *grad_bias, const float *grad_out,
                              const float *in, const cs_conv_shape *s, int threads)
{
    cs_conv_backward_weights_ref(grad_weight, grad_bias, grad_out, in, s, threads);
}
