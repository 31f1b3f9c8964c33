/* train.c - the trainer: forward, loss, backward, gradient clipping and Adam(W) steps on batches
 * the caller supplies, and checkpoints of the whole training state.
 *
 * Everything a step touches is allocated once in cs_trainer_init: the workspace with gradients,
 * the parameter gradients, Adam's m and v, the logits gradient and the argmax labels. A step
 * checks the loss and the gradient for non-finite values before it touches any weight.
 */
#include "internal.h"
#include "optim.h"
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cs_trainer {
    cs_context_t ctx;
    cs_model_t model;               /* updated in place, owned by the caller */
    cs_train_config config;         /* patch size resolved */
    int64_t size[3];                /* patch x y z */
    int64_t voxels;                 /* per patch */
    cs_workspace *ws;               /* activations and their gradients for one batch */
    float *grad;                    /* (num_params) dL/dparams, laid out like model->params */
    float *adam_m;                  /* (num_params) first moment */
    float *adam_v;                  /* (num_params) second moment */
    float *grad_logits;             /* (B, K, pz, py, px) */
    int32_t *predicted;             /* (B, pz, py, px) argmax of the logits */
    void *loss_scratch;             /* the loss's partial sums (cs_loss_scratch_size) */
    int64_t step;                   /* optimiser steps done */
    int64_t frozen_params;          /* leading parameters the optimiser leaves alone */
    cs_gradient_reducer_fn reducer; /* data-parallel gradient averaging; NULL: none */
    void *reducer_user_data;
};

static cs_status check_config(cs_context_t ctx, const cs_model_info *info, const cs_train_config *c,
                              int64_t size[3])
{
    const cs_unet_config *arch = &info->arch;
    if (c->batch_size < 1)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "batch_size = %d must be at least 1",
                       c->batch_size);
    const int64_t m = (int64_t)1 << (arch->levels - 1);
    static const char axis[3] = {'x', 'y', 'z'};
    for (int a = 0; a < 3; a++) {
        int64_t s = c->patch_size[a] ? c->patch_size[a] : info->patch_size[a];
        if (a == 2 && arch->spatial_dims == 2 && s == 0) s = 1;
        if (s < 1)
            return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "patch size %c = %lld must be positive",
                           axis[a], (long long)s);
        if (a == 2 && arch->spatial_dims == 2) {
            if (s != 1)
                return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                               "patch size z = %lld must be 1 for a 2D model", (long long)s);
        } else if (s % m != 0) {
            return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                           "patch size %c = %lld must be a multiple of %lld (2^(levels-1), "
                           "levels = %d)",
                           axis[a], (long long)s, (long long)m, arch->levels);
        }
        size[a] = s;
    }
    if (!(c->learning_rate > 0.0f && isfinite(c->learning_rate)))
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "learning_rate = %g must be positive",
                       (double)c->learning_rate);
    if (!(c->min_learning_rate >= 0.0f && c->min_learning_rate <= c->learning_rate))
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "min_learning_rate = %g must be in [0, learning_rate]",
                       (double)c->min_learning_rate);
    if (c->optimizer != CS_OPTIMIZER_ADAM && c->optimizer != CS_OPTIMIZER_ADAMW)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "unknown optimizer %d", (int)c->optimizer);
    if (!(c->adam_beta1 >= 0.0f && c->adam_beta1 < 1.0f) ||
        !(c->adam_beta2 >= 0.0f && c->adam_beta2 < 1.0f))
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "adam_beta1 = %g and adam_beta2 = %g must be in [0, 1)",
                       (double)c->adam_beta1, (double)c->adam_beta2);
    if (!(c->adam_epsilon > 0.0f && isfinite(c->adam_epsilon)))
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "adam_epsilon = %g must be positive",
                       (double)c->adam_epsilon);
    if (!(c->weight_decay >= 0.0f && isfinite(c->weight_decay)))
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "weight_decay = %g must not be negative",
                       (double)c->weight_decay);
    if (!(c->grad_clip_norm >= 0.0f && isfinite(c->grad_clip_norm)))
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "grad_clip_norm = %g must not be negative",
                       (double)c->grad_clip_norm);
    if (c->schedule != CS_LR_CONSTANT && c->schedule != CS_LR_POLY && c->schedule != CS_LR_COSINE)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "unknown learning-rate schedule %d",
                       (int)c->schedule);
    if (c->warmup_steps < 0 || c->total_steps < 1 || c->curriculum_steps < 0)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "warmup_steps = %lld and curriculum_steps = %lld must not be negative, "
                       "total_steps = %lld must be positive",
                       (long long)c->warmup_steps, (long long)c->curriculum_steps,
                       (long long)c->total_steps);
    if (c->frozen_encoder_levels < 0 || c->frozen_encoder_levels > arch->levels)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "frozen_encoder_levels = %d must be in [0, %d] (the model's levels)",
                       c->frozen_encoder_levels, arch->levels);
    if (c->curriculum && !(c->curriculum_alpha_start >= 0.0f && c->curriculum_alpha_start <= 1.0f))
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "curriculum_alpha_start = %g must be in [0, 1]",
                       (double)c->curriculum_alpha_start);
    /* the loss checks its own options: try it once on a two-voxel batch of labels 0 (with the
     * model's K, so that partial labels are checked against every class) */
    const int32_t k = info->arch.num_classes;
    float logits[2 * CS_MAX_CLASSES] = {0.0f}, loss;
    int32_t labels[2] = {0, 0};
    cs_status st = cs_loss_run(ctx, &c->loss, logits, labels, 1, 2, k, &loss, NULL, NULL);
    if (st == CS_ERR_OUT_OF_MEMORY) return st;
    if (st != CS_OK)
        return cs_fail(ctx, st, "the loss options are invalid (kind %d, alpha %g, beta %g): %s",
                       (int)c->loss.kind, (double)c->loss.alpha, (double)c->loss.beta,
                       cs_context_last_error(ctx));
    return CS_OK;
}

/* The encoder's tensors lead the parameter layout (net.c), so its first `levels` levels are
 * one prefix of the flat parameter array: its length in floats. */
static int64_t encoder_prefix_params(const struct cs_model *m, int32_t levels)
{
    int64_t end = 0;
    for (int32_t i = 0; i < m->num_tensors; i++) {
        const cs_param_tensor *p = &m->tensors[i];
        if (strncmp(p->name, "enc", 3) == 0 && atoi(p->name + 3) < levels &&
            p->offset + p->count > end)
            end = p->offset + p->count;
    }
    return end;
}

cs_status cs_trainer_init(cs_context_t ctx, cs_model_t model, const cs_train_config *config,
                          cs_trainer_t *out)
{
    if (!out) return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "cs_trainer_init: out is NULL");
    *out = NULL;
    if (!ctx || !model || !config)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "cs_trainer_init: NULL argument");
    int64_t size[3];
    cs_status st = check_config(ctx, &model->info, config, size);
    if (st != CS_OK) return st;

    cs_trainer_t t = (cs_trainer_t)cs_alloc(ctx, sizeof *t, "trainer");
    if (!t) return CS_ERR_OUT_OF_MEMORY;
    t->ctx = ctx;
    t->model = model;
    t->config = *config;
    for (int a = 0; a < 3; a++) {
        t->size[a] = size[a];
        t->config.patch_size[a] = (int32_t)size[a];
    }
    t->voxels = size[0] * size[1] * size[2];
    t->frozen_params = encoder_prefix_params(model, config->frozen_encoder_levels);
    const int64_t B = config->batch_size, K = model->info.arch.num_classes;
    const size_t np = (size_t)model->num_params;

    st = cs_workspace_create(ctx, model, config->batch_size, size, 1, &t->ws);
    if (st == CS_OK) {
        t->grad = (float *)cs_alloc(ctx, np * sizeof(float), "parameter gradients");
        t->adam_m = (float *)cs_alloc(ctx, np * sizeof(float), "Adam first moments");
        t->adam_v = (float *)cs_alloc(ctx, np * sizeof(float), "Adam second moments");
        t->grad_logits = (float *)cs_alloc(ctx, (size_t)(B * K * t->voxels) * sizeof(float),
                                           "logits gradient");
        t->predicted = (int32_t *)cs_alloc(ctx, (size_t)(B * t->voxels) * sizeof(int32_t),
                                           "predicted labels");
        t->loss_scratch = cs_alloc(
            ctx, cs_loss_scratch_size(B, t->voxels, (int32_t)K, config->loss.batch_dice != 0),
            "loss sums");
        if (!t->grad || !t->adam_m || !t->adam_v || !t->grad_logits || !t->predicted ||
            !t->loss_scratch)
            st = CS_ERR_OUT_OF_MEMORY;
    }
    if (st != CS_OK) {
        cs_trainer_free(t);
        return st;
    }
    *out = t;
    return CS_OK;
}

void cs_trainer_free(cs_trainer_t t)
{
    if (!t) return;
    cs_workspace_free(t->ws);
    cs_free(t->grad);
    cs_free(t->adam_m);
    cs_free(t->adam_v);
    cs_free(t->grad_logits);
    cs_free(t->predicted);
    cs_free(t->loss_scratch);
    cs_free(t);
}

int64_t cs_trainer_steps_done(const cs_trainer_t t) { return t ? t->step : 0; }

cs_status cs_trainer_set_total_steps(cs_trainer_t t, int64_t total_steps)
{
    if (!t) return CS_ERR_INVALID_ARGUMENT;
    if (total_steps < 1)
        return cs_fail(t->ctx, CS_ERR_INVALID_ARGUMENT, "total_steps = %lld must be positive",
                       (long long)total_steps);
    t->config.total_steps = total_steps;
    return CS_OK;
}

void cs_shard(int64_t total, int rank, int size, int64_t *first, int64_t *count)
{
    if (size < 1) size = 1;
    if (total < 0) total = 0;
    const int64_t base = total / size, extra = total % size;
    const int64_t r = rank < 0 ? 0 : rank >= size ? size - 1 : rank;
    if (first) *first = r * base + (r < extra ? r : extra);
    if (count) *count = base + (r < extra ? 1 : 0);
}

void cs_trainer_set_gradient_reducer(cs_trainer_t t, cs_gradient_reducer_fn fn, void *user_data)
{
    if (!t) return;
    t->reducer = fn;
    t->reducer_user_data = fn ? user_data : NULL;
}

cs_status cs_trainer_get_state(cs_trainer_t t, float **params, float **adam_m, float **adam_v,
                               int64_t *count)
{
    if (!t) return CS_ERR_INVALID_ARGUMENT;
    if (params) *params = t->model->params;
    if (adam_m) *adam_m = t->adam_m;
    if (adam_v) *adam_v = t->adam_v;
    if (count) *count = t->model->num_params;
    return CS_OK;
}

#define CS_ARGMAX_CHUNK 256 /* voxels whose running maxima live on the stack */

/* predicted (B, N) = argmax over k of logits (B, K, N); the first maximum wins. Class by class
 * along a chunk of voxels (contiguous and vectorisable, where voxel by voxel strode across K
 * planes), chunks over the threads: done serially it held the other thread idle for 3% of a
 * 27-class training step. */
static void argmax_labels(int32_t *predicted, const float *logits, int64_t batch, int32_t k,
                          int64_t n, int threads)
{
    const int64_t chunks = (n + CS_ARGMAX_CHUNK - 1) / CS_ARGMAX_CHUNK;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
    for (int64_t it = 0; it < batch * chunks; it++) {
        const int64_t b = it / chunks, i0 = it % chunks * CS_ARGMAX_CHUNK;
        const int64_t m = n - i0 < CS_ARGMAX_CHUNK ? n - i0 : CS_ARGMAX_CHUNK;
        const float *l = logits + b * k * n + i0;
        float best_v[CS_ARGMAX_CHUNK];
        int32_t best[CS_ARGMAX_CHUNK];
        for (int64_t i = 0; i < m; i++) {
            best_v[i] = l[i];
            best[i] = 0;
        }
        for (int32_t c = 1; c < k; c++) {
            const float *lc = l + c * n;
            for (int64_t i = 0; i < m; i++) {
                const int better = lc[i] > best_v[i];
                best_v[i] = better ? lc[i] : best_v[i];
                best[i] = better ? c : best[i];
            }
        }
        memcpy(predicted + b * n + i0, best, (size_t)m * sizeof(int32_t));
    }
    (void)threads;
}

cs_status cs_trainer_step(cs_trainer_t t, const float *images, const int32_t *labels,
                          cs_step_result *result)
{
    if (!t) return CS_ERR_INVALID_ARGUMENT;
    cs_context_t ctx = t->ctx;
    if (!images || !labels)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "cs_trainer_step: NULL images or labels");
    const cs_model_t model = t->model;
    const int32_t K = model->info.arch.num_classes;
    const int64_t B = t->config.batch_size, N = t->voxels;

    for (int64_t i = 0; i < B * N; i++) {
        if (labels[i] < 0 || labels[i] >= K)
            return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                           "label %d at voxel %lld of batch item %lld is outside [0, %d) (the "
                           "model has %d classes)",
                           labels[i], (long long)(i % N), (long long)(i / N), K, K);
    }

    cs_status st = cs_check_finite(ctx, images, B * model->info.arch.in_channels, t->size,
                                   "the training batch");
    if (st != CS_OK) return st;

    const float *logits = NULL;
    st = cs_net_forward(ctx, model, t->ws, images, &logits);
    if (st != CS_OK) return st;

    const float lr = cs_train_learning_rate_at(&t->config, t->step);
    const float alpha = cs_train_alpha_at(&t->config, t->step);
    cs_loss_options lo = t->config.loss;
    lo.alpha = alpha;
    float loss = 0.0f;
    st = cs_loss_run(ctx, &lo, logits, labels, B, N, K, &loss, t->grad_logits, t->loss_scratch);
    if (st != CS_OK) return st; /* the loss said why */
    if (!isfinite(loss))
        return cs_fail(ctx, CS_ERR_NUMERIC,
                       "non-finite loss (%g) at step %lld; the weights were kept. Check the "
                       "images for NaN or infinite values, or lower the learning rate",
                       (double)loss, (long long)t->step);

    /* the batch's hard prediction, taken before the backward pass may reuse the logits */
    if (result) argmax_labels(t->predicted, logits, B, K, N, cs_threads(ctx));

    const size_t np = (size_t)model->num_params;
    memset(t->grad, 0, np * sizeof(float));
    st = cs_net_backward(ctx, model, t->ws, t->grad_logits, t->grad,
                         t->config.frozen_encoder_levels);
    if (st != CS_OK) return st;
    /* data-parallel: every process must clip and step with the same (averaged) gradient */
    if (t->reducer) {
        char message[CS_TEXT_MAX] = "";
        st = t->reducer(t->reducer_user_data, t->grad, model->num_params, message, sizeof message);
        if (st != CS_OK)
            return cs_fail(ctx, st, "gradient reduction failed at step %lld: %s",
                           (long long)t->step, message[0] ? message : cs_status_string(st));
    }
    /* frozen layers: no gradient (the backward pass left them at 0, so none in the norm that
     * clipping sees) and no update */
    const int64_t fz = t->frozen_params;
    /* the norm before clipping; a non-finite one means a non-finite gradient somewhere */
    const double norm = cs_grad_clip_norm(t->grad, model->num_params, t->config.grad_clip_norm,
                                          cs_threads(ctx));
    if (!isfinite(norm))
        return cs_fail(ctx, CS_ERR_NUMERIC,
                       "non-finite gradient norm (%g) at step %lld; the weights were kept. "
                       "Lower the learning rate or check the images",
                       norm, (long long)t->step);
    cs_adam_update(model->params + fz, t->adam_m + fz, t->adam_v + fz, t->grad + fz,
                   model->num_params - fz, t->step + 1, lr, &t->config, cs_threads(ctx));
    t->step++;

    if (result) {
        memset(result, 0, sizeof *result);
        result->loss = loss;
        result->grad_norm = (float)norm;
        result->learning_rate = lr;
        result->alpha = alpha;
        cs_dice_per_class(t->predicted, labels, B * N, K, result->dice);
        for (int32_t k = K; k < CS_MAX_CLASSES; k++) result->dice[k] = NAN;
    }
    return CS_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Checkpoints: a model file (weights and metadata) plus Adam's moments, the step and the
 * training settings, so that a run resumes exactly where it stopped. */

#define CKPT_STEP_KEY "checkpoint.step"
#define CKPT_CONFIG_KEY "checkpoint.train_config"

/* The tensors of a checkpoint: every model tensor under its own name, then Adam's moments. */
static cs_named_buffer *checkpoint_tensors(cs_trainer_t t, int64_t *flat_shape, int32_t *count)
{
    const cs_model_t model = t->model;
    int32_t n = model->num_tensors + 2;
    cs_named_buffer *tb = (cs_named_buffer *)cs_alloc(t->ctx, sizeof *tb * (size_t)n,
                                                      "checkpoint tensor list");
    if (!tb) return NULL;
    for (int32_t i = 0; i < model->num_tensors; i++) {
        const cs_param_tensor *p = &model->tensors[i];
        tb[i].name = p->name;
        tb[i].ndim = p->ndim;
        tb[i].shape = p->shape;
        tb[i].data = model->params + p->offset;
    }
    *flat_shape = model->num_params;
    tb[n - 2] = (cs_named_buffer){"optimizer.adam_m", 1, flat_shape, t->adam_m};
    tb[n - 1] = (cs_named_buffer){"optimizer.adam_v", 1, flat_shape, t->adam_v};
    *count = n;
    return tb;
}

/* The settings a resumed run must share with the run that wrote the checkpoint: what the
 * optimiser state means (optimizer, batch and patch shape, loss). The schedule may change, so
 * that a run can be extended. */
static char *config_json(const cs_train_config *c)
{
    cJSON *o = cJSON_CreateObject();
    /* every field or none: a field lost to a failed allocation would make a checkpoint that
     * no run can resume from ("other training settings") */
    if (!o || !cJSON_AddNumberToObject(o, "batch_size", c->batch_size) ||
        !cJSON_AddNumberToObject(o, "patch_x", c->patch_size[0]) ||
        !cJSON_AddNumberToObject(o, "patch_y", c->patch_size[1]) ||
        !cJSON_AddNumberToObject(o, "patch_z", c->patch_size[2]) ||
        !cJSON_AddStringToObject(o, "optimizer",
                                 c->optimizer == CS_OPTIMIZER_ADAMW ? "adamw" : "adam") ||
        !cJSON_AddStringToObject(o, "loss", cs_loss_kind_name(c->loss.kind))) {
        cJSON_Delete(o);
        return NULL;
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

cs_status cs_trainer_save_checkpoint(cs_trainer_t t, const char *path)
{
    if (!t) return CS_ERR_INVALID_ARGUMENT;
    cs_context_t ctx = t->ctx;
    if (!path) return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "checkpoint path is NULL");
    int64_t flat_shape;
    int32_t count;
    cs_named_buffer *tb = checkpoint_tensors(t, &flat_shape, &count);
    if (!tb) return CS_ERR_OUT_OF_MEMORY;
    char step[32];
    snprintf(step, sizeof step, "%lld", (long long)t->step);
    char *cfg = config_json(&t->config);
    cs_status st;
    if (!cfg) {
        st = cs_fail(ctx, CS_ERR_OUT_OF_MEMORY, "out of memory writing checkpoint '%s'", path);
    } else {
        cs_st_pair meta[2] = {{CKPT_STEP_KEY, step}, {CKPT_CONFIG_KEY, cfg}};
        /* atomic: a failed save leaves an older checkpoint at path intact */
        st = cs_model_save_with(ctx, t->model, path, tb + count - 2, 2, meta, 2);
    }
    cJSON_free(cfg);
    cs_free(tb);
    return st;
}

/* Fails naming the first architecture field where the file's model differs from ours. */
static cs_status check_same_arch(cs_context_t ctx, const char *path, const cs_unet_config *have,
                                 const cs_unet_config *want)
{
    const char *field = NULL;
    double a = 0, b = 0;
#define CS_SAME(f)                                                                                 \
    if (!field && have->f != want->f) {                                                            \
        field = #f;                                                                                \
        a = (double)have->f;                                                                       \
        b = (double)want->f;                                                                       \
    }
    /* (clang-format would scatter this list of macro calls) */
    /* clang-format off */
    CS_SAME(spatial_dims) CS_SAME(in_channels) CS_SAME(num_classes) CS_SAME(base_filters)
    CS_SAME(levels) CS_SAME(leaky_slope) CS_SAME(norm_epsilon)
    /* clang-format on */
#undef CS_SAME
    if (field)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "'%s' holds a model with %s = %g, the trainer's model has %g", path, field,
                       a, b);
    return CS_OK;
}

cs_status cs_trainer_load_checkpoint(cs_trainer_t t, const char *path)
{
    if (!t) return CS_ERR_INVALID_ARGUMENT;
    cs_context_t ctx = t->ctx;
    if (!path) return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "checkpoint path is NULL");
    cs_st_file *f = NULL;
    cs_status st = cs_st_read(ctx, path, &f);
    if (st != CS_OK) return st;

    cs_model_info info, old_info = t->model->info;
    char *want = config_json(&t->config);
    const char *have = cs_st_metadata(f, CKPT_CONFIG_KEY);
    const char *step_text = cs_st_metadata(f, CKPT_STEP_KEY);
    char *end = NULL;
    long long step = step_text ? strtoll(step_text, &end, 10) : -1;
    cs_named_buffer *tb = NULL;
    float **dst = NULL;
    if (!want) {
        st = cs_fail(ctx, CS_ERR_OUT_OF_MEMORY, "out of memory reading checkpoint '%s'", path);
    } else if (!have || !step_text) {
        st = cs_fail(ctx, CS_ERR_FORMAT, "'%s' is not a ComboSeg trainer checkpoint (no %s)", path,
                     have ? CKPT_STEP_KEY : CKPT_CONFIG_KEY);
    } else if (end == step_text || *end != '\0' || step < 0) {
        st = cs_fail(ctx, CS_ERR_FORMAT, "'%s': bad step '%s'", path, step_text);
    } else if ((st = cs_model_info_read(ctx, f, path, &info)) == CS_OK &&
               (st = check_same_arch(ctx, path, &info.arch, &t->model->info.arch)) == CS_OK) {
        if (strcmp(want, have) != 0) {
            st = cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                         "'%s' was written with other training settings: it holds %s, this "
                         "trainer has %s",
                         path, have, want);
        } else {
            int64_t flat_shape;
            int32_t count;
            tb = checkpoint_tensors(t, &flat_shape, &count);
            dst = tb ? (float **)cs_alloc(ctx, sizeof(float *) * (size_t)count, "pointers") : NULL;
            st = dst ? cs_model_set_info(ctx, t->model, &info) : CS_ERR_OUT_OF_MEMORY;
            if (st == CS_OK) {
                for (int32_t i = 0; i < count; i++) dst[i] = (float *)tb[i].data;
                /* copies nothing unless every tensor matches, so a bad file keeps the state */
                st = cs_st_copy_tensors(ctx, f, path, tb, count, 0, dst);
                if (st == CS_OK) t->step = step;
                else t->model->info = old_info;
            }
        }
    }
    cs_free(dst);
    cs_free(tb);
    cJSON_free(want);
    cs_st_free(f);
    return st;
}
