/* kernels_avx2_vec.h - the vector operations of kernels_simd.inc on 256-bit registers (8
 * floats), for kernels_avx2.c. Included by files compiled with -mavx2 -mfma at least. */
#ifndef COMBOSEG_KERNELS_AVX2_VEC_H
#define COMBOSEG_KERNELS_AVX2_VEC_H

#include <immintrin.h>

#define CS_VL 8

typedef __m256 cs_vec;
#define cs_vzero() _mm256_setzero_ps()
#define cs_vload(p) _mm256_loadu_ps(p)
#define cs_vstore(p, a) _mm256_storeu_ps((p), (a))
#define cs_vbcast(p) _mm256_broadcast_ss(p)
#define cs_vfma(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define cs_vset1(f) _mm256_set1_ps(f)
#define cs_vadd(a, b) _mm256_add_ps((a), (b))
#define cs_vsub(a, b) _mm256_sub_ps((a), (b))
#define cs_vmul(a, b) _mm256_mul_ps((a), (b))
#define cs_vmax(a, b) _mm256_max_ps((a), (b))
/* round to nearest; 2^n for integer-valued n in [-126, 127] (the exponent field) */
#define cs_vround(a) _mm256_round_ps((a), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define cs_vpow2i(n)                                                                               \
    _mm256_castsi256_ps(                                                                           \
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23))
/* s > 0 ? a : b lane-wise */
#define cs_vsel_pos(s, a, b)                                                                       \
    _mm256_blendv_ps((b), (a), _mm256_cmp_ps((s), _mm256_setzero_ps(), _CMP_GT_OQ))

/* v[i] lane j <-> v[j] lane i: within 128-bit halves, then across them */
#define CS_HAVE_TRANSPOSE 1
static inline void cs_vtranspose(__m256 *v)
{
    __m256 u[8]; /* u[4g + j]: rows 4g..4g+3 of column j (low half) and j + 4 (high half) */
    for (int g = 0; g < 2; g++) {
        const __m256 lo01 = _mm256_unpacklo_ps(v[4 * g], v[4 * g + 1]);
        const __m256 hi01 = _mm256_unpackhi_ps(v[4 * g], v[4 * g + 1]);
        const __m256 lo23 = _mm256_unpacklo_ps(v[4 * g + 2], v[4 * g + 3]);
        const __m256 hi23 = _mm256_unpackhi_ps(v[4 * g + 2], v[4 * g + 3]);
        u[4 * g] = _mm256_shuffle_ps(lo01, lo23, _MM_SHUFFLE(1, 0, 1, 0));
        u[4 * g + 1] = _mm256_shuffle_ps(lo01, lo23, _MM_SHUFFLE(3, 2, 3, 2));
        u[4 * g + 2] = _mm256_shuffle_ps(hi01, hi23, _MM_SHUFFLE(1, 0, 1, 0));
        u[4 * g + 3] = _mm256_shuffle_ps(hi01, hi23, _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int j = 0; j < 4; j++) {
        v[j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x20);
        v[4 + j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x31);
    }
}

#endif /* COMBOSEG_KERNELS_AVX2_VEC_H */
