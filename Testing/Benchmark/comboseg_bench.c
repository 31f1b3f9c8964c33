/* comboseg_bench.c - the engine's speed on this machine, one figure per line (issues 3 and 15):
 *
 *   peak gflops=<measured FMA peak, all threads>
 *   conv3d c=<channels> pass=<fwd|bwd_data|bwd_weights> gflops=<x> pct_peak=<y> peak_gflops=<p>
 *   conv3d c=<channels> pass=fwd_bf16 ...  (where the CPU has AVX512_BF16: the bfloat16 forward
 *          of inference, against twice the float peak: two products per lane and instruction)
 *   conv3d c=<channels> pass=fwd_winograd ms=<best> gflops_direct_equivalent=<direct FLOP / time>
 *          executed_pct_peak=<the FLOP it executes against the peak> peak_gflops=<p>  (the
 *          float forward of inference, where it takes the shape)
 *   conv2d c=<channels> pass=<...> gflops=<x> pct_peak=<y> peak_gflops=<p>
 *   unet3d threads=<n> train_step_ms=<best> infer_ms=<best> peak_rss_mb=<z> rss_before_mb=<r>
 *          added_mb=<z - r> train_pct_peak=<y> train_peak_gflops=<p> infer_pct_peak=<y>
 *          infer_peak_gflops=<p>   (infer: float inference as the product runs it, Winograd
 *          where it applies; its pct_peak counts the FLOP it executes)
 *   unet3d infer_direct_ms=<best> infer_direct_pct_peak=<y> infer_direct_over_winograd=<ratio>
 *          (the same inference on the direct convolutions, rounds of its own)
 *   unet3d width=8 classes=<k> channels=<c> threads=<n> ...  (the bundled models' shapes, same keys)
 *   unet3d ... infer_bf16_ms=<best> infer_float_over_bf16=<ratio>  (where the CPU has
 *          AVX512_BF16: the same inference with bfloat16 convolutions, rounds of its own)
 *   volume256 seconds=<best> peak_gflops=<p>   (and a seconds_bf16= line where bfloat16 runs)
 *   volume256 width=8 classes=<k> channels=<c> spacing=<mm> window=<n> seconds=<best>
 *          peak_gflops=<p>
 *
 * A shared host's capacity swings from one minute to the next, so every figure runs in rounds:
 * each round measures the FMA peak (about 0.2 s) and then the figure once. A figure's time is
 * its best round, peak_gflops the best peak of the same rounds and pct_peak their ratio, which
 * never prints above 100 (a '# warning' line says when the ratio was capped). The U-Net's
 * pct_peak counts only its convolutions' arithmetic. Memory: rss_before_mb is the resident size
 * just before the first training step, peak_rss_mb the peak resident size from then to the end
 * of inference, added_mb their difference (what torch_unet_bench.py prints for PyTorch too).
 *
 * Lines starting with '#' are notes for people (instruction set, medians, CPU-time rates).
 * Threads: OMP_NUM_THREADS (else the OpenMP default). Options:
 *   --isa portable|avx2|avx512   force a kernel path (default: the best this CPU runs)
 *   --only peak,conv,unet,volume run only these parts (comma-separated)
 *   --reps N                     rounds per figure (default 7; 3 for the U-Nets, 1 volume)
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
#ifdef __GLIBC__
#include <malloc.h>
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

/* CPU time of the whole process, all threads: under time-slicing by other processes it still
 * counts only our work, a steadier signal than wall time on a shared machine. */
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

/* ------------------------------------------------------------------------------------------ */
/* Memory: the process's resident size now and its peak, in MB                                 */

/* A "Vm...:" line of /proc/self/status in MB; -1 where there is none (not Linux). */
static double proc_status_mb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1.0;
    char line[256];
    double kb = -1.0;
    const size_t n = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, n) && line[n] == ':') kb = atof(line + n + 1);
    fclose(f);
    return kb < 0.0 ? -1.0 : kb / 1024.0;
}

static double rss_mb(void) { return proc_status_mb("VmRSS"); }

/* What an earlier network left resident (each thread's kernel scratch, freed memory kept in
 * glibc's heap) would count as the next one's rss_before_mb and hide its own growth: give it
 * back, so that each network starts as in a fresh process. */
static void release_freed_memory(int threads)
{
#pragma omp parallel num_threads(threads)
    cs_kernel_scratch_release();
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

/* Lets the peak start again from the current resident size (Linux 4.0+), so that each network
 * of this process gets its own peak; returns 0 when it could not. */
static int reset_peak_rss(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return 0;
    const int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok;
}

/* The peak resident size since the last reset_peak_rss (VmHWM), else the process's lifetime
 * peak (getrusage). */
static double peak_rss_mb(void)
{
    const double hwm = proc_status_mb("VmHWM");
    if (hwm >= 0.0) return hwm;
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
/* FMA peak: independent FMA chains per thread, all threads at once. 12 chains cover the FMA   */
/* latency (4 cycles) times 2 pipes with room to spare, so the loop is not latency-bound.      */

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

static float fma_loop(cs_isa isa, long iters)
{
    switch (isa) {
#ifdef BENCH_X86
        case CS_ISA_AVX512: return fma_loop_avx512(iters);
        case CS_ISA_AVX2: return fma_loop_avx2(iters);
#endif
        default: return fma_loop_portable(iters);
    }
}

/* FLOP per loop iteration and thread of the path's loop. */
static double fma_flop_per_iter(cs_isa isa)
{
#ifdef BENCH_X86
    if (isa == CS_ISA_AVX512) return 2.0 * 16 * PEAK_CHAINS;
#endif
    (void)isa;
    return 2.0 * 8 * PEAK_CHAINS;
}

typedef struct bench_env {
    cs_isa isa;
    int threads;
    long peak_iters; /* loop iterations per thread of one peak run (about 0.2 s) */
} bench_env;

/* One run of all threads; returns GFLOP/s over wall time. *cpu_gflops (may be NULL) gets the
 * total FLOP of all threads over the process CPU seconds of all threads: GFLOP/s per thread
 * while it runs, which time-slicing by other processes does not lower. */
static double peak_once(cs_isa isa, int threads, long iters, double *cpu_gflops)
{
    float sink = 0.0f;
    const double t0 = now_s(), c0 = cpu_s();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    sink += fma_loop(isa, iters);
    const double t = now_s() - t0, tc = cpu_s() - c0;
    if (sink == 12345.0f) printf("# %f\n", sink); /* keep the loops alive */
    const double flop = fma_flop_per_iter(isa) * (double)iters * threads;
    if (cpu_gflops) *cpu_gflops = flop / tc / 1e9;
    return flop / t / 1e9;
}

/* Iterations for a peak run of about `seconds`, from the best of a few short runs. */
static long peak_iters_for(cs_isa isa, int threads, double seconds)
{
    const long probe = 1000000;
    double best = 0.0;
    for (int i = 0; i < 3; i++) {
        const double g = peak_once(isa, threads, probe, NULL);
        best = g > best ? g : best;
    }
    const double iters = seconds * best * 1e9 / (fma_flop_per_iter(isa) * threads);
    return iters > probe ? (long)iters : probe;
}

/* ------------------------------------------------------------------------------------------ */
/* Rounds: each one the FMA peak, then the figure once                                         */

typedef int (*figure_fn)(void *arg); /* one run of a figure; nonzero on failure */

typedef struct rounds {
    double best_s, median_s, best_cpu_s; /* the figure's wall time and process CPU time */
    double peak_gflops;                  /* the best FMA peak of the same rounds */
} rounds;

/* The peak right before each run sees the host as the run does; the best of each over the
 * rounds are then measured under the same conditions, so their ratio cannot exceed 100% unless
 * the peak kernel itself falls short of the machine. */
static int run_rounds(const bench_env *env, int reps, int warm_up, figure_fn fn, void *arg,
                      rounds *out)
{
    double *t = malloc(sizeof(double) * (size_t)reps);
    if (!t) return 1;
    int rc = warm_up ? fn(arg) : 0;
    out->best_s = out->best_cpu_s = INFINITY;
    out->peak_gflops = 0.0;
    for (int r = 0; r < reps && !rc; r++) {
        const double p = peak_once(env->isa, env->threads, env->peak_iters, NULL);
        out->peak_gflops = p > out->peak_gflops ? p : out->peak_gflops;
        const double t0 = now_s(), c0 = cpu_s();
        rc = fn(arg);
        t[r] = now_s() - t0;
        const double tc = cpu_s() - c0;
        out->best_s = t[r] < out->best_s ? t[r] : out->best_s;
        out->best_cpu_s = tc < out->best_cpu_s ? tc : out->best_cpu_s;
    }
    out->median_s = rc ? 0.0 : median(t, reps);
    free(t);
    return rc;
}

/* 100 x gflops / peak, capped at 100: a figure above the peak of its own rounds means the peak
 * kernel falls short of the machine, which the warning says rather than print an impossible
 * percentage. */
static double pct_of_peak(double gflops, double peak, const char *what)
{
    const double pct = 100.0 * gflops / peak;
    if (pct <= 100.0) return pct;
    printf("# warning %s: %.1f GFLOP/s is above the best FMA peak of its rounds (%.1f): the peak "
           "kernel falls short of this machine; pct_peak capped at 100\n",
           what, gflops, peak);
    return 100.0;
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

typedef struct conv_call {
    const cs_conv_shape *s;
    int pass, threads; /* pass: 0 forward, 1 backward-data, 2 backward-weights */
    float *in, *gin, *out, *gout, *w, *gw, *bias, *gb;
} conv_call;

static int conv_run(void *arg)
{
    const conv_call *c = arg;
    if (c->pass == 0) cs_conv_forward(c->out, c->in, c->w, c->bias, c->s, c->threads);
    else if (c->pass == 3) cs_conv_forward_bf16(c->out, c->in, c->w, c->bias, c->s, c->threads);
    else if (c->pass == 4) cs_conv_forward_winograd(c->out, c->in, c->w, c->bias, c->s, c->threads);
    else if (c->pass == 1) cs_conv_backward_data(c->gin, c->gout, c->w, c->s, c->threads);
    else cs_conv_backward_weights(c->gw, c->gb, c->gout, c->in, c->s, c->threads);
    return 0;
}

static int conv_pass(const conv_bench *cb, conv_call *c, const bench_env *env, int reps)
{
    static const char *passes[5] = {"fwd", "bwd_data", "bwd_weights", "fwd_bf16", "fwd_winograd"};
    const cs_conv_shape *s = c->s;
    const double flop = 2.0 * s->batch * s->in_channels * s->out_channels * s->kd * s->kh * s->kw *
                        s->d * s->h * s->w;
    rounds r;
    if (run_rounds(env, reps, 1, conv_run, c, &r)) return 1;
    const double g = flop / r.best_s / 1e9;
    char what[64];
    snprintf(what, sizeof what, "%s c=%d pass=%s", cb->tag, cb->c, passes[c->pass]);
    /* bfloat16 pairs: two products per float lane and instruction, so twice the float peak.
     * Winograd: the FLOP it executes, 64 products per tile of 8 outputs (16 / 54 of the direct
     * convolution's); gflops_direct_equivalent= is the direct FLOP over its time. */
    const double peak = c->pass == 3 ? 2.0 * r.peak_gflops : r.peak_gflops;
    if (c->pass == 4) {
        printf("%s ms=%.2f gflops_direct_equivalent=%.1f executed_pct_peak=%.1f peak_gflops=%.1f\n",
               what, 1e3 * r.best_s, g, pct_of_peak(g * 16.0 / 54.0, peak, what), peak);
        return 0;
    }
    const double pct = pct_of_peak(g, peak, what);
    printf("%s gflops=%.1f pct_peak=%.1f peak_gflops=%.1f\n", what, g, pct, peak);
    printf("# %s ms_best=%.2f ms_median=%.2f median_gflops=%.1f cpu_gflops_per_thread=%.1f\n", what,
           1e3 * r.best_s, 1e3 * r.median_s, flop / r.median_s / 1e9, flop / r.best_cpu_s / 1e9);
    fflush(stdout);
    return 0;
}

static int bench_conv(const conv_bench *cb, const bench_env *env, int reps)
{
    const cs_conv_shape *s = &cb->s;
    const size_t vox = (size_t)s->d * s->h * s->w;
    const size_t nin = (size_t)s->batch * s->in_channels * vox;
    const size_t nout = (size_t)s->batch * s->out_channels * vox;
    const size_t nw = (size_t)s->out_channels * s->in_channels * s->kd * s->kh * s->kw;
    conv_call c = {s,
                   0,
                   env->threads,
                   malloc(nin * sizeof(float)),
                   calloc(nin, sizeof(float)),
                   malloc(nout * sizeof(float)),
                   malloc(nout * sizeof(float)),
                   malloc(nw * sizeof(float)),
                   calloc(nw, sizeof(float)),
                   calloc((size_t)s->out_channels, sizeof(float)),
                   calloc((size_t)s->out_channels, sizeof(float))};
    int rc = 1;
    if (c.in && c.gin && c.out && c.gout && c.w && c.gw && c.bias && c.gb) {
        cs_rng rng;
        cs_rng_seed(&rng, 42);
        fill_random(c.in, nin, &rng);
        fill_random(c.gout, nout, &rng);
        fill_random(c.w, nw, &rng);
        rc = 0;
        const int passes = cs_isa_bf16_available() ? 4 : 3; /* fwd_bf16 where it runs */
        for (c.pass = 0; c.pass < passes && !rc; c.pass++) rc = conv_pass(cb, &c, env, reps);
        if (!rc && cs_conv_winograd_takes(s)) {
            c.pass = 4;
            rc = conv_pass(cb, &c, env, reps);
        }
    } else {
        fprintf(stderr, "comboseg_bench: out of memory\n");
    }
    free(c.gb);
    free(c.bias);
    free(c.gw);
    free(c.w);
    free(c.gout);
    free(c.out);
    free(c.gin);
    free(c.in);
    return rc;
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
/* U-Nets: the reference network of docs/design.md (3D, 2 channels, K = 5, 16 base filters,   */
/* 4 levels) and the bundled models' shapes (their .safetensors metadata, Resources/Models)   */

typedef struct net_cfg {
    int in_channels, classes, base_filters;
    int size;       /* training patch and inference window, voxels per side */
    double spacing; /* mm, for the whole-volume grid */
    int reference;  /* 1: the reference network, printed without its shape keys */
} net_cfg;

static const net_cfg nets[] = {
    {2, 5, 16, 64, 1.0, 1}, /* reference */
    {1, 27, 8, 64, 1.0, 0}, /* brain-structures-t1: T1, background + 26 structures */
    {2, 5, 16, 48, 2.0, 0}, /* brain-tumor-flair-t1c: FLAIR + T1c, 5 classes, 2 mm */
};
#define NET_LEVELS 4
#define NET_BATCH 2

/* "unet3d" for the reference network; the bundled shapes add their keys. */
static void net_prefix(const net_cfg *n, const char *tag, char *out, size_t size)
{
    if (n->reference) snprintf(out, size, "%s", tag);
    else
        snprintf(out, size, "%s width=%d classes=%d channels=%d", tag, n->base_filters, n->classes,
                 n->in_channels);
}

static int make_model(cs_context_t ctx, const net_cfg *n, cs_model_t *model)
{
    cs_unet_config arch = cs_unet_config_default();
    arch.spatial_dims = 3;
    arch.in_channels = n->in_channels;
    arch.num_classes = n->classes;
    arch.base_filters = n->base_filters;
    arch.levels = NET_LEVELS;
    cs_model_info info;
    if (cs_model_info_init(&info, &arch) != CS_OK) return 1;
    info.patch_size[0] = info.patch_size[1] = info.patch_size[2] = n->size;
    if (cs_model_create(ctx, &info, 1, model) != CS_OK) {
        fprintf(stderr, "comboseg_bench: model: %s\n", cs_context_last_error(ctx));
        return 1;
    }
    return 0;
}

/* FLOP of a 3x3x3 convolution over v voxels; with `executed`, those that Winograd's kernel
 * performs where it takes the layer (64 products per tile of 8 outputs: 16 / 54). */
static double conv3_flop(int ci, int co, int side, double v, int executed)
{
    const cs_conv_shape s = {NET_BATCH, ci, co, side, side, side, 3, 3, 3};
    return (executed && cs_conv_winograd_takes(&s) ? 16.0 : 54.0) * ci * co * v;
}

/* GFLOP of the network's convolutions for a forward pass of the batch: 3x3x3 convolutions
 * (2 x 27 x in x out x voxels, or what Winograd executes: conv3_flop), 2x2x2 up-convolutions and
 * the 1x1x1 head. Element-wise work is left out, so a pct_peak from it understates the kernels'
 * share. */
static double unet_forward_gflop(const net_cfg *n, int executed)
{
    const double v0 = (double)n->size * n->size * n->size;
    double flop = 0.0, v = v0;
    for (int l = 0, cin = n->in_channels; l < NET_LEVELS; l++, v /= 8.0) {
        const int f = n->base_filters << l, side = n->size >> l;
        flop += conv3_flop(cin, f, side, v, executed) + conv3_flop(f, f, side, v, executed);
        cin = f;
    }
    for (int l = NET_LEVELS - 2; l >= 0; l--) {
        const int f = n->base_filters << l, side = n->size >> l;
        const double vl = v0 / pow(8.0, l);
        flop += 4.0 * f * f * vl + conv3_flop(2 * f, f, side, vl, executed) +
                conv3_flop(f, f, side, vl, executed);
    }
    flop += 2.0 * n->base_filters * n->classes * v0;
    return NET_BATCH * flop / 1e9;
}

/* A training step: forward, backward-data (none for the first layer's input) and
 * backward-weights of every convolution. */
static double unet_train_gflop(const net_cfg *n)
{
    const double v0 = (double)n->size * n->size * n->size;
    const double first = 54.0 * n->in_channels * n->base_filters * v0 * NET_BATCH / 1e9;
    return 3.0 * unet_forward_gflop(n, 0) - first;
}

typedef struct unet_run {
    cs_context_t ctx;
    cs_model_t model;
    cs_trainer_t trainer;
    float *images, *logits;
    int32_t *labels;
    int64_t size[3];
    cs_step_result res;
} unet_run;

static int train_once(void *arg)
{
    unet_run *u = arg;
    const cs_status st = cs_trainer_step(u->trainer, u->images, u->labels, &u->res);
    if (st == CS_OK || st == CS_ERR_NUMERIC) return 0;
    fprintf(stderr, "comboseg_bench: step: %s\n", cs_context_last_error(u->ctx));
    return 1;
}

static int infer_once(void *arg)
{
    unet_run *u = arg;
    if (cs_model_forward(u->ctx, u->model, u->images, NET_BATCH, u->size, u->logits) == CS_OK)
        return 0;
    fprintf(stderr, "comboseg_bench: forward: %s\n", cs_context_last_error(u->ctx));
    return 1;
}

/* Context, model, a random batch and an Adam trainer on the Combo loss (alpha = beta = 0.5). */
static int unet_setup(unet_run *u, const net_cfg *n, int threads)
{
    const size_t vox = (size_t)n->size * n->size * n->size;
    if (cs_context_init(&u->ctx) != CS_OK) return 1;
    cs_context_set_threads(u->ctx, threads);
    u->size[0] = u->size[1] = u->size[2] = n->size;
    u->images = malloc(sizeof(float) * NET_BATCH * n->in_channels * vox);
    u->labels = malloc(sizeof(int32_t) * NET_BATCH * vox);
    u->logits = malloc(sizeof(float) * NET_BATCH * n->classes * vox);
    if (!u->images || !u->labels || !u->logits || make_model(u->ctx, n, &u->model)) return 1;
    cs_rng rng;
    cs_rng_seed(&rng, 7);
    for (size_t i = 0; i < NET_BATCH * n->in_channels * vox; i++)
        u->images[i] = cs_rng_normal(&rng);
    for (size_t i = 0; i < NET_BATCH * vox; i++)
        u->labels[i] = (int32_t)cs_rng_below(&rng, n->classes);
    cs_train_config cfg = cs_train_config_default();
    cfg.batch_size = NET_BATCH;
    cfg.patch_size[0] = cfg.patch_size[1] = cfg.patch_size[2] = n->size;
    cfg.optimizer = CS_OPTIMIZER_ADAM;
    cfg.loss = cs_loss_options_default();
    if (cs_trainer_init(u->ctx, u->model, &cfg, &u->trainer) == CS_OK) return 0;
    fprintf(stderr, "comboseg_bench: trainer: %s\n", cs_context_last_error(u->ctx));
    return 1;
}

static void unet_teardown(unet_run *u)
{
    cs_trainer_free(u->trainer);
    cs_model_free(u->model);
    cs_context_free(u->ctx);
    free(u->logits);
    free(u->labels);
    free(u->images);
}

typedef struct unet_figures {
    rounds train, infer, infer_direct, infer_bf16; /* infer_bf16: where cs_bfloat16_available */
    double rss_before, peak_after_training, peak;
    int peak_reset; /* 0: peaks are the process's since it started */
} unet_figures;

static void print_unet(const net_cfg *n, const unet_figures *f, const unet_run *u, int threads,
                       int reps)
{
    char tag[96], what[128];
    net_prefix(n, "unet3d", tag, sizeof tag);
    snprintf(what, sizeof what, "%s train_step", tag);
    const double tp = pct_of_peak(unet_train_gflop(n) / f->train.best_s, f->train.peak_gflops,
                                  what);
    snprintf(what, sizeof what, "%s infer", tag);
    const double ip = pct_of_peak(unet_forward_gflop(n, 1) / f->infer.best_s, f->infer.peak_gflops,
                                  what);
    snprintf(what, sizeof what, "%s infer_direct", tag);
    const double dp = pct_of_peak(unet_forward_gflop(n, 0) / f->infer_direct.best_s,
                                  f->infer_direct.peak_gflops, what);
    printf("%s threads=%d train_step_ms=%.1f infer_ms=%.1f peak_rss_mb=%.1f rss_before_mb=%.1f "
           "added_mb=%.1f train_pct_peak=%.1f train_peak_gflops=%.1f infer_pct_peak=%.1f "
           "infer_peak_gflops=%.1f\n",
           tag, threads, 1e3 * f->train.best_s, 1e3 * f->infer.best_s, f->peak, f->rss_before,
           f->peak - f->rss_before, tp, f->train.peak_gflops, ip, f->infer.peak_gflops);
    printf("# %s cpu_train_step_ms=%.1f cpu_infer_ms=%.1f train_step_ms_median=%.1f "
           "infer_ms_median=%.1f peak_rss_mb_after_training=%.1f\n",
           tag, 1e3 * f->train.best_cpu_s, 1e3 * f->infer.best_cpu_s, 1e3 * f->train.median_s,
           1e3 * f->infer.median_s, f->peak_after_training);
    printf("%s infer_direct_ms=%.1f infer_direct_pct_peak=%.1f infer_direct_over_winograd=%.2f\n",
           tag, 1e3 * f->infer_direct.best_s, dp, f->infer_direct.best_s / f->infer.best_s);
    if (cs_bfloat16_available())
        printf("%s infer_bf16_ms=%.1f infer_float_over_bf16=%.2f\n", tag,
               1e3 * f->infer_bf16.best_s, f->infer.best_s / f->infer_bf16.best_s);
    printf("# %s batch=%d channels=%d classes=%d size=%d reps=%d last_loss=%.4f\n", tag, NET_BATCH,
           n->in_channels, n->classes, n->size, reps, (double)u->res.loss);
    if (!f->peak_reset) printf("# %s peak_rss_mb is the process's peak since it started\n", tag);
    fflush(stdout);
}

static int bench_unet(const net_cfg *n, const bench_env *env, int reps)
{
    unet_run u;
    memset(&u, 0, sizeof u);
    unet_figures f;
    int rc = unet_setup(&u, n, env->threads);
    if (!rc) {
        release_freed_memory(env->threads);
        f.rss_before = rss_mb();
        f.peak_reset = reset_peak_rss();
        rc = run_rounds(env, reps, 1, train_once, &u, &f.train);
    }
    if (!rc) {
        f.peak_after_training = peak_rss_mb();
        /* the trainer keeps its activations between steps (PyTorch frees its own after each
         * step): let go of them before inference, so that the peak is that of the larger of the
         * two phases */
        cs_trainer_free(u.trainer);
        u.trainer = NULL;
        rc = run_rounds(env, reps, 1, infer_once, &u, &f.infer);
        cs_isa_allow_winograd(0);
        if (!rc) rc = run_rounds(env, reps, 1, infer_once, &u, &f.infer_direct);
        cs_isa_allow_winograd(1);
        if (!rc && cs_bfloat16_available()) {
            cs_context_set_inference_precision(u.ctx, CS_PRECISION_BFLOAT16);
            rc = run_rounds(env, reps, 1, infer_once, &u, &f.infer_bf16);
        }
    }
    if (!rc) {
        f.peak = peak_rss_mb();
        print_unet(n, &f, &u, env->threads, reps);
    }
    unet_teardown(&u);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Whole volume: a 256x256x128 scan of 1 mm voxels, resampled to the model's spacing           */

typedef struct volume_run {
    cs_context_t ctx;
    cs_model_t model;
    const float *image;
    int64_t size[3];
    cs_infer_options opt;
    int32_t *labels;
} volume_run;

static int volume_once(void *arg)
{
    volume_run *v = arg;
    if (cs_predict_volume(v->ctx, v->model, v->image, v->size, &v->opt, NULL, v->labels) == CS_OK)
        return 0;
    fprintf(stderr, "comboseg_bench: volume: %s\n", cs_context_last_error(v->ctx));
    return 1;
}

static void print_volume(const net_cfg *n, const volume_run *v, const rounds *r, int reps)
{
    const double vox = (double)v->size[0] * v->size[1] * v->size[2];
    char tag[96];
    net_prefix(n, "volume256", tag, sizeof tag);
    if (n->reference) printf("%s seconds=%.2f peak_gflops=%.1f\n", tag, r->best_s, r->peak_gflops);
    else
        printf("%s spacing=%g window=%d seconds=%.2f peak_gflops=%.1f\n", tag, n->spacing, n->size,
               r->best_s, r->peak_gflops);
    printf("# %s size=%dx%dx%d window=%d overlap=%.2f voxels_per_second=%.0f seconds_median=%.2f "
           "reps=%d\n",
           tag, (int)v->size[0], (int)v->size[1], (int)v->size[2], n->size, (double)v->opt.overlap,
           vox / r->best_s, r->median_s, reps);
    fflush(stdout);
}

/* The same volume with bfloat16 convolutions, in rounds of their own after the float ones. */
static void print_volume_bf16(const net_cfg *n, const rounds *r)
{
    char tag[96];
    net_prefix(n, "volume256", tag, sizeof tag);
    printf("%s seconds_bf16=%.2f peak_gflops=%.1f\n", tag, r->best_s, r->peak_gflops);
    fflush(stdout);
}

static int bench_volume(const net_cfg *n, const bench_env *env, int reps)
{
    volume_run v;
    memset(&v, 0, sizeof v);
    v.size[0] = v.size[1] = (int64_t)(256 / n->spacing);
    v.size[2] = (int64_t)(128 / n->spacing);
    const size_t vox = (size_t)(v.size[0] * v.size[1] * v.size[2]);
    if (cs_context_init(&v.ctx) != CS_OK) return 1;
    cs_context_set_threads(v.ctx, env->threads);
    float *image = malloc(sizeof(float) * n->in_channels * vox);
    v.labels = malloc(sizeof(int32_t) * vox);
    v.opt = cs_infer_options_default();
    int rc = 1;
    if (image && v.labels && !make_model(v.ctx, n, &v.model)) {
        cs_rng rng;
        cs_rng_seed(&rng, 9);
        for (size_t i = 0; i < n->in_channels * vox; i++) image[i] = cs_rng_normal(&rng);
        v.image = image;
        rounds r;
        rc = run_rounds(env, reps, 0, volume_once, &v, &r);
        if (!rc) print_volume(n, &v, &r, reps);
        if (!rc && cs_bfloat16_available()) {
            cs_context_set_inference_precision(v.ctx, CS_PRECISION_BFLOAT16);
            rounds b;
            rc = run_rounds(env, reps, 0, volume_once, &v, &b);
            if (!rc) print_volume_bf16(n, &b);
        }
    }
    cs_model_free(v.model);
    cs_context_free(v.ctx);
    free(v.labels);
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

/* Returns 0, or 2 after a message for a bad argument. */
static int parse_args(int argc, char **argv, const char **only, int *reps)
{
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
            *only = argv[++i];
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            *reps = atoi(argv[++i]);
            if (*reps < 1) *reps = 1;
        } else {
            fprintf(stderr,
                    "usage: %s [--isa portable|avx2|avx512] [--only peak,conv,unet,volume] "
                    "[--reps N]\n"
                    "  Each figure runs N rounds (default 7; 3 for the U-Nets, 1 for the\n"
                    "  volumes), each round the FMA peak and then the figure; it prints the\n"
                    "  best time, the best peak of its rounds (peak_gflops=) and their ratio\n"
                    "  (pct_peak=, at most 100). Threads: OMP_NUM_THREADS.\n",
                    argv[0]);
            return 2;
        }
    }
    return 0;
}

/* The peak line: the best of `reps` runs; per thread from CPU time (see peak_once). */
static void print_peak(const bench_env *env, int reps)
{
    double best = 0.0, cpu_best = 0.0;
    for (int r = 0; r < reps; r++) {
        double cpu = 0.0;
        const double g = peak_once(env->isa, env->threads, env->peak_iters, &cpu);
        best = g > best ? g : best;
        cpu_best = cpu > cpu_best ? cpu : cpu_best;
    }
    printf("peak gflops=%.1f\n", best);
    printf("# peak gflops_per_thread=%.1f (wall: all threads' FLOP / wall seconds / threads)\n",
           best / env->threads);
    printf("# peak cpu_gflops_per_thread=%.1f (all threads' FLOP / process CPU seconds)\n",
           cpu_best);
    fflush(stdout);
}

static int bench_convs(const bench_env *env, int reps)
{
    /* The reference network's convolutions at batch 2: the first layer (2 -> 16 at 64^3),
     * then 16 at 64^3, 32 at 32^3, 64 at 16^3, 128 at 8^3; the bundled 8-filter models' first
     * level (8 at 64^3); and 2D shapes of the same channel counts at batch 8 (16 at 256^2 ...
     * 128 at 32^2). */
    const conv_bench shapes[] = {
        {"conv3d", 2, conv_shape(2, 2, 16, 64, 64, 64, 1)},
        {"conv3d", 8, conv_shape(2, 8, 8, 64, 64, 64, 1)},
        {"conv3d", 16, conv_shape(2, 16, 16, 64, 64, 64, 1)},
        {"conv3d", 32, conv_shape(2, 32, 32, 32, 32, 32, 1)},
        {"conv3d", 64, conv_shape(2, 64, 64, 16, 16, 16, 1)},
        {"conv3d", 128, conv_shape(2, 128, 128, 8, 8, 8, 1)},
        {"conv2d", 16, conv_shape(8, 16, 16, 1, 256, 256, 0)},
        {"conv2d", 32, conv_shape(8, 32, 32, 1, 128, 128, 0)},
        {"conv2d", 64, conv_shape(8, 64, 64, 1, 64, 64, 0)},
        {"conv2d", 128, conv_shape(8, 128, 128, 1, 32, 32, 0)},
    };
    int rc = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        rc |= bench_conv(&shapes[i], env, reps);
    return rc;
}

int main(int argc, char **argv)
{
    const char *only = NULL;
    int reps = 0; /* 0: each part's default */
    if (parse_args(argc, argv, &only, &reps)) return 2;
    bench_env env = {cs_isa_active(), 1, 0};
#ifdef _OPENMP
    env.threads = omp_get_max_threads(); /* OMP_NUM_THREADS when set */
#endif
    env.peak_iters = peak_iters_for(env.isa, env.threads, 0.2);
    printf("# comboseg_bench threads=%d isa=%s avx512_half_width=%d\n", env.threads,
           cs_isa_name(env.isa), cs_isa_avx512_half_width());
    if (wants(only, "peak") || wants(only, "conv")) print_peak(&env, reps ? reps : 7);

    /* the volume figure has always run the reference network with one input channel */
    const net_cfg volume_reference = {1, 5, 16, 64, 1.0, 1};
    const net_cfg *volumes[] = {&volume_reference, &nets[1], &nets[2]};
    int rc = 0;
    for (int i = 0; i < 3 && wants(only, "unet"); i++)
        rc |= bench_unet(&nets[i], &env, reps ? reps : 3);
    for (int i = 0; i < 3 && wants(only, "volume"); i++)
        rc |= bench_volume(volumes[i], &env, reps ? reps : 1);
    if (wants(only, "conv")) rc |= bench_convs(&env, reps ? reps : 7);
    return rc ? 1 : 0;
}
