/*
 * ctx.c: the context, status strings, error recording and allocation helpers.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

const char *famask_status_str(famask_status status)
{
    switch (status) {
#define FAMASK_X_(name, value, desc)                                                                               \
    case FAMASK_STATUS_##name:                                                                                     \
        return desc;
        FAMASK_STATUS_LIST(FAMASK_X_)
#undef FAMASK_X_
    }
    return "unknown status";
}

const char *famask_version(void) { return FAMASK_VERSION_STRING; }

famask_status famask_ctx_create(famask_ctx **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? FAMASK_STATUS_OK : FAMASK_STATUS_NO_MEMORY;
}

void famask_ctx_free(famask_ctx *ctx)
{
    if (!ctx)
        return;
    if (ctx->scratch && ctx->scratch_free)
        ctx->scratch_free(ctx->scratch);
    free(ctx);
}

const char *famask_ctx_errmsg(const famask_ctx *ctx) { return ctx ? ctx->errmsg : ""; }

famask_status fm_verror(famask_ctx *ctx, famask_status status, const char *fmt, va_list ap)
{
    if (ctx)
        vsnprintf(ctx->errmsg, sizeof ctx->errmsg, fmt, ap);
    return status;
}

famask_status fm_error(famask_ctx *ctx, famask_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fm_verror(ctx, status, fmt, ap);
    va_end(ap);
    return status;
}

void fm_error_prefix(famask_ctx *ctx, const char *fmt, ...)
{
    if (!ctx)
        return;
    char prefix[512], old[FM_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, ctx->errmsg, sizeof old);
    size_t n = strlen(prefix);
    if (n + 2 >= sizeof ctx->errmsg)
        return;
    memcpy(ctx->errmsg, prefix, n);
    memcpy(ctx->errmsg + n, ": ", 2);
    size_t room = sizeof ctx->errmsg - n - 2, len = strlen(old);
    if (len >= room)
        len = room - 1;
    memcpy(ctx->errmsg + n + 2, old, len);
    ctx->errmsg[n + 2 + len] = '\0';
}

void *fm_malloc(famask_ctx *ctx, size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p)
        fm_error(ctx, FAMASK_STATUS_NO_MEMORY, "out of memory allocating %zu bytes", size);
    return p;
}

void *fm_calloc(famask_ctx *ctx, size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        fm_error(ctx, FAMASK_STATUS_NO_MEMORY, "out of memory allocating %zu x %zu bytes", n, size);
    return p;
}
