/* kernels_avx2.c - the convolutions with AVX2 + FMA (8 floats per ymm register, 16 registers:
 * 12 accumulators, 2 weight vectors and a broadcast). Compiled with -mavx2 -mfma; only called
 * after the dispatcher checked the CPU. */
#if defined(__x86_64__) || defined(_M_X64)
#define CS_SFX avx2
#define CS_MAXW2 6
#define CS_MAXW1 12
/* No row taps (kernels_simd.inc): 12 accumulators, 3 weights and 2 broadcasts exceed 16
 * registers, and on Zen 5 they gained nothing in 8 lanes (narrow_conv_bench). */
#define CS_ROW_TAPS 0
#define CS_MAXT2 6
#define CS_MAXT1 12
#define CS_NCI_2_3 2
#define CS_NCI_2_1 6
#define CS_NCI_1_3 4
#define CS_NCI_1_1 8

#include "kernels_avx2_vec.h"

#include "kernels_simd.inc"
#else
typedef int cs_kernels_avx2_unused; /* ISO C forbids an empty translation unit */
#endif
