/* context.c - contexts, error messages, aligned allocation and status names. */
#if defined(__linux__) && !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, madvise */
#endif
#include "internal.h"
#include "kernels_isa.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* Large blocks (activations, moments, kernel scratch) come straight from mmap on Linux: its pages
 * are zero already (no memset pass over hundreds of MB) and the kernel is asked to back them
 * with 2 MiB pages, 512 times fewer page faults on first touch than 4 KiB pages. Sanitizer
 * builds keep malloc, whose blocks LeakSanitizer tracks. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define CS_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define CS_SANITIZED 1
#endif
#if defined(__linux__) && !defined(CS_SANITIZED)
#include <sys/mman.h>
#define CS_MAP_LARGE_BLOCKS 1
#define CS_MAP_THRESHOLD ((size_t)8 << 20)
#define CS_HUGE_PAGE ((size_t)2 << 20)
#endif

const char *cs_status_string(cs_status status)
{
    switch (status) {
        case CS_OK: return "ok";
        case CS_ERR_INVALID_ARGUMENT: return "invalid argument";
        case CS_ERR_OUT_OF_MEMORY: return "out of memory";
        case CS_ERR_IO: return "input/output error";
        case CS_ERR_FORMAT: return "bad file format";
        case CS_ERR_NUMERIC: return "non-finite number";
        case CS_ERR_CANCELLED: return "cancelled";
        case CS_ERR_UNSUPPORTED: return "unsupported";
        case CS_ERR_RESOURCE_LIMIT: return "resource limit exceeded";
    }
    return "unknown status";
}

cs_status cs_context_init(cs_context_t *out)
{
    if (!out) return CS_ERR_INVALID_ARGUMENT;
    *out = (cs_context_t)calloc(1, sizeof(struct cs_context));
    return *out ? CS_OK : CS_ERR_OUT_OF_MEMORY;
}

void cs_context_release_memory(cs_context_t ctx)
{
    if (!ctx) return;
    for (int i = 0; i < CS_MAX_WINDOW_SLOTS; i++) {
        cs_workspace_free(ctx->kept_workspace[i]);
        ctx->kept_workspace[i] = NULL;
    }
}

void cs_context_free(cs_context_t ctx)
{
    cs_context_release_memory(ctx);
    free(ctx);
}

void cs_context_set_threads(cs_context_t ctx, int32_t threads)
{
    if (ctx) ctx->threads = threads < 0 ? 0 : threads;
}

int32_t cs_context_get_threads(const cs_context_t ctx) { return ctx ? ctx->threads : 0; }

void cs_context_set_inference_precision(cs_context_t ctx, cs_precision precision)
{
    if (ctx)
        ctx->inference_precision = precision == CS_PRECISION_BFLOAT16 ? CS_PRECISION_BFLOAT16
                                                                      : CS_PRECISION_FLOAT32;
}

cs_precision cs_context_get_inference_precision(const cs_context_t ctx)
{
    return ctx ? ctx->inference_precision : CS_PRECISION_FLOAT32;
}

int cs_bfloat16_available(void) { return cs_isa_bf16_available(); }

void cs_context_set_memory_limit(cs_context_t ctx, uint64_t bytes)
{
    if (ctx) ctx->memory_limit = bytes;
}

uint64_t cs_context_get_memory_limit(const cs_context_t ctx) { return ctx ? ctx->memory_limit : 0; }

const char *cs_context_last_error(const cs_context_t ctx) { return ctx ? ctx->last_error : ""; }

void cs_context_clear_error(cs_context_t ctx)
{
    if (ctx) ctx->last_error[0] = '\0';
}

cs_status cs_fail(cs_context_t ctx, cs_status status, const char *format, ...)
{
    if (ctx) {
        va_list args;
        va_start(args, format);
        vsnprintf(ctx->last_error, sizeof ctx->last_error, format, args);
        va_end(args);
    }
    return status;
}

int cs_threads(const cs_context_t ctx)
{
#ifdef _OPENMP
    if (ctx && ctx->threads > 0) return ctx->threads;
    return omp_get_max_threads();
#else
    (void)ctx;
    return 1;
#endif
}

/* Two words before each block keep the pointer malloc or mmap returned and the mapping's length
 * (0 for malloc), so cs_free needs no size. */
#define CS_ALIGN 64

void cs_context_inject_alloc_fault(cs_context_t ctx, uint64_t nth, int repeat)
{
    if (!ctx) return;
    ctx->fault_countdown = nth;
    ctx->fault_repeat = repeat ? 1 : 0;
    ctx->fault_hits = 0;
}

/* Whether this cs_alloc on ctx is one the test asked to fail. */
static int injected_fault(cs_context_t ctx, size_t bytes)
{
    if (!ctx) return 0;
    if (ctx->fault_over_bytes && bytes > ctx->fault_over_bytes) {
        ctx->fault_hits++;
        return 1;
    }
    if (ctx->fault_countdown == 0) {
        if (!ctx->fault_repeat || ctx->fault_hits == 0) return 0;
    } else if (--ctx->fault_countdown > 0) {
        return 0;
    }
    ctx->fault_hits++;
    return 1;
}

void *cs_alloc(cs_context_t ctx, size_t bytes, const char *what)
{
    if (injected_fault(ctx, bytes)) {
        cs_fail(ctx, CS_ERR_OUT_OF_MEMORY, "out of memory (%zu bytes for %s, injected)", bytes,
                what);
        return NULL;
    }
    if (bytes > SIZE_MAX / 2) { /* leaves room for the header and the rounding below */
        cs_fail(ctx, CS_ERR_OUT_OF_MEMORY, "out of memory (%zu bytes for %s)", bytes, what);
        return NULL;
    }
    void **aligned = NULL;
#ifdef CS_MAP_LARGE_BLOCKS
    if (bytes >= CS_MAP_THRESHOLD) {
        const size_t body = (bytes + CS_HUGE_PAGE - 1) & ~(CS_HUGE_PAGE - 1);
        const size_t length = body + 2 * CS_HUGE_PAGE; /* room for the header and the alignment */
        unsigned char *raw = (unsigned char *)mmap(NULL, length, PROT_READ | PROT_WRITE,
                                                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (raw == (unsigned char *)MAP_FAILED) {
            cs_fail(ctx, CS_ERR_OUT_OF_MEMORY, "out of memory (%zu bytes for %s)", bytes, what);
            return NULL;
        }
        aligned = (void **)(((uintptr_t)raw + CS_ALIGN + CS_HUGE_PAGE - 1) &
                            ~(uintptr_t)(CS_HUGE_PAGE - 1));
        (void)madvise(aligned, body, MADV_HUGEPAGE); /* a hint: without THP, normal pages */
        aligned[-1] = raw;
        aligned[-2] = (void *)(uintptr_t)length;
    }
#endif
    if (!aligned) {
        unsigned char *raw = (unsigned char *)malloc(bytes + 2 * CS_ALIGN);
        if (!raw) {
            cs_fail(ctx, CS_ERR_OUT_OF_MEMORY, "out of memory (%zu bytes for %s)", bytes, what);
            return NULL;
        }
        /* at least CS_ALIGN bytes after raw: room for the two header words */
        aligned = (void **)(((uintptr_t)raw + 2 * CS_ALIGN - 1) & ~(uintptr_t)(CS_ALIGN - 1));
        aligned[-1] = raw;
        aligned[-2] = NULL;
        memset(aligned, 0, bytes);
    }
    if (ctx) {
        ctx->alloc_count++;
        ctx->alloc_bytes += bytes;
    }
    return (void *)aligned;
}

void cs_free(void *p)
{
    if (!p) return;
    void **header = (void **)p;
#ifdef CS_MAP_LARGE_BLOCKS
    if (header[-2]) {
        munmap(header[-1], (size_t)(uintptr_t)header[-2]);
        return;
    }
#endif
    free(header[-1]);
}

int cs_name_index(const char *name, const char *const *names, int count)
{
    for (int i = 0; i < count; i++) {
        const char *a = name, *b = names[i];
        for (; *a && *b; a++, b++) {
            char c = (*a == '-' || *a == ' ') ? '_' : (char)tolower((unsigned char)*a);
            if (c != *b) break;
        }
        if (!*a && !*b) return i;
    }
    return -1;
}
