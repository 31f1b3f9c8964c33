/* optim.h - the optimiser's array operations (Adam, AdamW, gradient norm and clipping), shared
 * by the trainer. All are OpenMP-parallel over `threads` and deterministic: reductions add
 * fixed-size blocks in a fixed order, so results do not depend on the thread count. */
#ifndef COMBOSEG_OPTIM_H
#define COMBOSEG_OPTIM_H

#include "internal.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One Adam or AdamW step (config->optimizer) over a flat array of n parameters, as PyTorch's
 * torch.optim.Adam / AdamW (no amsgrad):
 *   Adam:  g = grad + weight_decay * param           (L2 through the gradient)
 *   AdamW: param *= 1 - lr * weight_decay            (decoupled decay), g = grad
 *   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
 *   param -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + epsilon)
 * t is the 1-based step count (bias correction); m and v start at zero. grads are unchanged. */
void cs_adam_update(float *params, float *m, float *v, const float *grads, int64_t n, int64_t t,
                    float lr, const cs_train_config *config, int threads);

/* The L2 norm of x (n), accumulated in double. */
double cs_grad_norm(const float *x, int64_t n, int threads);

/* x (n) *= scale */
void cs_grad_scale(float *x, int64_t n, float scale, int threads);

/* Clips the global norm of grads (n) to max_norm as torch.nn.utils.clip_grad_norm_ does
 * (scale by max_norm / (norm + 1e-6) when that is below 1); max_norm <= 0 leaves them alone.
 * Returns the norm before clipping. */
double cs_grad_clip_norm(float *grads, int64_t n, float max_norm, int threads);

/* 1 if every element of x (n) is finite, else 0. */
int cs_all_finite(const float *x, int64_t n, int threads);

#ifdef __cplusplus
}
#endif

#endif /* COMBOSEG_OPTIM_H */
