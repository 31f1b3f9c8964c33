/* forward_repeat_bench <model.safetensors> <threads> [bfloat16]: cs_model_forward called 20 times
 * on one context with one 64^3 patch (batch 1), as a caller running its own windows does; prints
 * the first call's time (it maps the workspace) and the best and median of the others. With
 * bfloat16, the inference precision Segment's default uses (where the CPU has AVX512_BF16). */
#include "comboseg/comboseg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CALLS 20

static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int by_value(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int fail(cs_context_t ctx)
{
    fprintf(stderr, "forward_repeat_bench: %s\n", cs_context_last_error(ctx));
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 3 && !(argc == 4 && strcmp(argv[3], "bfloat16") == 0)) {
        fprintf(stderr, "usage: forward_repeat_bench <model.safetensors> <threads> [bfloat16]\n");
        return 2;
    }
    cs_context_t ctx = NULL;
    cs_model_t model = NULL;
    if (cs_context_init(&ctx) != CS_OK) return 1;
    if (cs_model_load(ctx, argv[1], &model) != CS_OK) return fail(ctx);
    cs_context_set_threads(ctx, atoi(argv[2]));
    if (argc == 4) cs_context_set_inference_precision(ctx, CS_PRECISION_BFLOAT16);
    const cs_model_info *info = cs_model_get_info(model);
    const int64_t size[3] = {64, 64, 64}, n = 64 * 64 * 64;
    float *image = malloc(sizeof(float) * (size_t)(n * info->arch.in_channels));
    float *logits = malloc(sizeof(float) * (size_t)(n * info->arch.num_classes));
    if (!image || !logits) return 1;
    for (int64_t i = 0; i < n * info->arch.in_channels; i++)
        image[i] = (float)((uint64_t)i * 2654435761u % 1000) / 500.0f - 1.0f;
    double t[CALLS];
    for (int c = 0; c < CALLS; c++) {
        const double start = seconds();
        if (cs_model_forward(ctx, model, image, 1, size, logits) != CS_OK) return fail(ctx);
        t[c] = seconds() - start;
    }
    const double first = t[0];
    qsort(t + 1, CALLS - 1, sizeof t[0], by_value);
    printf("first_ms=%.1f best_ms=%.1f median_ms=%.1f calls=%d\n", 1e3 * first, 1e3 * t[1],
           1e3 * t[1 + (CALLS - 1) / 2], CALLS);
    cs_model_free(model);
    cs_context_free(ctx);
    free(image);
    free(logits);
    return 0;
}
