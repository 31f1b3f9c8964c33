/* internal.h - what the engine's source files share and the public header hides. */
#ifndef COMBOSEG_INTERNAL_H
#define COMBOSEG_INTERNAL_H

#include "comboseg/comboseg.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CS_ERROR_MAX 1024

/* Builds of a hot loop for AVX-512, AVX2 and baseline x86-64, one picked at load time (GCC's
 * function multi-versioning), for loops outside the kernels' own dispatch (the loss's softmax,
 * the sliding window's blend). The files that use it are compiled without contraction into FMAs
 * (CMakeLists.txt), so every build does the same IEEE operations: the same bits on every CPU. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CS_MULTIVERSION                                                                            \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CS_MULTIVERSION
#endif

/* Sliding-window inference's window slots at most (infer.c, window_slots): 8 threads and one. */
#define CS_MAX_WINDOW_SLOTS 9

struct cs_context {
    int32_t threads;       /* 0: OpenMP default */
    uint64_t memory_limit; /* bytes, 0: none */
    char last_error[CS_ERROR_MAX];
    uint64_t alloc_count; /* cs_alloc calls made through this context (tests check for none) */
    uint64_t alloc_bytes; /* and the bytes they asked for */
    /* Fault injection for tests (as SQLite's): when fault_countdown is non-zero it counts the
     * cs_alloc calls on this context down and the one that takes it to 0 fails, as do all later
     * ones while fault_repeat is set. fault_hits counts the failures injected. */
    uint64_t fault_countdown;
    int32_t fault_repeat;
    uint64_t fault_hits;
    /* When non-zero, a cs_alloc of more bytes than this fails too (and counts in fault_hits):
     * tests use it to check that size limits are enforced before anything is allocated. */
    uint64_t fault_over_bytes;
    /* The forward-only workspaces that cs_model_forward and cs_predict_volume reuse from call to
     * call (cs_context_workspace), so that their pages are mapped and zeroed once per context:
     * one per window slot of sliding-window inference (slot 0 for cs_model_forward). */
    struct cs_workspace *kept_workspace[CS_MAX_WINDOW_SLOTS];
    cs_precision inference_precision; /* of the convolutions of forward-only passes */
};

/* Makes the nth cs_alloc from now on ctx fail (1: the next one; 0: stop injecting), and with
 * repeat every one after it too; resets fault_hits. For tests only. */
void cs_context_inject_alloc_fault(cs_context_t ctx, uint64_t nth, int repeat);

/* Records a printf-style message in ctx (which may be NULL) and returns status, so that
 * failures read `return cs_fail(ctx, CS_ERR_IO, "cannot open '%s'", path);`. */
cs_status cs_fail(cs_context_t ctx, cs_status status, const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Allocation through the context: on failure records "out of memory (N bytes for what)" and
 * returns NULL. Memory is 64-byte aligned (for AVX-512) and zeroed; free with cs_free. */
void *cs_alloc(cs_context_t ctx, size_t bytes, const char *what);
void cs_free(void *p);

/* The OpenMP thread count for a context (resolves 0 to the runtime's default; 1 without OpenMP). */
int cs_threads(const cs_context_t ctx);

/* The index of name among names[0..count), case-insensitive with '-' and ' ' read as '_'
 * ("Focal-Tversky" matches "focal_tversky"); -1 when none matches. */
int cs_name_index(const char *name, const char *const *names, int count);

/* One named tensor of the model's parameters, carved out of the single parameter allocation. */
typedef struct cs_param_tensor {
    char name[64]; /* e.g. "enc0.conv1.weight" */
    int32_t ndim;
    int64_t shape[5];
    int64_t offset; /* in floats, into cs_model.params */
    int64_t count;  /* product of shape */
} cs_param_tensor;

#define CS_MAX_PARAM_TENSORS 256

struct cs_model {
    cs_model_info info;
    float *params; /* all weights, one allocation */
    int64_t num_params;
    cs_param_tensor tensors[CS_MAX_PARAM_TENSORS];
    int32_t num_tensors;
};

/* Validates info and makes a model with its layout and zeroed weights (model.c); what
 * cs_model_create and cs_model_load share. */
cs_status cs_model_alloc(cs_context_t ctx, const cs_model_info *info, struct cs_model **out);

/* Builds the tensor table of a U-Net configuration (names, shapes, offsets) without allocating
 * weights; fills model->tensors, num_tensors and num_params. (net.c) */
cs_status cs_net_layout(cs_context_t ctx, struct cs_model *model);
/* He initialisation of every weight from a seed; biases and norm shifts 0, norm scales 1. */
void cs_net_init_weights(struct cs_model *model, uint64_t seed);

/* Activations (and, for training, their gradients) of one batch size and patch size. Holds no
 * weights, so several workspaces may run one model at once. (net.c) */
typedef struct cs_workspace cs_workspace;
cs_status cs_workspace_create(cs_context_t ctx, const struct cs_model *model, int32_t batch,
                              const int64_t size[3], int with_gradients, cs_workspace **out);
void cs_workspace_free(cs_workspace *ws);
/* A forward-only workspace (batch, size) on the activation memory that ctx keeps between calls
 * in slot (< CS_MAX_WINDOW_SLOTS): the kept block when it is large enough, else a new one that
 * replaces it. ctx owns it (freed by cs_context_release_memory or cs_context_free); it is valid
 * until the next call on ctx. */
cs_status cs_context_workspace(cs_context_t ctx, const struct cs_model *model, int32_t batch,
                               const int64_t size[3], int slot, cs_workspace **out);
/* Bytes a workspace of this shape would take (for memory estimates). */
uint64_t cs_workspace_bytes(const struct cs_model *model, int32_t batch, const int64_t size[3],
                            int with_gradients);

/* Forward pass: input (B, C, nz, ny, nx); returns the logits (B, K, nz, ny, nx) inside ws. */
cs_status cs_net_forward(cs_context_t ctx, const struct cs_model *model, cs_workspace *ws,
                         const float *input, const float **logits);
/* The head's input and parameters after cs_net_forward_to_head: sliding-window inference
 * applies the head a piece of the window at a time (cs_net_head_apply), so that the window's
 * logits stay in the cache of the thread that turns them into probabilities. */
typedef struct cs_net_head {
    const float *features; /* (f_0, voxels): the last decoder block's output */
    int64_t voxels;        /* of the window */
    const float *weight, *bias;
    int32_t in_channels, classes;
    int bfloat16; /* the head computes as the rest of the pass did */
} cs_net_head;
/* The forward pass of a batch-1 workspace up to the head, on `threads` threads (sliding-window
 * inference runs several windows at once, each on one thread). */
cs_status cs_net_forward_to_head(cs_context_t ctx, const struct cs_model *model, cs_workspace *ws,
                                 const float *input, int threads, cs_net_head *head);
/* logits (classes, count) of voxels [i0, i0 + count) of the window, the values cs_net_forward
 * gives them, on the calling thread alone; features (in_channels, count) is its scratch. */
void cs_net_head_apply(const cs_net_head *head, float *logits, float *features, int64_t i0,
                       int64_t count);
/* Backward pass after cs_net_forward on the same ws: accumulates dL/dparams into grad_params
 * (num_params floats, laid out like model->params). grad_logits is (B, K, nz, ny, nx). The
 * first frozen_levels encoder levels are not differentiated: their gradients are left as they
 * were, the others are those of the whole pass (frozen layers cost no backward time). */
cs_status cs_net_backward(cs_context_t ctx, const struct cs_model *model, cs_workspace *ws,
                          const float *grad_logits, float *grad_params, int32_t frozen_levels);

/* Safetensors reading and writing of a named tensor list plus JSON metadata (model_io.c);
 * used for model files and trainer checkpoints. */
typedef struct cs_named_buffer {
    const char *name;
    int32_t ndim;
    const int64_t *shape;
    const float *data;
} cs_named_buffer;

/* cs_loss with messages on ctx and its scratch memory: `scratch` holds cs_loss_scratch_size()
 * bytes (8-byte aligned, cleared on each call), or is NULL to allocate it through ctx for the
 * call. The trainer allocates it once, so that a step allocates nothing. */
size_t cs_loss_scratch_size(int64_t batch, int64_t n, int32_t k, int batch_dice);
cs_status cs_loss_run(cs_context_t ctx, const cs_loss_options *options, const float *logits,
                      const int32_t *labels, int64_t batch, int64_t n, int32_t k, float *loss,
                      float *grad, void *scratch);

/* CS_ERR_NUMERIC when any voxel of `volumes` volumes of size x y z (image: volumes, z, y, x) is
 * NaN or infinite, with a message "<what> has N non-finite voxels ...; the first, v, is at x, y,
 * z of channel c" (c counts volumes). Inference and training refuse such inputs. */
cs_status cs_check_finite(cs_context_t ctx, const float *image, int64_t volumes,
                          const int64_t size[3], const char *what);

#ifdef __cplusplus
}
#endif

#endif /* COMBOSEG_INTERNAL_H */
