/* narrow_conv_bench [threads]: the convolutions of the 8-filter models' full-resolution level
 * (1 -> 8, 8 -> 8, 16 -> 8 and 8 -> 16 channels, 3x3x3 at 64^3, batch 1), forward and
 * backward-data, timed on the AVX2 and the AVX-512 kernels directly (the dispatcher's choice
 * between them, cs_isa_conv, is what this measures). Alternating rounds, best of 7 each; prints
 * one line per shape and pass. Needs an AVX-512 host. */
#include "kernels_isa.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define ROUNDS 7
#define SIDE 64

static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Best time of path (0 AVX2, 1 AVX-512) for pass (0 forward, 1 backward-data), updated. */
static void time_once(double best[2][2], const cs_conv_shape *s, float *x, float *y, const float *w,
                      const float *bias, int threads)
{
    for (int pass = 0; pass < 2; pass++)
        for (int path = 0; path < 2; path++) {
            const double t0 = seconds();
            if (pass == 0 && path == 0) cs_conv_forward_avx2(y, x, w, bias, s, threads);
            if (pass == 0 && path == 1) cs_conv_forward_avx512(y, x, w, bias, s, threads);
            if (pass == 1 && path == 0) cs_conv_backward_data_avx2(x, y, w, s, threads);
            if (pass == 1 && path == 1) cs_conv_backward_data_avx512(x, y, w, s, threads);
            const double t = seconds() - t0;
            if (t < best[pass][path]) best[pass][path] = t;
        }
}

int main(int argc, char **argv)
{
    const int threads = argc > 1 ? atoi(argv[1]) : 1;
    if (!cs_isa_available(CS_ISA_AVX512)) {
        fprintf(stderr, "narrow_conv_bench: this CPU has no AVX-512\n");
        return 1;
    }
    printf("# narrow_conv_bench threads=%d avx512_half_width=%d\n", threads,
           cs_isa_avx512_half_width());
    const int shapes[4][2] = {{1, 8}, {8, 8}, {16, 8}, {8, 16}};
    const size_t vox = (size_t)SIDE * SIDE * SIDE;
    float *x = malloc(sizeof(float) * vox * 16), *y = malloc(sizeof(float) * vox * 16);
    float *w = malloc(sizeof(float) * 16 * 16 * 27), *bias = calloc(16, sizeof(float));
    if (!x || !y || !w || !bias) return 1;
    for (size_t i = 0; i < vox * 16; i++) x[i] = y[i] = (float)(i % 7) * 0.1f;
    for (int i = 0; i < 16 * 16 * 27; i++) w[i] = (float)(i % 5) * 0.1f;
    for (int k = 0; k < 4; k++) {
        const cs_conv_shape s = {1, shapes[k][0], shapes[k][1], SIDE, SIDE, SIDE, 3, 3, 3};
        double best[2][2] = {{1e9, 1e9}, {1e9, 1e9}};
        for (int r = 0; r < ROUNDS; r++) time_once(best, &s, x, y, w, bias, threads);
        for (int pass = 0; pass < 2; pass++)
            printf("conv3d ci=%d co=%d pass=%s avx2_ms=%.2f avx512_ms=%.2f ratio=%.2f\n",
                   s.in_channels, s.out_channels, pass ? "bwd_data" : "fwd", 1e3 * best[pass][0],
                   1e3 * best[pass][1], best[pass][0] / best[pass][1]);
    }
    free(bias);
    free(w);
    free(y);
    free(x);
    return 0;
}
