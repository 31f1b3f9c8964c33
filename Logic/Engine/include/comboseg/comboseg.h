/*
 * comboseg.h - the public C API of the ComboSeg engine.
 *
 * A C11 library that trains and runs a multi-class segmentation U-Net on the CPU, with the
 * Combo loss (Taghanaki et al., CMIG 2019). It knows nothing of ITK or VTK.
 *
 * Worked example: segment a single-channel volume with a model file.
 *
 *     cs_context_t ctx;
 *     cs_model_t model;
 *     if (cs_context_init(&ctx) != CS_OK) return 1;
 *     cs_context_set_threads(ctx, 2);
 *     if (cs_model_load(ctx, "brain.safetensors", &model) != CS_OK) {
 *         fprintf(stderr, "%s\n", cs_context_last_error(ctx));
 *         cs_context_free(ctx);
 *         return 1;
 *     }
 *     int64_t size[3] = {nx, ny, nz};                 // x fastest in memory
 *     cs_infer_options opt = cs_infer_options_default();
 *     int32_t *labels = malloc(sizeof(int32_t) * nx * ny * nz);
 *     cs_status st = cs_predict_volume(ctx, model, image, size, &opt, NULL, labels);
 *     // labels hold class indices 0..K-1; cs_model_get_info(model)->classes[i] names them.
 *     cs_model_free(model);
 *     cs_context_free(ctx);
 *
 * Conventions
 * - Every fallible call returns a cs_status; CS_OK is 0. Calls that take a context leave a
 *   message naming the problem in cs_context_last_error(). The library never prints, exits or
 *   aborts.
 * - Sizes are given x first: size[3] = {nx, ny, nz}; in memory x varies fastest. 2D data has
 *   nz = 1. Images are (B, C, nz, ny, nx), label maps (B, nz, ny, nx), logits and
 *   probabilities (B, K, nz, ny, nx), all contiguous float32 / int32.
 * - Enumerations are only ever appended to; their numeric values are stable.
 * - A model (weights plus metadata) is read-only during inference and may be shared by several
 *   threads calling cs_predict_volume / cs_model_forward at once, each with its own context.
 */
#ifndef COMBOSEG_COMBOSEG_H
#define COMBOSEG_COMBOSEG_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32) && defined(COMBOSEG_SHARED)
#ifdef COMBOSEG_BUILDING
#define CS_API __declspec(dllexport)
#else
#define CS_API __declspec(dllimport)
#endif
#elif defined(__GNUC__)
#define CS_API __attribute__((visibility("default")))
#else
#define CS_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define CS_VERSION_MAJOR 0
#define CS_VERSION_MINOR 1
#define CS_VERSION_PATCH 0

#define CS_MODEL_FORMAT_VERSION 1
#define CS_MAX_CHANNELS 8
#define CS_MAX_CLASSES 128
#define CS_NAME_MAX 64  /* bytes, including the terminating NUL */
#define CS_TEXT_MAX 512 /* bytes, including the terminating NUL */

/* ------------------------------------------------------------------------------------------ */
/* Status and context                                                                          */

typedef enum cs_status {
    CS_OK = 0,
    CS_ERR_INVALID_ARGUMENT = 1, /* a caller's argument is out of range or inconsistent */
    CS_ERR_OUT_OF_MEMORY = 2,    /* an allocation failed */
    CS_ERR_IO = 3,               /* a file could not be opened, read or written */
    CS_ERR_FORMAT = 4,           /* a file is truncated, corrupted or incompatible */
    CS_ERR_NUMERIC = 5,          /* a non-finite loss or gradient; weights were kept */
    CS_ERR_CANCELLED = 6,        /* a progress callback asked to stop */
    CS_ERR_UNSUPPORTED = 7,      /* valid request this build or model cannot serve */
    CS_ERR_RESOURCE_LIMIT = 8    /* the estimated memory exceeds the context's limit */
} cs_status;

/* A static English name of a status, e.g. "invalid argument". */
CS_API const char *cs_status_string(cs_status status);

/* The context: thread count, memory limit and the last error message. One per thread of the
 * caller; contexts share nothing. */
typedef struct cs_context *cs_context_t;

CS_API cs_status cs_context_init(cs_context_t *out);
CS_API void cs_context_free(cs_context_t ctx);
/* OpenMP threads used by calls on this context; 0 (the default) means the OpenMP default. */
CS_API void cs_context_set_threads(cs_context_t ctx, int32_t threads);
CS_API int32_t cs_context_get_threads(const cs_context_t ctx);
/* Refuse work whose estimated memory exceeds this many bytes (0: no limit, the default). */
CS_API void cs_context_set_memory_limit(cs_context_t ctx, uint64_t bytes);
CS_API uint64_t cs_context_get_memory_limit(const cs_context_t ctx);
/* Arithmetic of the convolutions of inference (cs_model_forward, cs_predict_volume; training
 * always computes in float32). BFLOAT16 rounds each convolution's inputs and weights to bfloat16
 * (8 significant bits) and sums in float32: about twice as fast where the CPU has AVX512_BF16
 * (cs_bfloat16_available), float32 elsewhere. */
typedef enum cs_precision {
    CS_PRECISION_FLOAT32 = 0,
    CS_PRECISION_BFLOAT16 = 1
} cs_precision;
CS_API void cs_context_set_inference_precision(cs_context_t ctx, cs_precision precision);
CS_API cs_precision cs_context_get_inference_precision(const cs_context_t ctx);
/* 1 when this CPU runs the bfloat16 convolutions natively, 0 when they would be float32. */
CS_API int cs_bfloat16_available(void);
/* The message of the last failed call on this context ("" if none). Valid until the next call. */
CS_API const char *cs_context_last_error(const cs_context_t ctx);
CS_API void cs_context_clear_error(cs_context_t ctx);
/* cs_model_forward and cs_predict_volume keep their network activations on the context between
 * calls (one block, as large as the largest window or batch since the last release), so that
 * repeated calls do not map and zero fresh memory each time. This gives that block back. */
CS_API void cs_context_release_memory(cs_context_t ctx);

/* ------------------------------------------------------------------------------------------ */
/* Random numbers: our own seeded generator (xoshiro256**), identical on every platform.       */

typedef struct cs_rng {
    uint64_t s[4];
} cs_rng;

CS_API void cs_rng_seed(cs_rng *rng, uint64_t seed);
CS_API uint64_t cs_rng_next(cs_rng *rng);
CS_API float cs_rng_uniform(cs_rng *rng);                /* [0, 1) */
CS_API float cs_rng_normal(cs_rng *rng);                 /* mean 0, standard deviation 1 */
CS_API int64_t cs_rng_below(cs_rng *rng, int64_t bound); /* [0, bound), bound > 0 */

/* ------------------------------------------------------------------------------------------ */
/* Losses                                                                                      */

typedef enum cs_loss_kind {
    CS_LOSS_COMBO = 0,                  /* alpha * one-vs-rest weighted CE over the foreground
                                            classes - (1 - alpha) * Dice (docs/design.md) */
    CS_LOSS_CROSS_ENTROPY = 1,          /* mean over voxels of -ln p_true */
    CS_LOSS_WEIGHTED_CROSS_ENTROPY = 2, /* sum_i w_yi (-ln p_i,yi) / sum_i w_yi */
    CS_LOSS_DICE = 3,                   /* 1 - mean soft Dice */
    CS_LOSS_FOCAL = 4,                  /* mean of -(1 - p_true)^gamma ln p_true */
    CS_LOSS_TVERSKY = 5,                /* 1 - mean Tversky index (tversky_alpha FP, _beta FN) */
    CS_LOSS_FOCAL_TVERSKY = 6,          /* mean of (1 - Tversky index)^gamma */
    CS_LOSS_COMBO_ALL_CLASSES = 7,      /* the paper's literal form: its weighted CE sums over all
                                            K classes, background included, so that beta mostly
                                            weighs background voxels (docs/design.md) */
    CS_LOSS_COMBO_LABEL_WEIGHTED = 8,   /* alpha * mean of w_y (-ln p_y), w = beta for voxels
                                            labelled foreground, 1 - beta for background ones,
                                            - (1 - alpha) * Dice (docs/design.md) */
    CS_LOSS_COMBO_TVERSKY = 9           /* as _LABEL_WEIGHTED divided by K, with beta also weighing
                                            misses against false alarms in the overlap term:
                                            (2 tp + 1) / (2 tp + 2 (1 - beta) fp + 2 beta fn + 1),
                                            Dice at 0.5 */
} cs_loss_kind;

typedef struct cs_loss_options {
    cs_loss_kind kind;
    float alpha;         /* Combo: weight of cross-entropy against Dice (0.5) */
    float beta;          /* Combo: weight of the missed-voxel terms (t ln p) against the
                             false-alarm terms ((1 - t) ln(1 - p)): above 0.5 fewer misses and more
                             false alarms, below 0.5 the reverse (0.5) */
    float gamma;         /* focal (2.0) and focal Tversky (0.75) exponent; 0 picks that default */
    float tversky_alpha; /* Tversky weight of false positives (0.3) */
    float tversky_beta;  /* Tversky weight of false negatives (0.7) */
    int32_t dice_include_background; /* Dice-type terms average classes 1..K-1 (0) or 0..K-1 (1) */
    int32_t batch_dice; /* 0: Dice per batch item, then averaged; 1: sums over the whole batch */
    const float *class_weights; /* (K) for weighted CE; NULL: inverse-frequency of the batch */
    /* Partial labels (K): 1 where the label maps mark a class, 0 where it was not drawn, so
     * that its voxels carry label 0. An undrawn class's probability is merged into the
     * background's (a voxel labelled 0 may belong to it) and its Dice term is left out, so the
     * loss teaches nothing about it. Entry 0 must be 1. NULL: every class is labelled.
     * every Combo form, Dice, Tversky and focal Tversky only. */
    const uint8_t *labelled_classes;
} cs_loss_options;

CS_API cs_loss_options cs_loss_options_default(void);    /* combo_tversky, alpha = beta = 0.5 */
CS_API const char *cs_loss_kind_name(cs_loss_kind kind); /* "combo", "cross_entropy", ... */
CS_API cs_status cs_loss_kind_from_name(const char *name, cs_loss_kind *kind);

/* The Combo loss (CS_LOSS_COMBO; docs/design.md, "The losses") for one item: logits (K, N)
 * channel-major, labels (N) in [0, K). Writes the loss and, when grad is not NULL, dL/dlogits
 * (K, N). */
CS_API cs_status cs_combo_loss(const float *logits, const int32_t *labels, int64_t n, int32_t k,
                               float alpha, float beta, float *loss, float *grad);

/* Any loss over a batch: logits (B, K, N), labels (B, N). grad (B, K, N) may be NULL.
 * The loss is the mean over batch items (or the batch-wide value when batch_dice is set). */
CS_API cs_status cs_loss(const cs_loss_options *options, const float *logits, const int32_t *labels,
                         int64_t batch, int64_t n, int32_t k, float *loss, float *grad);

/* Hard Dice per class from label maps: dice (K), NaN where a class is in neither map. */
CS_API void cs_dice_per_class(const int32_t *predicted, const int32_t *truth, int64_t n, int32_t k,
                              float *dice);

/* ------------------------------------------------------------------------------------------ */
/* Models: network, weights and metadata                                                      */

typedef struct cs_unet_config {
    int32_t spatial_dims; /* 2 or 3 */
    int32_t in_channels;
    int32_t num_classes;  /* K, background included */
    int32_t base_filters; /* filters of the first level, doubling per level (16) */
    int32_t levels;       /* resolution levels, the deepest included (4) */
    float leaky_slope;    /* LeakyReLU negative slope (0.01) */
    float norm_epsilon;   /* instance-norm epsilon (1e-5) */
} cs_unet_config;

typedef enum cs_modality {
    CS_MODALITY_OTHER = 0,
    CS_MODALITY_CT = 1,
    CS_MODALITY_MR = 2,
    CS_MODALITY_PET = 3,
    CS_MODALITY_US = 4
} cs_modality;

typedef enum cs_norm_kind {
    CS_NORM_NONE = 0,           /* input is already normalised: passed through */
    CS_NORM_CLIP_SCALE = 1,     /* clip to [clip_low, clip_high], then (x - mean) / std (CT) */
    CS_NORM_ZSCORE_NONZERO = 2, /* z-score over non-zero voxels, zero stays zero (MR, PET) */
    CS_NORM_ZSCORE_MASK = 3,    /* z-score inside a given mask, zero outside */
    CS_NORM_ZSCORE = 4,         /* z-score over the whole image */
    CS_NORM_UPPER_PEAK = 5      /* divided by the brightest major histogram peak (T1 MR) */
} cs_norm_kind;

typedef struct cs_channel_info {
    char name[CS_NAME_MAX]; /* e.g. "T1", "FLAIR", "CT" */
    cs_modality modality;
    cs_norm_kind norm;
    float clip_low, clip_high; /* CS_NORM_CLIP_SCALE */
    float mean, std;           /* CS_NORM_CLIP_SCALE */
} cs_channel_info;

typedef struct cs_class_info {
    int32_t value;          /* label value written in output label maps */
    char name[CS_NAME_MAX]; /* e.g. "left hippocampus" */
    uint8_t rgb[3];
} cs_class_info;

/* The clean-up of a segmentation that a model recommends (1 on, 0 off); ComboSegSegment and
 * itk::ComboSegImageFilter apply it unless asked for the raw output. Files without the field
 * recommend none. */
typedef struct cs_postprocessing {
    int32_t largest_component; /* keep the largest connected component of each class */
    int32_t fill_holes;        /* fill background holes enclosed by a class */
} cs_postprocessing;

typedef struct cs_model_info {
    int32_t format_version; /* CS_MODEL_FORMAT_VERSION */
    cs_unet_config arch;
    cs_channel_info channels[CS_MAX_CHANNELS]; /* arch.in_channels of them */
    cs_class_info classes[CS_MAX_CLASSES];     /* arch.num_classes of them; [0] is background */
    double spacing[3];                         /* target voxel spacing in mm, x y z */
    char orientation[4];    /* anatomical orientation of the model's axes: "RAS", "LPS" */
    int32_t patch_size[3];  /* training patch and inference window, x y z */
    cs_loss_options loss;   /* the loss it was trained with (class_weights not kept) */
    char name[CS_NAME_MAX]; /* e.g. "brain-structures-t1" */
    char description[CS_TEXT_MAX];
    char training_data[CS_TEXT_MAX]; /* provenance */
    char licence[CS_TEXT_MAX];
    cs_postprocessing postprocessing; /* recommended clean-up (none by default) */
    /* Recommended test-time mirroring, a mask of the axes x (1), y (2), z (4); 0 (the default)
     * none. Chosen by cross-validation (docs/evaluation-protocol.md); segmenters apply it unless
     * asked for the raw output. */
    int32_t test_time_mirror_axes;
} cs_model_info;

typedef struct cs_model *cs_model_t;

CS_API cs_unet_config cs_unet_config_default(void); /* 3D, 1 channel, 2 classes, 16, 4 */
/* Fills info with defaults for an architecture: channel and class names, distinct colours,
 * 1 mm spacing, RAS, 64^3 (64^2 in 2D) patches, the default loss. */
CS_API cs_status cs_model_info_init(cs_model_info *info, const cs_unet_config *arch);
/* Checks every field (sizes, names, ranges); writes a message naming the first bad field into
 * message (may be NULL) and returns CS_ERR_INVALID_ARGUMENT. */
CS_API cs_status cs_model_info_validate(const cs_model_info *info, char *message,
                                        size_t message_size);

/* A new model with He-initialised weights from the seed: same seed, same weights, bit for bit. */
CS_API cs_status cs_model_create(cs_context_t ctx, const cs_model_info *info, uint64_t seed,
                                 cs_model_t *out);
CS_API void cs_model_free(cs_model_t model);
CS_API const cs_model_info *cs_model_get_info(const cs_model_t model);
/* Replace the metadata; the architecture must stay the same. */
CS_API cs_status cs_model_set_info(cs_context_t ctx, cs_model_t model, const cs_model_info *info);
CS_API int64_t cs_model_num_parameters(const cs_model_t model);
/* A copy of model with count more classes (new_classes: values, names, colours), appended after
 * the old ones: every weight is copied; the head's new rows start as background's, shifted well
 * below it, so that the copy predicts what model predicts until training separates them. */
CS_API cs_status cs_model_add_classes(cs_context_t ctx, const cs_model_t model,
                                      const cs_class_info *new_classes, int32_t count,
                                      cs_model_t *out);

/* Model files: safetensors with the metadata in "__metadata__". Save is atomic (temporary file,
 * flush, rename): a failed save leaves any previous file intact. Load validates everything. */
CS_API cs_status cs_model_save(cs_context_t ctx, const cs_model_t model, const char *path);
CS_API cs_status cs_model_load(cs_context_t ctx, const char *path, cs_model_t *out);
/* As cs_model_save, with the weights stored in half precision (F16) to halve the file; load
 * converts them back to float. A weight beyond the half range (|w| >= 65520) is an error. */
CS_API cs_status cs_model_save_f16(cs_context_t ctx, const cs_model_t model, const char *path);
/* A process killed while saving leaves its temporary file "<path>.tmp-<pid>[...]" behind (the
 * one naming rule of ComboSeg's temporaries, also for the C++ layers' files and temporary
 * folders). This removes those of path whose process no longer runs (never a live writer's),
 * folders with what they hold, and returns how many; every successful save of the engine, and
 * of the C++ layers (itkComboSegFiles.h), calls it. Best effort, nothing on Windows. */
CS_API int cs_remove_stale_temporaries(const char *path);

/* Logits of a batch: images (B, C, nz, ny, nx) to logits (B, K, nz, ny, nx). Each size must be
 * a multiple of 2^(levels-1) (nz = 1 for 2D models). */
CS_API cs_status cs_model_forward(cs_context_t ctx, const cs_model_t model, const float *images,
                                  int32_t batch, const int64_t size[3], float *logits);

/* ------------------------------------------------------------------------------------------ */
/* Inference over whole volumes                                                               */

/* Progress: fraction in [0, 1]; return non-zero to cancel (the call returns CS_ERR_CANCELLED). */
typedef int (*cs_progress_fn)(void *user_data, float fraction);

typedef struct cs_infer_options {
    float overlap; /* fraction of the window shared by neighbours, [0, 1) (0.5) */
    int32_t
        gaussian_weighting; /* weight window voxels by a Gaussian of their centre distance (1) */
    float gaussian_sigma;   /* sigma as a fraction of the window size (0.125) */
    int32_t window[3];      /* window size x y z; 0 takes the model's patch size */
    cs_progress_fn progress;
    void *progress_user_data;
    int32_t accumulate; /* add this pass's probabilities to those already in the output
                                   (test-time augmentation sums several passes); labels are still
                                   this pass's argmax (0) */
} cs_infer_options;

CS_API cs_infer_options cs_infer_options_default(void);

/* Sliding-window prediction over one normalised image (C, nz, ny, nx) of any size (padded as
 * needed). Writes class probabilities (K, nz, ny, nx) and/or class indices (nz, ny, nx); either
 * may be NULL. Memory beyond the outputs is bounded by a slab of windows, not by the volume.
 * With 2 to 8 threads and at least 4 windows per thread in each z-row, each thread runs whole
 * windows (one workspace per thread and one more, kept by the context) as far as the memory
 * limit allows; the results are the same bit for bit whatever the number of threads. */
CS_API cs_status cs_predict_volume(cs_context_t ctx, const cs_model_t model, const float *image,
                                   const int64_t size[3], const cs_infer_options *options,
                                   float *probabilities, int32_t *labels);

/* Estimated bytes cs_predict_volume needs beyond its inputs and outputs with one thread; with
 * threads that run whole windows, each window slot (threads + 1) takes a workspace and input. */
CS_API uint64_t cs_predict_volume_memory(const cs_model_t model, const int64_t size[3],
                                         const cs_infer_options *options);

/* ------------------------------------------------------------------------------------------ */
/* Training                                                                                    */

typedef enum cs_optimizer_kind {
    CS_OPTIMIZER_ADAM = 0,
    CS_OPTIMIZER_ADAMW = 1
} cs_optimizer_kind;

typedef enum cs_lr_schedule {
    CS_LR_CONSTANT = 0,
    CS_LR_POLY = 1,  /* lr * (1 - t/T)^poly_power after warm-up */
    CS_LR_COSINE = 2 /* min_lr + (lr - min_lr) * (1 + cos(pi t/T)) / 2 after warm-up */
} cs_lr_schedule;

typedef struct cs_train_config {
    int32_t batch_size;    /* patches per step (2) */
    int32_t patch_size[3]; /* x y z; 0 takes the model's patch size */
    cs_optimizer_kind optimizer;
    float learning_rate;                        /* peak learning rate (1e-3) */
    float adam_beta1, adam_beta2, adam_epsilon; /* 0.9, 0.999, 1e-8 */
    float weight_decay;                         /* L2 (Adam) or decoupled (AdamW) decay (0) */
    cs_lr_schedule schedule;
    int64_t warmup_steps;    /* linear warm-up from 0 (0) */
    int64_t total_steps;     /* length of the schedule (1000) */
    float poly_power;        /* 0.9 */
    float min_learning_rate; /* cosine floor (0) */
    float grad_clip_norm;    /* clip the global gradient norm to this; 0: off (12) */
    cs_loss_options loss;
    int32_t curriculum; /* 1: alpha rises linearly from curriculum_alpha_start to loss.alpha */
    float curriculum_alpha_start; /* 0.1: Dice-dominated at first */
    int64_t curriculum_steps;     /* steps of the ramp (half of total_steps when 0) */
    /* The first n encoder levels (enc0..enc{n-1}; levels: the whole encoder with the bottom)
     * keep their weights; the rest learns. Fine-tuning on a site's one or two cases can then
     * adapt the decoder without forgetting the features the base model learnt (0). */
    int32_t frozen_encoder_levels;
    uint64_t seed;
} cs_train_config;

CS_API cs_train_config cs_train_config_default(void);
/* Learning rate and Combo alpha of a config at a step (what the trainer uses). */
CS_API float cs_train_learning_rate_at(const cs_train_config *config, int64_t step);
CS_API float cs_train_alpha_at(const cs_train_config *config, int64_t step);

typedef struct cs_step_result {
    float loss;
    float grad_norm; /* global gradient norm before clipping */
    float learning_rate;
    float alpha;                /* Combo alpha used at this step */
    float dice[CS_MAX_CLASSES]; /* hard Dice per class on this batch; NaN where absent */
} cs_step_result;

typedef struct cs_trainer *cs_trainer_t;

/* A trainer owns the optimiser state and the activations of one batch; after the first step it
 * allocates nothing. The model is updated in place and must outlive the trainer. */
CS_API cs_status cs_trainer_init(cs_context_t ctx, cs_model_t model, const cs_train_config *config,
                                 cs_trainer_t *out);
CS_API void cs_trainer_free(cs_trainer_t trainer);
/* One optimiser step on a batch: images (B, C, pz, py, px), labels (B, pz, py, px) in [0, K).
 * A non-finite loss or gradient returns CS_ERR_NUMERIC and leaves the weights unchanged. */
CS_API cs_status cs_trainer_step(cs_trainer_t trainer, const float *images, const int32_t *labels,
                                 cs_step_result *result);
CS_API int64_t cs_trainer_steps_done(const cs_trainer_t trainer);
/* Changes the schedule's length (total_steps, >= 1) between steps, e.g. when a run under a time
 * budget learns how many steps it will do; the curriculum's ramp follows when curriculum_steps
 * is 0. */
CS_API cs_status cs_trainer_set_total_steps(cs_trainer_t trainer, int64_t total_steps);
/* Checkpoints hold the weights, the optimiser state and the step, written atomically. */
CS_API cs_status cs_trainer_save_checkpoint(cs_trainer_t trainer, const char *path);
CS_API cs_status cs_trainer_load_checkpoint(cs_trainer_t trainer, const char *path);

/* Data-parallel training (e.g. Logic/Distributed over MPI). A gradient reducer is called by every
 * cs_trainer_step after the backward pass and before the gradient norm, clipping and the
 * optimiser update, with the flat gradient (count values) of the local batch's mean loss. It
 * must leave in grads what every process applies (the mean over processes) and return CS_OK, or
 * return another status with a message in message (message_size bytes) to stop the step with the
 * weights unchanged. Averaging the processes' gradients equals one process's gradient of the
 * whole batch only when the loss is a mean over batch items: batch_dice off and no
 * batch-derived class weights. NULL removes the reducer. */
typedef cs_status (*cs_gradient_reducer_fn)(void *user_data, float *grads, int64_t count,
                                            char *message, size_t message_size);
CS_API void cs_trainer_set_gradient_reducer(cs_trainer_t trainer, cs_gradient_reducer_fn fn,
                                            void *user_data);
/* The contiguous share of `total` items (cases, batch items) of process `rank` of `size`:
 * [*first, *first + *count). The first total % size ranks get one more. */
CS_API void cs_shard(int64_t total, int rank, int size, int64_t *first, int64_t *count);
/* The trainer's state as flat arrays of *count floats each: the model's parameters and Adam's
 * first and second moments (any of the outputs may be NULL). Valid while the trainer lives; write
 * them only between steps, e.g. to broadcast one process's state to the others. */
CS_API cs_status cs_trainer_get_state(cs_trainer_t trainer, float **params, float **adam_m,
                                      float **adam_v, int64_t *count);

/* ------------------------------------------------------------------------------------------ */
/* Patch sampling and augmentation for training                                               */

typedef struct cs_sampling_options {
    float foreground_fraction; /* share of patches centred on a random foreground class (0.33) */
    int32_t flip_axes;         /* bit mask of axes (1 x, 2 y, 4 z) randomly flipped (0) */
    float intensity_scale;     /* multiply by 1 + U(-s, s) per channel (0.1) */
    float intensity_shift;     /* add U(-s, s) per channel (0.1) */
    float noise_std;           /* Gaussian noise (0) */
    float zoom;                /* the patch shows a region 1 + U(-z, z) times its size, resampled
                                  (trilinear image, nearest labels) around the same centre (0) */
    float gamma;               /* per channel, v -> lo + (hi - lo) ((v - lo) / (hi - lo))^g over
                                  the patch's range [lo, hi], ln g ~ U(-ln(1 + gamma),
                                  ln(1 + gamma)): contrast changes between scans (0) */
    float rotation[3];         /* degrees: the patch shows its region rotated about its centre by
                                  U(-r, r) about the x, y and z axes (in that order), resampled
                                  with the zoom in one step (trilinear image, nearest labels);
                                  angles in voxel space, so for isotropic grids; x and y are
                                  ignored for 2D patches (0, 0, 0) */
    const int32_t *mirror_classes; /* num_classes entries: the class a patch flipped along x
                                  labels each class as (left and right partners swapped), so
                                  that x flips keep left/right labels true; NULL: unchanged */
    float channel_dropout;         /* probability that a patch of a multi-channel image has one of
                                  its channels, drawn uniformly, set to 0 (the brain's mean
                                  after z-scoring), so that the model learns to find each
                                  structure from either scan, not from one channel's look (0) */
} cs_sampling_options;

CS_API cs_sampling_options cs_sampling_options_default(void);

/* Cuts one patch (C, pz, py, px) and its labels from an image (C, nz, ny, nx) and labels
 * (nz, ny, nx), then augments it. Volumes smaller than the patch are padded (image with each
 * channel's minimum, labels with 0). */
CS_API cs_status cs_sample_patch(cs_context_t ctx, cs_rng *rng, const float *image,
                                 const int32_t *labels, int32_t channels, const int64_t size[3],
                                 int32_t num_classes, const int32_t patch[3],
                                 const cs_sampling_options *options, float *patch_image,
                                 int32_t *patch_labels);

#ifdef __cplusplus
}
#endif

#endif /* COMBOSEG_COMBOSEG_H */
