/* comboseg_bench.c - the engine's speed on this machine, one figure per line (issue 3):
 *
 *   peak gflops=<measured FMA peak, all threads>
 *   conv3d c=<channels> pass=<fwd|bwd_data|bwd_weights> gflops=<x> pct_peak=<y>
 *   conv2d c=<channels> pass=<...> gflops=<x> pct_peak=<y>
 *   unet3d threads=<n> train_step_ms=<median> infer_ms=<median> peak_rss_mb=<z>
 *   volume256 seconds=<median>
 *
 * Lines starting with '#' are notes for people (instruction set, repetitions, best times).
 * Threads: OMP_NUM_THREADS (else the OpenMP default). Options:
 *   --isa portable|avx2|avx512   force a kernel path (default: the best this CPU runs)
 *   --only peak,conv,unet,volume run only these parts (comma-separated)
 *   --reps N                     repetitions per figure (default 7; 3 for the U-Net, 1 volume)
 * The U-Net and the volume run before the convolutions so that peak_rss_mb is the network's.
 */
#include "comboseg/comboseg.h"
#include "kernels.h"
#include "kernels_isa.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <sys/resource.h>
#endif
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
#include <immintrin.h>
#define BENCH_X86 1
#endif

static double now_s(void)
{
#ifdef _OPENMP
    return omp_get_wtime();
#else
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
#endif
}

/* CPU time of the whole process: under time-slicing by other processes it still counts only
 * our work, a steadier signal than wall time on a shared machine. */
static double cpu_s(void) { return (double)clock() / CLOCKS_PER_SEC; }

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double peak_rss_mb(void)
{
#if defined(__unix__) || defined(__APPLE__)
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
#if defined(__APPLE__)
    return ru.ru_maxrss / 1048576.0; /* bytes */
#else
    return ru.ru_maxrss / 1024.0; /* kilobytes */
#endif
#else
    return 0.0;
#endif
}

/* ------------------------------------------------------------------------------------------ */
/* FMA peak: independent FMA chains (more than latency x pipes) per thread, all threads at once */

#define PEAK_CHAINS 12
#ifdef BENCH_X86
__attribute__((target("avx2,fma"))) static float fma_loop_avx2(long iters)
{
    __m256 acc[PEAK_CHAINS];
    const __m256 m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < PEAK_CHAINS; i++) acc[i] = _mm256_set1_ps((float)i);
    for (long it = 0; it < iters; it++) {
#pragma GCC unroll 12
        for (int i = 0; i < PEAK_CHAINS; i++) acc[i] = _mm256_fmadd_ps(acc[i], m, a);
    }
    __m256 s = acc[0];
    for (int i = 1; i < PEAK_CHAINS; i++) s = _mm256_add_ps(s, acc[i]);
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0];
}

__attribute__((target("avx512f"))) static float fma_loop_avx512(long iters)
{
    __m512 acc[PEAK_CHAINS];
    const __m512 m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < PEAK_CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long it = 0; it < iters; it++) {
#pragma GCC unroll 12
        for (int i = 0; i < PEAK_CHAINS; i++) acc[i] = _mm512_fmadd_ps(acc[i], m, a);
    }
    __m512 s = acc[0];
    for (int i = 1; i < PEAK_CHAINS; i++) s = _mm512_add_ps(s, acc[i]);
    return _mm512_reduce_add_ps(s);
}
#endif

static float fma_loop_portable(long iters)
{
    float acc[PEAK_CHAINS][8];
    for (int i = 0; i < PEAK_CHAINS; i++)
        for (int l = 0; l < 8; l++) acc[i][l] = (float)(i + l);
    for (long it = 0; it < iters; it++)
        for (int i = 0; i < PEAK_CHAINS; i++)
            for (int l = 0; l < 8; l++) acc[i][l] = acc[i][l] * 0.999999f + 1e-7f;
    float s = 0.0f;
    for (int i = 0; i < PEAK_CHAINS; i++)
        for (int l = 0; l < 8; l++) s += acc[i][l];
    return s;
}

/* FLOP per loop iteration and thread of the path's loop. */
static double fma_loop(cs_isa isa, long iters, float *sink)
{
    switch (isa) {
#ifdef BENCH_X86
    case CS_ISA_AVX512: *sink += fma_loop_avx512(iters); return 2.0 * 16 * PEAK_CHAINS;
    case CS_ISA_AVX2: *sink += fma_loop_avx2(iters); return 2.0 * 8 * PEAK_CHAINS;
#endif
    default: *sink += fma_loop_portable(iters); return 2.0 * 8 * PEAK_CHAINS;
    }
}

/* The best of several timed runs: the machine's capability, as other loads only lower it. */
static double measure_peak(cs_isa isa, int threads, double *cpu_best)
{
    const long iters = 20000000;
    double best = 0.0;
    float sink = 0.0f;
    for (int rep = 0; rep < 7; rep++) {
        double flop_per_iter = 0.0;
        double t0 = now_s(), c0 = cpu_s();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
        {
            float s = 0.0f;
            double f = fma_loop(isa, iters, &s);
            sink += s;
#pragma omp master
            flop_per_iter = f;
        }
        double t = now_s() - t0, tc = cpu_s() - c0;
        double g = flop_per_iter * iters * threads / t / 1e9;
        if (g > best) best = g;
        if (flop_per_iter * iters / tc / 1e9 > *cpu_best) *cpu_best = flop_per_iter * iters / tc / 1e9;
    }
    if (sink == 12345.0f) printf("# %f\n", sink); /* keep the loops alive */
    return best;
}

/* ------------------------------------------------------------------------------------------ */
/* Convolutions                                                                                */

static void fill_random(float *p, size_t n, cs_rng *rng)
{
    for (size_t i = 0; i < n; i++) p[i] = cs_rng_uniform(rng) - 0.5f;
}

typedef struct conv_bench {
    const char *tag; /* conv3d or conv2d */
    int c;           /* the figure's channel label */
    cs_conv_shape s;
} conv_bench;

static int bench_conv(const conv_bench *cb, double peak, int threads, int reps)
{
    const cs_conv_shape *s = &cb->s;
    const size_t vox = (size_t)s->d * s->h * s->w, taps = (size_t)s->kd * s->kh * s->kw;
    const size_t nin = (size_t)s->batch * s->in_channels * vox;
    const size_t nout = (size_t)s->batch * s->out_channels * vox;
    const size_t nw = (size_t)s->out_channels * s->in_channels * taps;
    float *in = malloc(nin * sizeof(float)), *gin = malloc(nin * sizeof(float));
    float *out = malloc(nout * sizeof(float)), *gout = malloc(nout * sizeof(float));
    float *w = malloc(nw * sizeof(float)), *gw = calloc(nw, sizeof(float));
    float *bias = calloc((size_t)s->out_channels, sizeof(float));
    float *gb = calloc((size_t)s->out_channels, sizeof(float));
    double *t = malloc(sizeof(double) * (size_t)reps);
    double *tc = malloc(sizeof(double) * (size_t)reps);
    if (!tc || !in || !gin || !out || !gout || !w || !gw || !bias || !gb || !t) {
        fprintf(stderr, "comboseg_bench: out of memory\n");
        return 1;
    }
    cs_rng rng;
    cs_rng_seed(&rng, 42);
    fill_random(in, nin, &rng);
    fill_random(gout, nout, &rng);
    fill_random(w, nw, &rng);
    memset(gin, 0, nin * sizeof(float));
    const double flop = 2.0 * s->batch * s->in_channels * s->out_channels * taps * vox;
    static const char *passes[3] = {"fwd", "bwd_data", "bwd_weights"};
    for (int p = 0; p < 3; p++) {
        for (int r = -1; r < reps; r++) { /* r = -1 warms up */
            double t0 = now_s(), c0 = cpu_s();
            if (p == 0) cs_conv_forward(out, in, w, bias, s, threads);
            else if (p == 1) cs_conv_backward_data(gin, gout, w, s, threads);
            else cs_conv_backward_weights(gw, gb, gout, in, s, threads);
            if (r >= 0) {
                t[r] = now_s() - t0;
                tc[r] = cpu_s() - c0;
            }
        }
        double best = t[0];
        for (int r = 1; r < reps; r++) best = t[r] < best ? t[r] : best;
        const double g = flop / median(t, reps) / 1e9;
        printf("%s c=%d pass=%s gflops=%.1f pct_peak=%.1f\n", cb->tag, cb->c, passes[p], g,
               100.0 * g / peak);
        printf("# %s c=%d pass=%s best_gflops=%.1f ms_median=%.2f cpu_gflops_per_thread=%.1f\n",
               cb->tag, cb->c, passes[p], flop / best / 1e9, 1e3 * flop / g / 1e9,
               flop / median(tc, reps) / 1e9);
        fflush(stdout);
    }
    free(tc);
    free(t);
    free(gb);
    free(bias);
    free(gw);
    free(w);
    free(gout);
    free(out);
    free(gin);
    free(in);
    return 0;
}

static cs_conv_shape conv_shape(int b, int ci, int co, int d, int h, int w, int k3d)
{
    cs_conv_shape s;
    s.batch = b;
    s.in_channels = ci;
    s.out_channels = co;
    s.d = d;
    s.h = h;
    s.w = w;
    s.kd = k3d ? 3 : 1;
    s.kh = 3;
    s.kw = 3;
    return s;
}

/* ------------------------------------------------------------------------------------------ */
/* The reference U-Net of docs/design.md: 3D, 2 channels, K = 5, 16 base filters, 4 levels    */

static int make_model(cs_context_t ctx, int in_channels, cs_model_t *model)
{
    cs_unet_config arch = cs_unet_config_default();
    arch.spatial_dims = 3;
    arch.in_channels = in_channels;
    arch.num_classes = 5;
    arch.base_filters = 16;
    arch.levels = 4;
    cs_model_info info;
    if (cs_model_info_init(&info, &arch) != CS_OK || cs_model_create(ctx, &info, 1, model) != CS_OK) {
        fprintf(stderr, "comboseg_bench: model: %s\n", cs_context_last_error(ctx));
        return 1;
    }
    return 0;
}

static int bench_unet(int threads, int reps)
{
    const int batch = 2, ch = 2, k = 5, n = 64;
    const int64_t size[3] = {n, n, n};
    const size_t vox = (size_t)n * n * n;
    cs_context_t ctx;
    if (cs_context_init(&ctx) != CS_OK) return 1;
    cs_context_set_threads(ctx, threads);
    cs_model_t model = NULL;
    cs_trainer_t trainer = NULL;
    float *images = malloc(sizeof(float) * batch * ch * vox);
    int32_t *labels = malloc(sizeof(int32_t) * batch * vox);
    float *logits = malloc(sizeof(float) * batch * k * vox);
    double *t = malloc(sizeof(double) * (size_t)reps);
    double *tc = malloc(sizeof(double) * (size_t)reps);
    int rc = 1;
    if (!images || !labels || !logits || !t || !tc || make_model(ctx, ch, &model)) goto done;
    cs_rng rng;
    cs_rng_seed(&rng, 7);
    for (size_t i = 0; i < batch * ch * vox; i++) images[i] = cs_rng_normal(&rng);
    for (size_t i = 0; i < batch * vox; i++) labels[i] = (int32_t)cs_rng_below(&rng, k);

    cs_train_config cfg = cs_train_config_default();
    cfg.batch_size = batch;
    cfg.patch_size[0] = cfg.patch_size[1] = cfg.patch_size[2] = n;
    cfg.optimizer = CS_OPTIMIZER_ADAM;
    cfg.loss = cs_loss_options_default(); /* Combo, alpha = beta = 0.5 */
    if (cs_trainer_init(ctx, model, &cfg, &trainer) != CS_OK) {
        fprintf(stderr, "comboseg_bench: trainer: %s\n", cs_context_last_error(ctx));
        goto done;
    }
    cs_step_result res;
    for (int r = -1; r < reps; r++) {
        double t0 = now_s(), c0 = cpu_s();
        cs_status st = cs_trainer_step(trainer, images, labels, &res);
        if (st != CS_OK && st != CS_ERR_NUMERIC) {
            fprintf(stderr, "comboseg_bench: step: %s\n", cs_context_last_error(ctx));
            goto done;
        }
        if (r >= 0) {
            t[r] = now_s() - t0;
            tc[r] = cpu_s() - c0;
        }
    }
    const double train_ms = 1e3 * median(t, reps), train_cpu_ms = 1e3 * median(tc, reps);
    const double train_rss_mb = peak_rss_mb();
    /* the trainer keeps its activations between steps (PyTorch frees its own after each step):
     * let go of them before inference, so that the peak is that of the larger of the two phases */
    cs_trainer_free(trainer);
    trainer = NULL;
    for (int r = -1; r < reps; r++) {
        double t0 = now_s(), c0 = cpu_s();
        if (cs_model_forward(ctx, model, images, batch, size, logits) != CS_OK) {
            fprintf(stderr, "comboseg_bench: forward: %s\n", cs_context_last_error(ctx));
            goto done;
        }
        if (r >= 0) {
            t[r] = now_s() - t0;
            tc[r] = cpu_s() - c0;
        }
    }
    const double infer_ms = 1e3 * median(t, reps), infer_cpu_ms = 1e3 * median(tc, reps);
    printf("unet3d threads=%d train_step_ms=%.1f infer_ms=%.1f peak_rss_mb=%.1f\n", threads,
           train_ms, infer_ms, peak_rss_mb());
    printf("# unet3d cpu_train_step_ms=%.1f cpu_infer_ms=%.1f peak_rss_mb_after_training=%.1f\n",
           train_cpu_ms, infer_cpu_ms, train_rss_mb);
    printf("# unet3d batch=%d channels=%d classes=%d size=%d reps=%d last_loss=%.4f\n", batch, ch, k,
           n, reps, (double)res.loss);
    fflush(stdout);
    rc = 0;
done:
    cs_trainer_free(trainer);
    cs_model_free(model);
    cs_context_free(ctx);
    free(tc);
    free(t);
    free(logits);
    free(labels);
    free(images);
    return rc;
}

static int bench_volume(int threads, int reps)
{
    const int64_t size[3] = {256, 256, 128};
    const size_t vox = (size_t)size[0] * size[1] * size[2];
    cs_context_t ctx;
    if (cs_context_init(&ctx) != CS_OK) return 1;
    cs_context_set_threads(ctx, threads);
    cs_model_t model = NULL;
    float *image = malloc(sizeof(float) * vox);
    int32_t *labels = malloc(sizeof(int32_t) * vox);
    double *t = malloc(sizeof(double) * (size_t)reps);
    int rc = 1;
    if (!image || !labels || !t || make_model(ctx, 1, &model)) goto done;
    cs_rng rng;
    cs_rng_seed(&rng, 9);
    for (size_t i = 0; i < vox; i++) image[i] = cs_rng_normal(&rng);
    cs_infer_options opt = cs_infer_options_default();
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        if (cs_predict_volume(ctx, model, image, size, &opt, NULL, labels) != CS_OK) {
            fprintf(stderr, "comboseg_bench: volume: %s\n", cs_context_last_error(ctx));
            goto done;
        }
        t[r] = now_s() - t0;
    }
    const double sec = median(t, reps);
    printf("volume256 seconds=%.2f\n", sec);
    printf("# volume256 size=256x256x128 window=64 overlap=%.2f voxels_per_second=%.0f reps=%d\n",
           (double)opt.overlap, vox / sec, reps);
    fflush(stdout);
    rc = 0;
done:
    cs_model_free(model);
    cs_context_free(ctx);
    free(t);
    free(labels);
    free(image);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */

static int wants(const char *only, const char *part)
{
    if (!only) return 1;
    const size_t n = strlen(part);
    for (const char *p = only; (p = strstr(p, part)) != NULL; p += n)
        if ((p == only || p[-1] == ',') && (p[n] == '\0' || p[n] == ',')) return 1;
    return 0;
}

int main(int argc, char **argv)
{
    const char *only = NULL;
    int reps = 7, reps_set = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--isa") && i + 1 < argc) {
            const char *name = argv[++i];
            cs_isa isa = CS_ISA_AUTO;
            for (int k = CS_ISA_PORTABLE; k <= CS_ISA_AVX512; k++)
                if (!strcmp(name, cs_isa_name((cs_isa)k))) isa = (cs_isa)k;
            if (isa == CS_ISA_AUTO || cs_isa_force(isa) != 0) {
                fprintf(stderr, "comboseg_bench: instruction set '%s' not available\n", name);
                return 2;
            }
        } else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
            only = argv[++i];
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = atoi(argv[++i]);
            reps_set = 1;
            if (reps < 1) reps = 1;
        } else {
            fprintf(stderr, "usage: %s [--isa portable|avx2|avx512] [--only peak,conv,unet,volume] "
                            "[--reps N]\n", argv[0]);
            return 2;
        }
    }
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads(); /* OMP_NUM_THREADS when set */
#endif
    const cs_isa isa = cs_isa_active();
    printf("# comboseg_bench threads=%d isa=%s\n", threads, cs_isa_name(isa));
    double cpu_peak = 0.0;
    double peak = measure_peak(isa, threads, &cpu_peak);
    if (wants(only, "peak") || wants(only, "conv")) printf("peak gflops=%.1f\n", peak);
    printf("# peak cpu_gflops_per_thread=%.1f\n", cpu_peak);
    fflush(stdout);

    int rc = 0;
    if (wants(only, "unet")) rc |= bench_unet(threads, reps_set ? reps : 3);
    if (wants(only, "volume")) rc |= bench_volume(threads, reps_set ? reps : 1);
    if (wants(only, "conv")) {
        /* The reference network's convolutions at batch 2: the first layer (2 -> 16 at 64^3),
         * then 16 at 64^3, 32 at 32^3, 64 at 16^3, 128 at 8^3; and 2D shapes of the same
         * channel counts at batch 8 (16 at 256^2 ... 128 at 32^2). */
        const conv_bench shapes[] = {
            {"conv3d", 2, conv_shape(2, 2, 16, 64, 64, 64, 1)},
            {"conv3d", 16, conv_shape(2, 16, 16, 64, 64, 64, 1)},
            {"conv3d", 32, conv_shape(2, 32, 32, 32, 32, 32, 1)},
            {"conv3d", 64, conv_shape(2, 64, 64, 16, 16, 16, 1)},
            {"conv3d", 128, conv_shape(2, 128, 128, 8, 8, 8, 1)},
            {"conv2d", 16, conv_shape(8, 16, 16, 1, 256, 256, 0)},
            {"conv2d", 32, conv_shape(8, 32, 32, 1, 128, 128, 0)},
            {"conv2d", 64, conv_shape(8, 64, 64, 1, 64, 64, 0)},
            {"conv2d", 128, conv_shape(8, 128, 128, 1, 32, 32, 0)},
        };
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
            rc |= bench_conv(&shapes[i], peak, threads, reps);
    }
    return rc ? 1 : 0;
}
