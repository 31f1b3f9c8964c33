/* net.c - the U-Net (docs/design.md, "The network"): parameter layout, He initialisation,
 * workspaces, forward and backward passes.
 *
 * With L levels and f_l = base_filters * 2^l filters at level l:
 *   encoder, l = 0 .. L-1: [2x max pooling if l > 0], two conv blocks (ci -> f_l, f_l -> f_l)
 *   decoder, l = L-2 .. 0: transposed conv f_{l+1} -> f_l (kernel 2, stride 2), concat
 *                          [up, skip] (up first), two conv blocks (2 f_l -> f_l, f_l -> f_l)
 *   head: 1x1(x1) convolution f_0 -> K
 * A conv block is: 3^3 (3^2 in 2D) convolution with bias -> instance norm with affine -> LeakyReLU.
 *
 * Parameter tensors in table order (= order of the weights in memory, of the He draws and of
 * model files); k... stands for 3, 3, 3 in 3D and 3, 3 in 2D (PyTorch Conv3d / Conv2d weight
 * shapes), u... for 2, 2, 2 or 2, 2 and h... for 1, 1, 1 or 1, 1:
 *   for l = 0 .. L-1 (ci = in_channels when l = 0, else f_{l-1}):
 *     enc{l}.conv1.weight (f_l, ci, k...)    enc{l}.conv1.bias (f_l)
 *     enc{l}.norm1.weight (f_l)              enc{l}.norm1.bias (f_l)
 *     enc{l}.conv2.weight (f_l, f_l, k...)   enc{l}.conv2.bias (f_l)
 *     enc{l}.norm2.weight (f_l)              enc{l}.norm2.bias (f_l)
 *   for l = L-2 .. 0:
 *     dec{l}.up.weight (f_{l+1}, f_l, u...)  dec{l}.up.bias (f_l)      (PyTorch ConvTranspose)
 *     dec{l}.conv1.weight (f_l, 2 f_l, k...) dec{l}.conv1.bias (f_l)
 *     dec{l}.norm1.weight (f_l)              dec{l}.norm1.bias (f_l)
 *     dec{l}.conv2.weight (f_l, f_l, k...)   dec{l}.conv2.bias (f_l)
 *     dec{l}.norm2.weight (f_l)              dec{l}.norm2.bias (f_l)
 *   head.weight (K, f_0, h...)               head.bias (K)
 */
#include "internal.h"
#include "kernels.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define CS_NET_MAX_LEVELS 8
#define CS_NET_MAX_FILTERS 4096 /* at the deepest level */
#define CS_NET_MAX_SIZE 65536   /* voxels along one axis of a workspace */

/* ------------------------------------------------------------------------------------------ */
/* Configuration and parameter layout                                                          */

static cs_status check_config(cs_context_t ctx, const cs_unet_config *a)
{
    if (a->spatial_dims != 2 && a->spatial_dims != 3)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "network: spatial_dims must be 2 or 3, not %d",
                       (int)a->spatial_dims);
    if (a->in_channels < 1 || a->in_channels > CS_MAX_CHANNELS)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "network: in_channels must be in [1, %d], not %d", CS_MAX_CHANNELS,
                       (int)a->in_channels);
    if (a->num_classes < 2 || a->num_classes > CS_MAX_CLASSES)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "network: num_classes must be in [2, %d], not %d", CS_MAX_CLASSES,
                       (int)a->num_classes);
    if (a->levels < 1 || a->levels > CS_NET_MAX_LEVELS)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "network: levels must be in [1, %d], not %d",
                       CS_NET_MAX_LEVELS, (int)a->levels);
    if (a->base_filters < 1 || (int64_t)a->base_filters << (a->levels - 1) > CS_NET_MAX_FILTERS)
        return cs_fail(
            ctx, CS_ERR_INVALID_ARGUMENT,
            "network: base_filters %d must be >= 1 and base_filters * 2^(levels-1) <= %d",
            (int)a->base_filters, CS_NET_MAX_FILTERS);
    if (!(a->leaky_slope >= 0.0f && a->leaky_slope < 1.0f))
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "network: leaky_slope must be in [0, 1), not %g", (double)a->leaky_slope);
    if (!(a->norm_epsilon > 0.0f && a->norm_epsilon < 1.0f))
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "network: norm_epsilon must be in (0, 1), not %g", (double)a->norm_epsilon);
    return CS_OK;
}

static int32_t filters_at(const cs_unet_config *a, int32_t level)
{
    return a->base_filters << level;
}

/* Appends one tensor to the table: a vector (spatial = 0) or a weight (out, in, kernel...) with
 * `spatial` kernel axes of size k (the first of them kd in 3D). */
static void add_tensor(struct cs_model *m, const char *name, int64_t dim0, int64_t dim1,
                       int spatial, int64_t k)
{
    cs_param_tensor *t = &m->tensors[m->num_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->shape[0] = dim0;
    t->count = dim0;
    t->ndim = 1;
    if (spatial > 0) {
        t->shape[1] = dim1;
        t->count *= dim1;
        for (int i = 0; i < spatial; i++) {
            t->shape[2 + i] = k;
            t->count *= k;
        }
        t->ndim = 2 + spatial;
    }
    t->offset = m->num_params;
    m->num_params += t->count;
}

/* conv{i}.weight|bias and norm{i}.weight|bias of one conv block, prefixed "enc3" or "dec1". */
static void add_block(struct cs_model *m, const char *prefix, int i, int64_t co, int64_t ci)
{
    char name[64];
    const int sd = m->info.arch.spatial_dims;
    snprintf(name, sizeof name, "%s.conv%d.weight", prefix, i);
    add_tensor(m, name, co, ci, sd, 3);
    snprintf(name, sizeof name, "%s.conv%d.bias", prefix, i);
    add_tensor(m, name, co, 0, 0, 0);
    snprintf(name, sizeof name, "%s.norm%d.weight", prefix, i);
    add_tensor(m, name, co, 0, 0, 0);
    snprintf(name, sizeof name, "%s.norm%d.bias", prefix, i);
    add_tensor(m, name, co, 0, 0, 0);
}

cs_status cs_net_layout(cs_context_t ctx, struct cs_model *model)
{
    if (!model) return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "network: no model");
    const cs_unet_config *a = &model->info.arch;
    cs_status st = check_config(ctx, a);
    if (st != CS_OK) return st;
    model->num_tensors = 0;
    model->num_params = 0;
    char prefix[32], name[64];
    for (int32_t l = 0; l < a->levels; l++) {
        const int32_t ci = l == 0 ? a->in_channels : filters_at(a, l - 1);
        snprintf(prefix, sizeof prefix, "enc%d", (int)l);
        add_block(model, prefix, 1, filters_at(a, l), ci);
        add_block(model, prefix, 2, filters_at(a, l), filters_at(a, l));
    }
    for (int32_t l = a->levels - 2; l >= 0; l--) {
        const int32_t f = filters_at(a, l);
        snprintf(prefix, sizeof prefix, "dec%d", (int)l);
        snprintf(name, sizeof name, "%s.up.weight", prefix);
        add_tensor(model, name, filters_at(a, l + 1), f, a->spatial_dims, 2);
        snprintf(name, sizeof name, "%s.up.bias", prefix);
        add_tensor(model, name, f, 0, 0, 0);
        add_block(model, prefix, 1, f, 2 * (int64_t)f);
        add_block(model, prefix, 2, f, f);
    }
    add_tensor(model, "head.weight", a->num_classes, filters_at(a, 0), a->spatial_dims, 1);
    add_tensor(model, "head.bias", a->num_classes, 0, 0, 0);
    return CS_OK;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* He normal for every convolution weight, std = sqrt(2 / ((1 + slope^2) * fan_in)), fan_in the
 * inputs feeding one output: Ci * kernel volume for a convolution, Ci for the transposed
 * convolution (kernel 2 = stride 2: each output voxel sees one tap of each input channel).
 * Norm scales are 1, biases and norm shifts 0. One generator draws tensor by tensor in table
 * order, so a seed fixes every weight bit for bit. */
void cs_net_init_weights(struct cs_model *model, uint64_t seed)
{
    cs_rng rng;
    cs_rng_seed(&rng, seed);
    const double slope = model->info.arch.leaky_slope;
    for (int32_t i = 0; i < model->num_tensors; i++) {
        const cs_param_tensor *t = &model->tensors[i];
        float *p = model->params + t->offset;
        if (t->ndim == 1) {
            const float value = strstr(t->name, ".norm") && ends_with(t->name, ".weight") ? 1.0f
                                                                                          : 0.0f;
            for (int64_t j = 0; j < t->count; j++) p[j] = value;
            continue;
        }
        double fan_in = (double)t->shape[1];
        if (strstr(t->name, ".up.")) fan_in = (double)t->shape[0];
        else
            for (int32_t d = 2; d < t->ndim; d++) fan_in *= (double)t->shape[d];
        const float std = (float)sqrt(2.0 / ((1.0 + slope * slope) * fan_in));
        for (int64_t j = 0; j < t->count; j++) p[j] = std * cs_rng_normal(&rng);
    }
}

static int64_t tensor_offset(const struct cs_model *m, const char *name)
{
    for (int32_t i = 0; i < m->num_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return m->tensors[i].offset;
    return -1;
}

/* ------------------------------------------------------------------------------------------ */
/* Workspaces                                                                                  */

/* One conv -> instance norm -> LeakyReLU block; activations are (B, f, D, H, W) of its level. */
typedef struct conv_block {
    cs_conv_shape shape;
    int64_t weight, bias, gamma, beta; /* offsets into the parameters */
    float *z;                          /* convolution output, kept for the norm's backward
                                          (inference: the same buffer as a) */
    float *a;                          /* output: normalised, then LeakyReLU in place */
    float *mean, *rstd;                /* (B, f) */
    float *grad_a;                     /* dL/da (training only) */
} conv_block;

typedef struct net_level {
    int32_t d, h, w; /* spatial size at this level */
    int32_t filters; /* f_l */
    conv_block enc[2], dec[2];
    float *pooled; /* (B, f_{l-1}, D, H, W) pooled input, l > 0 */
    float *grad_pooled;
    cs_conv_shape up_shape; /* decoder (l < L-1): transposed conv from level l+1 */
    int64_t up_weight, up_bias;
    float *up, *grad_up;   /* (B, f_l, D, H, W) */
    float *cat, *grad_cat; /* (B, 2 f_l, D, H, W) = [up, skip] */
    float *grad_z;         /* (B, f_l, D, H, W) dL/dz scratch shared by the level's blocks */
    /* (B, f_l, D, H, W) the gradients of dec[1].a, up and enc[0].a, whose lives in the backward
     * pass do not overlap, in turn: each is zeroed when it starts (training only) */
    float *grad_shared;
} net_level;

struct cs_workspace {
    cs_unet_config arch; /* of the model it was made for */
    int64_t num_params;
    int32_t batch;
    int with_gradients;
    int forward_done;
    net_level lv[CS_NET_MAX_LEVELS];
    cs_conv_shape head_shape;
    int64_t head_weight, head_bias;
    float *input;      /* (B, C, D, H, W) copy of the last input (the first conv's backward) */
    float *logits;     /* (B, K, D, H, W) */
    void *memory;      /* one allocation: activations, then the gradient region */
    uint64_t bytes;    /* what this shape uses of it */
    uint64_t capacity; /* its size: more than bytes when a kept block serves a smaller shape */
    unsigned char *grad_begin; /* the gradient region, zeroed at each backward pass */
    uint64_t grad_bytes;
};

static int64_t voxels(const net_level *lv) { return (int64_t)lv->d * lv->h * lv->w; }

/* Fills shapes and parameter offsets of a workspace (no buffers yet) after checking the sizes. */
static cs_status plan_shapes(cs_context_t ctx, const struct cs_model *model, int32_t batch,
                             const int64_t size[3], int with_gradients, cs_workspace *ws)
{
    if (!model || !size)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "workspace: no model or size");
    const cs_unet_config *a = &model->info.arch;
    cs_status st = check_config(ctx, a);
    if (st != CS_OK) return st;
    if (batch < 1)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "workspace: batch %d < 1", (int)batch);
    const int64_t multiple = (int64_t)1 << (a->levels - 1);
    if (a->spatial_dims == 2 && size[2] != 1)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "workspace: a 2D network needs nz = 1, not %lld", (long long)size[2]);
    for (int i = 0; i < a->spatial_dims; i++) {
        if (size[i] < 1 || size[i] > CS_NET_MAX_SIZE || size[i] % multiple != 0)
            return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                           "workspace: size %lld along %c must be a positive multiple of %lld "
                           "(2^(levels-1)) and at most %d",
                           (long long)size[i], "xyz"[i], (long long)multiple, CS_NET_MAX_SIZE);
    }
    memset(ws, 0, sizeof *ws);
    ws->arch = *a;
    ws->num_params = model->num_params;
    ws->batch = batch;
    ws->with_gradients = with_gradients ? 1 : 0;
    const int k = a->spatial_dims == 3 ? 3 : 1;  /* kernel depth */
    const int pd = a->spatial_dims == 3 ? 2 : 1; /* pooling depth */
    char name[64];
#define OFFSET(dst, ...)                                                                           \
    do {                                                                                           \
        snprintf(name, sizeof name, __VA_ARGS__);                                                  \
        (dst) = tensor_offset(model, name);                                                        \
        if ((dst) < 0)                                                                             \
            return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,                                           \
                           "workspace: the model has no tensor '%s'", name);                       \
    } while (0)
    for (int32_t l = 0; l < a->levels; l++) {
        net_level *lv = &ws->lv[l];
        lv->d = (int32_t)(pd == 2 ? size[2] >> l : 1);
        lv->h = (int32_t)(size[1] >> l);
        lv->w = (int32_t)(size[0] >> l);
        lv->filters = filters_at(a, l);
        const int32_t f = lv->filters;
        for (int part = 0; part < 2; part++) { /* encoder, decoder */
            if (part == 1 && l == a->levels - 1) break;
            const char *side = part ? "dec" : "enc";
            conv_block *blocks = part ? lv->dec : lv->enc;
            for (int i = 0; i < 2; i++) {
                conv_block *b = &blocks[i];
                int32_t ci = f;
                if (i == 0) ci = part ? 2 * f : (l ? filters_at(a, l - 1) : a->in_channels);
                b->shape = (cs_conv_shape){batch, ci, f, lv->d, lv->h, lv->w, k, 3, 3};
                OFFSET(b->weight, "%s%d.conv%d.weight", side, (int)l, i + 1);
                OFFSET(b->bias, "%s%d.conv%d.bias", side, (int)l, i + 1);
                OFFSET(b->gamma, "%s%d.norm%d.weight", side, (int)l, i + 1);
                OFFSET(b->beta, "%s%d.norm%d.bias", side, (int)l, i + 1);
            }
        }
        if (l < a->levels - 1) {
            /* the input of the transposed conv is level l+1, half the size */
            lv->up_shape = (cs_conv_shape){
                batch, filters_at(a, l + 1), f, lv->d / pd, lv->h / 2, lv->w / 2, pd, 2, 2};
            OFFSET(lv->up_weight, "dec%d.up.weight", (int)l);
            OFFSET(lv->up_bias, "dec%d.up.bias", (int)l);
        }
    }
    ws->head_shape = (cs_conv_shape){
        batch, filters_at(a, 0), a->num_classes, ws->lv[0].d, ws->lv[0].h, ws->lv[0].w, 1, 1, 1};
    OFFSET(ws->head_weight, "head.weight");
    OFFSET(ws->head_bias, "head.bias");
#undef OFFSET
    return CS_OK;
}

/* Hands out 64-byte aligned pieces of one block; with base NULL it only counts bytes. */
typedef struct carver {
    unsigned char *base;
    uint64_t used;
} carver;

static float *carve(carver *c, int64_t floats)
{
    float *p = c->base ? (float *)(c->base + c->used) : NULL;
    c->used += ((uint64_t)floats * sizeof(float) + 63u) & ~(uint64_t)63u;
    return p;
}

/* Assigns every buffer of a planned workspace from base (activations first, then the gradient
 * region) and returns the total bytes. */
static uint64_t carve_buffers(cs_workspace *ws, unsigned char *base)
{
    const cs_unet_config *a = &ws->arch;
    const int64_t B = ws->batch;
    carver c = {base, 0};
    ws->input = carve(&c, B * a->in_channels * voxels(&ws->lv[0]));
    ws->logits = carve(&c, B * a->num_classes * voxels(&ws->lv[0]));
    for (int32_t l = 0; l < a->levels; l++) {
        net_level *lv = &ws->lv[l];
        const int64_t act = B * lv->filters * voxels(lv);
        const int has_dec = l < a->levels - 1;
        if (l > 0) lv->pooled = carve(&c, B * ws->lv[l - 1].filters * voxels(lv));
        /* With one item, [up, skip] are the two halves of cat: the up-convolution and the
         * encoder's last block write there, and the concatenation has nothing to copy. */
        const int cat_halves = has_dec && B == 1;
        if (has_dec) {
            lv->cat = carve(&c, 2 * act);
            lv->up = cat_halves ? lv->cat : carve(&c, act);
        }
        for (int i = 0; i < 2 + 2 * has_dec; i++) {
            conv_block *b = i < 2 ? &lv->enc[i] : &lv->dec[i - 2];
            if (i == 1 && cat_halves) b->a = base ? lv->cat + act : NULL;
            else b->a = carve(&c, act);
            /* only the norm's backward needs the convolution output: inference works in place */
            b->z = ws->with_gradients ? carve(&c, act) : b->a;
            b->mean = carve(&c, B * lv->filters);
            b->rstd = carve(&c, B * lv->filters);
        }
    }
    /* Only the gradients of the encoder's last blocks are added into from two sides (the skip's
     * concatenation and the pooling, or the up-convolution at the bottom): they are the region
     * zeroed at each backward pass. The convolutions' data gradients are written whole
     * (cs_conv_backward_data), grad_z is overwritten before it is read, and grad_shared is zeroed
     * at the start of each of its lives that adds. */
    const uint64_t grad_start = c.used;
    if (ws->with_gradients)
        for (int32_t l = 0; l < a->levels; l++)
            ws->lv[l].enc[1].grad_a = carve(&c, B * ws->lv[l].filters * voxels(&ws->lv[l]));
    ws->grad_begin = base ? base + grad_start : NULL;
    ws->grad_bytes = c.used - grad_start;
    if (ws->with_gradients)
        for (int32_t l = 0; l < a->levels; l++) {
            net_level *lv = &ws->lv[l];
            const int64_t act = B * lv->filters * voxels(lv);
            if (l > 0) lv->grad_pooled = carve(&c, B * ws->lv[l - 1].filters * voxels(lv));
            if (l < a->levels - 1) {
                lv->grad_cat = carve(&c, 2 * act);
                lv->dec[0].grad_a = carve(&c, act);
            }
            lv->grad_z = carve(&c, act);
            lv->grad_shared = carve(&c, act);
            lv->enc[0].grad_a = lv->grad_shared;
            if (l < a->levels - 1) lv->dec[1].grad_a = lv->grad_up = lv->grad_shared;
        }
    return c.used;
}

uint64_t cs_workspace_bytes(const struct cs_model *model, int32_t batch, const int64_t size[3],
                            int with_gradients)
{
    cs_workspace ws;
    if (plan_shapes(NULL, model, batch, size, with_gradients, &ws) != CS_OK) return 0;
    return carve_buffers(&ws, NULL) + sizeof(cs_workspace);
}

cs_status cs_workspace_create(cs_context_t ctx, const struct cs_model *model, int32_t batch,
                              const int64_t size[3], int with_gradients, cs_workspace **out)
{
    if (!out) return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "workspace: no output pointer");
    *out = NULL;
    cs_workspace plan;
    cs_status st = plan_shapes(ctx, model, batch, size, with_gradients, &plan);
    if (st != CS_OK) return st;
    const uint64_t bytes = carve_buffers(&plan, NULL);
    const uint64_t limit = ctx ? ctx->memory_limit : 0;
    if (limit && bytes + sizeof(cs_workspace) > limit)
        return cs_fail(ctx, CS_ERR_RESOURCE_LIMIT,
                       "workspace: %llu bytes of activations exceed the memory limit of %llu bytes",
                       (unsigned long long)bytes, (unsigned long long)limit);
    cs_workspace *ws = (cs_workspace *)cs_alloc(ctx, sizeof *ws, "workspace");
    if (!ws) return CS_ERR_OUT_OF_MEMORY;
    *ws = plan;
    ws->memory = cs_alloc(ctx, (size_t)bytes, "network activations");
    if (!ws->memory) {
        cs_free(ws);
        return CS_ERR_OUT_OF_MEMORY;
    }
    ws->bytes = ws->capacity = bytes;
    carve_buffers(ws, (unsigned char *)ws->memory);
    *out = ws;
    return CS_OK;
}

/* Whether the kept workspace's memory can hold bytes within the context's limit. */
static int kept_fits(const cs_context_t ctx, const cs_workspace *kept, uint64_t bytes)
{
    return kept && kept->capacity >= bytes &&
           !(ctx->memory_limit && kept->capacity + sizeof *kept > ctx->memory_limit);
}

cs_status cs_context_workspace(cs_context_t ctx, const struct cs_model *model, int32_t batch,
                               const int64_t size[3], int slot, cs_workspace **out)
{
    if (!ctx || !out || slot < 0 || slot >= CS_MAX_WINDOW_SLOTS)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "workspace: no context or slot");
    *out = NULL;
    cs_workspace plan;
    cs_status st = plan_shapes(ctx, model, batch, size, 0, &plan);
    if (st != CS_OK) return st;
    const uint64_t bytes = carve_buffers(&plan, NULL);
    cs_workspace *kept = ctx->kept_workspace[slot];
    if (kept_fits(ctx, kept, bytes)) {
        /* activations are written before they are read, so the old contents do not matter */
        void *memory = kept->memory;
        const uint64_t capacity = kept->capacity;
        *kept = plan;
        kept->memory = memory;
        kept->bytes = bytes;
        kept->capacity = capacity;
        carve_buffers(kept, (unsigned char *)memory);
        *out = kept;
        return CS_OK;
    }
    /* freed before the new block: the two are never held at once */
    cs_workspace_free(kept);
    ctx->kept_workspace[slot] = NULL;
    st = cs_workspace_create(ctx, model, batch, size, 0, &ctx->kept_workspace[slot]);
    *out = ctx->kept_workspace[slot];
    return st;
}

void cs_workspace_free(cs_workspace *ws)
{
    if (!ws) return;
    cs_free(ws->memory);
    cs_free(ws);
}

/* ------------------------------------------------------------------------------------------ */
/* Forward and backward                                                                        */

static cs_status check_pass(cs_context_t ctx, const struct cs_model *model, const cs_workspace *ws,
                            const void *in, const void *out, const char *what)
{
    if (!model || !ws || !in || !out)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "%s: missing model, workspace or buffer",
                       what);
    const cs_unet_config *a = &model->info.arch, *w = &ws->arch;
    if (model->num_params != ws->num_params || a->spatial_dims != w->spatial_dims ||
        a->in_channels != w->in_channels || a->num_classes != w->num_classes ||
        a->base_filters != w->base_filters || a->levels != w->levels)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "%s: the workspace was made for another network architecture", what);
    return CS_OK;
}

typedef void (*conv_forward_fn)(float *out, const float *in, const float *weight, const float *bias,
                                const cs_conv_shape *s, int threads);

/* a = LeakyReLU(instance_norm(conv(x))) */
static void block_forward(const conv_block *b, const float *params, const float *x,
                          const cs_unet_config *a, conv_forward_fn conv, int threads)
{
    const cs_conv_shape *s = &b->shape;
    const int64_t n = (int64_t)s->d * s->h * s->w;
    conv(b->z, x, params + b->weight, params + b->bias, s, threads);
    /* one pass; in place for inference (z = a): the backward tells the sign from the output */
    cs_instnorm_leaky_forward(b->a, b->mean, b->rstd, b->z, params + b->gamma, params + b->beta,
                              s->batch, s->out_channels, n, a->norm_epsilon, a->leaky_slope,
                              threads);
}

/* From b->grad_a: adds parameter gradients into grads and, if grad_x is not NULL, dL/dx. */
static void block_backward(const conv_block *b, const float *params, float *grads, const float *x,
                           float *grad_x, float *grad_z, const cs_unet_config *a, int threads)
{
    const cs_conv_shape *s = &b->shape;
    const int64_t n = (int64_t)s->d * s->h * s->w;
    /* LeakyReLU and norm backward in one pass; it overwrites grad_z (no memset) */
    cs_instnorm_leaky_backward(grad_z, grads + b->gamma, grads + b->beta, b->grad_a, b->a, b->z,
                               b->mean, b->rstd, params + b->gamma, s->batch, s->out_channels, n,
                               a->leaky_slope, threads);
    cs_conv_backward_weights(grads + b->weight, grads + b->bias, grad_z, x, s, threads);
    if (grad_x) cs_conv_backward_data(grad_x, grad_z, params + b->weight, s, threads);
}

/* The convolution of a forward pass. A training step's takes the direct convolution, the
 * computation the backward kernels differentiate; inference takes bfloat16 or, in float,
 * Winograd's (docs/design.md, "Winograd inference"). */
static conv_forward_fn forward_conv(cs_context_t ctx, const cs_workspace *ws)
{
    if (ws->with_gradients) return cs_conv_forward;
    return cs_context_get_inference_precision(ctx) == CS_PRECISION_BFLOAT16
               ? cs_conv_forward_bf16
               : cs_conv_forward_winograd;
}

/* The forward pass up to the head; returns the head's input (B, f_0, window). */
static const float *forward_body(const struct cs_model *model, cs_workspace *ws, const float *input,
                                 conv_forward_fn conv, int threads)
{
    const cs_unet_config *a = &model->info.arch;
    const float *P = model->params;
    const int32_t L = a->levels, B = ws->batch, pd = a->spatial_dims == 3 ? 2 : 1;
    memcpy(ws->input, input, (size_t)B * a->in_channels * voxels(&ws->lv[0]) * sizeof(float));

    const float *x = ws->input;
    for (int32_t l = 0; l < L; l++) {
        net_level *lv = &ws->lv[l];
        if (l > 0) {
            const net_level *up = &ws->lv[l - 1];
            cs_maxpool_forward(lv->pooled, up->enc[1].a, (int64_t)B * up->filters, up->d, up->h,
                               up->w, pd, threads);
            x = lv->pooled;
        }
        block_forward(&lv->enc[0], P, x, a, conv, threads);
        block_forward(&lv->enc[1], P, lv->enc[0].a, a, conv, threads);
    }
    const float *deep = ws->lv[L - 1].enc[1].a; /* output of the level below */
    for (int32_t l = L - 2; l >= 0; l--) {
        net_level *lv = &ws->lv[l];
        cs_upconv_forward(lv->up, deep, P + lv->up_weight, P + lv->up_bias, &lv->up_shape, threads);
        if (lv->up != lv->cat) /* else cat holds them already (carve_buffers) */
            cs_concat_forward(lv->cat, lv->up, lv->enc[1].a, B, lv->filters, lv->filters,
                              voxels(lv), threads);
        block_forward(&lv->dec[0], P, lv->cat, a, conv, threads);
        block_forward(&lv->dec[1], P, lv->dec[0].a, a, conv, threads);
        deep = lv->dec[1].a;
    }
    return deep;
}

cs_status cs_net_forward(cs_context_t ctx, const struct cs_model *model, cs_workspace *ws,
                         const float *input, const float **logits)
{
    cs_status st = check_pass(ctx, model, ws, input, logits, "forward");
    if (st != CS_OK) return st;
    const conv_forward_fn conv = forward_conv(ctx, ws);
    const int threads = cs_threads(ctx);
    const float *deep = forward_body(model, ws, input, conv, threads);
    conv(ws->logits, deep, model->params + ws->head_weight, model->params + ws->head_bias,
         &ws->head_shape, threads);
    ws->forward_done = 1;
    *logits = ws->logits;
    return CS_OK;
}

cs_status cs_net_forward_to_head(cs_context_t ctx, const struct cs_model *model, cs_workspace *ws,
                                 const float *input, int threads, cs_net_head *head)
{
    cs_status st = check_pass(ctx, model, ws, input, head, "forward");
    if (st != CS_OK) return st;
    if (ws->batch != 1)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "forward to the head: a workspace of batch 1, not %d", (int)ws->batch);
    const conv_forward_fn conv = forward_conv(ctx, ws);
    head->features = forward_body(model, ws, input, conv, threads);
    head->voxels = voxels(&ws->lv[0]);
    head->weight = model->params + ws->head_weight;
    head->bias = model->params + ws->head_bias;
    head->in_channels = ws->head_shape.in_channels;
    head->classes = ws->head_shape.out_channels;
    head->bfloat16 = conv == cs_conv_forward_bf16;
    ws->forward_done = 0; /* no logits for a backward pass */
    return CS_OK;
}

void cs_net_head_apply(const cs_net_head *head, float *logits, float *features, int64_t i0,
                       int64_t count)
{
    for (int32_t c = 0; c < head->in_channels; c++)
        memcpy(features + c * count, head->features + c * head->voxels + i0,
               (size_t)count * sizeof(float));
    /* a 1x1(x1) convolution computes each voxel alone: a row of `count` gives its values */
    const cs_conv_shape s = {1, head->in_channels, head->classes, 1, 1, (int32_t)count, 1, 1, 1};
    (head->bfloat16 ? cs_conv_forward_bf16 : cs_conv_forward)(logits, features, head->weight,
                                                              head->bias, &s, 1);
}

/* The block whose output leaves level l upwards: to the decoder of level l-1, or to the head. */
static const conv_block *level_output(const cs_workspace *ws, int32_t l)
{
    return l == ws->arch.levels - 1 ? &ws->lv[l].enc[1] : &ws->lv[l].dec[1];
}

/* Zeroes level l's shared gradient buffer if g is it, before a kernel that adds into it. */
static void start_shared_gradient(const cs_workspace *ws, int32_t l, float *g)
{
    const net_level *lv = &ws->lv[l];
    if (g == lv->grad_shared)
        memset(g, 0, (size_t)ws->batch * lv->filters * voxels(lv) * sizeof(float));
}

cs_status cs_net_backward(cs_context_t ctx, const struct cs_model *model, cs_workspace *ws,
                          const float *grad_logits, float *grad_params, int32_t frozen_levels)
{
    cs_status st = check_pass(ctx, model, ws, grad_logits, grad_params, "backward");
    if (st != CS_OK) return st;
    if (!ws->with_gradients)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "backward: the workspace was created without gradients");
    if (!ws->forward_done)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "backward: no forward pass on this workspace");
    const cs_unet_config *a = &model->info.arch;
    const float *P = model->params;
    float *G = grad_params;
    const int threads = cs_threads(ctx);
    const int32_t L = a->levels, B = ws->batch, pd = a->spatial_dims == 3 ? 2 : 1;
    memset(ws->grad_begin, 0, (size_t)ws->grad_bytes);

    const conv_block *top = level_output(ws, 0);
    cs_conv_backward_weights(G + ws->head_weight, G + ws->head_bias, grad_logits, top->a,
                             &ws->head_shape, threads);
    cs_conv_backward_data(top->grad_a, grad_logits, P + ws->head_weight, &ws->head_shape, threads);

    /* decoder, in reverse order of the forward pass: level 0 first */
    for (int32_t l = 0; l < L - 1; l++) {
        net_level *lv = &ws->lv[l];
        block_backward(&lv->dec[1], P, G, lv->dec[0].a, lv->dec[0].grad_a, lv->grad_z, a, threads);
        block_backward(&lv->dec[0], P, G, lv->cat, lv->grad_cat, lv->grad_z, a, threads);
        start_shared_gradient(ws, l, lv->grad_up);
        cs_concat_backward(lv->grad_up, lv->enc[1].grad_a, lv->grad_cat, B, lv->filters,
                           lv->filters, voxels(lv), threads);
        const conv_block *below = level_output(ws, l + 1);
        cs_upconv_backward_weights(G + lv->up_weight, G + lv->up_bias, lv->grad_up, below->a,
                                   &lv->up_shape, threads);
        /* below is the next decoder level, or the bottom of the encoder (frozen at levels) */
        if (l + 1 < L - 1 || frozen_levels < L) {
            start_shared_gradient(ws, l + 1, below->grad_a);
            cs_upconv_backward_data(below->grad_a, lv->grad_up, P + lv->up_weight, &lv->up_shape,
                                    threads);
        }
    }
    /* encoder, deepest first: each level's output gradient is complete (skip + pooling); the
     * frozen levels need none, and the input needs no gradient */
    for (int32_t l = L - 1; l >= frozen_levels; l--) {
        net_level *lv = &ws->lv[l];
        block_backward(&lv->enc[1], P, G, lv->enc[0].a, lv->enc[0].grad_a, lv->grad_z, a, threads);
        if (l == frozen_levels) {
            block_backward(&lv->enc[0], P, G, l == 0 ? ws->input : lv->pooled, NULL, lv->grad_z, a,
                           threads);
            break;
        }
        block_backward(&lv->enc[0], P, G, lv->pooled, lv->grad_pooled, lv->grad_z, a, threads);
        const net_level *up = &ws->lv[l - 1];
        cs_maxpool_backward(up->enc[1].grad_a, lv->grad_pooled, up->enc[1].a,
                            (int64_t)B * up->filters, up->d, up->h, up->w, pd, threads);
    }
    return CS_OK;
}
