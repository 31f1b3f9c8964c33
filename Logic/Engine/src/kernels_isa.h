/* kernels_isa.h - the instruction-set paths behind the dispatched kernels of kernels.h.
 *
 * Each path (portable C, AVX2+FMA, AVX-512) compiles the same convolution code
 * (kernels_simd.inc) for its vector width. The entry points return 0, or -1 when their scratch
 * memory could not be allocated, in which case the dispatcher runs the reference kernel instead
 * (kernels are void and cannot report errors).
 */
#ifndef COMBOSEG_KERNELS_ISA_H
#define COMBOSEG_KERNELS_ISA_H

#include "kernels.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cs_isa {
    CS_ISA_AUTO = 0,     /* the best path this CPU supports */
    CS_ISA_PORTABLE = 1, /* plain C11 */
    CS_ISA_AVX2 = 2,     /* AVX2 + FMA, 8 floats per vector */
    CS_ISA_AVX512 = 3    /* AVX-512F, 16 floats per vector */
} cs_isa;

/* Whether this build has a path and this CPU can run it (AUTO and PORTABLE: always). */
int cs_isa_available(cs_isa isa);
/* The path the dispatched kernels take now. */
cs_isa cs_isa_active(void);
/* "portable", "avx2", "avx512" ("auto" for CS_ISA_AUTO). */
const char *cs_isa_name(cs_isa isa);
/* The three passes of a convolution. */
typedef enum cs_conv_pass {
    CS_CONV_FORWARD = 0,          /* cs_conv_forward: output channels in the vector lanes */
    CS_CONV_BACKWARD_WEIGHTS = 1, /* cs_conv_backward_weights: output channels in the lanes */
    CS_CONV_BACKWARD_DATA = 2     /* cs_conv_backward_data: input channels in the lanes */
} cs_conv_pass;
/* The path of one convolution pass on shape s: the active path, except that with AVX-512 the
 * narrow passes of 8-channel layers take AVX2 (kernels_fast.c says which and why). */
cs_isa cs_isa_conv(const cs_conv_shape *s, cs_conv_pass pass);
/* 1 when the CPU has AVX-512 but runs each 512-bit FMA as two 256-bit halves (AMD Zen 4), so
 * that 16-lane vectors compute no faster than 8-lane ones. */
int cs_isa_avx512_half_width(void);
/* 1 when cs_conv_forward_bf16 runs in bfloat16: the AVX-512 path is active and the CPU has
 * AVX512_BF16. */
int cs_isa_bf16_available(void);
/* Forces a path for tests and benchmarks (AUTO restores detection). Returns 0, or -1 when the
 * path is not available, which leaves the choice unchanged. Not thread-safe: call it before
 * running kernels. */
int cs_isa_force(cs_isa isa);

/* 0 makes cs_conv_forward_winograd the direct convolution, 1 (the default) lets it run: for
 * benchmarks that time inference both ways. Not thread-safe, like cs_isa_force. */
void cs_isa_allow_winograd(int allow);
/* 1 when cs_conv_forward_winograd computes shape s by Winograd's method on the active path (with
 * scratch memory), 0 when it is the direct convolution there. */
int cs_conv_winograd_takes(const cs_conv_shape *s);

/* Scratch memory of the fast kernels, kept per calling thread between calls: a fresh
 * allocation of tens of megabytes per call costs page faults worth a quarter of a convolution.
 * Returns `floats` floats (64-byte aligned, contents undefined) for one of CS_SCRATCH_SLOTS
 * slots, or NULL when out of memory. A slot's pointer stays valid until the next request of that
 * slot on the same thread. */
#define CS_SCRATCH_SLOTS 4
float *cs_kernel_scratch(int slot, size_t floats);
/* Frees the calling thread's scratch now (on POSIX it is also freed when the thread ends). */
void cs_kernel_scratch_release(void);

#define CS_DECLARE_CONV_PATH(sfx)                                                                  \
    int cs_conv_forward_##sfx(float *out, const float *in, const float *weight, const float *bias, \
                              const cs_conv_shape *s, int threads);                                \
    int cs_conv_forward_winograd_##sfx(float *out, const float *in, const float *weight,           \
                                       const float *bias, const cs_conv_shape *s, int threads);    \
    int cs_conv_winograd_takes_##sfx(const cs_conv_shape *s);                                      \
    int cs_conv_backward_data_##sfx(float *grad_in, const float *grad_out, const float *weight,    \
                                    const cs_conv_shape *s, int threads);                          \
    int cs_conv_backward_weights_##sfx(float *grad_weight, float *grad_bias,                       \
                                       const float *grad_out, const float *in,                     \
                                       const cs_conv_shape *s, int threads);                       \
    int cs_upconv_forward_##sfx(float *out, const float *in, const float *weight,                  \
                                const float *bias, const cs_conv_shape *s, int threads);           \
    int cs_upconv_backward_data_##sfx(float *grad_in, const float *grad_out, const float *weight,  \
                                      const cs_conv_shape *s, int threads);                        \
    int cs_upconv_backward_weights_##sfx(float *grad_weight, float *grad_bias,                     \
                                         const float *grad_out, const float *in,                   \
                                         const cs_conv_shape *s, int threads);

/* The other layers' kernels (kernels.h), same arguments, returning 0 or -1 as above. */
#define CS_DECLARE_LAYER_PATH(sfx)                                                                 \
    int cs_leaky_relu_forward_##sfx(float *out, const float *in, int64_t n, float slope,           \
                                    int threads);                                                  \
    int cs_leaky_relu_backward_##sfx(float *grad_in, const float *grad_out, const float *x,        \
                                     int64_t n, float slope, int threads);                         \
    int cs_instnorm_forward_##sfx(float *out, float *mean, float *rstd, const float *in,           \
                                  const float *gamma, const float *beta, int32_t batch,            \
                                  int32_t channels, int64_t n, float eps, int threads);            \
    int cs_instnorm_backward_##sfx(float *grad_in, float *grad_gamma, float *grad_beta,            \
                                   const float *grad_out, const float *in, const float *mean,      \
                                   const float *rstd, const float *gamma, int32_t batch,           \
                                   int32_t channels, int64_t n, int threads);                      \
    int cs_instnorm_leaky_forward_##sfx(float *out, float *mean, float *rstd, const float *in,     \
                                        const float *gamma, const float *beta, int32_t batch,      \
                                        int32_t channels, int64_t n, float eps, float slope,       \
                                        int threads);                                              \
    int cs_instnorm_leaky_backward_##sfx(                                                          \
        float *grad_in, float *grad_gamma, float *grad_beta, const float *grad_out,                \
        const float *out, const float *in, const float *mean, const float *rstd,                   \
        const float *gamma, int32_t batch, int32_t channels, int64_t n, float slope, int threads); \
    int cs_softmax_channels_##sfx(float *out, const float *in, int32_t batch, int32_t channels,    \
                                  int64_t n, int threads);                                         \
    int cs_softmax_tile_##sfx(float *out, const float *in, int32_t channels, int64_t n,            \
                              int64_t i0, int *non_finite);

CS_DECLARE_CONV_PATH(portable)
CS_DECLARE_LAYER_PATH(portable)
#if defined(COMBOSEG_HAVE_X86_KERNELS)
CS_DECLARE_CONV_PATH(avx2)
CS_DECLARE_CONV_PATH(avx512)
CS_DECLARE_LAYER_PATH(avx2)
CS_DECLARE_LAYER_PATH(avx512)
#endif
#if defined(COMBOSEG_HAVE_BF16_KERNELS)
/* kernels_avx512bf16.c: the forward convolution in bfloat16 pairs (cs_conv_forward_bf16) */
int cs_conv_forward_avx512bf16(float *out, const float *in, const float *weight, const float *bias,
                               const cs_conv_shape *s, int threads);
#endif

#ifdef __cplusplus
}
#endif

#endif /* COMBOSEG_KERNELS_ISA_H */
