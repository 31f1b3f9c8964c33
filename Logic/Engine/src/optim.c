/* optim.c - training configuration defaults, learning-rate and alpha schedules, and the
 * optimiser's array operations (optim.h). */
#include "optim.h"

#include "comboseg/parameters.h"

#include <math.h>
#include <string.h>

#define CS_PI 3.14159265358979323846
#define CS_OPTIM_BLOCK 8192         /* elements per partial sum of a norm */
#define CS_OPTIM_PARALLEL_MIN 65536 /* below this, one thread */

cs_train_config cs_train_config_default(void)
{
    cs_train_config c;
    memset(&c, 0, sizeof c);
    c.batch_size = 2;
    c.patch_size[0] = c.patch_size[1] = c.patch_size[2] = 0; /* the model's */
    c.optimizer = CS_OPTIMIZER_ADAM;
    c.learning_rate = 1e-3f;
    c.adam_beta1 = 0.9f;
    c.adam_beta2 = 0.999f;
    c.adam_epsilon = 1e-8f;
    c.weight_decay = 0.0f;
    c.schedule = CS_LR_POLY;
    c.warmup_steps = 0;
    c.total_steps = 1000;
    c.poly_power = 0.9f;
    c.min_learning_rate = 0.0f;
    c.grad_clip_norm = 12.0f;
    c.loss = cs_loss_options_default();
    c.curriculum = 0;
    c.curriculum_alpha_start = 0.1f;
    c.curriculum_steps = 0;
    c.frozen_encoder_levels = 0;
    c.seed = 42;
    return c;
}

cs_training_recipe cs_training_recipe_automatic(int fine_tuning)
{
    const cs_train_config config = cs_train_config_default();
    const cs_sampling_options sampling = cs_sampling_options_default();
    cs_training_recipe r;
    r.learning_rate = fine_tuning ? 2e-4f : config.learning_rate;
    r.epochs = fine_tuning ? 3
                           : (int32_t)(config.total_steps / CS_TRAINING_STEPS_PER_EPOCH_DEFAULT);
    r.foreground_fraction = fine_tuning ? 0.6f : sampling.foreground_fraction;
    r.rotation = fine_tuning ? 10.0f : sampling.rotation[0];
    r.flip_axes = fine_tuning ? 1 : sampling.flip_axes;
    r.frozen_encoder_levels = fine_tuning ? 2 : config.frozen_encoder_levels;
    return r;
}

/* Warm-up: lr * step / warmup_steps for step < warmup_steps (so step 0 trains with 0). Then
 * the schedule runs over the remaining total_steps - warmup_steps steps, with progress
 * clamped to 1 beyond total_steps (poly ends at 0, cosine at min_learning_rate). */
float cs_train_learning_rate_at(const cs_train_config *config, int64_t step)
{
    if (!config) return 0.0f;
    const double lr = config->learning_rate;
    if (step < 0) step = 0;
    if (config->warmup_steps > 0 && step < config->warmup_steps)
        return (float)(lr * (double)step / (double)config->warmup_steps);
    const int64_t warm = config->warmup_steps > 0 ? config->warmup_steps : 0;
    const int64_t span = config->total_steps - warm;
    double progress = span > 0 ? (double)(step - warm) / (double)span : 1.0;
    if (progress > 1.0) progress = 1.0;
    switch (config->schedule) {
        case CS_LR_POLY: return (float)(lr * pow(1.0 - progress, config->poly_power));
        case CS_LR_COSINE: {
            const double lo = config->min_learning_rate;
            return (float)(lo + (lr - lo) * 0.5 * (1.0 + cos(CS_PI * progress)));
        }
        case CS_LR_CONSTANT:
        default: return (float)lr;
    }
}

float cs_train_alpha_at(const cs_train_config *config, int64_t step)
{
    if (!config) return 0.0f;
    const double end = config->loss.alpha;
    if (!config->curriculum) return (float)end;
    const int64_t span = config->curriculum_steps > 0 ? config->curriculum_steps
                                                      : config->total_steps / 2;
    if (span <= 0) return (float)end;
    if (step < 0) step = 0;
    double f = (double)step / (double)span;
    if (f > 1.0) f = 1.0;
    const double start = config->curriculum_alpha_start;
    return (float)(start + (end - start) * f);
}

void cs_adam_update(float *params, float *m, float *v, const float *grads, int64_t n, int64_t t,
                    float lr, const cs_train_config *config, int threads)
{
    if (t < 1) t = 1;
    const float b1 = config->adam_beta1, b2 = config->adam_beta2, eps = config->adam_epsilon;
    const float wd = config->weight_decay;
    const int adamw = config->optimizer == CS_OPTIMIZER_ADAMW;
    /* bias corrections in double, as PyTorch computes them in Python */
    const float step_size = (float)((double)lr / (1.0 - pow((double)b1, (double)t)));
    const float bc2_sqrt = (float)sqrt(1.0 - pow((double)b2, (double)t));
    const float decay = 1.0f - lr * wd;
    (void)threads;
#pragma omp parallel for schedule(static)                                                          \
    num_threads(threads > 0 ? threads : 1) if (n >= CS_OPTIM_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        float g = grads[i];
        if (adamw) {
            params[i] *= decay;
        } else if (wd != 0.0f) {
            g += wd * params[i];
        }
        m[i] = b1 * m[i] + (1.0f - b1) * g;
        v[i] = b2 * v[i] + (1.0f - b2) * g * g;
        const float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        params[i] -= step_size * m[i] / denom;
    }
}

double cs_grad_norm(const float *x, int64_t n, int threads)
{
    if (n <= 0) return 0.0;
    const int64_t blocks = (n + CS_OPTIM_BLOCK - 1) / CS_OPTIM_BLOCK;
    double sum = 0.0;
    /* blocks of fixed size, summed in order in ordered chunks: thread-count independent */
    enum {
        STRIPE = 256
    };
    double partial[STRIPE];
    (void)threads;
    for (int64_t s0 = 0; s0 < blocks; s0 += STRIPE) {
        const int64_t s1 = s0 + STRIPE < blocks ? s0 + STRIPE : blocks;
#pragma omp parallel for schedule(static)                                                          \
    num_threads(threads > 0 ? threads : 1) if (n >= CS_OPTIM_PARALLEL_MIN)
        for (int64_t bl = s0; bl < s1; bl++) {
            const int64_t i0 = bl * CS_OPTIM_BLOCK;
            const int64_t i1 = i0 + CS_OPTIM_BLOCK < n ? i0 + CS_OPTIM_BLOCK : n;
            double acc = 0.0;
            for (int64_t i = i0; i < i1; i++) acc += (double)x[i] * (double)x[i];
            partial[bl - s0] = acc;
        }
        for (int64_t bl = s0; bl < s1; bl++) sum += partial[bl - s0];
    }
    return sqrt(sum);
}

void cs_grad_scale(float *x, int64_t n, float scale, int threads)
{
    (void)threads;
#pragma omp parallel for schedule(static)                                                          \
    num_threads(threads > 0 ? threads : 1) if (n >= CS_OPTIM_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) x[i] *= scale;
}

double cs_grad_clip_norm(float *grads, int64_t n, float max_norm, int threads)
{
    const double norm = cs_grad_norm(grads, n, threads);
    if (max_norm > 0.0f) {
        const double coef = (double)max_norm / (norm + 1e-6);
        if (coef < 1.0) cs_grad_scale(grads, n, (float)coef, threads);
    }
    return norm;
}

int cs_all_finite(const float *x, int64_t n, int threads)
{
    int bad = 0;
    (void)threads;
#pragma omp parallel for schedule(static) reduction(|                                              \
                                                    : bad)                                         \
    num_threads(threads > 0 ? threads : 1) if (n >= CS_OPTIM_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) bad |= !isfinite(x[i]);
    return !bad;
}
