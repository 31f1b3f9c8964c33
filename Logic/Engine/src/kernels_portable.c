/* kernels_portable.c - the convolutions in plain C11 (any compiler, any CPU): a "vector" is a
 * struct of 8 floats, which compilers map onto NEON or SSE registers where they can. */
#define CS_VL 8
#define CS_SFX portable
#define CS_MAXW2 4
#define CS_MAXW1 8
#define CS_MAXT2 6
#define CS_MAXT1 12
#define CS_NCI_2_3 2
#define CS_NCI_2_1 6
#define CS_NCI_1_3 4
#define CS_NCI_1_1 8

#include "kernels_portable_vec.h"
#include "kernels_simd.inc"
