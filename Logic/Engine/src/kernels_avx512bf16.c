/* kernels_avx512bf16.c - the bfloat16 forward convolution (kernels_bf16.inc) in 16 lanes: zmm
 * registers, up to 28 accumulators. Compiled with -mavx512f -mavx512bf16 -mavx512vl; only called
 * after the dispatcher checked the CPU. */
#if defined(__x86_64__) || defined(_M_X64)
#define CS_SFX avx512bf16
#define CS_MAXW2 14
#define CS_MAXW1 24
#define CS_ROW_TAPS 1 /* 24 accumulators + 3 weights + 2 broadcasts */
#define CS_PV_P 3     /* narrow layers: 8 channels x 3 vectors of positions */

#include "kernels_avx512_vec.h"

#define CS_BF16_DPBF16(acc, w, x) _mm512_dpbf16_ps((acc), (__m512bh)(w), (__m512bh)(x))
#include "kernels_bf16.inc"
#else
typedef int cs_kernels_avx512bf16_unused; /* ISO C forbids an empty translation unit */
#endif
