/*
 * device-mem.cu: plain device allocations and synchronous copies, so that programs without a CUDA runtime of
 * their own (the famask CLI, ctypes callers) can hand device tensors to famask_attn_*.
 */
#include "cuda-check.cuh"

#include <stdlib.h>

extern "C" famask_status famask_device_alloc(famask_ctx *ctx, size_t bytes, void **out)
{
    famask_status st = FAMASK_STATUS_OK;
    *out = NULL;
    FM_CUDA(ctx, cudaMalloc(out, bytes ? bytes : 1));
    return FAMASK_STATUS_OK;
fail:
    *out = NULL;
    return st;
}

extern "C" void famask_device_free(void *ptr)
{
    if (ptr)
        cudaFree(ptr);
}

static famask_status copy(famask_ctx *ctx, void *dst, const void *src, size_t bytes, cudaMemcpyKind kind)
{
    famask_status st = FAMASK_STATUS_OK;
    FM_CUDA(ctx, cudaMemcpy(dst, src, bytes, kind));
fail:
    return st;
}

extern "C" famask_status famask_device_upload(famask_ctx *ctx, void *device_dst, const void *host_src, size_t bytes)
{
    return copy(ctx, device_dst, host_src, bytes, cudaMemcpyHostToDevice);
}

extern "C" famask_status famask_device_download(famask_ctx *ctx, void *host_dst, const void *device_src, size_t bytes)
{
    return copy(ctx, host_dst, device_src, bytes, cudaMemcpyDeviceToHost);
}

extern "C" famask_status famask_device_synchronize(famask_ctx *ctx)
{
    famask_status st = FAMASK_STATUS_OK;
    FM_CUDA(ctx, cudaDeviceSynchronize());
fail:
    return st;
}

/* Whether the current device gives a block `bytes` of shared memory (opt-in maximum); else UNSUPPORTED with a
 * message naming what needs it, so that a kernel too large for the device fails with a reason, not a bare
 * "invalid argument" from the launch. */
extern "C" famask_status fm_cuda_check_smem(famask_ctx *ctx, int bytes, const char *what, int head_dim)
{
    famask_status st = FAMASK_STATUS_OK;
    int device = 0, limit = 0;
    FM_CUDA(ctx, cudaGetDevice(&device));
    FM_CUDA(ctx, cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    if (bytes > limit)
        return fm_error(ctx, FAMASK_STATUS_UNSUPPORTED,
                        "the cuda %s for head_dim %d needs %d bytes of shared memory per block and device %d allows "
                        "%d (use the cpu device, or a GPU with more shared memory such as sm_90)",
                        what, head_dim, bytes, device, limit);
fail:
    return st;
}

/* The grid of a persistent kernel: one CTA per multiprocessor, fewer when there are fewer work items.
 * FAMASK_CUDA_CTAS=n in the environment caps it at n, so that tests on small problems make every CTA take many
 * items. */
extern "C" int fm_cuda_persistent_ctas(int64_t items, int n_sm)
{
    const char *cap = getenv("FAMASK_CUDA_CTAS");
    int64_t n = items < n_sm ? items : n_sm;
    if (cap && atoi(cap) > 0 && atoi(cap) < n)
        n = atoi(cap);
    return (int)n;
}
