/*
 * key-order.cu: attention on the GPU with the keys in the order of src/key-order.c.
 *
 * Where the mask's key order says that sorting the key columns skips more tiles, the call runs on the sorted
 * mask with k and v copied into that order: k', v' [batch, seq_len_k, n_head_kv, head_dim] contiguous, row
 * (b, j, h) of k' being row (b, perm[j], h) of k, where perm is the permutation of the mask slice that the key
 * head h reads. The Hopper backward (head dims 64 and 128) writes each row of dk and dv straight to its place;
 * the portable one writes dk', dv' in the sorted order, copied back row by row after it.
 * o, lse and dq need no copy: attention is the same function of the keys in any order (only the order of the
 * floating-point sums changes, the same way on every run, so the deterministic mode stays bitwise
 * reproducible).
 *
 * One permutation per key head needs every query head of a group to read the same mask slice: masks with one
 * head or one per key head. Masks per query head under GQA, unaligned tensors, and calls whose workspace
 * (2 copies of k's size, 4 for the portable backward, allocated on the stream) cannot be had run in the mask's
 * own order. FAMASK_KEY_ORDER=off turns the reordering off.
 */
#include "cuda-check.cuh"
#include "kernels.h"

#include <stdint.h>

namespace
{

/* One copy between a strided [batch, seq_len_k, n_head_kv, head_dim] tensor and a contiguous one in key order. */
struct rows_job {
    const uint16_t *src;
    uint16_t *dst;
    int64_t s_b, s_s, s_h; /* strides of the strided side, in elements */
};

/* Grid-stride over 16-byte chunks of every row; blockIdx.y picks the job. gather: dst (contiguous) row
 * (b, j, h) = src row (b, perm[j], h); else scatter: dst row (b, perm[j], h) = src (contiguous) row (b, j, h). */
__global__ void __launch_bounds__(256)
    permute_rows_kernel(rows_job j0, rows_job j1, const int32_t *__restrict__ perm, int batch, int seq_len_k,
                        int n_head_kv, int head_dim, int batch_m, int heads_m, int gather)
{
    const rows_job job = blockIdx.y ? j1 : j0;
    const int chunks = head_dim / 8;
    const int64_t total = (int64_t)batch * seq_len_k * n_head_kv * chunks;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const int c = (int)(i % chunks);
        const int64_t row = i / chunks; /* (b, j, h) of the contiguous side */
        const int h = (int)(row % n_head_kv);
        const int j = (int)(row / n_head_kv % seq_len_k);
        const int b = (int)(row / ((int64_t)n_head_kv * seq_len_k));
        const int bm = batch_m == 1 ? 0 : b, hm = heads_m == 1 ? 0 : h;
        const int pj = perm[((int64_t)bm * heads_m + hm) * seq_len_k + j];
        const int64_t packed = row * head_dim + c * 8;
        if (gather) {
            const int64_t from = b * job.s_b + pj * job.s_s + h * job.s_h + c * 8;
            *reinterpret_cast<int4 *>(job.dst + packed) = __ldg(reinterpret_cast<const int4 *>(job.src + from));
        } else {
            const int64_t to = b * job.s_b + pj * job.s_s + h * job.s_h + c * 8;
            *reinterpret_cast<int4 *>(job.dst + to) = *reinterpret_cast<const int4 *>(job.src + packed);
        }
    }
}

/* Whether the call can run in a key order at all (else it runs as it is, and the kernels report what they
 * refuse). */
bool reorderable(const famask_mask *mask, const famask_attn_args *a, int backward)
{
    if (a->dtype != FAMASK_DTYPE_BF16 && a->dtype != FAMASK_DTYPE_F16)
        return false;
    if (!fm_cuda_head_dim_ok(a->head_dim))
        return false;
    const int heads_m = famask_mask_heads(mask);
    if (heads_m != 1 && heads_m != a->n_head_kv)
        return false;
    if (!fm_cuda_aligned16(&a->k) || !fm_cuda_aligned16(&a->v))
        return false;
    return !backward || (fm_cuda_aligned16(&a->dk) && fm_cuda_aligned16(&a->dv));
}

famask_tensor packed_tensor(uint16_t *data, const famask_attn_args *a)
{
    famask_tensor t;
    t.data = data;
    t.stride_head = a->head_dim;
    t.stride_seq = (int64_t)a->n_head_kv * a->head_dim;
    t.stride_batch = (int64_t)a->seq_len_k * t.stride_seq;
    return t;
}

rows_job job(const famask_tensor &strided, uint16_t *packed, bool gather)
{
    rows_job j;
    j.src = gather ? (const uint16_t *)strided.data : packed;
    j.dst = gather ? packed : (uint16_t *)strided.data;
    j.s_b = strided.stride_batch;
    j.s_s = strided.stride_seq;
    j.s_h = strided.stride_head;
    return j;
}

} // namespace

static famask_status permute(famask_ctx *ctx, const famask_mask *mask, const famask_attn_args *a, rows_job j0,
                             rows_job j1, const int32_t *perm, int gather, cudaStream_t stream)
{
    famask_status st = FAMASK_STATUS_OK;
    const int64_t total = (int64_t)a->batch * a->seq_len_k * a->n_head_kv * (a->head_dim / 8);
    int64_t blocks = (total + 255) / 256;
    if (blocks > 4096) /* grid-stride beyond: enough to fill any current GPU */
        blocks = 4096;
    permute_rows_kernel<<<dim3((unsigned)blocks, 2), 256, 0, stream>>>(
        j0, j1, perm, a->batch, a->seq_len_k, a->n_head_kv, a->head_dim, famask_mask_batch(mask),
        famask_mask_heads(mask), gather);
    FM_CUDA_LAUNCHED(ctx);
fail:
    return st;
}

extern "C" famask_status fm_cuda_attn(famask_ctx *ctx, famask_mask *mask, const famask_attn_args *a, int backward)
{
    famask_status st = FAMASK_STATUS_OK;
    cudaStream_t stream = (cudaStream_t)a->stream;
    famask_mask *sorted = NULL;
    const int32_t *perm = NULL;
    uint16_t *ws = NULL;
    const size_t elems = (size_t)a->batch * a->seq_len_k * a->n_head_kv * a->head_dim; /* of k */

    if (reorderable(mask, a, backward) &&
        (st = fm_cuda_mask_key_order(ctx, mask, a->stream, &sorted, &perm)) != FAMASK_STATUS_OK)
        return st;
    /* the Hopper backward writes dk, dv through the permutation itself; the others write dk', dv' to copy back */
    const bool copy_back = backward && !fm_cuda_bwd_takes_perm(a->head_dim);
    if (sorted) {
        if (cudaMallocAsync((void **)&ws, (copy_back ? 4 : 2) * elems * sizeof(uint16_t), stream) != cudaSuccess) {
            (void)cudaGetLastError(); /* no room for the copies: run in the mask's order */
            ws = NULL;
            sorted = NULL;
        }
    }
    if (!sorted)
        return backward ? fm_cuda_bwd(ctx, mask, a) : fm_cuda_fwd(ctx, mask, a);
    {
        famask_attn_args b = *a;
        b.k = packed_tensor(ws, a);
        b.v = packed_tensor(ws + elems, a);
        if ((st = permute(ctx, mask, a, job(a->k, ws, true), job(a->v, ws + elems, true), perm, 1, stream)) !=
            FAMASK_STATUS_OK)
            goto fail;
        if (!backward) {
            st = fm_cuda_fwd(ctx, sorted, &b);
            goto fail;
        }
        if (!copy_back) {
            st = fm_cuda_bwd_perm(ctx, sorted, &b, perm);
            goto fail;
        }
        b.dk = packed_tensor(ws + 2 * elems, a);
        b.dv = packed_tensor(ws + 3 * elems, a);
        if ((st = fm_cuda_bwd(ctx, sorted, &b)) != FAMASK_STATUS_OK)
            goto fail;
        st = permute(ctx, mask, a, job(a->dk, ws + 2 * elems, false), job(a->dv, ws + 3 * elems, false), perm, 0,
                     stream);
    }
fail:
    if (ws)
        cudaFreeAsync(ws, stream);
    return st;
}
