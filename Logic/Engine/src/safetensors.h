/* safetensors.h - reading and writing safetensors files: model files and trainer checkpoints.
 *
 * Layout (https://github.com/huggingface/safetensors): 8-byte little-endian header length N,
 * N bytes of JSON {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 * "__metadata__": {"key": "string value", ...}}, then the data section, offsets relative to
 * its start. Metadata values are strings; structured values are JSON text inside the string.
 *
 * Writing is atomic: "<path>.tmp-<pid>" is written, flushed, fsync'ed and renamed over path;
 * on any failure the temporary file is removed and an existing file at path is left intact.
 * Reading validates everything and never trusts the file: a bad file is CS_ERR_FORMAT with a
 * message naming the file and the problem.
 *
 *     cs_named_buffer t[1] = {{"w", 2, shape, weights}};
 *     cs_st_pair meta[1] = {{"step", "42"}};
 *     st = cs_st_write(ctx, path, t, 1, meta, 1, CS_ST_F32);
 *     cs_st_file *f;
 *     st = cs_st_read(ctx, path, &f);
 *     const char *step = cs_st_metadata(f, "step");        // NULL if absent
 *     float *dst[1] = {weights};
 *     st = cs_st_copy_tensors(ctx, f, path, t, 1, 0, dst); // exact names and shapes, finite
 *     cs_st_free(f);
 */
#ifndef COMBOSEG_SAFETENSORS_H
#define COMBOSEG_SAFETENSORS_H

#include "internal.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CS_ST_MAX_DIMS 8
/* Headers larger than this are refused before anything is allocated (the reference
 * implementation uses the same bound). */
#define CS_ST_MAX_HEADER (100u * 1024u * 1024u)
/* More tensors or metadata entries than these are refused (models have a few hundred). */
#define CS_ST_MAX_TENSORS 65536
#define CS_ST_MAX_METADATA 4096

/* Storage type of the tensors written; reading accepts F32, F16 and BF16 and converts to float. */
typedef enum cs_st_dtype {
    CS_ST_F32 = 0,
    CS_ST_F16 = 1,
    CS_ST_BF16 = 2
} cs_st_dtype;

typedef struct cs_st_pair {
    const char *key;
    const char *value;
} cs_st_pair;

typedef struct cs_st_tensor {
    char *name;
    cs_st_dtype dtype; /* as stored in the file */
    int32_t ndim;
    int64_t shape[CS_ST_MAX_DIMS];
    int64_t count; /* product of shape */
    float *data;   /* (count) converted to float, owned by the file */
} cs_st_tensor;

typedef struct cs_st_file {
    int32_t num_tensors;
    cs_st_tensor *tensors; /* in header order */
    int32_t num_metadata;
    char **metadata_keys;
    char **metadata_values;
    float *values; /* one block holding every tensor's data */
} cs_st_file;

/* Writes count tensors (each ndim <= CS_ST_MAX_DIMS, data (product of shape) floats) and
 * num_metadata string pairs atomically to path. Names must be unique, non-empty and not
 * "__metadata__". CS_ST_F16 / CS_ST_BF16 round to nearest even; a value out of F16 range is an
 * error (CS_ERR_INVALID_ARGUMENT). */
cs_status cs_st_write(cs_context_t ctx, const char *path, const cs_named_buffer *tensors,
                      int32_t count, const cs_st_pair *metadata, int32_t num_metadata,
                      cs_st_dtype dtype);

/* Reads and validates a whole file. Free with cs_st_free. */
cs_status cs_st_read(cs_context_t ctx, const char *path, cs_st_file **out);
void cs_st_free(cs_st_file *file);

/* The metadata value of key, or NULL. */
const char *cs_st_metadata(const cs_st_file *file, const char *key);
/* The tensor of that name, or NULL. */
const cs_st_tensor *cs_st_find(const cs_st_file *file, const char *name);

/* Checks that file holds the expected tensors (names and shapes; with allow_extra == 0 also no
 * others) with finite values, then copies tensor i into dst[i] (expected[i].data is ignored).
 * path only names the file in messages, e.g. "'m.safetensors': tensor enc0.conv1.weight has
 * shape [16,2,3,3,3], expected [16,1,3,3,3]". Nothing is copied unless everything matches. */
cs_status cs_st_copy_tensors(cs_context_t ctx, const cs_st_file *file, const char *path,
                             const cs_named_buffer *expected, int32_t count, int allow_extra,
                             float *const *dst);

/* Trainer checkpoints (model_io.c, used by train.c): a model file (F32) with extra tensors and
 * metadata pairs after the model's own; and the validated model metadata of a file read with
 * cs_st_read (path names the file in messages). */
cs_status cs_model_save_with(cs_context_t ctx, const cs_model_t model, const char *path,
                             const cs_named_buffer *extra, int32_t extra_count,
                             const cs_st_pair *extra_meta, int32_t extra_meta_count);
cs_status cs_model_info_read(cs_context_t ctx, const cs_st_file *file, const char *path,
                             cs_model_info *info);

/* IEEE half and bfloat16 conversions (round to nearest even). */
float cs_half_to_float(uint16_t h);
uint16_t cs_float_to_half(float f);
float cs_bf16_to_float(uint16_t b);
uint16_t cs_float_to_bf16(float f);

#ifdef __cplusplus
}
#endif

#endif /* COMBOSEG_SAFETENSORS_H */
