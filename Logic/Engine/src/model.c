/* model.c - model objects: default metadata, validation of every field, creation and freeing. */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Bounds that keep the layout arithmetic far from overflow whatever a model file says. */
#define CS_MAX_LEVELS 6
#define CS_MAX_FILTERS 4096 /* at the deepest level */

cs_unet_config cs_unet_config_default(void)
{
    cs_unet_config c;
    memset(&c, 0, sizeof c);
    c.spatial_dims = 3;
    c.in_channels = 1;
    c.num_classes = 2;
    c.base_filters = 16;
    c.levels = 4;
    c.leaky_slope = 0.01f;
    c.norm_epsilon = 1e-5f;
    return c;
}

/* Distinct, saturated colours: hues spread by the golden ratio, brightness alternating per
 * turn of the wheel so that near hues of later turns stay apart. */
static void class_colour(int32_t index, uint8_t rgb[3])
{
    double h = fmod(index * 0.6180339887498949, 1.0) * 6.0;
    double v = (index / 3) % 2 ? 0.70 : 0.95;
    double s = (index / 6) % 2 ? 0.55 : 0.85;
    int sector = (int)h;
    double f = h - sector;
    double p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
    double r, g, b;
    switch (sector % 6) {
        case 0:
            r = v;
            g = t;
            b = p;
            break;
        case 1:
            r = q;
            g = v;
            b = p;
            break;
        case 2:
            r = p;
            g = v;
            b = t;
            break;
        case 3:
            r = p;
            g = q;
            b = v;
            break;
        case 4:
            r = t;
            g = p;
            b = v;
            break;
        default:
            r = v;
            g = p;
            b = q;
            break;
    }
    rgb[0] = (uint8_t)lround(r * 255);
    rgb[1] = (uint8_t)lround(g * 255);
    rgb[2] = (uint8_t)lround(b * 255);
}

/* Writes the message (msg may be NULL) and fails; used by the validators below. */
#define FAIL(...)                                                                                  \
    do {                                                                                           \
        if (msg && size) snprintf(msg, size, __VA_ARGS__);                                         \
        return CS_ERR_INVALID_ARGUMENT;                                                            \
    } while (0)

static cs_status validate_arch(const cs_unet_config *a, char *msg, size_t size)
{
    if (a->spatial_dims != 2 && a->spatial_dims != 3)
        FAIL("arch.spatial_dims is %d, must be 2 or 3", (int)a->spatial_dims);
    if (a->in_channels < 1 || a->in_channels > CS_MAX_CHANNELS)
        FAIL("arch.in_channels is %d, must be in [1, %d]", (int)a->in_channels, CS_MAX_CHANNELS);
    if (a->num_classes < 2 || a->num_classes > CS_MAX_CLASSES)
        FAIL("arch.num_classes is %d, must be in [2, %d]", (int)a->num_classes, CS_MAX_CLASSES);
    if (a->levels < 1 || a->levels > CS_MAX_LEVELS)
        FAIL("arch.levels is %d, must be in [1, %d]", (int)a->levels, CS_MAX_LEVELS);
    if (a->base_filters < 1 || (int64_t)a->base_filters << (a->levels - 1) > CS_MAX_FILTERS)
        FAIL("arch.base_filters is %d, must be >= 1 with base_filters * 2^(levels-1) <= %d",
             (int)a->base_filters, CS_MAX_FILTERS);
    if (!isfinite(a->leaky_slope) || a->leaky_slope < 0 || a->leaky_slope >= 1)
        FAIL("arch.leaky_slope is %g, must be in [0, 1)", (double)a->leaky_slope);
    if (!isfinite(a->norm_epsilon) || a->norm_epsilon <= 0 || a->norm_epsilon >= 1)
        FAIL("arch.norm_epsilon is %g, must be in (0, 1)", (double)a->norm_epsilon);
    return CS_OK;
}

cs_status cs_model_info_init(cs_model_info *info, const cs_unet_config *arch)
{
    if (!info) return CS_ERR_INVALID_ARGUMENT;
    cs_unet_config a = arch ? *arch : cs_unet_config_default();
    if (validate_arch(&a, NULL, 0) != CS_OK) return CS_ERR_INVALID_ARGUMENT;

    memset(info, 0, sizeof *info);
    info->format_version = CS_MODEL_FORMAT_VERSION;
    info->arch = a;
    for (int32_t c = 0; c < a.in_channels; c++) {
        cs_channel_info *ch = &info->channels[c];
        snprintf(ch->name, sizeof ch->name, "channel_%d", (int)c);
        ch->modality = CS_MODALITY_OTHER;
        ch->norm = CS_NORM_ZSCORE;
        ch->mean = 0.0f;
        ch->std = 1.0f;
    }
    snprintf(info->classes[0].name, CS_NAME_MAX, "background");
    for (int32_t k = 1; k < a.num_classes; k++) {
        info->classes[k].value = k;
        snprintf(info->classes[k].name, CS_NAME_MAX, "class_%d", (int)k);
        class_colour(k - 1, info->classes[k].rgb);
    }
    for (int i = 0; i < 3; i++) info->spacing[i] = 1.0;
    memcpy(info->orientation, "RAS", 4);
    info->patch_size[0] = info->patch_size[1] = 64;
    info->patch_size[2] = a.spatial_dims == 3 ? 64 : 1;
    info->loss = cs_loss_options_default();
    info->loss.class_weights = NULL;
    snprintf(info->name, sizeof info->name, "unnamed");
    return CS_OK;
}

static int terminated(const char *s, size_t size) { return memchr(s, '\0', size) != NULL; }

static int finite_in(float v, float lo, float hi) { return isfinite(v) && v >= lo && v <= hi; }

cs_status cs_model_info_validate(const cs_model_info *info, char *msg, size_t size)
{
    if (msg && size) msg[0] = '\0';
    if (!info) FAIL("info is NULL");
    if (info->format_version < 1 || info->format_version > CS_MODEL_FORMAT_VERSION)
        FAIL("format_version is %d, this build reads 1 to %d", (int)info->format_version,
             CS_MODEL_FORMAT_VERSION);
    if (validate_arch(&info->arch, msg, size) != CS_OK) return CS_ERR_INVALID_ARGUMENT;
    const cs_unet_config *a = &info->arch;

    for (int32_t c = 0; c < a->in_channels; c++) {
        const cs_channel_info *ch = &info->channels[c];
        if (!terminated(ch->name, sizeof ch->name))
            FAIL("channels[%d].name is not NUL-terminated", (int)c);
        if (!ch->name[0]) FAIL("channels[%d].name is empty", (int)c);
        if ((int)ch->modality < CS_MODALITY_OTHER || (int)ch->modality > CS_MODALITY_US)
            FAIL("channels[%d].modality is %d, not a cs_modality", (int)c, (int)ch->modality);
        if ((int)ch->norm < CS_NORM_NONE || (int)ch->norm > CS_NORM_UPPER_PEAK)
            FAIL("channels[%d].norm is %d, not a cs_norm_kind", (int)c, (int)ch->norm);
        if (!isfinite(ch->clip_low) || !isfinite(ch->clip_high))
            FAIL("channels[%d].clip_low/clip_high are not finite", (int)c);
        if (!isfinite(ch->mean)) FAIL("channels[%d].mean is not finite", (int)c);
        if (!isfinite(ch->std)) FAIL("channels[%d].std is not finite", (int)c);
        if (ch->norm == CS_NORM_CLIP_SCALE) {
            if (!(ch->clip_low < ch->clip_high))
                FAIL("channels[%d].clip_low (%g) must be below clip_high (%g)", (int)c,
                     (double)ch->clip_low, (double)ch->clip_high);
            if (!(ch->std > 0))
                FAIL("channels[%d].std is %g, must be > 0", (int)c, (double)ch->std);
        }
    }

    for (int32_t k = 0; k < a->num_classes; k++) {
        const cs_class_info *cl = &info->classes[k];
        if (!terminated(cl->name, sizeof cl->name))
            FAIL("classes[%d].name is not NUL-terminated", (int)k);
        if (!cl->name[0]) FAIL("classes[%d].name is empty", (int)k);
        if (cl->value < 0) FAIL("classes[%d].value is %d, must be >= 0", (int)k, (int)cl->value);
        for (int32_t j = 0; j < k; j++) {
            if (info->classes[j].value == cl->value)
                FAIL("classes[%d].value %d repeats classes[%d].value", (int)k, (int)cl->value,
                     (int)j);
            if (strcmp(info->classes[j].name, cl->name) == 0)
                FAIL("classes[%d].name '%s' repeats classes[%d].name", (int)k, cl->name, (int)j);
        }
    }

    for (int i = 0; i < 3; i++)
        if (!isfinite(info->spacing[i]) || !(info->spacing[i] > 0))
            FAIL("spacing[%d] is %g, must be finite and > 0", i, info->spacing[i]);

    if (!terminated(info->orientation, sizeof info->orientation) || strlen(info->orientation) != 3)
        FAIL("orientation must be 3 letters such as \"RAS\" or \"LPS\"");
    {
        static const char *const axes[3] = {"RL", "AP", "SI"};
        int seen[3] = {0, 0, 0};
        for (int i = 0; i < 3; i++) {
            int which = -1;
            for (int j = 0; j < 3; j++)
                if (info->orientation[i] == axes[j][0] || info->orientation[i] == axes[j][1])
                    which = j;
            if (which < 0 || seen[which]++)
                FAIL("orientation '%s' must hold one each of R/L, A/P and S/I", info->orientation);
        }
    }

    int32_t multiple = 1 << (a->levels - 1);
    for (int i = 0; i < 3; i++) {
        int32_t p = info->patch_size[i];
        if (i == 2 && a->spatial_dims == 2) {
            if (p != 1) FAIL("patch_size[2] is %d, must be 1 for a 2D model", (int)p);
            continue;
        }
        if (p < 1 || p % multiple != 0)
            FAIL("patch_size[%d] is %d, must be a positive multiple of %d (2^(levels-1))", i,
                 (int)p, (int)multiple);
    }

    const cs_loss_options *l = &info->loss;
    if ((int)l->kind < CS_LOSS_COMBO || (int)l->kind > CS_LOSS_COMBO_TVERSKY)
        FAIL("loss.kind is %d, not a cs_loss_kind", (int)l->kind);
    if (!finite_in(l->alpha, 0, 1)) FAIL("loss.alpha is %g, must be in [0, 1]", (double)l->alpha);
    if (!finite_in(l->beta, 0, 1)) FAIL("loss.beta is %g, must be in [0, 1]", (double)l->beta);
    if (!finite_in(l->gamma, 0, 100))
        FAIL("loss.gamma is %g, must be in [0, 100]", (double)l->gamma);
    if (!finite_in(l->tversky_alpha, 0, 1) || !finite_in(l->tversky_beta, 0, 1) ||
        !(l->tversky_alpha + l->tversky_beta > 0))
        FAIL("loss.tversky_alpha/tversky_beta (%g, %g) must be in [0, 1], not both 0",
             (double)l->tversky_alpha, (double)l->tversky_beta);
    if (l->dice_include_background != 0 && l->dice_include_background != 1)
        FAIL("loss.dice_include_background is %d, must be 0 or 1", (int)l->dice_include_background);
    if (l->batch_dice != 0 && l->batch_dice != 1)
        FAIL("loss.batch_dice is %d, must be 0 or 1", (int)l->batch_dice);

    if (!terminated(info->name, sizeof info->name)) FAIL("name is not NUL-terminated");
    if (!terminated(info->description, sizeof info->description))
        FAIL("description is not NUL-terminated");
    if (!terminated(info->training_data, sizeof info->training_data))
        FAIL("training_data is not NUL-terminated");
    if (!terminated(info->licence, sizeof info->licence)) FAIL("licence is not NUL-terminated");
    const cs_postprocessing *pp = &info->postprocessing;
    if (pp->largest_component != 0 && pp->largest_component != 1)
        FAIL("postprocessing.largest_component is %d, must be 0 or 1", (int)pp->largest_component);
    if (pp->fill_holes != 0 && pp->fill_holes != 1)
        FAIL("postprocessing.fill_holes is %d, must be 0 or 1", (int)pp->fill_holes);
    const int32_t all_axes = info->arch.spatial_dims == 2 ? 3 : 7;
    if (info->test_time_mirror_axes < 0 || info->test_time_mirror_axes > all_axes)
        FAIL("test_time_mirror_axes is %d, must be a mask of the axes in [0, %d]",
             (int)info->test_time_mirror_axes, (int)all_axes);
    return CS_OK;
}
#undef FAIL

static void copy_text(char *dst, const char *src, size_t size)
{
    memset(dst, 0, size);
    memcpy(dst, src, strlen(src)); /* validated: shorter than size */
}

/* A canonical copy of a validated info: unused entries, string tails and padding zeroed and
 * class_weights dropped, so that equal metadata is equal byte for byte. */
static void canonical_info(cs_model_info *dst, const cs_model_info *src)
{
    memset(dst, 0, sizeof *dst);
    dst->format_version = CS_MODEL_FORMAT_VERSION;
    dst->arch = src->arch;
    for (int32_t c = 0; c < src->arch.in_channels; c++) {
        const cs_channel_info *s = &src->channels[c];
        cs_channel_info *d = &dst->channels[c];
        copy_text(d->name, s->name, sizeof d->name);
        d->modality = s->modality;
        d->norm = s->norm;
        d->clip_low = s->clip_low;
        d->clip_high = s->clip_high;
        d->mean = s->mean;
        d->std = s->std;
    }
    for (int32_t k = 0; k < src->arch.num_classes; k++) {
        dst->classes[k].value = src->classes[k].value;
        copy_text(dst->classes[k].name, src->classes[k].name, CS_NAME_MAX);
        memcpy(dst->classes[k].rgb, src->classes[k].rgb, 3);
    }
    memcpy(dst->spacing, src->spacing, sizeof dst->spacing);
    copy_text(dst->orientation, src->orientation, sizeof dst->orientation);
    memcpy(dst->patch_size, src->patch_size, sizeof dst->patch_size);
    dst->loss = src->loss;
    dst->loss.class_weights = NULL;
    copy_text(dst->name, src->name, sizeof dst->name);
    copy_text(dst->description, src->description, sizeof dst->description);
    copy_text(dst->training_data, src->training_data, sizeof dst->training_data);
    copy_text(dst->licence, src->licence, sizeof dst->licence);
    dst->postprocessing = src->postprocessing;
    dst->test_time_mirror_axes = src->test_time_mirror_axes;
}

cs_status cs_model_alloc(cs_context_t ctx, const cs_model_info *info, struct cs_model **out)
{
    char msg[256];
    if (!out) return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "model output pointer is NULL");
    *out = NULL;
    if (cs_model_info_validate(info, msg, sizeof msg) != CS_OK)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "invalid model info: %s", msg);
    struct cs_model *m = (struct cs_model *)cs_alloc(ctx, sizeof *m, "model");
    if (!m) return CS_ERR_OUT_OF_MEMORY;
    canonical_info(&m->info, info);
    cs_status st = cs_net_layout(ctx, m);
    if (st != CS_OK) {
        cs_free(m);
        return st;
    }
    if (m->num_params <= 0 || (uint64_t)m->num_params > SIZE_MAX / sizeof(float)) {
        cs_free(m);
        return cs_fail(ctx, CS_ERR_OUT_OF_MEMORY, "model of %lld parameters is too large",
                       (long long)m->num_params);
    }
    m->params = (float *)cs_alloc(ctx, (size_t)m->num_params * sizeof(float), "model weights");
    if (!m->params) {
        cs_free(m);
        return CS_ERR_OUT_OF_MEMORY;
    }
    *out = m;
    return CS_OK;
}

cs_status cs_model_create(cs_context_t ctx, const cs_model_info *info, uint64_t seed,
                          cs_model_t *out)
{
    cs_status st = cs_model_alloc(ctx, info, out);
    if (st != CS_OK) return st;
    cs_net_init_weights(*out, seed);
    return CS_OK;
}

void cs_model_free(cs_model_t model)
{
    if (!model) return;
    cs_free(model->params);
    cs_free(model);
}

const cs_model_info *cs_model_get_info(const cs_model_t model)
{
    return model ? &model->info : NULL;
}

cs_status cs_model_set_info(cs_context_t ctx, cs_model_t model, const cs_model_info *info)
{
    char msg[256];
    if (!model) return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "model is NULL");
    if (cs_model_info_validate(info, msg, sizeof msg) != CS_OK)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "invalid model info: %s", msg);
    const cs_unet_config *a = &model->info.arch, *b = &info->arch;
    if (a->spatial_dims != b->spatial_dims || a->in_channels != b->in_channels ||
        a->num_classes != b->num_classes || a->base_filters != b->base_filters ||
        a->levels != b->levels || a->leaky_slope != b->leaky_slope ||
        a->norm_epsilon != b->norm_epsilon)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "new model info changes the architecture (arch fields must stay the same)");
    canonical_info(&model->info, info);
    return CS_OK;
}

int64_t cs_model_num_parameters(const cs_model_t model) { return model ? model->num_params : 0; }
