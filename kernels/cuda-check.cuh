/*
 * cuda-check.cuh: the one checking macro for CUDA runtime and cuBLAS calls inside kernels/.
 *
 *   FM_CUDA(ctx, cudaMalloc(&p, n));   // on failure: records "cuda: <error string> (<expr> at file:line)" in ctx,
 *                                      // sets st = FAMASK_STATUS_CUDA and jumps to fail
 * The enclosing function declares `famask_status st` and a `fail:` label (the house's one cleanup path).
 */
#ifndef FAMASK_CUDA_CHECK_CUH
#define FAMASK_CUDA_CHECK_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>

extern "C" {
#include "../src/internal.h"
}

#define FM_CUDA(ctx, expr)                                                                                         \
    do {                                                                                                           \
        cudaError_t fm_e_ = (expr);                                                                                \
        if (fm_e_ != cudaSuccess) {                                                                                \
            st = fm_error((ctx), FAMASK_STATUS_CUDA, "cuda: %s (%s at %s:%d)", cudaGetErrorString(fm_e_), #expr,   \
                          __FILE__, __LINE__);                                                                     \
            goto fail;                                                                                             \
        }                                                                                                          \
    } while (0)

#define FM_CUBLAS(ctx, expr)                                                                                       \
    do {                                                                                                           \
        cublasStatus_t fm_s_ = (expr);                                                                             \
        if (fm_s_ != CUBLAS_STATUS_SUCCESS) {                                                                      \
            st = fm_error((ctx), FAMASK_STATUS_CUDA, "cublas: %s (%s at %s:%d)", cublasGetStatusString(fm_s_),     \
                          #expr, __FILE__, __LINE__);                                                              \
            goto fail;                                                                                             \
        }                                                                                                          \
    } while (0)

/* For the launch itself: kernel launches report configuration errors only through cudaGetLastError. */
#define FM_CUDA_LAUNCHED(ctx) FM_CUDA(ctx, cudaGetLastError())

#endif /* FAMASK_CUDA_CHECK_CUH */
