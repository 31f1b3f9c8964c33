/* kernels_portable.c - the convolutions in plain C11 (any compiler, any CPU): a "vector" is a
 * struct of 8 floats, which compilers map onto NEON or SSE registers where they can. */
#define CS_VL 8
#define CS_SFX portable
/* Small register blocks: plain C gains little from large ones, and they keep compile times short
 * (every block size is a separate unrolled instance). */
#define CS_MAXW2 2
#define CS_MAXW1 4
#define CS_ROW_TAPS 1 /* three x taps per broadcast: the path that tests cover on any CPU */
#define CS_MAXT2 3
#define CS_MAXT1 6
#define CS_NCI_2_3 1
#define CS_NCI_2_1 3
#define CS_NCI_1_3 2
#define CS_NCI_1_1 6

#include "kernels_portable_vec.h"
#include "kernels_simd.inc"
