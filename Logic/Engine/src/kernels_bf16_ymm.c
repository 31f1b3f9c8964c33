/* kernels_bf16_ymm.c - the bfloat16 forward convolution (kernels_bf16.inc) in 8 lanes, for
 * layers of at most 8 output channels (half of a zmm register would be zeros): ymm registers,
 * of which AVX-512VL gives 32, so as many accumulators as in 16 lanes. Compiled with -mavx512f
 * -mavx512bf16 -mavx512vl; only called after the dispatcher checked the CPU. */
#if defined(__x86_64__) || defined(_M_X64)
#define CS_SFX bf16_ymm
#define CS_MAXW2 14
#define CS_MAXW1 24

#include "kernels_avx2_vec.h"

#define CS_BF16_DPBF16(acc, w, x) _mm256_dpbf16_ps((acc), (__m256bh)(w), (__m256bh)(x))
#include "kernels_bf16.inc"
#else
typedef int cs_kernels_bf16_ymm_unused; /* ISO C forbids an empty translation unit */
#endif
