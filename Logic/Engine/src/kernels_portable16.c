/* kernels_portable16.c - plain C with the blocking of the AVX-512 path (16-float vectors, its
 * register-block sizes): never chosen by the dispatcher, it lets tests check that blocking on
 * CPUs without AVX-512 (only the five vector macros of kernels_avx512.c then go untested). */
#define CS_VL 16
#define CS_SFX portable16
#define CS_MAXW2 14
#define CS_MAXW1 24
#define CS_MAXT2 14
#define CS_MAXT1 24
#define CS_NCI_2_3 4
#define CS_NCI_2_1 14
#define CS_NCI_1_3 8
#define CS_NCI_1_1 16

#include "kernels_portable_vec.h"

#include "kernels_simd.inc"
