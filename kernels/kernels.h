/*
 * kernels.h: the plain-C boundary between the host library and the CUDA kernels.
 *
 * src/attn.c validates the public arguments (shapes, strides, dtypes, the mask's shape) and then calls these.
 * Without CUDA (FAMASK_CUDA off) src/cuda-off.c provides them, each returning FAMASK_STATUS_NO_DEVICE.
 * Templates, tile sizes and PTX stay behind this header.
 */
#ifndef FAMASK_KERNELS_H
#define FAMASK_KERNELS_H

#include "famask.h"
#include "tile-rule.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Attention on FAMASK_DEVICE_CUDA, forward or backward; args already validated (see src/attn.c), device
 * pointers in args. Runs the kernels below in the mask's key order (kernels/key-order.cu), with k and v (and dk,
 * dv) copied through that order where it pays. */
famask_status fm_cuda_attn(famask_ctx *ctx, famask_mask *mask, const famask_attn_args *args, int backward);

/* Forward and backward on the GPU in the mask's own key order. */
famask_status fm_cuda_fwd(famask_ctx *ctx, famask_mask *mask, const famask_attn_args *args);
famask_status fm_cuda_bwd(famask_ctx *ctx, famask_mask *mask, const famask_attn_args *args);
/* The backward of k and v given in a key order (mask already sorted the same way) with dk and dv written in the
 * original order: row j of a slice goes to row kv_perm[j] ([batch_m, heads_m, seq_len_k], device memory;
 * heads_m 1 or n_head_kv). Only where fm_cuda_bwd_takes_perm(head_dim) (the Hopper kernels), else INTERNAL. */
famask_status fm_cuda_bwd_perm(famask_ctx *ctx, famask_mask *mask, const famask_attn_args *args,
                               const int32_t *kv_perm);
int fm_cuda_bwd_takes_perm(int head_dim);
/* Standard (unfused) attention forward on cuBLAS, in tiles of query rows; FAMASK_DEVICE_CUDA_UNFUSED. */
famask_status fm_cuda_unfused_fwd(famask_ctx *ctx, famask_mask *mask, const famask_attn_args *args);
/* Bytes of fp32 scores per tile of query rows in fm_cuda_unfused_fwd (default 1 GiB); tests lower it. */
extern size_t fm_cuda_unfused_tile_bytes;

/* 1 if the tensor's data is 16-byte aligned and its strides are multiples of 8 elements, as the kernels' 16-byte
 * loads need. */
static inline int fm_cuda_aligned16(const famask_tensor *t)
{
    return ((uintptr_t)t->data % 16) == 0 && t->stride_batch % 8 == 0 && t->stride_seq % 8 == 0 &&
           t->stride_head % 8 == 0;
}

/* 1 for the head dims the kernels are built for. */
static inline int fm_cuda_head_dim_ok(int head_dim)
{
    return head_dim == 32 || head_dim == 64 || head_dim == 96 || head_dim == 128 || head_dim == 256;
}

/* OK if the current device gives a block `bytes` of shared memory, else UNSUPPORTED naming `what` (forward,
 * backward) and head_dim. */
famask_status fm_cuda_check_smem(famask_ctx *ctx, int bytes, const char *what, int head_dim);

/* The CTA count of a persistent kernel with `items` work items on n_sm multiprocessors: min(items, n_sm), capped
 * by FAMASK_CUDA_CTAS from the environment (tests). */
int fm_cuda_persistent_ctas(int64_t items, int n_sm);

/* The device copy of the mask vectors ([batch_m, heads_m, seq_len_k, 4] int32), uploaded on first use and
 * cached in the mask (mask->dev), and its per-key-block summaries for block size block_k
 * ([batch_m, heads_m, ceil(seq_len_k / block_k)] fm_block_summary), computed on the device on first request
 * and cached beside it. Either output pointer may be NULL. */
famask_status fm_cuda_mask_device(famask_ctx *ctx, famask_mask *mask, int block_k, void *stream,
                                  const int32_t **bounds, const fm_block_summary **summaries);

/* Per query tile of block_q rows of each (b, h) of the mask, [batch_m, heads_m, ceil(seq_len_q / block_q), 2]
 * int32: the first live key block of block_k columns and one past the last ({0, 0} when none is live), from the
 * summaries for block_k; computed on the device on first request and cached with the mask. */
famask_status fm_cuda_mask_ranges(famask_ctx *ctx, famask_mask *mask, int block_q, int block_k, void *stream,
                                  const int32_t **ranges);

/* The key order of the mask for the mode in FAMASK_KEY_ORDER (see src/key-order.c; unset means auto), made on
 * first request and cached with the mask: *sorted is the mask with each slice's columns permuted (NULL when the
 * order is kept; owned by the mask), *perm the device copy of the permutation [batch_m, heads_m, seq_len_k]
 * (column j of a slice of sorted is column perm[j] of the mask's). famask_mask_upload makes it too. */
famask_status fm_cuda_mask_key_order(famask_ctx *ctx, famask_mask *mask, void *stream, famask_mask **sorted,
                                     const int32_t **perm);

#ifdef __cplusplus
}
#endif

#endif /* FAMASK_KERNELS_H */
