/* infer.c - inference: logits of a batch, and sliding-window prediction over whole volumes.
 *
 * cs_predict_volume walks windows row by row along z. Every window runs through the network up
 * to its head; the head, the softmax and the weighting then go piece by piece (blend_window),
 * and the weighted probabilities (Gaussian importance or uniform) are added into a slab that is
 * only as deep as one window: z-slice z lives in slab slot z % window_z. Once the windows of a z-row are done, the
 * slices below the next row's start are final: they are normalised, written to the outputs and
 * their slots cleared for reuse. A slab row holds the K classes' rows of one (slot, y) side by
 * side, so a window row's additions for all classes fall in one stretch of memory (with the
 * classes in separate planes, 10 MB apart for ch2, they took a third more time). The weights are
 * a product of per-axis factors and the windows a grid, so the sum of weights covering a voxel is
 * a product of three per-axis sums: no weight volume is needed.
 *
 * With several threads and enough windows per z-row, the threads take whole windows as tasks
 * (run_tasks): a window's network on one thread into a free slot (a workspace each), the blends
 * one at a time in window order and each row's finalising between its last blend and the next
 * row's first, so each voxel sums its windows in the same order as with one thread and the
 * result is the same bit for bit (docs/design.md, "Window tasks").
 */
#include "comboseg/parameters.h"
#include "internal.h"
#include "kernels.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <sched.h>
#endif

cs_infer_options cs_infer_options_default(void)
{
    cs_infer_options o;
    memset(&o, 0, sizeof o);
    o.overlap = (float)CS_OVERLAP_DEFAULT;
    o.gaussian_weighting = 1;
    o.gaussian_sigma = 0.125f;
    return o;
}

/* Spatial sizes must be multiples of this (each level halves them). */
static int64_t size_multiple(const cs_unet_config *arch)
{
    return (int64_t)1 << (arch->levels - 1);
}

/* Checks a spatial size against the network: positive, multiples of 2^(levels-1), z == 1 in 2D. */
static cs_status check_net_size(cs_context_t ctx, const cs_unet_config *arch, const int64_t s[3],
                                const char *what)
{
    int64_t m = size_multiple(arch);
    static const char axis[3] = {'x', 'y', 'z'};
    for (int a = 0; a < 3; a++) {
        if (s[a] < 1)
            return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "%s size %c = %lld must be positive", what,
                           axis[a], (long long)s[a]);
        if (a == 2 && arch->spatial_dims == 2) {
            if (s[2] != 1)
                return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                               "%s size z = %lld must be 1 for a 2D model", what, (long long)s[2]);
        } else if (s[a] % m != 0) {
            return cs_fail(
                ctx, CS_ERR_INVALID_ARGUMENT,
                "%s size %c = %lld must be a multiple of %lld (2^(levels-1), levels = %d)", what,
                axis[a], (long long)s[a], (long long)m, arch->levels);
        }
    }
    return CS_OK;
}

/* The per-window passes around the network (weighting, finalising slices, checks) are split
 * over the context's threads (CS_OMP_FOR); each output element is written by one thread, so
 * results do not depend on the thread count. */

/* Whether a float is NaN or infinite (all exponent bits set): integer operations, so that loops
 * over it vectorise, which !isfinite does not. */
static int non_finite_bits(const float *v)
{
    uint32_t bits;
    memcpy(&bits, v, sizeof bits);
    return (bits & 0x7f800000u) == 0x7f800000u;
}

/* How many of n floats are NaN or infinite, over the threads (an integer sum: any order gives
 * the same count). */
static int64_t count_non_finite(const float *v, int64_t n, int threads)
{
    int64_t bad = 0;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : bad)
#endif
    for (int64_t i = 0; i < n; i++) bad += non_finite_bits(v + i);
    (void)threads;
    return bad;
}

/* dst = src (n floats) over the threads, counting the non-finite values on the way: one pass
 * where a serial memcpy after the count held the other threads idle (28 MB of logits a patch). */
static int64_t copy_counting_non_finite(float *dst, const float *src, int64_t n, int threads)
{
    int64_t bad = 0;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : bad)
#endif
    for (int64_t i = 0; i < n; i++) {
        bad += non_finite_bits(src + i);
        dst[i] = src[i];
    }
    (void)threads;
    return bad;
}

/* Through a window's instance norm one non-finite voxel makes the whole window's probabilities
 * NaN, a silent failure: refuse them, saying how many and where the first one is. */
cs_status cs_check_finite(cs_context_t ctx, const float *image, int64_t volumes,
                          const int64_t size[3], const char *what)
{
    const int64_t vn = size[0] * size[1] * size[2], n = vn * volumes;
    const int64_t count = count_non_finite(image, n, cs_threads(ctx));
    if (!count) return CS_OK;
    int64_t first = 0;
    while (isfinite(image[first])) first++;
    const int64_t v = first % vn;
    return cs_fail(ctx, CS_ERR_NUMERIC,
                   "%s has %lld non-finite voxel%s (NaN or infinite); the first, %g, is at x %lld, "
                   "y %lld, z %lld of channel %lld: replace them (e.g. with the image minimum) "
                   "or mask them out before segmenting",
                   what, (long long)count, count == 1 ? "" : "s", (double)image[first],
                   (long long)(v % size[0]), (long long)(v / size[0] % size[1]),
                   (long long)(v / (size[0] * size[1])), (long long)(first / vn));
}

/* Finite voxels can still overflow inside the network (values near FLT_MAX squared by the
 * instance norm): its output is checked too, so that a result is never silently NaN. */
static cs_status check_finite_output(cs_context_t ctx, const float *v, int64_t n, const char *where)
{
    const int64_t bad = count_non_finite(v, n, cs_threads(ctx));
    for (int64_t i = 0; bad && i < n; i++)
        if (!isfinite(v[i]))
            return cs_fail(ctx, CS_ERR_NUMERIC,
                           "the network gave a non-finite value (%g) %s: the image's values "
                           "overflow single precision inside it; normalise the image first",
                           (double)v[i], where);
    return CS_OK;
}

static cs_status check_memory(cs_context_t ctx, uint64_t need, const char *what)
{
    uint64_t limit = cs_context_get_memory_limit(ctx);
    if (limit && need > limit)
        return cs_fail(ctx, CS_ERR_RESOURCE_LIMIT,
                       "%s needs about %.1f MiB beyond its inputs and outputs, above the memory "
                       "limit of %.1f MiB; use a smaller window or a larger voxel spacing",
                       what, need / 1048576.0, limit / 1048576.0);
    return CS_OK;
}

/* The context's kept workspace (mapped and zeroed once per context, not per call); without a
 * context, one for this call. */
static cs_status acquire_workspace(cs_context_t ctx, const cs_model_t model, int32_t batch,
                                   const int64_t size[3], int slot, cs_workspace **ws)
{
    if (ctx) return cs_context_workspace(ctx, model, batch, size, slot, ws);
    return cs_workspace_create(ctx, model, batch, size, 0, ws);
}

static void release_workspace(cs_context_t ctx, cs_workspace *ws)
{
    if (!ctx) cs_workspace_free(ws);
}

cs_status cs_model_forward(cs_context_t ctx, const cs_model_t model, const float *images,
                           int32_t batch, const int64_t size[3], float *logits)
{
    if (!model || !images || !size || !logits)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "cs_model_forward: NULL argument");
    if (batch < 1)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "batch = %d must be at least 1", batch);
    cs_status st = check_net_size(ctx, &model->info.arch, size, "image");
    if (st != CS_OK) return st;
    st = check_memory(ctx, cs_workspace_bytes(model, batch, size, 0), "the forward pass");
    if (st != CS_OK) return st;
    st = cs_check_finite(ctx, images, (int64_t)batch * model->info.arch.in_channels, size,
                         "the batch");
    if (st != CS_OK) return st;

    /* the workspace is the context's, not the model's: threads can share the model */
    cs_workspace *ws = NULL;
    st = acquire_workspace(ctx, model, batch, size, 0, &ws);
    if (st != CS_OK) return st;
    const float *out = NULL;
    st = cs_net_forward(ctx, model, ws, images, &out);
    const size_t n = (size_t)batch * (size_t)model->info.arch.num_classes * (size_t)size[0] *
                     (size_t)size[1] * (size_t)size[2];
    if (st == CS_OK && copy_counting_non_finite(logits, out, (int64_t)n, cs_threads(ctx)))
        st = check_finite_output(ctx, out, (int64_t)n, "for this batch");
    release_workspace(ctx, ws);
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* Sliding windows                                                                             */

typedef struct infer_plan {
    int32_t channels, classes;
    int32_t features;  /* the head's input channels */
    int64_t size[3];   /* the volume, x y z */
    int64_t win[3];    /* the window */
    int64_t padded[3]; /* the volume padded to at least the window */
    int64_t count[3];  /* window positions per axis */
    int gaussian;
    float sigma;
    int accumulate; /* add to the probabilities output instead of overwriting it */
} infer_plan;

/* Start of window i of an axis: evenly spread from 0 to padded - win, so both ends are covered
 * and neighbours share at least the requested overlap. */
static int64_t window_start(const infer_plan *p, int a, int64_t i)
{
    if (p->count[a] == 1) return 0;
    int64_t span = p->padded[a] - p->win[a];
    return (i * span + (p->count[a] - 1) / 2) / (p->count[a] - 1);
}

/* Far beyond any scan (a 4096^3 volume), small enough that byte counts fit in 64 bits. */
#define CS_MAX_VOLUME_VOXELS 68719476736.0 /* 2^36 */

static cs_status make_plan(cs_context_t ctx, const cs_model_t model, const int64_t size[3],
                           const cs_infer_options *o, infer_plan *p)
{
    const cs_model_info *info = &model->info;
    memset(p, 0, sizeof *p);
    p->channels = info->arch.in_channels;
    p->classes = info->arch.num_classes;
    p->features = info->arch.base_filters;
    if (!((double)o->overlap >= CS_OVERLAP_MIN && (double)o->overlap <= CS_OVERLAP_MAX))
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "overlap = %g must be in [%g, %g]",
                       (double)o->overlap, CS_OVERLAP_MIN, CS_OVERLAP_MAX);
    p->gaussian = o->gaussian_weighting != 0;
    p->sigma = o->gaussian_sigma;
    p->accumulate = o->accumulate != 0;
    if (p->gaussian && !(o->gaussian_sigma > 0.0f && isfinite(o->gaussian_sigma)))
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "gaussian_sigma = %g must be positive",
                       (double)o->gaussian_sigma);
    for (int a = 0; a < 3; a++) {
        if (size[a] < 1)
            return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "volume size[%d] = %lld must be positive",
                           a, (long long)size[a]);
        if (o->window[a] < 0)
            return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "window[%d] = %d must not be negative", a,
                           o->window[a]);
        p->size[a] = size[a];
        p->win[a] = o->window[a] ? o->window[a] : info->patch_size[a];
    }
    /* Checked before any size product is formed, so that later products cannot overflow. */
    if ((double)size[0] * (double)size[1] * (double)size[2] > CS_MAX_VOLUME_VOXELS)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "volume of %lld x %lld x %lld voxels exceeds the limit of 2^36 voxels",
                       (long long)size[0], (long long)size[1], (long long)size[2]);
    if (info->arch.spatial_dims == 2 && p->win[2] == 0) p->win[2] = 1;
    cs_status st = check_net_size(ctx, &info->arch, p->win, "window");
    if (st != CS_OK) return st;
    for (int a = 0; a < 3; a++) {
        p->padded[a] = size[a] > p->win[a] ? size[a] : p->win[a];
        int64_t step = (int64_t)floor((double)p->win[a] * (1.0 - (double)o->overlap));
        if (step < 1) step = 1;
        p->count[a] = (p->padded[a] - p->win[a] + step - 1) / step + 1;
    }
    return CS_OK;
}

/* Voxels of a window that a thread takes through the head, the softmax and the weighting at a
 * time: 8 softmax tiles, whose logits (442 KB for 27 classes) stay in the thread's cache. */
#define CS_HEAD_PIECE (8 * CS_SOFTMAX_TILE)

/* The memory the window slots share, carved from one allocation (floats). */
typedef struct infer_scratch {
    float *slab;      /* (wz, py, K, px) weighted sums, slice z in slot z % wz */
    float *weight[3]; /* (w_a) per-axis importance factor */
    float *norm[3];   /* (p_a) per-axis sum of the factors of all windows covering a position */
    float *fill;      /* (C) padding value of each channel */
} infer_scratch;

/* A piece buffer: a softmax tile (K, CS_SOFTMAX_TILE), a piece's logits (K, CS_HEAD_PIECE) and
 * the head's input (features, CS_HEAD_PIECE). */
static size_t piece_floats(const infer_plan *p)
{
    return (size_t)p->classes * (CS_SOFTMAX_TILE + CS_HEAD_PIECE) +
           (size_t)p->features * CS_HEAD_PIECE;
}

static size_t scratch_floats(const infer_plan *p)
{
    size_t n = (size_t)p->classes * (size_t)p->win[2] * (size_t)p->padded[1] * (size_t)p->padded[0];
    for (int a = 0; a < 3; a++) n += (size_t)p->win[a] + (size_t)p->padded[a];
    n += (size_t)p->channels;
    return n;
}

static size_t window_input_floats(const infer_plan *p)
{
    return (size_t)p->win[0] * (size_t)p->win[1] * (size_t)p->win[2] * (size_t)p->channels;
}

/* The memory of `slots` window slots and what they share (the piece buffers excepted, like
 * the kernels' scratch: their number depends on the threads). */
static uint64_t plan_bytes(const cs_model_t model, const infer_plan *p, int slots)
{
    const uint64_t slot = cs_workspace_bytes(model, 1, p->win, 0) +
                          (uint64_t)window_input_floats(p) * sizeof(float);
    return (uint64_t)slots * slot + (uint64_t)scratch_floats(p) * sizeof(float);
}

uint64_t cs_predict_volume_memory(const cs_model_t model, const int64_t size[3],
                                  const cs_infer_options *options)
{
    if (!model || !size) return 0;
    cs_infer_options o = options ? *options : cs_infer_options_default();
    infer_plan p;
    if (make_plan(NULL, model, size, &o, &p) != CS_OK) return 0;
    return plan_bytes(model, &p, 1);
}

/* Per-axis importance factors (peak 1, floored so far corners keep a usable weight) and their
 * sums over all window positions. */
static void make_weights(const infer_plan *p, infer_scratch *s)
{
    for (int a = 0; a < 3; a++) {
        int64_t w = p->win[a];
        float *g = s->weight[a];
        if (!p->gaussian || w == 1) {
            for (int64_t i = 0; i < w; i++) g[i] = 1.0f;
        } else {
            double sigma = (double)p->sigma * (double)w, centre = 0.5 * (double)(w - 1);
            double peak = 0.0;
            for (int64_t i = 0; i < w; i++) {
                double d = ((double)i - centre) / sigma;
                double v = exp(-0.5 * d * d);
                g[i] = (float)v;
                if (v > peak) peak = v;
            }
            for (int64_t i = 0; i < w; i++) {
                float v = (float)(g[i] / peak);
                g[i] = v > 1e-6f ? v : 1e-6f;
            }
        }
        float *n = s->norm[a];
        for (int64_t i = 0; i < p->padded[a]; i++) n[i] = 0.0f;
        for (int64_t c = 0; c < p->count[a]; c++) {
            int64_t start = window_start(p, a, c);
            for (int64_t i = 0; i < w; i++) n[start + i] += g[i];
        }
    }
}

/* Copies the window at (x0, y0, z0) out of the image (C, nz, ny, nx); outside it, the padding. */
static void fill_window(const infer_plan *p, const infer_scratch *s, float *input,
                        const float *image, int64_t x0, int64_t y0, int64_t z0, int threads)
{
    const int64_t nx = p->size[0], ny = p->size[1], nz = p->size[2];
    const int64_t wx = p->win[0], wy = p->win[1], wz = p->win[2];
    const int64_t planes = p->channels * wz;
    CS_OMP_FOR
    for (int64_t plane = 0; plane < planes; plane++) {
        const int64_t c = plane / wz, z = plane % wz;
        const float pad = s->fill[c];
        for (int64_t y = 0; y < wy; y++) {
            float *dst = input + ((c * wz + z) * wy + y) * wx;
            int64_t sz = z0 + z, sy = y0 + y;
            int64_t inside = 0;
            if (sz < nz && sy < ny) {
                inside = nx - x0 < wx ? nx - x0 : wx;
                memcpy(dst, image + ((c * nz + sz) * ny + sy) * nx + x0,
                       (size_t)inside * sizeof(float));
            }
            for (int64_t x = inside; x < wx; x++) dst[x] = pad;
        }
    }
}

/* slab += weight * prob for voxels [i0, i0 + cnt) of the window at (x0, y0, z0), whose
 * probabilities are prob (K, CS_SOFTMAX_TILE): row segment by row segment. */
CS_MULTIVERSION static void accumulate_tile(const infer_plan *p, const infer_scratch *s,
                                            const float *prob, int64_t i0, int64_t cnt, int64_t x0,
                                            int64_t y0, int64_t z0)
{
    const int64_t px = p->padded[0], py = p->padded[1];
    const int64_t wx = p->win[0], wy = p->win[1], wz = p->win[2];
    const float *gx = s->weight[0], *gy = s->weight[1], *gz = s->weight[2];
    for (int64_t i = i0; i < i0 + cnt;) {
        const int64_t x = i % wx, y = i / wx % wy, z = i / (wx * wy), slot = (z0 + z) % wz;
        const int64_t run = wx - x < i0 + cnt - i ? wx - x : i0 + cnt - i;
        const float gzy = gz[z] * gy[y];
        for (int32_t k = 0; k < p->classes; k++) {
            const float *restrict src = prob + k * CS_SOFTMAX_TILE + (i - i0);
            float *restrict dst = s->slab + ((slot * py + y0 + y) * p->classes + k) * px + x0 + x;
            for (int64_t j = 0; j < run; j++) dst[j] += gzy * gx[x + j] * src[j];
        }
        i += run;
    }
}

/* The window's head, softmax and weighting, added into the slab: piece by piece, each piece's
 * logits used while in the cache of the thread that made them (the whole window's logits, 28 MB
 * for ch2's model, went to memory and back, and the head convolution ran at a tenth of the
 * peak). The pieces are whole softmax tiles of the window, so the values are those of a
 * whole-window softmax. Each voxel is one slab value, written by one thread. Returns whether a
 * logit was not finite. */
static int64_t blend_window(const infer_plan *p, const infer_scratch *s, float *pieces,
                            const cs_net_head *head, int64_t x0, int64_t y0, int64_t z0,
                            int threads)
{
    const int64_t wn = p->win[0] * p->win[1] * p->win[2];
    const int64_t count_of_pieces = (wn + CS_HEAD_PIECE - 1) / CS_HEAD_PIECE;
    const int32_t K = p->classes;
    int64_t bad = 0;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : bad)
#endif
    for (int64_t piece = 0; piece < count_of_pieces; piece++) {
        const int64_t start = piece * CS_HEAD_PIECE,
                      count = wn - start < CS_HEAD_PIECE ? wn - start : CS_HEAD_PIECE;
#ifdef _OPENMP
        float *prob = pieces + (size_t)omp_get_thread_num() * piece_floats(p);
#else
        float *prob = pieces;
#endif
        float *logits = prob + (size_t)K * CS_SOFTMAX_TILE;
        cs_net_head_apply(head, logits, logits + (size_t)K * CS_HEAD_PIECE, start, count);
        for (int64_t i0 = 0; i0 < count; i0 += CS_SOFTMAX_TILE) {
            bad += cs_softmax_tile(prob, logits, K, count, i0);
            accumulate_tile(p, s, prob, start + i0,
                            count - i0 < CS_SOFTMAX_TILE ? count - i0 : CS_SOFTMAX_TILE, x0, y0,
                            z0);
        }
    }
    (void)threads;
    return bad;
}

/* Voxels of a row normalised at a time: the argmax state of a chunk lives on the stack. */
#define CS_FINALISE_CHUNK 256

/* Normalises x in [x0, x0 + n) of row y of slice z into the outputs. Class by class along the
 * row (contiguous, vectorisable, where voxel by voxel strode across K slab planes); the classes
 * are still compared in order with the same strict test, so the labels are those of a
 * voxel-by-voxel argmax. */
static void finalise_chunk(const infer_plan *p, const infer_scratch *s, int64_t z, int64_t y,
                           int64_t x0, int64_t n, float *probabilities, int32_t *labels)
{
    const int64_t nx = p->size[0], ny = p->size[1], nz = p->size[2];
    const int64_t px = p->padded[0], py = p->padded[1], wz = p->win[2], slot = z % wz;
    float inv[CS_FINALISE_CHUNK], best_p[CS_FINALISE_CHUNK];
    int32_t best[CS_FINALISE_CHUNK];
    const float zy = s->norm[2][z] * s->norm[1][y]; /* the product's order is kept */
    for (int64_t i = 0; i < n; i++) {
        inv[i] = 1.0f / (zy * s->norm[0][x0 + i]);
        best_p[i] = -1.0f;
        best[i] = 0;
    }
    for (int32_t k = 0; k < p->classes; k++) {
        const float *restrict src = s->slab + ((slot * py + y) * p->classes + k) * px + x0;
        if (probabilities) {
            float *restrict out = probabilities + ((k * nz + z) * ny + y) * nx + x0;
            if (p->accumulate)
                for (int64_t i = 0; i < n; i++) out[i] += src[i] * inv[i];
            else
                for (int64_t i = 0; i < n; i++) out[i] = src[i] * inv[i];
        }
        if (labels)
            for (int64_t i = 0; i < n; i++) {
                const float v = src[i] * inv[i];
                if (v > best_p[i]) {
                    best_p[i] = v;
                    best[i] = k;
                }
            }
    }
    if (labels) memcpy(labels + (z * ny + y) * nx + x0, best, (size_t)n * sizeof(int32_t));
}

/* Normalises slice z of the slab into the outputs and clears its slot for the windows of later
 * rows, row by row while the row is in cache (the padded rows and columns too). */
static void finalise_slice(const infer_plan *p, const infer_scratch *s, int64_t z,
                           float *probabilities, int32_t *labels, int threads)
{
    const int64_t nx = p->size[0], ny = p->size[1], nz = p->size[2];
    const int64_t px = p->padded[0], py = p->padded[1], wz = p->win[2], slot = z % wz;
    CS_OMP_FOR
    for (int64_t y = 0; y < py; y++) {
        if (z < nz && y < ny)
            for (int64_t x0 = 0; x0 < nx; x0 += CS_FINALISE_CHUNK)
                finalise_chunk(p, s, z, y, x0,
                               nx - x0 < CS_FINALISE_CHUNK ? nx - x0 : CS_FINALISE_CHUNK,
                               probabilities, labels);
        memset(s->slab + (slot * py + y) * p->classes * px, 0,
               (size_t)p->classes * (size_t)px * sizeof(float));
    }
}

/* The error for a window whose logits were not all finite (the slab is spoilt, but the call
 * fails): its logits again, whole, to find and name the value. */
static cs_status window_not_finite(cs_context_t ctx, const cs_model_t model, cs_workspace *ws,
                                   const float *input, int64_t n, int64_t x0, int64_t y0,
                                   int64_t z0)
{
    char where[96];
    snprintf(where, sizeof where, "in the window at x %lld, y %lld, z %lld", (long long)x0,
             (long long)y0, (long long)z0);
    const float *logits = NULL;
    cs_status st = cs_net_forward(ctx, model, ws, input, &logits);
    if (st == CS_OK) st = check_finite_output(ctx, logits, n, where);
    if (st == CS_OK)
        st = cs_fail(ctx, CS_ERR_NUMERIC, "the network gave a non-finite value %s", where);
    return st;
}

/* Zeroes v[0, n) in equal shares over the threads. The slab's pages are zero when fresh, but
 * touching them first inside the blend put their page faults (hundreds of MB) on whichever
 * thread blended where the slab was new, while the other waited at the blend's end. */
static void zero_in_parallel(float *v, int64_t n, int threads)
{
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
    for (int t = 0; t < threads; t++) {
        const int64_t first = n * t / threads, last = n * (t + 1) / threads;
        memset(v + first, 0, (size_t)(last - first) * sizeof(float));
    }
    (void)threads;
}

/* The smallest of n finite floats, over the threads (a minimum in any order is the same). */
static float minimum_of(const float *v, int64_t n, int threads)
{
    float m = INFINITY;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static) reduction(min : m)
#endif
    for (int64_t i = 0; i < n; i++) m = v[i] < m ? v[i] : m;
    (void)threads;
    return m;
}

/* Window slots: with 2-8 threads and at least 4 windows per thread in a z-row, every thread
 * runs whole windows on one thread (inner = 1), and one slot more than threads lets a faster
 * thread run a window ahead of a slower one; otherwise one slot, whose windows run on all the
 * threads. Fewer slots when the memory limit cannot hold them. */
static int window_slots(cs_context_t ctx, const cs_model_t model, const infer_plan *p, int *inner)
{
    const int threads = cs_threads(ctx);
    *inner = threads;
    if (threads < 2 || threads >= CS_MAX_WINDOW_SLOTS ||
        p->count[0] * p->count[1] < 4 * (int64_t)threads)
        return 1;
    const uint64_t limit = cs_context_get_memory_limit(ctx);
    int slots = threads + 1;
    while (slots > 1 && limit && plan_bytes(model, p, slots) > limit) slots--;
    if (slots > 1) *inner = 1;
    return slots;
}

/* A window slot: a window's input and workspace, and which window it holds. */
typedef struct window_slot {
    float *input; /* (C, wz, wy, wx) */
    cs_workspace *ws;
    cs_net_head head;
    int64_t window; /* or -1 when free */
    int ready;      /* its network has run */
} window_slot;

/* The volume's windows as tasks for the threads: networks in window order into free slots;
 * blends in window order, one at a time; each z-row's finished slices finalised once its last
 * window has blended and before the next row's first blend (blends and finalising use the slab,
 * so one of them runs at a time). Fields without atomics change under the lock (the call's own:
 * calls on other contexts do not wait for it). */
typedef struct window_tasks {
    window_slot *slots;
    int count;
    int64_t per_row, windows; /* windows per z-row, and in all */
    int64_t next, turn;       /* the next window whose network runs, and whose blend */
    int64_t finalised;        /* z-rows finalised */
    int slab_busy;            /* a blend or a finalise runs */
    atomic_int changes;       /* bumped when a task ends: waiting threads watch it */
    atomic_int stop;          /* set when a window failed or the caller cancelled */
    cs_status failed;         /* the first failure */
    int64_t bad_window;       /* the window whose logits were not all finite, or -1 */
    atomic_llong done;        /* windows blended */
    int64_t reported;         /* done at the last progress report */
#ifdef _OPENMP
    omp_lock_t lock;
#endif
} window_tasks;

enum {
    TASK_WAIT,
    TASK_NETWORK,
    TASK_BLEND,
    TASK_FINALISE,
    TASK_FINISHED
};

static int stopped(window_tasks *r) { return atomic_load(&r->stop); }

static void lock_tasks(window_tasks *r)
{
#ifdef _OPENMP
    omp_set_lock(&r->lock);
#else
    (void)r;
#endif
}

static void unlock_tasks(window_tasks *r)
{
#ifdef _OPENMP
    omp_unset_lock(&r->lock);
#else
    (void)r;
#endif
}

/* Records the first failure (blends run in window order, so a window whose logits were not
 * finite is the first such window) and stops the tasks. */
static void fail_tasks(window_tasks *r, cs_status st, int64_t bad_window)
{
    lock_tasks(r);
    if (r->failed == CS_OK) {
        r->failed = st;
        r->bad_window = bad_window;
    }
    unlock_tasks(r);
    atomic_store(&r->stop, 1);
    atomic_fetch_add(&r->changes, 1);
}

/* The slab's next task if it is free (finalising a finished z-row, else the blend whose turn it
 * is once its network has run), else the next window's network in a free slot. */
static int pick_task(window_tasks *r, window_slot **slot)
{
    int kind = TASK_WAIT;
    lock_tasks(r);
    window_slot *blend = NULL, *free_slot = NULL;
    for (int i = 0; i < r->count; i++) {
        window_slot *s = &r->slots[i];
        if (s->window == r->turn && s->ready) blend = s;
        if (s->window < 0 && !free_slot) free_slot = s;
    }
    if (stopped(r) || r->finalised * r->per_row == r->windows) {
        kind = TASK_FINISHED;
    } else if (!r->slab_busy && r->turn == (r->finalised + 1) * r->per_row) {
        r->slab_busy = 1;
        kind = TASK_FINALISE;
    } else if (!r->slab_busy && blend) {
        r->slab_busy = 1;
        *slot = blend;
        kind = TASK_BLEND;
    } else if (free_slot && r->next < r->windows) {
        free_slot->window = r->next++;
        free_slot->ready = 0;
        *slot = free_slot;
        kind = TASK_NETWORK;
    }
    unlock_tasks(r);
    return kind;
}

static void end_task(window_tasks *r, window_slot *s, int kind)
{
    lock_tasks(r);
    if (kind == TASK_NETWORK) {
        s->ready = 1;
    } else if (kind == TASK_BLEND) {
        r->slab_busy = 0;
        s->window = -1;
        r->turn++;
        atomic_fetch_add(&r->done, 1);
    } else {
        r->slab_busy = 0;
        r->finalised++;
    }
    unlock_tasks(r);
    atomic_fetch_add(&r->changes, 1);
}

/* Waits for another thread's task to end (seen: r->changes before the task was picked). */
static void wait_for_change(window_tasks *r, int seen)
{
    for (long spins = 1; atomic_load(&r->changes) == seen; spins++) {
#if defined(__unix__) || defined(__APPLE__)
        if (spins % 4096 == 0) sched_yield(); /* the thread it waits for may need this CPU */
#endif
    }
}

/* What the tasks read and write besides the slots. */
typedef struct volume_job {
    cs_context_t ctx;
    cs_model_t model;
    const infer_plan *p;
    const infer_scratch *s;
    const float *image;
    float *pieces; /* the inner threads' piece buffers: one blend runs at a time */
    float *probabilities;
    int32_t *labels;
    int inner; /* threads of each task */
} volume_job;

/* The origin of window k (windows in z-rows, each row y-major). */
static void window_origin(const infer_plan *p, int64_t k, int64_t o[3])
{
    const int64_t per_row = p->count[0] * p->count[1], i = k % per_row;
    o[0] = window_start(p, 0, i % p->count[0]);
    o[1] = window_start(p, 1, i / p->count[0]);
    o[2] = window_start(p, 2, k / per_row);
}

/* Finalises the slices of z-row iz that no later row covers. */
static void finalise_row(const volume_job *j, int64_t iz)
{
    const infer_plan *p = j->p;
    const int64_t z0 = window_start(p, 2, iz);
    const int64_t end = iz + 1 < p->count[2] ? window_start(p, 2, iz + 1) : p->padded[2];
    for (int64_t z = z0; z < end; z++)
        finalise_slice(p, j->s, z, j->probabilities, j->labels, j->inner);
}

static void run_task(const volume_job *j, window_tasks *r, window_slot *s, int kind)
{
    if (kind == TASK_FINALISE) {
        finalise_row(j, r->finalised);
        end_task(r, s, kind);
        return;
    }
    int64_t o[3];
    window_origin(j->p, s->window, o);
    if (kind == TASK_NETWORK) {
        fill_window(j->p, j->s, s->input, j->image, o[0], o[1], o[2], j->inner);
        const cs_status st = cs_net_forward_to_head(j->ctx, j->model, s->ws, s->input, j->inner,
                                                    &s->head);
        if (st != CS_OK) {
            fail_tasks(r, st, -1);
            return;
        }
    } else if (blend_window(j->p, j->s, j->pieces, &s->head, o[0], o[1], o[2], j->inner)) {
        fail_tasks(r, CS_ERR_NUMERIC, s->window);
        return;
    }
    end_task(r, s, kind);
}

/* Tells the caller how far the windows are, if they moved on since the last report (from the
 * calling thread only); a request to cancel stops the tasks. */
static void report_progress(const cs_infer_options *o, window_tasks *r)
{
    const int64_t done = atomic_load(&r->done);
    if (!o->progress || done == r->reported || stopped(r)) return;
    r->reported = done;
    if (o->progress(o->progress_user_data, (float)done / (float)r->windows))
        fail_tasks(r, CS_ERR_CANCELLED, -1);
}

/* Runs every task on `threads` threads (fewer inside a caller's parallel region), each taking
 * the next task until the last row is finalised; the calling thread reports progress. Returns
 * with r->stop set if a window failed or the caller cancelled. */
static void run_tasks(const volume_job *j, window_tasks *r, int threads, const cs_infer_options *o)
{
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) if (r->count > 1)
#endif
    for (;;) {
        const int seen = atomic_load(&r->changes);
        window_slot *s = NULL;
        const int kind = pick_task(r, &s);
        if (kind == TASK_FINISHED) break;
        if (kind == TASK_WAIT) wait_for_change(r, seen);
        else run_task(j, r, s, kind);
#ifdef _OPENMP
        if (omp_get_thread_num() == 0) report_progress(o, r);
#else
        report_progress(o, r);
#endif
    }
    report_progress(o, r);
}

/* Gives each slot its input (from inputs, window_input_floats each) and a workspace that the
 * context keeps (one per slot), or without a context one of its own. */
static cs_status make_slots(cs_context_t ctx, const cs_model_t model, const infer_plan *p,
                            float *inputs, window_tasks *r)
{
    for (int i = 0; i < r->count; i++) {
        r->slots[i].input = inputs + (size_t)i * window_input_floats(p);
        r->slots[i].ws = NULL;
        r->slots[i].window = -1;
    }
    cs_status st = CS_OK;
    for (int i = 0; i < r->count && st == CS_OK; i++)
        st = acquire_workspace(ctx, model, 1, p->win, i, &r->slots[i].ws);
    return st;
}

/* The error of stopped tasks: a cancellation, or a window whose logits were not all finite (its
 * logits again, whole, name the value). */
static cs_status tasks_error(const volume_job *j, window_tasks *r)
{
    if (r->failed == CS_ERR_CANCELLED)
        return cs_fail(j->ctx, CS_ERR_CANCELLED,
                       "inference cancelled by the progress callback after %lld of %lld windows",
                       (long long)atomic_load(&r->done), (long long)r->windows);
    if (r->bad_window < 0) return r->failed;
    int64_t o[3];
    window_origin(j->p, r->bad_window, o);
    const window_slot *s = &r->slots[0];
    fill_window(j->p, j->s, s->input, j->image, o[0], o[1], o[2], cs_threads(j->ctx));
    const int64_t n = (int64_t)window_input_floats(j->p) / j->p->channels * j->p->classes;
    return window_not_finite(j->ctx, j->model, s->ws, s->input, n, o[0], o[1], o[2]);
}

cs_status cs_predict_volume(cs_context_t ctx, const cs_model_t model, const float *image,
                            const int64_t size[3], const cs_infer_options *options,
                            float *probabilities, int32_t *labels)
{
    if (!model || !image || !size)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "cs_predict_volume: NULL argument");
    cs_infer_options o = options ? *options : cs_infer_options_default();
    infer_plan p;
    cs_status st = make_plan(ctx, model, size, &o, &p);
    if (st != CS_OK) return st;
    int inner = 1;
    const int count = window_slots(ctx, model, &p, &inner);
    st = check_memory(ctx, plan_bytes(model, &p, count), "sliding-window inference");
    if (st != CS_OK) return st;
    if (!probabilities && !labels) return CS_OK;
    st = cs_check_finite(ctx, image, p.channels, p.size, "the image");
    if (st != CS_OK) return st;

    const size_t shared = scratch_floats(&p);
    float *mem = (float *)cs_alloc(
        ctx, (shared + (size_t)count * window_input_floats(&p)) * sizeof(float), "inference slab");
    if (!mem) return CS_ERR_OUT_OF_MEMORY;
    infer_scratch s;
    s.slab = mem;
    float *next = s.slab + (int64_t)p.classes * p.win[2] * p.padded[1] * p.padded[0];
    for (int a = 0; a < 3; a++) {
        s.weight[a] = next;
        next += p.win[a];
        s.norm[a] = next;
        next += p.padded[a];
    }
    s.fill = next;
    zero_in_parallel(s.slab, (int64_t)p.classes * p.win[2] * p.padded[1] * p.padded[0],
                     cs_threads(ctx));

    /* pad with each channel's minimum, as the training patches are */
    const int64_t vn = p.size[0] * p.size[1] * p.size[2];
    for (int32_t c = 0; c < p.channels; c++) {
        const float m = minimum_of(image + c * vn, vn, cs_threads(ctx));
        s.fill[c] = isfinite(m) ? m : 0.0f;
    }
    make_weights(&p, &s);

    window_slot slots[CS_MAX_WINDOW_SLOTS];
    window_tasks r;
    memset(&r, 0, sizeof r);
    r.slots = slots;
    r.count = count;
    r.per_row = p.count[0] * p.count[1];
    r.windows = r.per_row * p.count[2];
    r.bad_window = -1;
    atomic_init(&r.changes, 0);
    atomic_init(&r.stop, 0);
    atomic_init(&r.done, 0);
#ifdef _OPENMP
    omp_init_lock(&r.lock);
#endif
    /* outside the context's accounting, like the kernels' scratch (see plan_bytes) */
    const size_t piece_bytes = (size_t)inner * piece_floats(&p) * sizeof(float);
    float *pieces = (float *)cs_alloc(NULL, piece_bytes, "inference pieces");
    st = pieces ? make_slots(ctx, model, &p, mem + shared, &r)
                : cs_fail(ctx, CS_ERR_OUT_OF_MEMORY,
                          "out of memory (%zu bytes for inference pieces)", piece_bytes);
    if (st == CS_OK) {
        const volume_job j = {ctx, model, &p, &s, image, pieces, probabilities, labels, inner};
        run_tasks(&j, &r, cs_threads(ctx), &o);
        if (stopped(&r)) st = tasks_error(&j, &r);
    }
#ifdef _OPENMP
    omp_destroy_lock(&r.lock);
#endif
    if (pieces)
        for (int i = 0; i < count; i++) release_workspace(ctx, slots[i].ws);
    cs_free(pieces);
    cs_free(mem);
    return st;
}
