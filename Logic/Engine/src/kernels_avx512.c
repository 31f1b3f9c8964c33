/* kernels_avx512.c - the convolutions with AVX-512F (16 floats per zmm register, 32 registers:
 * up to 28 accumulators). Compiled with -mavx512f -mfma; only called after the dispatcher
 * checked the CPU and the OS (ZMM state enabled). */
#if defined(__x86_64__) || defined(_M_X64)
#define CS_SFX avx512
#define CS_MAXW2 14
#define CS_MAXW1 24
#define CS_ROW_TAPS 1 /* 24 accumulators + 3 weights + 2 broadcasts */
#define CS_PV_P 3     /* narrow layers: 8 channels x 3 vectors of positions */
#define CS_MAXT2 14
#define CS_MAXT1 24
#define CS_NCI_2_3 4
#define CS_NCI_2_1 14
#define CS_NCI_1_3 8
#define CS_NCI_1_1 16

#include "kernels_avx512_vec.h"

#include "kernels_simd.inc"
#else
typedef int cs_kernels_avx512_unused; /* ISO C forbids an empty translation unit */
#endif
