/* kernels_avx512_vec.h - the vector operations of kernels_simd.inc on 512-bit registers (16
 * floats), shared by the float path (kernels_avx512.c) and the bfloat16 one
 * (kernels_avx512bf16.c). Included by files compiled with -mavx512f only. */
#ifndef COMBOSEG_KERNELS_AVX512_VEC_H
#define COMBOSEG_KERNELS_AVX512_VEC_H

#include <immintrin.h>

#define CS_VL 16

typedef __m512 cs_vec;
#define cs_vzero() _mm512_setzero_ps()
#define cs_vload(p) _mm512_loadu_ps(p)
#define cs_vstore(p, a) _mm512_storeu_ps((p), (a))
#define cs_vbcast(p) _mm512_set1_ps(*(p))
#define cs_vfma(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define cs_vset1(f) _mm512_set1_ps(f)
#define cs_vadd(a, b) _mm512_add_ps((a), (b))
#define cs_vsub(a, b) _mm512_sub_ps((a), (b))
#define cs_vmul(a, b) _mm512_mul_ps((a), (b))
#define cs_vmax(a, b) _mm512_max_ps((a), (b))
/* s > 0 ? a : b lane-wise */
/* round to nearest; 2^n for integer-valued n in [-126, 127] (the exponent field) */
#define cs_vround(a) _mm512_roundscale_ps((a), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define cs_vpow2i(n)                                                                               \
    _mm512_castsi512_ps(                                                                           \
        _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23))
#define cs_vsel_pos(s, a, b)                                                                       \
    _mm512_mask_blend_ps(_mm512_cmp_ps_mask((s), _mm512_setzero_ps(), _CMP_GT_OQ), (b), (a))

/* v[i] lane j <-> v[j] lane i: within 128-bit lanes, then across them in two steps */
#define CS_HAVE_TRANSPOSE 1
static inline void cs_vtranspose(__m512 *v)
{
    __m512 s[16]; /* s[4g + j]: rows 4g..4g+3 of columns j, 4 + j, 8 + j, 12 + j (one a lane) */
    for (int g = 0; g < 4; g++) {
        const __m512 lo01 = _mm512_unpacklo_ps(v[4 * g], v[4 * g + 1]);
        const __m512 hi01 = _mm512_unpackhi_ps(v[4 * g], v[4 * g + 1]);
        const __m512 lo23 = _mm512_unpacklo_ps(v[4 * g + 2], v[4 * g + 3]);
        const __m512 hi23 = _mm512_unpackhi_ps(v[4 * g + 2], v[4 * g + 3]);
        s[4 * g] = _mm512_shuffle_ps(lo01, lo23, _MM_SHUFFLE(1, 0, 1, 0));
        s[4 * g + 1] = _mm512_shuffle_ps(lo01, lo23, _MM_SHUFFLE(3, 2, 3, 2));
        s[4 * g + 2] = _mm512_shuffle_ps(hi01, hi23, _MM_SHUFFLE(1, 0, 1, 0));
        s[4 * g + 3] = _mm512_shuffle_ps(hi01, hi23, _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int j = 0; j < 4; j++) {
        const __m512 p = _mm512_shuffle_f32x4(s[j], s[4 + j], 0x88);
        const __m512 q = _mm512_shuffle_f32x4(s[j], s[4 + j], 0xdd);
        const __m512 r = _mm512_shuffle_f32x4(s[8 + j], s[12 + j], 0x88);
        const __m512 t = _mm512_shuffle_f32x4(s[8 + j], s[12 + j], 0xdd);
        v[j] = _mm512_shuffle_f32x4(p, r, 0x88);
        v[4 + j] = _mm512_shuffle_f32x4(q, t, 0x88);
        v[8 + j] = _mm512_shuffle_f32x4(p, r, 0xdd);
        v[12 + j] = _mm512_shuffle_f32x4(q, t, 0xdd);
    }
}

#endif /* COMBOSEG_KERNELS_AVX512_VEC_H */
