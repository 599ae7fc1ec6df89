/*
 * attn.c: famask_attn_fwd / famask_attn_bwd: validation of the public arguments, then dispatch by device
 * (CPU -> src/ref-attn.c, CUDA -> the fused kernels, CUDA_UNFUSED -> the cuBLAS forward).
 *
 * Shapes: q, o, d_o, dq [batch, seq_len_q, n_head, head_dim]; k, v, dk, dv [batch, seq_len_k, n_head_kv,
 * head_dim]; lse [batch, n_head, seq_len_q] fp32 contiguous; the mask [batch_m, heads_m, seq_len_k, 4].
 * Everything a backend may assume is checked here once, so that the kernels only check what is theirs (memory,
 * launches). The backends receive a copy of the arguments with softmax_scale resolved (never 0).
 */
#include "internal.h"

#include "../kernels/kernels.h"
#include "ref-attn.h"

#include <math.h>
#include <stdint.h>

/* The head dims every device supports (the kernels are instantiated for these; the cpu follows them so that
 * code tested on the cpu runs on the gpu). */
static const int head_dims[] = {32, 64, 96, 128, 256};

/* The CUDA kernels load 16-byte chunks: pointers 16-byte aligned and strides multiples of 16 bytes. */
#define CUDA_ALIGN_BYTES 16

typedef struct tensor_desc {
    const char *name;
    const famask_tensor *t;
    int64_t seq, heads; /* extents of the seq and head dimensions */
} tensor_desc;

static const char *device_name(famask_device device)
{
    switch (device) {
    case FAMASK_DEVICE_CPU:
        return "cpu";
    case FAMASK_DEVICE_CUDA:
        return "cuda";
    case FAMASK_DEVICE_CUDA_UNFUSED:
        return "cuda_unfused";
    }
    return "unknown";
}

/*
 * 1 if two different index tuples of the tensor reach the same element. The dimensions of extent > 1, sorted
 * by stride, must each step past everything the smaller ones can reach; that is the usual sufficient test and
 * it accepts every layout made by permuting, slicing or padding a dense tensor.
 */
static int self_overlaps(const famask_tensor *t, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim)
{
    int64_t size[4] = {batch, seq, heads, head_dim};
    int64_t stride[4] = {t->stride_batch, t->stride_seq, t->stride_head, 1};
    int order[4], n = 0;
    for (int d = 0; d < 4; d++) {
        if (size[d] <= 1)
            continue;
        int p = n++;
        while (p > 0 && stride[order[p - 1]] > stride[d]) {
            order[p] = order[p - 1];
            p--;
        }
        order[p] = d;
    }
    int64_t reach = 0; /* largest offset the dimensions seen so far can reach */
    for (int k = 0; k < n; k++) {
        int d = order[k];
        if (stride[d] <= reach)
            return 1;
        if (stride[d] > (INT64_MAX - reach) / (size[d] - 1))
            return 0; /* the next dimension cannot step past this one anyway: no overlap possible above */
        reach += (size[d] - 1) * stride[d];
    }
    return 0;
}

static famask_status check_tensor(famask_ctx *ctx, const famask_attn_args *a, const tensor_desc *td, int output,
                                  size_t elem)
{
    const famask_tensor *t = td->t;
    if (!t->data)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "'%s.data' is NULL", td->name);
    if (t->stride_batch < 0 || t->stride_seq < 0 || t->stride_head < 0)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT,
                        "'%s' has a negative stride (batch %lld, seq %lld, head %lld); strides are in elements "
                        "and must be >= 0",
                        td->name, (long long)t->stride_batch, (long long)t->stride_seq, (long long)t->stride_head);
    if (output && self_overlaps(t, a->batch, td->seq, td->heads, a->head_dim))
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT,
                        "'%s' is an output whose strides (batch %lld, seq %lld, head %lld) make elements alias for "
                        "shape [%d, %lld, %lld, %d]; each row of head_dim elements needs its own memory",
                        td->name, (long long)t->stride_batch, (long long)t->stride_seq, (long long)t->stride_head,
                        a->batch, (long long)td->seq, (long long)td->heads, a->head_dim);
    if (a->device == FAMASK_DEVICE_CUDA) {
        int64_t step = CUDA_ALIGN_BYTES / (int64_t)elem;
        if ((uintptr_t)t->data % CUDA_ALIGN_BYTES)
            return fm_error(ctx, FAMASK_STATUS_UNSUPPORTED,
                            "'%s.data' is not %d-byte aligned, which the cuda kernels need", td->name,
                            CUDA_ALIGN_BYTES);
        if (t->stride_batch % step || t->stride_seq % step || t->stride_head % step)
            return fm_error(ctx, FAMASK_STATUS_UNSUPPORTED,
                            "'%s' strides (batch %lld, seq %lld, head %lld) must be multiples of %lld elements "
                            "(%d bytes) on the cuda device",
                            td->name, (long long)t->stride_batch, (long long)t->stride_seq, (long long)t->stride_head,
                            (long long)step, CUDA_ALIGN_BYTES);
    }
    return FAMASK_STATUS_OK;
}

static famask_status check_args(famask_ctx *ctx, const famask_mask *mask, const famask_attn_args *a, int backward)
{
    if (!a)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "'args' is NULL");
    if (!mask)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "'mask' is NULL");
    if (a->device != FAMASK_DEVICE_CPU && a->device != FAMASK_DEVICE_CUDA && a->device != FAMASK_DEVICE_CUDA_UNFUSED)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT,
                        "'device' %d is not a famask_device (cpu 0, cuda 1, cuda_unfused 2)", (int)a->device);
    if (backward && a->device == FAMASK_DEVICE_CUDA_UNFUSED)
        return fm_error(ctx, FAMASK_STATUS_UNSUPPORTED,
                        "'device' cuda_unfused has no backward (it is a forward checker); use cuda or cpu");

    /* Sizes. */
    if (a->batch < 1 || a->n_head < 1 || a->n_head_kv < 1)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT,
                        "'batch' (%d), 'n_head' (%d) and 'n_head_kv' (%d) must be at least 1", a->batch, a->n_head,
                        a->n_head_kv);
    if (a->seq_len_q < 1 || a->seq_len_k < 1)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "'seq_len_q' (%d) and 'seq_len_k' (%d) must be at least 1",
                        a->seq_len_q, a->seq_len_k);
    if (a->seq_len_q > FAMASK_MAX_SEQ_LEN || a->seq_len_k > FAMASK_MAX_SEQ_LEN)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "'seq_len_q' (%d) and 'seq_len_k' (%d) must not exceed %d",
                        a->seq_len_q, a->seq_len_k, FAMASK_MAX_SEQ_LEN);
    if (a->n_head % a->n_head_kv)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT,
                        "'n_head' (%d) must be a multiple of 'n_head_kv' (%d) (grouped-query attention)", a->n_head,
                        a->n_head_kv);
    if (a->head_dim < 1)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "'head_dim' (%d) must be positive", a->head_dim);
    int dim_ok = 0;
    for (size_t k = 0; k < sizeof head_dims / sizeof head_dims[0]; k++)
        dim_ok |= a->head_dim == head_dims[k];
    if (!dim_ok)
        return fm_error(ctx, FAMASK_STATUS_UNSUPPORTED,
                        "'head_dim' %d is not supported (supported: 32, 64, 96, 128, 256)", a->head_dim);

    /* Element type. */
    size_t elem = 0;
    switch (a->dtype) {
    case FAMASK_DTYPE_BF16:
    case FAMASK_DTYPE_F16:
        elem = 2;
        break;
    case FAMASK_DTYPE_F32:
        if (a->device == FAMASK_DEVICE_CPU) {
            elem = 4;
            break;
        }
        return fm_error(ctx, FAMASK_STATUS_UNSUPPORTED,
                        "'dtype' f32 is not supported on the %s device (supported: bf16, f16; f32 on the cpu)",
                        device_name(a->device));
    default:
        return fm_error(ctx, FAMASK_STATUS_UNSUPPORTED,
                        "'dtype' %d is not supported for attention (supported: bf16, f16 on cuda; bf16, f16, f32 on "
                        "the cpu)",
                        (int)a->dtype);
    }

    /* The mask against the arguments. */
    int bm = famask_mask_batch(mask), hm = famask_mask_heads(mask);
    if (bm != 1 && bm != a->batch)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "the mask has %d batch rows; it needs 1 or 'batch' (%d)",
                        bm, a->batch);
    if (hm != 1 && hm != a->n_head_kv && hm != a->n_head)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT,
                        "the mask has %d heads; it needs 1, 'n_head_kv' (%d) or 'n_head' (%d)", hm, a->n_head_kv,
                        a->n_head);
    if (famask_mask_seq_len_q(mask) != a->seq_len_q || famask_mask_seq_len_k(mask) != a->seq_len_k)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT,
                        "the mask is for seq_len_q %d and seq_len_k %d, but 'seq_len_q' is %d and 'seq_len_k' %d",
                        famask_mask_seq_len_q(mask), famask_mask_seq_len_k(mask), a->seq_len_q, a->seq_len_k);

    if (!isfinite(a->softmax_scale))
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT,
                        "'softmax_scale' must be finite (0 means 1/sqrt(head_dim))");

    /* Tensors: inputs first, then outputs, which must not alias themselves, each other or an input. */
    const tensor_desc fwd_in[] = {{"q", &a->q, a->seq_len_q, a->n_head},
                                  {"k", &a->k, a->seq_len_k, a->n_head_kv},
                                  {"v", &a->v, a->seq_len_k, a->n_head_kv}};
    const tensor_desc bwd_in[] = {{"q", &a->q, a->seq_len_q, a->n_head},
                                  {"k", &a->k, a->seq_len_k, a->n_head_kv},
                                  {"v", &a->v, a->seq_len_k, a->n_head_kv},
                                  {"o", &a->o, a->seq_len_q, a->n_head},
                                  {"d_o", &a->d_o, a->seq_len_q, a->n_head}};
    const tensor_desc fwd_out[] = {{"o", &a->o, a->seq_len_q, a->n_head}};
    const tensor_desc bwd_out[] = {{"dq", &a->dq, a->seq_len_q, a->n_head},
                                   {"dk", &a->dk, a->seq_len_k, a->n_head_kv},
                                   {"dv", &a->dv, a->seq_len_k, a->n_head_kv}};
    const tensor_desc *in = backward ? bwd_in : fwd_in, *out = backward ? bwd_out : fwd_out;
    int n_in = backward ? 5 : 3, n_out = backward ? 3 : 1;
    famask_status st;
    for (int k = 0; k < n_in; k++)
        if ((st = check_tensor(ctx, a, &in[k], 0, elem)))
            return st;
    for (int k = 0; k < n_out; k++)
        if ((st = check_tensor(ctx, a, &out[k], 1, elem)))
            return st;
    for (int k = 0; k < n_out; k++) {
        for (int m = 0; m < k; m++)
            if (out[k].t->data == out[m].t->data)
                return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT,
                                "'%s' and '%s' are outputs at the same address; outputs must not overlap", out[m].name,
                                out[k].name);
        for (int m = 0; m < n_in; m++)
            if (out[k].t->data == in[m].t->data)
                return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT,
                                "output '%s' is at the address of input '%s'; attention does not work in place",
                                out[k].name, in[m].name);
    }
    if (backward && !a->lse)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT,
                        "'lse' is NULL; the backward needs the forward's log-sum-exp [batch, n_head, seq_len_q]");
    return FAMASK_STATUS_OK;
}

static famask_status run(famask_ctx *ctx, famask_mask *mask, const famask_attn_args *args, int backward)
{
    famask_status st = check_args(ctx, mask, args, backward);
    if (st)
        return st;
    famask_attn_args a = *args;
    if (a.softmax_scale == 0.0f)
        a.softmax_scale = (float)(1.0 / sqrt((double)a.head_dim));
    switch (a.device) {
    case FAMASK_DEVICE_CPU:
        return backward ? fm_ref_attn_bwd(ctx, mask, &a) : fm_ref_attn_fwd(ctx, mask, &a);
    case FAMASK_DEVICE_CUDA:
        return fm_cuda_attn(ctx, mask, &a, backward);
    case FAMASK_DEVICE_CUDA_UNFUSED:
        return fm_cuda_unfused_fwd(ctx, mask, &a); /* backward refused by check_args */
    }
    return fm_error(ctx, FAMASK_STATUS_INTERNAL, "unreachable device %d", (int)a.device);
}

famask_status famask_attn_fwd(famask_ctx *ctx, famask_mask *mask, const famask_attn_args *args)
{
    return run(ctx, mask, args, 0);
}

famask_status famask_attn_bwd(famask_ctx *ctx, famask_mask *mask, const famask_attn_args *args)
{
    return run(ctx, mask, args, 1);
}
