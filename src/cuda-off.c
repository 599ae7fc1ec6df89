/*
 * cuda-off.c: the kernel entry points of a build without CUDA: each says that there is no device.
 */
#include "internal.h"

#ifndef FAMASK_HAVE_CUDA

#include "../kernels/kernels.h"

static famask_status no_cuda(famask_ctx *ctx)
{
    return fm_error(ctx, FAMASK_STATUS_NO_DEVICE,
                    "famask was built without CUDA (FAMASK_CUDA=OFF); use the cpu device");
}

famask_status fm_cuda_attn(famask_ctx *ctx, famask_mask *mask, const famask_attn_args *args, int backward)
{
    return no_cuda(ctx);
}
famask_status fm_cuda_unfused_fwd(famask_ctx *ctx, famask_mask *mask, const famask_attn_args *args)
{
    return no_cuda(ctx);
}
famask_status fm_cuda_mask_device(famask_ctx *ctx, famask_mask *mask, int block_k, void *stream, const int32_t **bounds,
                                  const fm_block_summary **summaries)
{
    return no_cuda(ctx);
}

famask_status fm_cuda_mask_ranges(famask_ctx *ctx, famask_mask *mask, int block_q, int block_k, void *stream,
                                  const int32_t **ranges)
{
    *ranges = NULL;
    return no_cuda(ctx);
}

famask_status fm_cuda_mask_key_order(famask_ctx *ctx, famask_mask *mask, void *stream, famask_mask **sorted,
                                     const int32_t **perm)
{
    *sorted = NULL;
    *perm = NULL;
    return no_cuda(ctx);
}

famask_status famask_mask_upload(famask_ctx *ctx, famask_mask *mask, void *stream)
{
    return no_cuda(ctx);
}

famask_status famask_device_alloc(famask_ctx *ctx, size_t bytes, void **out)
{
    *out = NULL;
    return no_cuda(ctx);
}

void famask_device_free(void *ptr) {}

famask_status famask_device_upload(famask_ctx *ctx, void *device_dst, const void *host_src, size_t bytes)
{
    return no_cuda(ctx);
}

famask_status famask_device_download(famask_ctx *ctx, void *host_dst, const void *device_src, size_t bytes)
{
    return no_cuda(ctx);
}

famask_status famask_device_synchronize(famask_ctx *ctx)
{
    return no_cuda(ctx);
}

#else
typedef int fm_cuda_on; /* ISO C forbids an empty translation unit */
#endif
