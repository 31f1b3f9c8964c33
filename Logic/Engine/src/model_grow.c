/* model_grow.c - a model with more classes than another: fine-tuning a model to structures it
 * never learnt, while keeping the ones it knows. */
#include "internal.h"

#include <string.h>

/* The new classes start as a copy of the background row, this far below it in logits: a
 * structure the base model never saw was background to it, and the copy keeps every old
 * prediction (the new logit is always below background) with exp(-4), under 2%, of
 * background's probability. Adam moves each weight by about the learning rate per step, so a
 * wider margin would take the new rows many more steps to close. */
#define CS_GROW_LOGIT_MARGIN 4.0f

cs_status cs_model_add_classes(cs_context_t ctx, const cs_model_t model,
                               const cs_class_info *new_classes, int32_t count, cs_model_t *out)
{
    if (!out) return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "cs_model_add_classes: out is NULL");
    *out = NULL;
    if (!model || (count > 0 && !new_classes) || count < 0)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "cs_model_add_classes: model or new classes missing");
    const int32_t k_old = model->info.arch.num_classes;
    const int32_t k_new = k_old + count;
    if (k_new > CS_MAX_CLASSES)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                       "cs_model_add_classes: %d + %d classes exceed the maximum of %d", k_old,
                       count, CS_MAX_CLASSES);

    cs_model_info info = model->info;
    info.arch.num_classes = k_new;
    for (int32_t i = 0; i < count; i++) info.classes[k_old + i] = new_classes[i];
    char message[256];
    if (cs_model_info_validate(&info, message, sizeof message) != CS_OK)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "cs_model_add_classes: %s", message);

    cs_model_t grown = NULL;
    cs_status st = cs_model_create(ctx, &info, 0, &grown);
    if (st != CS_OK) return st;

    for (int32_t t = 0; t < grown->num_tensors; t++) {
        const cs_param_tensor *dst = &grown->tensors[t];
        const cs_param_tensor *src = NULL;
        for (int32_t s = 0; s < model->num_tensors; s++)
            if (strcmp(model->tensors[s].name, dst->name) == 0) src = &model->tensors[s];
        if (!src || src->ndim != dst->ndim) {
            cs_model_free(grown);
            return cs_fail(ctx, CS_ERR_UNSUPPORTED,
                           "cs_model_add_classes: tensor %s has no counterpart in the base model",
                           dst->name);
        }
        float *d = grown->params + dst->offset;
        const float *s = model->params + src->offset;
        if (src->count == dst->count &&
            memcmp(src->shape, dst->shape, sizeof(int64_t) * (size_t)dst->ndim) == 0) {
            memcpy(d, s, sizeof(float) * (size_t)dst->count);
            continue;
        }
        /* Only the head depends on K: (K, ...) with the other dimensions unchanged. */
        int same_rest = src->shape[0] == k_old && dst->shape[0] == k_new;
        for (int32_t i = 1; i < dst->ndim; i++) same_rest &= src->shape[i] == dst->shape[i];
        if (!same_rest) {
            cs_model_free(grown);
            return cs_fail(ctx, CS_ERR_UNSUPPORTED,
                           "cs_model_add_classes: tensor %s changes beyond its class dimension",
                           dst->name);
        }
        const int64_t row = dst->count / k_new;
        memcpy(d, s, sizeof(float) * (size_t)(row * k_old));
        for (int32_t k = k_old; k < k_new; k++) {
            memcpy(d + k * row, s, sizeof(float) * (size_t)row); /* background's row */
            if (dst->ndim == 1) d[k] -= CS_GROW_LOGIT_MARGIN;    /* the bias */
        }
    }
    *out = grown;
    return CS_OK;
}
