/* kernels_fast.c - the dispatched kernels: each picks the instruction-set path for this CPU
 * (AVX-512, AVX2+FMA or portable C, kernels_isa.h) on first use, and falls back to the reference
 * kernel when a path cannot get its scratch memory. */
#include "internal.h"
#include "kernels.h"
#include "kernels_isa.h"

#if defined(COMBOSEG_HAVE_X86_KERNELS)
#include <cpuid.h>
#endif

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <stdlib.h>
#define CS_SCRATCH_PTHREAD 1
#endif

/* Each calling thread's scratch slots. On POSIX a thread-specific key frees them when the thread
 * ends (threads that run inference come and go); elsewhere a thread-local table is freed only by
 * cs_kernel_scratch_release. */
typedef struct cs_scratch {
    float *p[CS_SCRATCH_SLOTS];
    size_t floats[CS_SCRATCH_SLOTS];
} cs_scratch;

static void scratch_free(cs_scratch *s)
{
    for (int i = 0; i < CS_SCRATCH_SLOTS; i++) {
        cs_free(s->p[i]);
        s->p[i] = NULL;
        s->floats[i] = 0;
    }
}

#if defined(CS_SCRATCH_PTHREAD)
static pthread_key_t g_scratch_key;
static pthread_once_t g_scratch_once = PTHREAD_ONCE_INIT;
static int g_scratch_key_ok;

static void scratch_destroy(void *p)
{
    scratch_free((cs_scratch *)p);
    free(p);
}

static void scratch_key_init(void)
{
    g_scratch_key_ok = pthread_key_create(&g_scratch_key, scratch_destroy) == 0;
}

static cs_scratch *scratch_of_thread(int create)
{
    pthread_once(&g_scratch_once, scratch_key_init);
    if (!g_scratch_key_ok) return NULL;
    cs_scratch *s = (cs_scratch *)pthread_getspecific(g_scratch_key);
    if (!s && create) {
        s = (cs_scratch *)calloc(1, sizeof *s);
        if (s && pthread_setspecific(g_scratch_key, s) != 0) {
            free(s);
            s = NULL;
        }
    }
    return s;
}
#else
#if defined(_MSC_VER) && !defined(__clang__)
static __declspec(thread) cs_scratch g_scratch;
#else
static _Thread_local cs_scratch g_scratch;
#endif
static cs_scratch *scratch_of_thread(int create)
{
    (void)create;
    return &g_scratch;
}
#endif

float *cs_kernel_scratch(int slot, size_t floats)
{
    if (slot < 0 || slot >= CS_SCRATCH_SLOTS) return NULL;
    cs_scratch *s = scratch_of_thread(1);
    if (!s) return NULL;
    if (s->floats[slot] < floats) {
        cs_free(s->p[slot]);
        s->p[slot] = (float *)cs_alloc(NULL, sizeof(float) * floats, "kernel scratch");
        s->floats[slot] = s->p[slot] ? floats : 0;
    }
    return s->p[slot];
}

void cs_kernel_scratch_release(void)
{
    cs_scratch *s = scratch_of_thread(0);
    if (s) scratch_free(s);
}

static cs_isa g_isa_forced = CS_ISA_AUTO; /* test hook, see cs_isa_force */
static int g_winograd_allowed = 1;        /* benchmark hook, see cs_isa_allow_winograd */

void cs_isa_allow_winograd(int allow) { g_winograd_allowed = allow != 0; }

int cs_isa_available(cs_isa isa)
{
    switch (isa) {
        case CS_ISA_AUTO:
        case CS_ISA_PORTABLE: return 1;
#if defined(COMBOSEG_HAVE_X86_KERNELS)
        case CS_ISA_AVX2:
            __builtin_cpu_init();
            return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        case CS_ISA_AVX512:
            /* libgcc's check includes the OS enabling the ZMM state (XCR0), not only CPUID. */
            __builtin_cpu_init();
            return __builtin_cpu_supports("avx512f");
#else
        case CS_ISA_AVX2:
        case CS_ISA_AVX512: return 0;
#endif
    }
    return 0;
}

cs_isa cs_isa_active(void)
{
    if (g_isa_forced != CS_ISA_AUTO) return g_isa_forced;
    if (cs_isa_available(CS_ISA_AVX512)) return CS_ISA_AVX512;
    if (cs_isa_available(CS_ISA_AVX2)) return CS_ISA_AVX2;
    return CS_ISA_PORTABLE;
}

const char *cs_isa_name(cs_isa isa)
{
    switch (isa) {
        case CS_ISA_AUTO: return "auto";
        case CS_ISA_PORTABLE: return "portable";
        case CS_ISA_AVX2: return "avx2";
        case CS_ISA_AVX512: return "avx512";
    }
    return "unknown";
}

int cs_isa_force(cs_isa isa)
{
    if (!cs_isa_available(isa)) return -1;
    g_isa_forced = isa;
    return 0;
}

/* Runs the version of a kernel for path isa; a non-zero status (no scratch memory) falls through
 * to the reference. */
#if defined(COMBOSEG_HAVE_X86_KERNELS)
#define CS_DISPATCH_ON(isa, name, ...)                                                             \
    do {                                                                                           \
        int st_;                                                                                   \
        switch (isa) {                                                                             \
            case CS_ISA_AVX512: st_ = name##_avx512(__VA_ARGS__); break;                           \
            case CS_ISA_AVX2: st_ = name##_avx2(__VA_ARGS__); break;                               \
            default: st_ = name##_portable(__VA_ARGS__); break;                                    \
        }                                                                                          \
        if (st_ != 0) name##_ref(__VA_ARGS__);                                                     \
    } while (0)
#else
#define CS_DISPATCH_ON(isa, name, ...)                                                             \
    do {                                                                                           \
        (void)(isa);                                                                               \
        if (name##_portable(__VA_ARGS__) != 0) name##_ref(__VA_ARGS__);                            \
    } while (0)
#endif
#define CS_DISPATCH(name, ...) CS_DISPATCH_ON(cs_isa_active(), name, __VA_ARGS__)

#if defined(COMBOSEG_HAVE_X86_KERNELS)
static int detect_avx512_half_width(void)
{
    /* AMD family 0x19 is Zen 3 (no AVX-512) and Zen 4 (AVX-512 on 256-bit units); Zen 5, family
     * 0x1a, has full-width units. */
    __builtin_cpu_init();
    if (!__builtin_cpu_is("amd") || !cs_isa_available(CS_ISA_AVX512)) return 0;
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const unsigned int family = ((a >> 8) & 0xf) + ((a >> 20) & 0xff);
    return family == 0x19;
}
#endif

int cs_isa_avx512_half_width(void)
{
#if defined(COMBOSEG_HAVE_X86_KERNELS)
    /* CPUID traps to the hypervisor in a VM: ask once. Threads racing here store the same value
     * (atomically, so that the thread sanitizer sees no race). */
    static int known = -1;
    int v = __atomic_load_n(&known, __ATOMIC_RELAXED);
    if (v < 0) {
        v = detect_avx512_half_width();
        __atomic_store_n(&known, v, __ATOMIC_RELAXED);
    }
    return v;
#else
    return 0;
#endif
}

int cs_isa_bf16_available(void)
{
#if defined(COMBOSEG_HAVE_BF16_KERNELS)
    if (cs_isa_active() != CS_ISA_AVX512) return 0;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

cs_isa cs_isa_conv(const cs_conv_shape *s, cs_conv_pass pass)
{
    const cs_isa isa = cs_isa_active();
    if (isa != CS_ISA_AVX512 || !cs_isa_available(CS_ISA_AVX2)) return isa;
    /* Forward and backward-data of at most 8 output channels take AVX-512's narrow-layer
     * kernels (positions in the lanes, kernels_simd.inc); on Zen 4 they took 0.66-0.76 of the
     * 8-lane channel-vector time at 1 -> 8 and 8 -> 8 (narrow_conv_bench, 64^3, 2 threads: 8 -> 8
     * forward 4.45 against 6.00 ms). Their weight gradient takes them only for a first layer (at
     * most 2 input channels: 2.7 against 4.7 ms for 1 -> 8, batch 2); from 8 input channels the
     * 8-lane AVX2 kernels were faster (11.6 against 12.8 ms for 8 -> 8, 21.5 against 24.2 for
     * 16 -> 8). */
    const int narrow = pass == CS_CONV_BACKWARD_WEIGHTS && s->out_channels <= 8 &&
                       s->in_channels > 2;
    /* On Zen 4 the 8-lane weight gradient was also faster at 16 output channels (one 16-lane
     * block: a broadcast fed one FMA there, two in 8 lanes) and at 128 (the reference network's
     * 8^3 bottom), and slower at 32 and 64: comboseg_bench --isa avx2|avx512, alternating, best
     * of 3-4 runs each, 2 threads: 172.8 against 143.2 GFLOP/s at 16, 185.7 against 166.7 at
     * 128, 183.9 against 196.9 and 194.9 against 205.2 at 32 and 64. All measured before the
     * by-column weight-gradient micro-kernels (kernels_simd.inc), which feed 3 FMAs per broadcast
     * in both widths: worth measuring again on Zen 4. */
    const int wide_gradient_on_halves = pass == CS_CONV_BACKWARD_WEIGHTS &&
                                        cs_isa_avx512_half_width() &&
                                        (s->out_channels == 16 || s->out_channels >= 128);
    return narrow || wide_gradient_on_halves ? CS_ISA_AVX2 : isa;
}

void cs_conv_forward(float *out, const float *in, const float *weight, const float *bias,
                     const cs_conv_shape *s, int threads)
{
    CS_DISPATCH_ON(cs_isa_conv(s, CS_CONV_FORWARD), cs_conv_forward, out, in, weight, bias, s,
                   threads);
}

void cs_conv_forward_bf16(float *out, const float *in, const float *weight, const float *bias,
                          const cs_conv_shape *s, int threads)
{
#if defined(COMBOSEG_HAVE_BF16_KERNELS)
    /* A first layer (one or two input channels) stays float: one pair per tap pairs nothing up,
     * and the packing pass cost more than it saved (2 -> 16 at 64^3: 28 against 21 ms). */
    if (cs_isa_bf16_available() && s->in_channels > 2) {
        if (cs_conv_forward_avx512bf16(out, in, weight, bias, s, threads) == 0) return;
    }
#endif
    cs_conv_forward_winograd(out, in, weight, bias, s, threads);
}

/* The path whose Winograd kernel a forward pass of shape s would take; CS_ISA_AUTO when the
 * benchmark hook turned it off. */
static cs_isa winograd_path(const cs_conv_shape *s)
{
    return g_winograd_allowed ? cs_isa_conv(s, CS_CONV_FORWARD) : CS_ISA_AUTO;
}

void cs_conv_forward_winograd(float *out, const float *in, const float *weight, const float *bias,
                              const cs_conv_shape *s, int threads)
{
    int status = 1; /* 1: the shape is not one it takes, -1: no scratch memory */
    switch (winograd_path(s)) {
#if defined(COMBOSEG_HAVE_X86_KERNELS)
        case CS_ISA_AVX512:
            status = cs_conv_forward_winograd_avx512(out, in, weight, bias, s, threads);
            break;
        case CS_ISA_AVX2:
            status = cs_conv_forward_winograd_avx2(out, in, weight, bias, s, threads);
            break;
#endif
        case CS_ISA_PORTABLE:
            status = cs_conv_forward_winograd_portable(out, in, weight, bias, s, threads);
            break;
        default: break; /* not allowed (CS_ISA_AUTO) */
    }
    if (status != 0) cs_conv_forward(out, in, weight, bias, s, threads);
}

int cs_conv_winograd_takes(const cs_conv_shape *s)
{
    switch (winograd_path(s)) {
#if defined(COMBOSEG_HAVE_X86_KERNELS)
        case CS_ISA_AVX512: return cs_conv_winograd_takes_avx512(s);
        case CS_ISA_AVX2: return cs_conv_winograd_takes_avx2(s);
#endif
        case CS_ISA_PORTABLE: return cs_conv_winograd_takes_portable(s);
        default: return 0; /* not allowed (CS_ISA_AUTO) */
    }
}

void cs_conv_backward_data(float *grad_in, const float *grad_out, const float *weight,
                           const cs_conv_shape *s, int threads)
{
    CS_DISPATCH_ON(cs_isa_conv(s, CS_CONV_BACKWARD_DATA), cs_conv_backward_data, grad_in, grad_out,
                   weight, s, threads);
}

void cs_conv_backward_weights(float *grad_weight, float *grad_bias, const float *grad_out,
                              const float *in, const cs_conv_shape *s, int threads)
{
    CS_DISPATCH_ON(cs_isa_conv(s, CS_CONV_BACKWARD_WEIGHTS), cs_conv_backward_weights, grad_weight,
                   grad_bias, grad_out, in, s, threads);
}

void cs_upconv_forward(float *out, const float *in, const float *weight, const float *bias,
                       const cs_conv_shape *s, int threads)
{
    CS_DISPATCH(cs_upconv_forward, out, in, weight, bias, s, threads);
}

void cs_upconv_backward_data(float *grad_in, const float *grad_out, const float *weight,
                             const cs_conv_shape *s, int threads)
{
    CS_DISPATCH(cs_upconv_backward_data, grad_in, grad_out, weight, s, threads);
}

void cs_upconv_backward_weights(float *grad_weight, float *grad_bias, const float *grad_out,
                                const float *in, const cs_conv_shape *s, int threads)
{
    CS_DISPATCH(cs_upconv_backward_weights, grad_weight, grad_bias, grad_out, in, s, threads);
}

void cs_instnorm_forward(float *out, float *mean, float *rstd, const float *in, const float *gamma,
                         const float *beta, int32_t batch, int32_t channels, int64_t n, float eps,
                         int threads)
{
    CS_DISPATCH(cs_instnorm_forward, out, mean, rstd, in, gamma, beta, batch, channels, n, eps,
                threads);
}

void cs_instnorm_backward(float *grad_in, float *grad_gamma, float *grad_beta,
                          const float *grad_out, const float *in, const float *mean,
                          const float *rstd, const float *gamma, int32_t batch, int32_t channels,
                          int64_t n, int threads)
{
    CS_DISPATCH(cs_instnorm_backward, grad_in, grad_gamma, grad_beta, grad_out, in, mean, rstd,
                gamma, batch, channels, n, threads);
}

void cs_instnorm_leaky_forward(float *out, float *mean, float *rstd, const float *in,
                               const float *gamma, const float *beta, int32_t batch,
                               int32_t channels, int64_t n, float eps, float slope, int threads)
{
    CS_DISPATCH(cs_instnorm_leaky_forward, out, mean, rstd, in, gamma, beta, batch, channels, n,
                eps, slope, threads);
}

void cs_instnorm_leaky_backward(float *grad_in, float *grad_gamma, float *grad_beta,
                                const float *grad_out, const float *out, const float *in,
                                const float *mean, const float *rstd, const float *gamma,
                                int32_t batch, int32_t channels, int64_t n, float slope,
                                int threads)
{
    CS_DISPATCH(cs_instnorm_leaky_backward, grad_in, grad_gamma, grad_beta, grad_out, out, in, mean,
                rstd, gamma, batch, channels, n, slope, threads);
}

void cs_leaky_relu_forward(float *out, const float *in, int64_t n, float slope, int threads)
{
    CS_DISPATCH(cs_leaky_relu_forward, out, in, n, slope, threads);
}

void cs_leaky_relu_backward(float *grad_in, const float *grad_out, const float *x, int64_t n,
                            float slope, int threads)
{
    CS_DISPATCH(cs_leaky_relu_backward, grad_in, grad_out, x, n, slope, threads);
}

void cs_softmax_channels(float *out, const float *in, int32_t batch, int32_t channels, int64_t n,
                         int threads)
{
    CS_DISPATCH(cs_softmax_channels, out, in, batch, channels, n, threads);
}
int cs_softmax_tile(float *out, const float *in, int32_t channels, int64_t n, int64_t i0)
{
    int non_finite = 0;
    CS_DISPATCH(cs_softmax_tile, out, in, channels, n, i0, &non_finite);
    return non_finite;
}

/* Still the reference loops: memory-bound and a few percent of a training step. */
void cs_maxpool_forward(float *out, const float *in, int64_t planes, int32_t d, int32_t h,
                        int32_t w, int32_t pd, int threads)
{
    cs_maxpool_forward_ref(out, in, planes, d, h, w, pd, threads);
}
void cs_maxpool_backward(float *grad_in, const float *grad_out, const float *in, int64_t planes,
                         int32_t d, int32_t h, int32_t w, int32_t pd, int threads)
{
    cs_maxpool_backward_ref(grad_in, grad_out, in, planes, d, h, w, pd, threads);
}
void cs_concat_forward(float *out, const float *a, const float *b, int32_t batch, int32_t ca,
                       int32_t cb, int64_t n, int threads)
{
    cs_concat_forward_ref(out, a, b, batch, ca, cb, n, threads);
}
void cs_concat_backward(float *grad_a, float *grad_b, const float *grad_out, int32_t batch,
                        int32_t ca, int32_t cb, int64_t n, int threads)
{
    cs_concat_backward_ref(grad_a, grad_b, grad_out, batch, ca, cb, n, threads);
}
