/* kernels_portable_vec.h - a "vector" of CS_VL floats in plain C for kernels_simd.inc (included
 * by kernels_portable.c after it defines CS_VL). */
#include <math.h>

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


static inline cs_vec cs_vset1(float f) { return cs_vbcast(&f); }

#define CS_PORTABLE_BINOP(name, expr)                                                              \
    static inline cs_vec name(cs_vec a, cs_vec b)                                                  \
    {                                                                                              \
        cs_vec r;                                                                                  \
        for (int i = 0; i < CS_VL; i++) r.v[i] = (expr);                                           \
        return r;                                                                                  \
    }
CS_PORTABLE_BINOP(cs_vadd, a.v[i] + b.v[i])
CS_PORTABLE_BINOP(cs_vsub, a.v[i] - b.v[i])
CS_PORTABLE_BINOP(cs_vmul, a.v[i] * b.v[i])
CS_PORTABLE_BINOP(cs_vmax, a.v[i] > b.v[i] ? a.v[i] : b.v[i])

/* round to nearest; 2^n for integer-valued n */
static inline cs_vec cs_vround(cs_vec a)
{
    cs_vec r;
    for (int i = 0; i < CS_VL; i++) r.v[i] = nearbyintf(a.v[i]);
    return r;
}

static inline cs_vec cs_vpow2i(cs_vec n)
{
    cs_vec r;
    for (int i = 0; i < CS_VL; i++) r.v[i] = ldexpf(1.0f, (int)n.v[i]);
    return r;
}

/* s > 0 ? a : b lane-wise */
static inline cs_vec cs_vsel_pos(cs_vec s, cs_vec a, cs_vec b)
{
    cs_vec r;
    for (int i = 0; i < CS_VL; i++) r.v[i] = s.v[i] > 0.0f ? a.v[i] : b.v[i];
    return r;
}
