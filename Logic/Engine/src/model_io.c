/* model_io.c - safetensors reading and writing, and model files built on them.
 *
 * Byte order is handled by assembling values from bytes, so files are little-endian on every
 * host. A model file's "__metadata__" holds string values only (as the safetensors format
 * requires); structured fields (channels, classes, loss) are JSON text inside those strings. */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "comboseg/parameters.h"
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#ifdef _WIN32
#include <io.h>
#include <process.h>
#include <windows.h>
#define fileno _fileno
#ifndef S_ISREG
#define S_ISREG(m) (((m)&S_IFMT) == S_IFREG)
#endif
#else
#include <dirent.h>
#include <signal.h>
#include <unistd.h>
#endif

/* ------------------------------------------------------------------------------------------ */
/* Half precision                                                                              */

static uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float cs_half_to_float(uint16_t h)
{
    uint32_t exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    float v;
    if (exponent == 0) v = ldexpf((float)mantissa, -24); /* zero, subnormal */
    else if (exponent == 31) v = mantissa ? NAN : INFINITY;
    else v = ldexpf((float)(mantissa | 0x400), (int)exponent - 25);
    return (h & 0x8000) ? -v : v;
}

uint16_t cs_float_to_half(float f)
{
    uint32_t x = float_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    x &= 0x7fffffff;
    if (x >= 0x7f800000) return sign | 0x7c00 | (x > 0x7f800000 ? 0x200 : 0); /* inf, NaN */
    if (x >= 0x477ff000) return sign | 0x7c00; /* >= 65520 rounds to infinity */
    if (x < 0x38800000) {                      /* below 2^-14: a half subnormal */
        if (x < 0x33000000) return sign;       /* <= 2^-25 rounds to zero */
        uint32_t e = x >> 23, m = (x & 0x7fffff) | 0x800000;
        int shift = 126 - (int)e; /* m * 2^(e-150) in units of 2^-24 */
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = (x - 0x38000000) >> 13, rem = x & 0x1fff; /* rebias 127 -> 15 */
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
    return (uint16_t)(sign | r);
}

float cs_bf16_to_float(uint16_t b) { return bits_float((uint32_t)b << 16); }

uint16_t cs_float_to_bf16(float f)
{
    uint32_t x = float_bits(f);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

static const char *const dtype_names[3] = {"F32", "F16", "BF16"};
static const int dtype_sizes[3] = {4, 2, 2};

/* ------------------------------------------------------------------------------------------ */
/* Writing                                                                                     */

static cs_status sync_and_close(FILE *f)
{
    int failed = fflush(f) != 0 || ferror(f);
#ifdef _WIN32
    if (!failed && _commit(_fileno(f)) != 0) failed = 1;
#else
    if (!failed && fsync(fileno(f)) != 0) failed = 1;
#endif
    if (fclose(f) != 0) failed = 1;
    return failed ? CS_ERR_IO : CS_OK;
}

static int replace_file(const char *from, const char *to)
{
#ifdef _WIN32
    return MoveFileExA(from, to, MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH) ? 0 : -1;
#else
    return rename(from, to);
#endif
}

static long process_id(void)
{
#ifdef _WIN32
    return (long)_getpid();
#else
    return (long)getpid();
#endif
}

#ifndef _WIN32
/* Removes a file, or a folder and what it holds (a temporary folder of a writer that makes
 * several files); path is a buffer of cap bytes that is extended in place while descending. */
static int remove_tree(char *path, size_t cap)
{
    struct stat st;
    if (lstat(path, &st) != 0) return -1;
    if (!S_ISDIR(st.st_mode)) return unlink(path);
    const size_t len = strlen(path);
    DIR *d = opendir(path);
    if (!d) return -1;
    for (struct dirent *e = readdir(d); e; e = readdir(d)) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (snprintf(path + len, cap - len, "/%s", e->d_name) < (int)(cap - len))
            remove_tree(path, cap);
        path[len] = '\0';
    }
    closedir(d);
    return rmdir(path);
}
#endif

int cs_remove_stale_temporaries(const char *path)
{
#ifdef _WIN32
    (void)path;
    return 0;
#else
    /* fixed buffers: a cleanup that needs memory could fail, and this one must never matter */
    char dir[4096], full[4096 + 256];
    if (!path || strlen(path) >= sizeof dir) return 0;
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (!slash) {
        strcpy(dir, ".");
    } else {
        const size_t n = slash == path ? 1 : (size_t)(slash - path);
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    const size_t base_len = strlen(base);
    DIR *d = opendir(dir);
    if (!d) return 0;
    int removed = 0;
    for (struct dirent *e = readdir(d); e; e = readdir(d)) {
        const char *name = e->d_name;
        if (strncmp(name, base, base_len) != 0 || strncmp(name + base_len, ".tmp-", 5) != 0)
            continue;
        const char *digits = name + base_len + 5;
        char *end = NULL;
        const long pid = strtol(digits, &end, 10);
        if (end == digits || (*end != '\0' && *end != '.') || pid <= 0 || pid == (long)getpid())
            continue;
        /* the writer is alive (or not ours to judge): leave its file alone */
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        if (snprintf(full, sizeof full, "%s/%s", dir, name) >= (int)sizeof full) continue;
        if (remove_tree(full, sizeof full) == 0) removed++;
    }
    closedir(d);
    return removed;
#endif
}

/* Makes the header JSON, padded with spaces to a multiple of 8 so the data stays aligned. */
static cs_status make_header(cs_context_t ctx, const char *path, const cs_named_buffer *tensors,
                             int32_t count, const cs_st_pair *metadata, int32_t num_metadata,
                             cs_st_dtype dtype, char **out, size_t *out_len)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = NULL;
    char *text = NULL;
    if (!root) goto oom;
    if (num_metadata > 0) {
        meta = cJSON_AddObjectToObject(root, "__metadata__");
        if (!meta) goto oom;
        for (int32_t i = 0; i < num_metadata; i++)
            if (!cJSON_AddStringToObject(meta, metadata[i].key, metadata[i].value)) goto oom;
    }
    uint64_t offset = 0;
    for (int32_t i = 0; i < count; i++) {
        const cs_named_buffer *t = &tensors[i];
        cJSON *entry = cJSON_AddObjectToObject(root, t->name);
        cJSON *shape = entry ? cJSON_AddArrayToObject(entry, "shape") : NULL;
        cJSON *offsets = shape ? cJSON_AddArrayToObject(entry, "data_offsets") : NULL;
        if (!offsets || !cJSON_AddStringToObject(entry, "dtype", dtype_names[dtype])) goto oom;
        uint64_t n = 1;
        for (int32_t d = 0; d < t->ndim; d++) {
            cJSON *dim = cJSON_CreateNumber((double)t->shape[d]);
            if (!dim) goto oom;
            cJSON_AddItemToArray(shape, dim);
            n *= (uint64_t)t->shape[d];
        }
        uint64_t end = offset + n * (uint64_t)dtype_sizes[dtype];
        cJSON *b = cJSON_CreateNumber((double)offset), *e = cJSON_CreateNumber((double)end);
        if (!b || !e) {
            cJSON_Delete(b);
            cJSON_Delete(e);
            goto oom;
        }
        cJSON_AddItemToArray(offsets, b);
        cJSON_AddItemToArray(offsets, e);
        offset = end;
    }
    text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    root = NULL;
    if (!text) goto oom;
    size_t len = strlen(text), padded = (len + 7) / 8 * 8;
    char *buf = (char *)cs_alloc(ctx, padded + 1, "safetensors header");
    if (!buf) {
        free(text);
        return CS_ERR_OUT_OF_MEMORY;
    }
    memcpy(buf, text, len);
    memset(buf + len, ' ', padded - len);
    free(text);
    *out = buf;
    *out_len = padded;
    return CS_OK;
oom:
    cJSON_Delete(root);
    return cs_fail(ctx, CS_ERR_OUT_OF_MEMORY, "'%s': out of memory building the header", path);
}

static void put_le(unsigned char *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++) p[i] = (unsigned char)(v >> (8 * i));
}

#define CS_ST_CHUNK 16384 /* elements converted per write */

static cs_status write_all(cs_context_t ctx, FILE *f, const char *path, const char *header,
                           size_t header_len, const cs_named_buffer *tensors, int32_t count,
                           cs_st_dtype dtype, unsigned char *chunk)
{
    unsigned char len[8];
    put_le(len, header_len, 8);
    if (fwrite(len, 1, 8, f) != 8 || fwrite(header, 1, header_len, f) != header_len)
        return cs_fail(ctx, CS_ERR_IO, "'%s': write failed: %s", path, strerror(errno));
    int size = dtype_sizes[dtype];
    for (int32_t i = 0; i < count; i++) {
        int64_t n = 1;
        for (int32_t d = 0; d < tensors[i].ndim; d++) n *= tensors[i].shape[d];
        for (int64_t start = 0; start < n; start += CS_ST_CHUNK) {
            int64_t m = n - start < CS_ST_CHUNK ? n - start : CS_ST_CHUNK;
            const float *src = tensors[i].data + start;
            for (int64_t j = 0; j < m; j++) {
                uint64_t v = dtype == CS_ST_F32   ? float_bits(src[j])
                             : dtype == CS_ST_F16 ? cs_float_to_half(src[j])
                                                  : cs_float_to_bf16(src[j]);
                put_le(chunk + j * size, v, size);
            }
            if (fwrite(chunk, (size_t)size, (size_t)m, f) != (size_t)m)
                return cs_fail(ctx, CS_ERR_IO, "'%s': write failed: %s", path, strerror(errno));
        }
    }
    return CS_OK;
}

static cs_status check_write_args(cs_context_t ctx, const char *path,
                                  const cs_named_buffer *tensors, int32_t count,
                                  const cs_st_pair *metadata, int32_t num_metadata,
                                  cs_st_dtype dtype)
{
    if (!path || !path[0]) return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "no file path given");
    if ((int)dtype < CS_ST_F32 || (int)dtype > CS_ST_BF16)
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "'%s': unknown dtype %d", path, (int)dtype);
    if (count < 0 || (count > 0 && !tensors) || num_metadata < 0 || (num_metadata > 0 && !metadata))
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "'%s': bad tensor or metadata list", path);
    uint64_t total = 0;
    for (int32_t i = 0; i < count; i++) {
        const cs_named_buffer *t = &tensors[i];
        if (!t->name || !t->name[0] || strcmp(t->name, "__metadata__") == 0)
            return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "'%s': tensor %d has no valid name", path,
                           (int)i);
        if (t->ndim < 0 || t->ndim > CS_ST_MAX_DIMS || (t->ndim > 0 && !t->shape))
            return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "'%s': tensor %s has a bad shape", path,
                           t->name);
        uint64_t n = 1;
        for (int32_t d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0 ||
                (t->shape[d] > 0 && n > (UINT64_C(1) << 50) / (uint64_t)t->shape[d]))
                return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "'%s': tensor %s has a bad shape",
                               path, t->name);
            n *= (uint64_t)t->shape[d];
        }
        if (n > 0 && !t->data)
            return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "'%s': tensor %s has no data", path,
                           t->name);
        if (dtype == CS_ST_F16)
            for (uint64_t j = 0; j < n; j++)
                if (isfinite(t->data[j]) && fabsf(t->data[j]) >= 65520.0f)
                    return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT,
                                   "'%s': tensor %s value %g is out of half-precision range", path,
                                   t->name, (double)t->data[j]);
        total += n;
        if (total > (UINT64_C(1) << 50))
            return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "'%s': tensors too large", path);
        for (int32_t j = 0; j < i; j++)
            if (strcmp(tensors[j].name, t->name) == 0)
                return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "'%s': tensor name %s repeats", path,
                               t->name);
    }
    for (int32_t i = 0; i < num_metadata; i++) {
        if (!metadata[i].key || !metadata[i].value)
            return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "'%s': metadata entry %d is NULL", path,
                           (int)i);
        for (int32_t j = 0; j < i; j++)
            if (strcmp(metadata[j].key, metadata[i].key) == 0)
                return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "'%s': metadata key %s repeats", path,
                               metadata[i].key);
    }
    return CS_OK;
}

cs_status cs_st_write(cs_context_t ctx, const char *path, const cs_named_buffer *tensors,
                      int32_t count, const cs_st_pair *metadata, int32_t num_metadata,
                      cs_st_dtype dtype)
{
    cs_status st = check_write_args(ctx, path, tensors, count, metadata, num_metadata, dtype);
    if (st != CS_OK) return st;

    char *header = NULL;
    size_t header_len = 0;
    st = make_header(ctx, path, tensors, count, metadata, num_metadata, dtype, &header,
                     &header_len);
    if (st != CS_OK) return st;
    unsigned char *chunk = (unsigned char *)cs_alloc(ctx, CS_ST_CHUNK * 4, "write buffer");
    size_t tmp_size = strlen(path) + 32;
    char *tmp = (char *)cs_alloc(ctx, tmp_size, "temporary file name");
    if (!chunk || !tmp) {
        cs_free(header);
        cs_free(chunk);
        cs_free(tmp);
        return CS_ERR_OUT_OF_MEMORY;
    }
    snprintf(tmp, tmp_size, "%s.tmp-%ld", path, process_id());

    FILE *f = fopen(tmp, "wb");
    if (!f) {
        st = cs_fail(ctx, CS_ERR_IO, "'%s': cannot create temporary file '%s': %s", path, tmp,
                     strerror(errno));
    } else {
        st = write_all(ctx, f, path, header, header_len, tensors, count, dtype, chunk);
        if (st != CS_OK) {
            fclose(f);
        } else if (sync_and_close(f) != CS_OK) {
            st = cs_fail(ctx, CS_ERR_IO, "'%s': write failed: %s", path, strerror(errno));
        } else if (replace_file(tmp, path) != 0) {
            st = cs_fail(ctx, CS_ERR_IO, "'%s': cannot replace the file: %s", path,
                         strerror(errno));
        }
        if (st != CS_OK) remove(tmp);
    }
    if (st == CS_OK) cs_remove_stale_temporaries(path);
    cs_free(header);
    cs_free(chunk);
    cs_free(tmp);
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* Reading                                                                                     */

void cs_st_free(cs_st_file *file)
{
    if (!file) return;
    if (file->tensors)
        for (int32_t i = 0; i < file->num_tensors; i++) cs_free(file->tensors[i].name);
    cs_free(file->values);
    for (int32_t i = 0; i < file->num_metadata; i++) {
        if (file->metadata_keys) cs_free(file->metadata_keys[i]);
        if (file->metadata_values) cs_free(file->metadata_values[i]);
    }
    cs_free(file->tensors);
    cs_free(file->metadata_keys);
    cs_free(file->metadata_values);
    cs_free(file);
}

static char *dup_string(cs_context_t ctx, const char *s)
{
    size_t n = strlen(s);
    char *d = (char *)cs_alloc(ctx, n + 1, "safetensors string");
    if (d) memcpy(d, s, n);
    return d;
}

/* A JSON number that is an integer in [0, 2^53] (exact in a double). */
static int json_count(const cJSON *item, uint64_t *out)
{
    if (!cJSON_IsNumber(item)) return 0;
    double v = item->valuedouble;
    if (!(v >= 0 && v <= 9007199254740992.0) || v != floor(v)) return 0;
    *out = (uint64_t)v;
    return 1;
}

/* Where a tensor's bytes lie; sorted to check that the data section is covered exactly. */
typedef struct span {
    uint64_t begin, end;
    int32_t index;
} span;

static int compare_spans(const void *a, const void *b)
{
    const span *x = (const span *)a, *y = (const span *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Parses and checks the header; fills file's tensor table (names, dtypes, shapes) and spans. */
/* One tensor's header entry: its name, dtype, shape and the span of the data section it takes. */
static cs_status parse_tensor(cs_context_t ctx, const char *path, const cJSON *it,
                              uint64_t data_size, cs_st_file *file, span *spans)
{
#define FAIL(...) return cs_fail(ctx, CS_ERR_FORMAT, __VA_ARGS__)
    const char *name = it->string;
    if (!cJSON_IsObject(it)) FAIL("'%s': tensor %s is not a JSON object", path, name);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(it, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(it, "shape");
    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
    if (!cJSON_IsString(dtype) || !cJSON_IsArray(shape) || !cJSON_IsArray(offsets))
        FAIL("'%s': tensor %s lacks dtype, shape or data_offsets", path, name);
    int32_t i = file->num_tensors;
    cs_st_tensor *t = &file->tensors[i];
    t->name = dup_string(ctx, name);
    file->num_tensors++;
    if (!t->name) return CS_ERR_OUT_OF_MEMORY;
    int found = 0;
    for (int d = 0; d < 3; d++)
        if (strcmp(dtype->valuestring, dtype_names[d]) == 0) {
            t->dtype = (cs_st_dtype)d;
            found = 1;
        }
    if (!found)
        FAIL("'%s': tensor %s has dtype %.16s, expected F32 (or F16, BF16)", path, name,
             dtype->valuestring);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > CS_ST_MAX_DIMS)
        FAIL("'%s': tensor %s has %d dimensions, at most %d are read", path, name, ndim,
             CS_ST_MAX_DIMS);
    t->ndim = ndim;
    uint64_t count = 1;
    int overflow = 0;
    int d = 0;
    for (const cJSON *dim = shape->child; dim; dim = dim->next, d++) {
        uint64_t v;
        if (!json_count(dim, &v)) FAIL("'%s': tensor %s has a bad shape", path, name);
        t->shape[d] = (int64_t)v;
        if (v != 0 && count > (UINT64_C(1) << 53) / v) overflow = 1;
        else count *= v;
    }
    uint64_t begin, finish;
    if (cJSON_GetArraySize(offsets) != 2 || !json_count(offsets->child, &begin) ||
        !json_count(offsets->child->next, &finish) || finish < begin)
        FAIL("'%s': tensor %s has bad data_offsets", path, name);
    if (overflow || count > data_size)
        FAIL("'%s': tensor %s shape holds more values than the data section (%llu bytes): "
             "truncated file?",
             path, name, (unsigned long long)data_size);
    t->count = (int64_t)count;
    if (finish - begin != count * (uint64_t)dtype_sizes[t->dtype])
        FAIL("'%s': tensor %s has data_offsets [%llu, %llu] for %llu values of %s", path, name,
             (unsigned long long)begin, (unsigned long long)finish, (unsigned long long)count,
             dtype_names[t->dtype]);
    if (finish > data_size)
        FAIL("'%s': tensor %s data_offsets end %llu beyond the data section (%llu bytes): "
             "truncated file?",
             path, name, (unsigned long long)finish, (unsigned long long)data_size);
    spans[i].begin = begin;
    spans[i].end = finish;
    spans[i].index = i;
    return CS_OK;
#undef FAIL
}

/* The tensors' names are unique and their spans cover the data section exactly. */
static cs_status check_tensor_layout(cs_context_t ctx, const char *path, const cs_st_file *file,
                                     span *spans, uint64_t data_size)
{
#define FAIL(...) return cs_fail(ctx, CS_ERR_FORMAT, __VA_ARGS__)
    /* names sorted to find repeats in n log n (a hostile header may list many tensors) */
    const char **names = (const char **)cs_alloc(
        ctx, sizeof(char *) * (size_t)(file->num_tensors + 1), "tensor names");
    if (!names) return CS_ERR_OUT_OF_MEMORY;
    for (int32_t i = 0; i < file->num_tensors; i++) names[i] = file->tensors[i].name;
    qsort(names, (size_t)file->num_tensors, sizeof(char *), compare_names);
    for (int32_t i = 1; i < file->num_tensors; i++)
        if (strcmp(names[i - 1], names[i]) == 0) {
            cs_status st = cs_fail(ctx, CS_ERR_FORMAT, "'%s': tensor %s appears twice", path,
                                   names[i]);
            cs_free(names);
            return st;
        }
    cs_free(names);

    /* the data section must be covered exactly: no overlaps, holes or trailing bytes */
    qsort(spans, (size_t)file->num_tensors, sizeof(span), compare_spans);
    uint64_t at = 0;
    for (int32_t i = 0; i < file->num_tensors; i++) {
        if (spans[i].begin < at)
            FAIL("'%s': tensor %s overlaps another tensor", path,
                 file->tensors[spans[i].index].name);
        if (spans[i].begin > at)
            FAIL("'%s': hole in the data section before tensor %s", path,
                 file->tensors[spans[i].index].name);
        at = spans[i].end;
    }
    if (at != data_size)
        FAIL("'%s': data section is %llu bytes but the tensors cover %llu", path,
             (unsigned long long)data_size, (unsigned long long)at);
    return CS_OK;
#undef FAIL
}

static cs_status parse_header(cs_context_t ctx, const char *path, const char *text, size_t len,
                              uint64_t data_size, cs_st_file *file, span **out_spans)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    span *spans = NULL;
    cs_status st = CS_OK;
#define BAD(...)                                                                                   \
    do {                                                                                           \
        st = cs_fail(ctx, CS_ERR_FORMAT, __VA_ARGS__);                                             \
        goto done;                                                                                 \
    } while (0)
    if (!root) BAD("'%s': header is not valid JSON", path);
    for (const char *p = end; p && p < text + len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            BAD("'%s': unexpected bytes after the header JSON", path);
    if (!cJSON_IsObject(root)) BAD("'%s': header is not a JSON object", path);

    int32_t n_tensors = 0, n_meta = 0;
    const cJSON *meta = NULL;
    for (const cJSON *it = root->child; it; it = it->next) {
        if (!it->string) BAD("'%s': header entry without a name", path);
        if (strcmp(it->string, "__metadata__") == 0) {
            if (meta) BAD("'%s': __metadata__ appears twice", path);
            meta = it;
        } else if (++n_tensors > CS_ST_MAX_TENSORS) {
            BAD("'%s': more than %d tensors", path, CS_ST_MAX_TENSORS);
        }
    }
    if (meta) {
        if (!cJSON_IsObject(meta)) BAD("'%s': __metadata__ is not a JSON object", path);
        for (const cJSON *it = meta->child; it; it = it->next) {
            if (!it->string) BAD("'%s': __metadata__ entry without a key", path);
            if (!cJSON_IsString(it) || !it->valuestring)
                BAD("'%s': __metadata__ value of '%s' is not a string (safetensors metadata "
                    "values must be strings)",
                    path, it->string);
            if (++n_meta > CS_ST_MAX_METADATA)
                BAD("'%s': more than %d __metadata__ entries", path, CS_ST_MAX_METADATA);
        }
    }

    file->tensors = (cs_st_tensor *)cs_alloc(ctx, sizeof(cs_st_tensor) * (size_t)(n_tensors + 1),
                                             "tensor table");
    file->metadata_keys = (char **)cs_alloc(ctx, sizeof(char *) * (size_t)(n_meta + 1), "metadata");
    file->metadata_values = (char **)cs_alloc(ctx, sizeof(char *) * (size_t)(n_meta + 1),
                                              "metadata");
    spans = (span *)cs_alloc(ctx, sizeof(span) * (size_t)(n_tensors + 1), "tensor spans");
    if (!file->tensors || !file->metadata_keys || !file->metadata_values || !spans) {
        st = CS_ERR_OUT_OF_MEMORY;
        goto done;
    }
    if (meta) {
        for (const cJSON *it = meta->child; it; it = it->next) {
            for (int32_t j = 0; j < file->num_metadata; j++)
                if (strcmp(file->metadata_keys[j], it->string) == 0)
                    BAD("'%s': __metadata__ key '%s' appears twice", path, it->string);
            int32_t j = file->num_metadata;
            file->metadata_keys[j] = dup_string(ctx, it->string);
            file->metadata_values[j] = dup_string(ctx, it->valuestring);
            file->num_metadata++;
            if (!file->metadata_keys[j] || !file->metadata_values[j]) {
                st = CS_ERR_OUT_OF_MEMORY;
                goto done;
            }
        }
    }

    for (const cJSON *it = root->child; it; it = it->next) {
        if (it == meta) continue;
        st = parse_tensor(ctx, path, it, data_size, file, spans);
        if (st != CS_OK) goto done;
    }
    st = check_tensor_layout(ctx, path, file, spans, data_size);
#undef BAD
done:
    cJSON_Delete(root);
    if (st != CS_OK) {
        cs_free(spans);
        spans = NULL;
    }
    *out_spans = spans;
    return st;
}

static uint64_t get_le(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static cs_status read_file(cs_context_t ctx, const char *path, FILE *f, cs_st_file *file)
{
    struct stat info;
    if (fstat(fileno(f), &info) != 0)
        return cs_fail(ctx, CS_ERR_IO, "'%s': cannot read: %s", path, strerror(errno));
    if (!S_ISREG(info.st_mode)) return cs_fail(ctx, CS_ERR_IO, "'%s': not a regular file", path);
    uint64_t file_size = (uint64_t)info.st_size;
    unsigned char len_bytes[8];
    if (file_size < 8 || fread(len_bytes, 1, 8, f) != 8)
        return cs_fail(ctx, CS_ERR_FORMAT, "'%s': truncated (%llu bytes), not a safetensors file",
                       path, (unsigned long long)file_size);
    uint64_t header_len = get_le(len_bytes, 8);
    if (header_len < 2 || header_len > CS_ST_MAX_HEADER || header_len > file_size - 8)
        return cs_fail(ctx, CS_ERR_FORMAT,
                       "'%s': header length %llu is impossible for a file of %llu bytes "
                       "(truncated or not a safetensors file)",
                       path, (unsigned long long)header_len, (unsigned long long)file_size);
    uint64_t data_size = file_size - 8 - header_len;
    if (data_size > SIZE_MAX / 2)
        return cs_fail(ctx, CS_ERR_RESOURCE_LIMIT, "'%s': too large to read", path);

    char *header = (char *)cs_alloc(ctx, (size_t)header_len + 1, "safetensors header");
    if (!header) return CS_ERR_OUT_OF_MEMORY;
    if (fread(header, 1, (size_t)header_len, f) != header_len) {
        cs_free(header);
        return cs_fail(ctx, CS_ERR_FORMAT, "'%s': truncated header", path);
    }
    span *spans = NULL;
    cs_status st = parse_header(ctx, path, header, (size_t)header_len, data_size, file, &spans);
    cs_free(header);
    if (st != CS_OK) return st;

    uint64_t total = 0;
    for (int32_t i = 0; i < file->num_tensors; i++) total += (uint64_t)file->tensors[i].count;
    unsigned char *raw = (unsigned char *)cs_alloc(ctx, (size_t)data_size + 1, "tensor data");
    float *values = (float *)cs_alloc(ctx, (size_t)(total + 1) * sizeof(float), "tensor values");
    if (!raw || !values) {
        cs_free(raw);
        cs_free(values);
        cs_free(spans);
        return CS_ERR_OUT_OF_MEMORY;
    }
    if (fread(raw, 1, (size_t)data_size, f) != data_size) {
        cs_free(raw);
        cs_free(values);
        cs_free(spans);
        return cs_fail(ctx, CS_ERR_FORMAT, "'%s': truncated data section", path);
    }
    float *at = values;
    for (int32_t s = 0; s < file->num_tensors; s++) {
        cs_st_tensor *t = &file->tensors[spans[s].index];
        const unsigned char *src = raw + spans[s].begin;
        int size = dtype_sizes[t->dtype];
        t->data = at;
        for (int64_t j = 0; j < t->count; j++) {
            uint64_t v = get_le(src + j * size, size);
            at[j] = t->dtype == CS_ST_F32   ? bits_float((uint32_t)v)
                    : t->dtype == CS_ST_F16 ? cs_half_to_float((uint16_t)v)
                                            : cs_bf16_to_float((uint16_t)v);
        }
        at += t->count;
    }
    file->values = values;
    cs_free(raw);
    cs_free(spans);
    return CS_OK;
}

cs_status cs_st_read(cs_context_t ctx, const char *path, cs_st_file **out)
{
    if (!out) return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "output pointer is NULL");
    *out = NULL;
    if (!path || !path[0]) return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "no file path given");
    cs_st_file *file = (cs_st_file *)cs_alloc(ctx, sizeof *file, "safetensors file");
    if (!file) return CS_ERR_OUT_OF_MEMORY;
    FILE *f = fopen(path, "rb");
    if (!f) {
        cs_st_free(file);
        return cs_fail(ctx, CS_ERR_IO, "'%s': cannot open: %s", path, strerror(errno));
    }
    cs_status st = read_file(ctx, path, f, file);
    fclose(f);
    if (st != CS_OK) {
        cs_st_free(file);
        return st;
    }
    *out = file;
    return CS_OK;
}

const char *cs_st_metadata(const cs_st_file *file, const char *key)
{
    if (!file || !key) return NULL;
    for (int32_t i = 0; i < file->num_metadata; i++)
        if (strcmp(file->metadata_keys[i], key) == 0) return file->metadata_values[i];
    return NULL;
}

const cs_st_tensor *cs_st_find(const cs_st_file *file, const char *name)
{
    if (!file || !name) return NULL;
    for (int32_t i = 0; i < file->num_tensors; i++)
        if (strcmp(file->tensors[i].name, name) == 0) return &file->tensors[i];
    return NULL;
}

static void format_shape(char *buf, size_t size, int32_t ndim, const int64_t *shape)
{
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int32_t d = 0; d < ndim && used < size; d++)
        used += (size_t)snprintf(buf + used, size - used, d ? ",%lld" : "%lld",
                                 (long long)shape[d]);
    if (used < size) snprintf(buf + used, size - used, "]");
}

cs_status cs_st_copy_tensors(cs_context_t ctx, const cs_st_file *file, const char *path,
                             const cs_named_buffer *expected, int32_t count, int allow_extra,
                             float *const *dst)
{
    if (!file || !path || count < 0 || (count > 0 && (!expected || !dst)))
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "bad arguments to cs_st_copy_tensors");
    for (int32_t i = 0; i < count; i++) {
        const cs_named_buffer *e = &expected[i];
        const cs_st_tensor *t = cs_st_find(file, e->name);
        if (!t) return cs_fail(ctx, CS_ERR_FORMAT, "'%s': tensor %s is missing", path, e->name);
        int same = t->ndim == e->ndim;
        for (int32_t d = 0; same && d < e->ndim; d++) same = t->shape[d] == e->shape[d];
        if (!same) {
            char got[160], want[160];
            format_shape(got, sizeof got, t->ndim, t->shape);
            format_shape(want, sizeof want, e->ndim, e->shape);
            return cs_fail(ctx, CS_ERR_FORMAT, "'%s': tensor %s has shape %s, expected %s", path,
                           e->name, got, want);
        }
        for (int64_t j = 0; j < t->count; j++)
            if (!isfinite(t->data[j]))
                return cs_fail(ctx, CS_ERR_FORMAT,
                               "'%s': tensor %s has a non-finite value (%g) at index %lld", path,
                               e->name, (double)t->data[j], (long long)j);
    }
    if (!allow_extra && file->num_tensors != count) {
        for (int32_t i = 0; i < file->num_tensors; i++) {
            int known = 0;
            for (int32_t j = 0; j < count && !known; j++)
                known = strcmp(file->tensors[i].name, expected[j].name) == 0;
            if (!known)
                return cs_fail(ctx, CS_ERR_FORMAT, "'%s': unexpected tensor %s", path,
                               file->tensors[i].name);
        }
        return cs_fail(ctx, CS_ERR_FORMAT, "'%s': expected %d tensors, found %d", path, (int)count,
                       (int)file->num_tensors);
    }
    for (int32_t i = 0; i < count; i++) {
        const cs_st_tensor *t = cs_st_find(file, expected[i].name);
        if (t->count > 0) memcpy(dst[i], t->data, (size_t)t->count * sizeof(float));
    }
    return CS_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Model files                                                                                 */

static const char *const modality_names[] = {"other", "ct", "mr", "pet", "us"};
static const char *const norm_names[] = {"none",        "clip_scale", "zscore_nonzero",
                                         "zscore_mask", "zscore",     "upper_peak"};
#define COUNT_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

static int name_index(const char *const *names, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0) return i;
    return -1;
}

const char *cs_norm_kind_name(cs_norm_kind kind)
{
    if ((int)kind < 0 || (int)kind >= COUNT_OF(norm_names)) return "unknown";
    return norm_names[kind];
}

cs_status cs_norm_kind_from_name(const char *name, cs_norm_kind *kind)
{
    if (!name || !kind) return CS_ERR_INVALID_ARGUMENT;
    const int i = cs_name_index(name, norm_names, COUNT_OF(norm_names));
    if (i < 0) return CS_ERR_INVALID_ARGUMENT;
    *kind = (cs_norm_kind)i;
    return CS_OK;
}

/* The metadata of a model file as key/value strings: numbers printed so that they read back
 * exactly, structured values as JSON text. */
enum {
    META_COUNT = 24,
    META_SCALAR = 48
};

typedef struct model_meta {
    cs_st_pair pairs[META_COUNT];
    int32_t count;
    char scalars[10][META_SCALAR];
    char *json[6]; /* cJSON_PrintUnformatted results, freed with free() */
} model_meta;

static void meta_add(model_meta *m, const char *key, const char *value)
{
    m->pairs[m->count].key = key;
    m->pairs[m->count].value = value;
    m->count++;
}

static char *print_and_delete(cJSON *item)
{
    char *text = item ? cJSON_PrintUnformatted(item) : NULL;
    cJSON_Delete(item);
    return text;
}

/* The shortest decimal that reads back as f ("0.01", not "0.00999999978"), for people who
 * read the metadata. */
static void format_float(char *buf, size_t size, float f)
{
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(buf, size, "%.*g", digits, (double)f);
        if ((float)strtod(buf, NULL) == f) return;
    }
}

/* f as the double of its shortest decimal, so that JSON printing shows that decimal. */
static double json_float_value(float f)
{
    char buf[32];
    format_float(buf, sizeof buf, f);
    return strtod(buf, NULL);
}

static const char *meta_int_text(model_meta *m, int slot, int32_t v)
{
    snprintf(m->scalars[slot], META_SCALAR, "%d", (int)v);
    return m->scalars[slot];
}

/* Printed through cJSON, which writes '.' whatever the C locale of the host application.
 * NULL when cJSON runs out of memory (the caller fails the save: never a "null" field). */
static const char *meta_float_text(model_meta *m, int slot, float v)
{
    char *text = print_and_delete(cJSON_CreateNumber(json_float_value(v)));
    if (!text) return NULL;
    snprintf(m->scalars[slot], META_SCALAR, "%s", text);
    free(text);
    return m->scalars[slot];
}

static int build_model_meta(const cs_model_info *info, model_meta *m)
{
    memset(m, 0, sizeof *m);
    const cs_unet_config *a = &info->arch;
    meta_add(m, "format", "comboseg-model");
    meta_add(m, "format_version", meta_int_text(m, 0, info->format_version));
    meta_add(m, "spatial_dims", meta_int_text(m, 1, a->spatial_dims));
    meta_add(m, "in_channels", meta_int_text(m, 2, a->in_channels));
    meta_add(m, "num_classes", meta_int_text(m, 3, a->num_classes));
    meta_add(m, "base_filters", meta_int_text(m, 4, a->base_filters));
    meta_add(m, "levels", meta_int_text(m, 5, a->levels));
    const char *slope = meta_float_text(m, 6, a->leaky_slope);
    const char *epsilon = meta_float_text(m, 7, a->norm_epsilon);
    if (!slope || !epsilon) return 0;
    meta_add(m, "leaky_slope", slope);
    meta_add(m, "norm_epsilon", epsilon);

    cJSON *channels = cJSON_CreateArray();
    for (int32_t c = 0; channels && c < a->in_channels; c++) {
        const cs_channel_info *ch = &info->channels[c];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(channels, o);
        if (!o || !cJSON_AddStringToObject(o, "name", ch->name) ||
            !cJSON_AddStringToObject(o, "modality", modality_names[ch->modality]) ||
            !cJSON_AddStringToObject(o, "norm", norm_names[ch->norm]) ||
            !cJSON_AddNumberToObject(o, "clip_low", json_float_value(ch->clip_low)) ||
            !cJSON_AddNumberToObject(o, "clip_high", json_float_value(ch->clip_high)) ||
            !cJSON_AddNumberToObject(o, "mean", json_float_value(ch->mean)) ||
            !cJSON_AddNumberToObject(o, "std", json_float_value(ch->std))) {
            cJSON_Delete(channels);
            channels = NULL;
        }
    }
    m->json[0] = print_and_delete(channels);

    cJSON *classes = cJSON_CreateArray();
    for (int32_t k = 0; classes && k < a->num_classes; k++) {
        const cs_class_info *cl = &info->classes[k];
        int rgb[3] = {cl->rgb[0], cl->rgb[1], cl->rgb[2]};
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(classes, o);
        cJSON *colour = NULL;
        if (!o || !cJSON_AddNumberToObject(o, "value", cl->value) ||
            !cJSON_AddStringToObject(o, "name", cl->name) ||
            !(colour = cJSON_CreateIntArray(rgb, 3)) || !cJSON_AddItemToObject(o, "rgb", colour)) {
            /* colour set here means adding it failed (its key could not be copied): not o's */
            cJSON_Delete(colour);
            cJSON_Delete(classes);
            classes = NULL;
        }
    }
    m->json[1] = print_and_delete(classes);

    m->json[2] = print_and_delete(cJSON_CreateDoubleArray(info->spacing, 3));
    int patch[3] = {info->patch_size[0], info->patch_size[1], info->patch_size[2]};
    m->json[3] = print_and_delete(cJSON_CreateIntArray(patch, 3));

    const cs_loss_options *l = &info->loss;
    cJSON *loss = cJSON_CreateObject();
    if (loss &&
        (!cJSON_AddStringToObject(loss, "kind", cs_loss_kind_name(l->kind)) ||
         !cJSON_AddNumberToObject(loss, "alpha", json_float_value(l->alpha)) ||
         !cJSON_AddNumberToObject(loss, "beta", json_float_value(l->beta)) ||
         !cJSON_AddNumberToObject(loss, "gamma", json_float_value(l->gamma)) ||
         !cJSON_AddNumberToObject(loss, "tversky_alpha", json_float_value(l->tversky_alpha)) ||
         !cJSON_AddNumberToObject(loss, "tversky_beta", json_float_value(l->tversky_beta)) ||
         !cJSON_AddNumberToObject(loss, "dice_include_background", l->dice_include_background) ||
         !cJSON_AddNumberToObject(loss, "batch_dice", l->batch_dice))) {
        cJSON_Delete(loss);
        loss = NULL;
    }
    m->json[4] = print_and_delete(loss);

    const cs_postprocessing *pp = &info->postprocessing;
    cJSON *post = cJSON_CreateObject();
    if (post && (!cJSON_AddBoolToObject(post, "largest_component", pp->largest_component) ||
                 !cJSON_AddBoolToObject(post, "fill_holes", pp->fill_holes))) {
        cJSON_Delete(post);
        post = NULL;
    }
    m->json[5] = print_and_delete(post);
    for (int i = 0; i < 6; i++)
        if (!m->json[i]) return 0;

    meta_add(m, "channels", m->json[0]);
    meta_add(m, "classes", m->json[1]);
    meta_add(m, "spacing", m->json[2]);
    meta_add(m, "orientation", info->orientation);
    meta_add(m, "patch_size", m->json[3]);
    meta_add(m, "loss", m->json[4]);
    meta_add(m, "name", info->name);
    meta_add(m, "description", info->description);
    meta_add(m, "training_data", info->training_data);
    meta_add(m, "licence", info->licence);
    meta_add(m, "postprocessing", m->json[5]);
    if (info->test_time_mirror_axes) /* optional: files without it recommend none */
        meta_add(m, "test_time_mirror_axes", meta_int_text(m, 8, info->test_time_mirror_axes));
    meta_add(m, "software", "ComboSeg engine");
    return 1;
}

static void free_model_meta(model_meta *m)
{
    for (int i = 0; i < 6; i++) free(m->json[i]);
}

/* The model's tensors as a list for the writer and the reader, with room for `room` more. */
static cs_named_buffer *model_buffers(cs_context_t ctx, const struct cs_model *model, int32_t room)
{
    cs_named_buffer *list = (cs_named_buffer *)cs_alloc(
        ctx, sizeof(cs_named_buffer) * (size_t)(model->num_tensors + room + 1), "tensor list");
    if (!list) return NULL;
    for (int32_t i = 0; i < model->num_tensors; i++) {
        const cs_param_tensor *t = &model->tensors[i];
        list[i].name = t->name;
        list[i].ndim = t->ndim;
        list[i].shape = t->shape;
        list[i].data = model->params + t->offset;
    }
    return list;
}

/* A model file: the model's tensors and metadata, then any extra ones (trainer checkpoints). */
static cs_status save_model(cs_context_t ctx, const cs_model_t model, const char *path,
                            const cs_named_buffer *extra, int32_t extra_count,
                            const cs_st_pair *extra_meta, int32_t extra_meta_count,
                            cs_st_dtype dtype)
{
    if (!model) return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "model is NULL");
    if (!path || !path[0]) return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "no file path given");
    if (extra_count < 0 || extra_meta_count < 0 || (extra_count && !extra) ||
        (extra_meta_count && !extra_meta))
        return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "'%s': bad extra tensors or metadata", path);
    model_meta meta;
    if (!build_model_meta(&model->info, &meta)) {
        free_model_meta(&meta);
        return cs_fail(ctx, CS_ERR_OUT_OF_MEMORY, "'%s': out of memory building metadata", path);
    }
    const int32_t nt = model->num_tensors + extra_count, nm = meta.count + extra_meta_count;
    cs_named_buffer *list = model_buffers(ctx, model, extra_count);
    cs_st_pair *pairs = (cs_st_pair *)cs_alloc(ctx, sizeof *pairs * (size_t)(nm + 1),
                                               "metadata list");
    cs_status st = CS_ERR_OUT_OF_MEMORY;
    if (list && pairs) {
        if (extra_count)
            memcpy(list + model->num_tensors, extra, sizeof *list * (size_t)extra_count);
        memcpy(pairs, meta.pairs, sizeof *pairs * (size_t)meta.count);
        if (extra_meta_count)
            memcpy(pairs + meta.count, extra_meta, sizeof *pairs * (size_t)extra_meta_count);
        st = cs_st_write(ctx, path, list, nt, pairs, nm, dtype);
    }
    cs_free(list);
    cs_free(pairs);
    free_model_meta(&meta);
    return st;
}

cs_status cs_model_save(cs_context_t ctx, const cs_model_t model, const char *path)
{
    return save_model(ctx, model, path, NULL, 0, NULL, 0, CS_ST_F32);
}

cs_status cs_model_save_f16(cs_context_t ctx, const cs_model_t model, const char *path)
{
    return save_model(ctx, model, path, NULL, 0, NULL, 0, CS_ST_F16);
}

cs_status cs_model_save_with(cs_context_t ctx, const cs_model_t model, const char *path,
                             const cs_named_buffer *extra, int32_t extra_count,
                             const cs_st_pair *extra_meta, int32_t extra_meta_count)
{
    return save_model(ctx, model, path, extra, extra_count, extra_meta, extra_meta_count,
                      CS_ST_F32);
}

/* Metadata parsing: each helper fails with a message naming the field. */

static cs_status meta_get(cs_context_t ctx, const cs_st_file *f, const char *path, const char *key,
                          const char **out)
{
    *out = cs_st_metadata(f, key);
    if (!*out)
        return cs_fail(ctx, CS_ERR_FORMAT, "'%s': metadata field '%s' is missing", path, key);
    return CS_OK;
}

static cs_status meta_int(cs_context_t ctx, const cs_st_file *f, const char *path, const char *key,
                          int32_t *out)
{
    const char *s;
    cs_status st = meta_get(ctx, f, path, key, &s);
    if (st != CS_OK) return st;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < INT32_MIN || v > INT32_MAX)
        return cs_fail(ctx, CS_ERR_FORMAT, "'%s': metadata field '%s' is not an integer: '%.40s'",
                       path, key, s);
    *out = (int32_t)v;
    return CS_OK;
}

static cs_status meta_float(cs_context_t ctx, const cs_st_file *f, const char *path,
                            const char *key, float *out)
{
    const char *s;
    cs_status st = meta_get(ctx, f, path, key, &s);
    if (st != CS_OK) return st;
    cJSON *number = cJSON_ParseWithOpts(s, NULL, 1); /* locale-independent, unlike strtod */
    int ok = cJSON_IsNumber(number);
    if (ok) *out = (float)number->valuedouble;
    cJSON_Delete(number);
    if (!ok)
        return cs_fail(ctx, CS_ERR_FORMAT, "'%s': metadata field '%s' is not a number: '%.40s'",
                       path, key, s);
    return CS_OK;
}

static cs_status meta_text(cs_context_t ctx, const cs_st_file *f, const char *path, const char *key,
                           char *out, size_t size)
{
    const char *s;
    cs_status st = meta_get(ctx, f, path, key, &s);
    if (st != CS_OK) return st;
    if (strlen(s) >= size)
        return cs_fail(ctx, CS_ERR_FORMAT, "'%s': metadata field '%s' is longer than %d bytes",
                       path, key, (int)size - 1);
    memcpy(out, s, strlen(s) + 1);
    return CS_OK;
}

static cs_status meta_json(cs_context_t ctx, const cs_st_file *f, const char *path, const char *key,
                           cJSON **out)
{
    const char *s;
    cs_status st = meta_get(ctx, f, path, key, &s);
    if (st != CS_OK) return st;
    *out = cJSON_ParseWithOpts(s, NULL, 1);
    if (!*out)
        return cs_fail(ctx, CS_ERR_FORMAT, "'%s': metadata field '%s' is not valid JSON", path,
                       key);
    return CS_OK;
}

/* A JSON number that fits the target: integers exactly, floats as floats. */
static int json_int(const cJSON *item, int32_t *out)
{
    if (!cJSON_IsNumber(item)) return 0;
    double v = item->valuedouble;
    if (!(v >= INT32_MIN && v <= INT32_MAX) || v != floor(v)) return 0;
    *out = (int32_t)v;
    return 1;
}

static int json_float(const cJSON *object, const char *key, float *out)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, key);
    if (!cJSON_IsNumber(item)) return 0;
    *out = (float)item->valuedouble;
    return 1;
}

static int json_text(const cJSON *object, const char *key, char *out, size_t size)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, key);
    if (!cJSON_IsString(item) || !item->valuestring || strlen(item->valuestring) >= size) return 0;
    memcpy(out, item->valuestring, strlen(item->valuestring) + 1);
    return 1;
}

static cs_status parse_channels(cs_context_t ctx, const cs_st_file *f, const char *path,
                                cs_model_info *info)
{
    cJSON *arr;
    cs_status st = meta_json(ctx, f, path, "channels", &arr);
    if (st != CS_OK) return st;
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) != info->arch.in_channels) {
        cJSON_Delete(arr);
        return cs_fail(ctx, CS_ERR_FORMAT,
                       "'%s': metadata field 'channels' must list in_channels (%d) channels", path,
                       (int)info->arch.in_channels);
    }
    int c = 0;
    for (const cJSON *o = arr->child; o; o = o->next, c++) {
        cs_channel_info *ch = &info->channels[c];
        char modality[16], norm[32];
        int m = -1, n = -1;
        if (json_text(o, "modality", modality, sizeof modality))
            m = name_index(modality_names, COUNT_OF(modality_names), modality);
        if (json_text(o, "norm", norm, sizeof norm))
            n = name_index(norm_names, COUNT_OF(norm_names), norm);
        if (!cJSON_IsObject(o) || !json_text(o, "name", ch->name, sizeof ch->name) || m < 0 ||
            n < 0 || !json_float(o, "clip_low", &ch->clip_low) ||
            !json_float(o, "clip_high", &ch->clip_high) || !json_float(o, "mean", &ch->mean) ||
            !json_float(o, "std", &ch->std)) {
            cJSON_Delete(arr);
            return cs_fail(ctx, CS_ERR_FORMAT,
                           "'%s': metadata field 'channels' entry %d is incomplete or invalid "
                           "(name, modality, norm, clip_low, clip_high, mean, std)",
                           path, c);
        }
        ch->modality = (cs_modality)m;
        ch->norm = (cs_norm_kind)n;
    }
    cJSON_Delete(arr);
    return CS_OK;
}

static cs_status parse_classes(cs_context_t ctx, const cs_st_file *f, const char *path,
                               cs_model_info *info)
{
    cJSON *arr;
    cs_status st = meta_json(ctx, f, path, "classes", &arr);
    if (st != CS_OK) return st;
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) != info->arch.num_classes) {
        cJSON_Delete(arr);
        return cs_fail(ctx, CS_ERR_FORMAT,
                       "'%s': metadata field 'classes' must list num_classes (%d) classes", path,
                       (int)info->arch.num_classes);
    }
    int k = 0;
    for (const cJSON *o = arr->child; o; o = o->next, k++) {
        cs_class_info *cl = &info->classes[k];
        const cJSON *rgb = cJSON_GetObjectItemCaseSensitive(o, "rgb");
        int ok = cJSON_IsObject(o) &&
                 json_int(cJSON_GetObjectItemCaseSensitive(o, "value"), &cl->value) &&
                 json_text(o, "name", cl->name, sizeof cl->name) && cJSON_IsArray(rgb) &&
                 cJSON_GetArraySize(rgb) == 3;
        int i = 0;
        for (const cJSON *c = ok ? rgb->child : NULL; c; c = c->next, i++) {
            int32_t v;
            if (!json_int(c, &v) || v < 0 || v > 255) ok = 0;
            else cl->rgb[i] = (uint8_t)v;
        }
        if (!ok) {
            cJSON_Delete(arr);
            return cs_fail(ctx, CS_ERR_FORMAT,
                           "'%s': metadata field 'classes' entry %d is incomplete or invalid "
                           "(value, name, rgb of three 0-255 integers)",
                           path, k);
        }
    }
    cJSON_Delete(arr);
    return CS_OK;
}

static cs_status parse_arrays(cs_context_t ctx, const cs_st_file *f, const char *path,
                              cs_model_info *info)
{
    cJSON *spacing, *patch;
    cs_status st = meta_json(ctx, f, path, "spacing", &spacing);
    if (st != CS_OK) return st;
    int ok = cJSON_IsArray(spacing) && cJSON_GetArraySize(spacing) == 3;
    int i = 0;
    for (const cJSON *c = ok ? spacing->child : NULL; c; c = c->next, i++) {
        if (!cJSON_IsNumber(c)) ok = 0;
        else info->spacing[i] = c->valuedouble;
    }
    cJSON_Delete(spacing);
    if (!ok)
        return cs_fail(ctx, CS_ERR_FORMAT, "'%s': metadata field 'spacing' must be 3 numbers",
                       path);
    st = meta_json(ctx, f, path, "patch_size", &patch);
    if (st != CS_OK) return st;
    ok = cJSON_IsArray(patch) && cJSON_GetArraySize(patch) == 3;
    i = 0;
    for (const cJSON *c = ok ? patch->child : NULL; c; c = c->next, i++)
        if (!json_int(c, &info->patch_size[i])) ok = 0;
    cJSON_Delete(patch);
    if (!ok)
        return cs_fail(ctx, CS_ERR_FORMAT, "'%s': metadata field 'patch_size' must be 3 integers",
                       path);
    return CS_OK;
}

static cs_status parse_loss(cs_context_t ctx, const cs_st_file *f, const char *path,
                            cs_model_info *info)
{
    cJSON *o;
    cs_status st = meta_json(ctx, f, path, "loss", &o);
    if (st != CS_OK) return st;
    cs_loss_options *l = &info->loss;
    char kind[32];
    int ok = cJSON_IsObject(o) && json_text(o, "kind", kind, sizeof kind) &&
             cs_loss_kind_from_name(kind, &l->kind) == CS_OK && json_float(o, "alpha", &l->alpha) &&
             json_float(o, "beta", &l->beta) && json_float(o, "gamma", &l->gamma) &&
             json_float(o, "tversky_alpha", &l->tversky_alpha) &&
             json_float(o, "tversky_beta", &l->tversky_beta) &&
             json_int(cJSON_GetObjectItemCaseSensitive(o, "dice_include_background"),
                      &l->dice_include_background) &&
             json_int(cJSON_GetObjectItemCaseSensitive(o, "batch_dice"), &l->batch_dice);
    cJSON_Delete(o);
    l->class_weights = NULL;
    if (!ok)
        return cs_fail(ctx, CS_ERR_FORMAT,
                       "'%s': metadata field 'loss' is incomplete or invalid (kind, alpha, beta, "
                       "gamma, tversky_alpha, tversky_beta, dice_include_background, batch_dice)",
                       path);
    return CS_OK;
}

/* Optional (files before it recommend no clean-up): an object of booleans, each optional. */
static cs_status parse_postprocessing(cs_context_t ctx, const cs_st_file *f, const char *path,
                                      cs_model_info *info)
{
    if (!cs_st_metadata(f, "postprocessing")) return CS_OK;
    cJSON *o;
    cs_status st = meta_json(ctx, f, path, "postprocessing", &o);
    if (st != CS_OK) return st;
    int ok = cJSON_IsObject(o);
    for (const cJSON *it = ok ? o->child : NULL; it; it = it->next) {
        int32_t *flag = NULL;
        if (strcmp(it->string, "largest_component") == 0)
            flag = &info->postprocessing.largest_component;
        else if (strcmp(it->string, "fill_holes") == 0) flag = &info->postprocessing.fill_holes;
        if (!flag || !cJSON_IsBool(it)) ok = 0;
        else *flag = cJSON_IsTrue(it) ? 1 : 0;
    }
    cJSON_Delete(o);
    if (!ok)
        return cs_fail(ctx, CS_ERR_FORMAT,
                       "'%s': metadata field 'postprocessing' must be an object of booleans "
                       "(largest_component, fill_holes)",
                       path);
    return CS_OK;
}

static cs_status parse_model_info(cs_context_t ctx, const cs_st_file *f, const char *path,
                                  cs_model_info *info)
{
    memset(info, 0, sizeof *info);
    const char *format = cs_st_metadata(f, "format");
    if (!format || strcmp(format, "comboseg-model") != 0)
        return cs_fail(ctx, CS_ERR_FORMAT,
                       "'%s': not a ComboSeg model (metadata field 'format' is not "
                       "\"comboseg-model\")",
                       path);
    cs_status st;
    if ((st = meta_int(ctx, f, path, "format_version", &info->format_version)) != CS_OK) return st;
    if (info->format_version < 1 || info->format_version > CS_MODEL_FORMAT_VERSION)
        return cs_fail(ctx, CS_ERR_UNSUPPORTED,
                       "'%s': metadata field 'format_version' is %d, this build reads 1 to %d",
                       path, (int)info->format_version, CS_MODEL_FORMAT_VERSION);
    cs_unet_config *a = &info->arch;
    if ((st = meta_int(ctx, f, path, "spatial_dims", &a->spatial_dims)) != CS_OK ||
        (st = meta_int(ctx, f, path, "in_channels", &a->in_channels)) != CS_OK ||
        (st = meta_int(ctx, f, path, "num_classes", &a->num_classes)) != CS_OK ||
        (st = meta_int(ctx, f, path, "base_filters", &a->base_filters)) != CS_OK ||
        (st = meta_int(ctx, f, path, "levels", &a->levels)) != CS_OK ||
        (st = meta_float(ctx, f, path, "leaky_slope", &a->leaky_slope)) != CS_OK ||
        (st = meta_float(ctx, f, path, "norm_epsilon", &a->norm_epsilon)) != CS_OK)
        return st;
    /* the counts size the arrays below: check them before anything indexes with them */
    if (a->in_channels < 1 || a->in_channels > CS_MAX_CHANNELS)
        return cs_fail(ctx, CS_ERR_FORMAT,
                       "'%s': metadata field 'in_channels' is %d, must be in "
                       "[1, %d]",
                       path, (int)a->in_channels, CS_MAX_CHANNELS);
    if (a->num_classes < 2 || a->num_classes > CS_MAX_CLASSES)
        return cs_fail(ctx, CS_ERR_FORMAT,
                       "'%s': metadata field 'num_classes' is %d, must be in "
                       "[2, %d]",
                       path, (int)a->num_classes, CS_MAX_CLASSES);
    if ((st = parse_channels(ctx, f, path, info)) != CS_OK ||
        (st = parse_classes(ctx, f, path, info)) != CS_OK ||
        (st = parse_arrays(ctx, f, path, info)) != CS_OK ||
        (st = meta_text(ctx, f, path, "orientation", info->orientation,
                        sizeof info->orientation)) != CS_OK ||
        (st = parse_loss(ctx, f, path, info)) != CS_OK ||
        (st = meta_text(ctx, f, path, "name", info->name, sizeof info->name)) != CS_OK ||
        (st = meta_text(ctx, f, path, "description", info->description,
                        sizeof info->description)) != CS_OK ||
        (st = meta_text(ctx, f, path, "training_data", info->training_data,
                        sizeof info->training_data)) != CS_OK ||
        (st = meta_text(ctx, f, path, "licence", info->licence, sizeof info->licence)) != CS_OK ||
        (st = parse_postprocessing(ctx, f, path, info)) != CS_OK)
        return st;
    if (cs_st_metadata(f, "test_time_mirror_axes") &&
        (st = meta_int(ctx, f, path, "test_time_mirror_axes", &info->test_time_mirror_axes)) !=
            CS_OK)
        return st;
    char msg[256];
    if (cs_model_info_validate(info, msg, sizeof msg) != CS_OK)
        return cs_fail(ctx, CS_ERR_FORMAT, "'%s': invalid metadata: %s", path, msg);
    return CS_OK;
}

/* A few-kilobyte file claiming a huge network must not make us zero gigabytes before the tensor
 * check (hardening, h1): above 64 MiB of weights, the file must hold at least that many values.
 * Smaller shortfalls go on to cs_st_copy_tensors, whose message names the tensor. */
static cs_status check_weight_count(cs_context_t ctx, const cs_st_file *f, const char *path,
                                    const cs_model_info *info)
{
    struct cs_model *probe = (struct cs_model *)cs_alloc(ctx, sizeof *probe, "model layout");
    if (!probe) return CS_ERR_OUT_OF_MEMORY;
    probe->info = *info;
    cs_status st = cs_net_layout(ctx, probe);
    uint64_t have = 0;
    for (int32_t i = 0; i < f->num_tensors; i++) have += (uint64_t)f->tensors[i].count;
    if (st == CS_OK && (uint64_t)probe->num_params > have &&
        (uint64_t)probe->num_params * sizeof(float) > (UINT64_C(64) << 20))
        st = cs_fail(ctx, CS_ERR_FORMAT,
                     "'%s': the architecture in the metadata needs %lld "
                     "weights, the file holds %llu",
                     path, (long long)probe->num_params, (unsigned long long)have);
    cs_free(probe);
    return st;
}

cs_status cs_model_load(cs_context_t ctx, const char *path, cs_model_t *out)
{
    if (!out) return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "model output pointer is NULL");
    *out = NULL;
    cs_st_file *file = NULL;
    cs_status st = cs_st_read(ctx, path, &file);
    if (st != CS_OK) return st;

    cs_model_info info;
    struct cs_model *model = NULL;
    cs_named_buffer *list = NULL;
    float **dst = NULL;
    st = parse_model_info(ctx, file, path, &info);
    if (st == CS_OK) st = check_weight_count(ctx, file, path, &info);
    if (st == CS_OK) st = cs_model_alloc(ctx, &info, &model);
    if (st == CS_OK) {
        list = model_buffers(ctx, model, 0);
        dst = (float **)cs_alloc(ctx, sizeof(float *) * (size_t)(model->num_tensors + 1),
                                 "tensor destinations");
        if (!list || !dst) st = CS_ERR_OUT_OF_MEMORY;
    }
    if (st == CS_OK) {
        for (int32_t i = 0; i < model->num_tensors; i++)
            dst[i] = model->params + model->tensors[i].offset;
        st = cs_st_copy_tensors(ctx, file, path, list, model->num_tensors, 0, dst);
    }
    cs_free(list);
    cs_free(dst);
    cs_st_free(file);
    if (st != CS_OK) {
        cs_model_free(model);
        return st;
    }
    *out = model;
    return CS_OK;
}

/* The validated metadata of a file read with cs_st_read (trainer checkpoints, train.c). */
cs_status cs_model_info_read(cs_context_t ctx, const cs_st_file *file, const char *path,
                             cs_model_info *info)
{
    if (!file || !info) return cs_fail(ctx, CS_ERR_INVALID_ARGUMENT, "no file or info given");
    return parse_model_info(ctx, file, path ? path : "(file)", info);
}
