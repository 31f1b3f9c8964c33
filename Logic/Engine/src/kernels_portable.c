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

typedef struct cs_vec {
    float v[CS_VL];
} cs_vec;

static inline cs_vec cs_vzero(void)
{
    cs_vec r;
    for (int i = 0; i < CS_VL; i++) r.v[i] = 0.0f;
    return r;
}

static inline cs_vec cs_vload(const float *p)
{
    cs_vec r;
    for (int i = 0; i < CS_VL; i++) r.v[i] = p[i];
    return r;
}

static inline void cs_vstore(float *p, cs_vec a)
{
    for (int i = 0; i < CS_VL; i++) p[i] = a.v[i];
}

static inline cs_vec cs_vbcast(const float *p)
{
    cs_vec r;
    for (int i = 0; i < CS_VL; i++) r.v[i] = *p;
    return r;
}

static inline cs_vec cs_vfma(cs_vec a, cs_vec b, cs_vec c)
{
    for (int i = 0; i < CS_VL; i++) c.v[i] += a.v[i] * b.v[i];
    return c;
}

#include "kernels_simd.inc"
