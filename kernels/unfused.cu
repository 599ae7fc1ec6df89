/*
 * unfused.cu: standard (unfused) attention on cuBLAS, the FAMASK_DEVICE_CUDA_UNFUSED device.
 *
 * The algorithm the FlashAttention paper calls standard attention, done in tiles of query rows so that the
 * fp32 score tile stays within a bounded workspace:
 *   S = Q K^T            cublasGemmStridedBatchedEx, bf16/fp16 in, fp32 out, batched over heads
 *   P = softmax_mask(S)  one kernel: reads the mask's column bounds, writes P in the input dtype and lse
 *   O = P V              cublasGemmStridedBatchedEx, fp32 accumulation, written in the output dtype
 * Shapes: q, o [B, Nq, H, D] and k, v [B, Nk, H_kv, D] through strides (so [B, H, N, D] works too); lse
 * [B, H, Nq] fp32; the mask [batch_m, heads_m, Nk, 4]. It is the checker for sizes the CPU reference cannot
 * reach and the "standard attention" row of the benchmark, so it favours plainness over speed.
 *
 * cuBLAS sees row-major matrices as column-major transposes: S^T (Nk x rows) = K Q^T and O^T (D x rows) =
 * V^T P^T, which is why K is passed transposed and every leading dimension is a row stride.
 */
#include "cuda-check.cuh"
#include "kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

namespace
{

constexpr int kThreads = 256; /* softmax: one block per query row */
constexpr int kWarps = kThreads / 32;
constexpr int kMaxDevices = 64;

/* Per device: the cuBLAS handle and a grow-only workspace, kept across calls because creating a handle or
 * allocating a gigabyte costs more than a whole attention call at benchmark sizes. `done` marks the end of the
 * last call's use of the workspace, so that a call on another stream cannot overwrite it early. They live in the
 * context (ctx->scratch, made on first use, released by famask_ctx_free through scratch_free): a context is used
 * by one thread at a time, so no lock is needed, and nothing outlives the context. */
struct Workspace {
    int ready;
    cublasHandle_t handle;
    cudaEvent_t done;
    void *buf;
    size_t size;
};

struct Scratch {
    Workspace ws[kMaxDevices];
};

/* ctx->scratch_free: waits for the last use of each workspace, then releases it on its own device. Errors are
 * ignored: this runs from famask_ctx_free, which cannot report them. */
void scratch_free(void *p)
{
    Scratch *sc = static_cast<Scratch *>(p);
    int current = -1;
    if (!sc)
        return;
    if (cudaGetDevice(&current) != cudaSuccess)
        current = -1;
    for (int dev = 0; dev < kMaxDevices; dev++) {
        Workspace *w = &sc->ws[dev];
        if (!w->ready && !w->buf)
            continue;
        if (cudaSetDevice(dev) != cudaSuccess)
            continue;
        if (w->ready) {
            (void)cudaEventSynchronize(w->done);
            (void)cudaEventDestroy(w->done);
            (void)cublasDestroy(w->handle);
        }
        if (w->buf)
            (void)cudaFree(w->buf);
    }
    if (current >= 0)
        (void)cudaSetDevice(current);
    (void)cudaGetLastError();
    free(sc);
}

__device__ __forceinline__ bool visible(int4 c, int i)
{
    return !((c.x <= i && i < c.y) || (c.z <= i && i < c.w));
}

/* (m, l) pairs in log2 units: l = sum of exp2(x - m) over the visible entries seen. */
__device__ __forceinline__ void merge(float &m, float &l, float m2, float l2)
{
    float mx = fmaxf(m, m2);
    l = mx == -INFINITY ? 0.f : l * exp2f(m - mx) + l2 * exp2f(m2 - mx);
    m = mx;
}

template <typename T> __device__ __forceinline__ unsigned short to_bits(float x);
template <> __device__ __forceinline__ unsigned short to_bits<__nv_bfloat16>(float x)
{
    return __bfloat16_as_ushort(__float2bfloat16(x));
}
template <> __device__ __forceinline__ unsigned short to_bits<__half>(float x)
{
    return __half_as_ushort(__float2half(x));
}

/* Grid (rows, batch items). Row r of item z is query row r0 + r; its scores are s_all[(z * rows + r) * ld + j]
 * for j < nk, and ld is a multiple of 8 so that rows of S (float4) and P (4 x 16 bit) stay aligned. Masked
 * entries get P = 0; a row with no visible key gets P = 0 and lse = -inf. */
template <typename T>
__global__ void __launch_bounds__(kThreads)
    masked_softmax(const float *__restrict__ s_all, unsigned short *__restrict__ p_all, int64_t ld, int rows, int nk,
                   int r0, float scale_log2, const int32_t *__restrict__ bounds, int64_t bounds_stride,
                   float *__restrict__ lse, int64_t lse_stride)
{
    const int64_t row = (int64_t)blockIdx.y * rows + blockIdx.x;
    const float *s = s_all + row * ld;
    unsigned short *p = p_all + row * ld;
    const int4 *bnd = reinterpret_cast<const int4 *>(bounds + blockIdx.y * bounds_stride);
    const int i = r0 + (int)blockIdx.x;

    /* Pass 1: running max and sum over the visible entries (online, one read of S). */
    float m = -INFINITY, l = 0.f;
    for (int j = 4 * threadIdx.x; j < nk; j += 4 * kThreads) {
        const float4 x4 = *reinterpret_cast<const float4 *>(s + j);
        const float x[4] = {x4.x, x4.y, x4.z, x4.w};
#pragma unroll
        for (int q = 0; q < 4; q++) {
            if (j + q < nk && visible(bnd[j + q], i)) {
                float t = x[q] * scale_log2;
                if (t > m) {
                    l = l * exp2f(m - t) + 1.f;
                    m = t;
                } else {
                    l += exp2f(t - m);
                }
            }
        }
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, off), l2 = __shfl_xor_sync(0xffffffffu, l, off);
        merge(m, l, m2, l2);
    }
    __shared__ float sm[kWarps], sl[kWarps];
    if (threadIdx.x % 32 == 0) {
        sm[threadIdx.x / 32] = m;
        sl[threadIdx.x / 32] = l;
    }
    __syncthreads();
    m = sm[0];
    l = sl[0];
#pragma unroll
    for (int w = 1; w < kWarps; w++)
        merge(m, l, sm[w], sl[w]);

    /* Pass 2: normalised probabilities in the input dtype, zero where masked. */
    const float inv = m == -INFINITY ? 0.f : 1.f / l;
    for (int j = 4 * threadIdx.x; j < nk; j += 4 * kThreads) {
        const float4 x4 = *reinterpret_cast<const float4 *>(s + j);
        const float x[4] = {x4.x, x4.y, x4.z, x4.w};
        unsigned short b[4];
#pragma unroll
        for (int q = 0; q < 4; q++) {
            float v = 0.f;
            if (j + q < nk && visible(bnd[j + q], i))
                v = exp2f(x[q] * scale_log2 - m) * inv;
            b[q] = to_bits<T>(v);
        }
        uint2 packed;
        packed.x = (unsigned)b[0] | ((unsigned)b[1] << 16);
        packed.y = (unsigned)b[2] | ((unsigned)b[3] << 16);
        *reinterpret_cast<uint2 *>(p + j) = packed;
    }
    if (lse && threadIdx.x == 0)
        lse[blockIdx.y * lse_stride + blockIdx.x] = m == -INFINITY ? -INFINITY : (m + log2f(l)) * 0.69314718055994531f;
}

famask_status check_args(famask_ctx *ctx, const famask_mask *mask, const famask_attn_args *a)
{
    if (a->dtype != FAMASK_DTYPE_BF16 && a->dtype != FAMASK_DTYPE_F16)
        return fm_error(ctx, FAMASK_STATUS_UNSUPPORTED,
                        "unfused cuda attention: dtype %d is not supported (use bf16 or f16)", (int)a->dtype);
    if (a->batch < 1 || a->n_head < 1 || a->n_head_kv < 1 || a->seq_len_q < 1 || a->seq_len_k < 1 || a->head_dim < 1)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT,
                        "unfused cuda attention: every size must be positive (batch %d, n_head %d, n_head_kv %d, "
                        "seq_len_q %d, seq_len_k %d, head_dim %d)",
                        a->batch, a->n_head, a->n_head_kv, a->seq_len_q, a->seq_len_k, a->head_dim);
    if (a->n_head % a->n_head_kv)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "'n_head' %d is not a multiple of 'n_head_kv' %d",
                        a->n_head, a->n_head_kv);
    if (mask->seq_len_q != a->seq_len_q || mask->seq_len_k != a->seq_len_k ||
        (mask->batch_m != 1 && mask->batch_m != a->batch) ||
        (mask->heads_m != 1 && mask->heads_m != a->n_head && mask->heads_m != a->n_head_kv))
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT,
                        "mask shape [%d, %d, %d x %d] does not fit batch %d, n_head %d, n_head_kv %d, seq_len_q %d, "
                        "seq_len_k %d",
                        mask->batch_m, mask->heads_m, mask->seq_len_q, mask->seq_len_k, a->batch, a->n_head,
                        a->n_head_kv, a->seq_len_q, a->seq_len_k);
    if (!a->q.data || !a->k.data || !a->v.data || !a->o.data)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "unfused cuda attention: q, k, v and o are required");
    /* cuBLAS takes leading dimensions as int. */
    const famask_tensor *t[4] = {&a->q, &a->k, &a->v, &a->o};
    const char *name[4] = {"q", "k", "v", "o"};
    for (int x = 0; x < 4; x++)
        if (t[x]->stride_seq < a->head_dim || t[x]->stride_seq > INT32_MAX)
            return fm_error(ctx, FAMASK_STATUS_UNSUPPORTED,
                            "unfused cuda attention: '%s' seq stride %lld must lie in [head_dim, 2^31)", name[x],
                            (long long)t[x]->stride_seq);
    return FAMASK_STATUS_OK;
}

/* The workspace of the current device in scratch sc, at least `need` bytes (a previous, smaller one is freed
 * after its last use completes). */
famask_status workspace_get(famask_ctx *ctx, Scratch *sc, size_t need, Workspace **out)
{
    famask_status st = FAMASK_STATUS_OK;
    int dev = 0;
    Workspace *w = NULL;
    FM_CUDA(ctx, cudaGetDevice(&dev));
    if (dev < 0 || dev >= kMaxDevices) {
        st = fm_error(ctx, FAMASK_STATUS_UNSUPPORTED, "unfused cuda attention: device %d (at most %d devices)", dev,
                      kMaxDevices);
        goto fail;
    }
    w = &sc->ws[dev];
    if (!w->ready) {
        FM_CUBLAS(ctx, cublasCreate(&w->handle));
        cudaError_t e = cudaEventCreateWithFlags(&w->done, cudaEventDisableTiming);
        if (e != cudaSuccess) {
            (void)cublasDestroy(w->handle);
            FM_CUDA(ctx, e);
        }
        w->ready = 1;
    }
    if (w->size < need) {
        FM_CUDA(ctx, cudaEventSynchronize(w->done));
        if (w->buf)
            FM_CUDA(ctx, cudaFree(w->buf));
        w->buf = NULL;
        w->size = 0;
        cudaError_t e = cudaMalloc(&w->buf, need);
        if (e != cudaSuccess) {
            (void)cudaGetLastError(); /* an allocation failure is not sticky; clear it for the caller */
            w->buf = NULL;
            st = fm_error(ctx, e == cudaErrorMemoryAllocation ? FAMASK_STATUS_NO_MEMORY : FAMASK_STATUS_CUDA,
                          "cuda: %s (workspace of %zu bytes for unfused attention)", cudaGetErrorString(e), need);
            goto fail;
        }
        w->size = need;
    }
    *out = w;
    return FAMASK_STATUS_OK;
fail:
    *out = NULL;
    return st;
}

} /* namespace */

/* Bytes of fp32 S per tile of query rows (P adds half of that): 1 GiB keeps the workspace bounded at any size;
 * tests lower it to exercise the tiling on small problems. */
size_t fm_cuda_unfused_tile_bytes = (size_t)1 << 30;

extern "C" famask_status fm_cuda_unfused_fwd(famask_ctx *ctx, famask_mask *mask, const famask_attn_args *a)
{
    famask_status st = check_args(ctx, mask, a);
    if (st)
        return st;

    const int B = a->batch, H = a->n_head, Hkv = a->n_head_kv, Nq = a->seq_len_q, Nk = a->seq_len_k, D = a->head_dim;
    const int g = H / Hkv;
    const cudaStream_t stream = (cudaStream_t)a->stream;
    const cudaDataType_t dt = a->dtype == FAMASK_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_16F;
    const size_t esize = 2;
    const float scale = a->softmax_scale != 0.f ? a->softmax_scale : 1.f / sqrtf((float)D);
    const float scale_log2 = scale * 1.4426950408889634f;
    const float one = 1.f, zero = 0.f;

    /* One strided batch covers heads that are evenly spaced: with Hkv >= g, the Hkv query heads hk * g + t for a
     * fixed t (each with its own K/V head); otherwise the g query heads of one K/V head (K/V stride 0). */
    const int over_kv = Hkv >= g;
    const int nb = over_kv ? Hkv : g, n_outer = over_kv ? g : Hkv;
    const long long q_bs = (over_kv ? g : 1) * a->q.stride_head, o_bs = (over_kv ? g : 1) * a->o.stride_head;
    const long long k_bs = over_kv ? a->k.stride_head : 0, v_bs = over_kv ? a->v.stride_head : 0;
    const long long lse_bs = (long long)(over_kv ? g : 1) * Nq;
    /* Mask head of query head h: h, h / g or 0 (see famask_attn_fwd); affine in the batch item for both cases. */
    const int64_t col = (int64_t)Nk * 4;
    int64_t m_bs = 0;
    if (mask->heads_m == H && H > 1)
        m_bs = (over_kv ? g : 1) * col;
    else if (mask->heads_m == Hkv && Hkv > 1)
        m_bs = over_kv ? col : 0;

    const int64_t ld = ((int64_t)Nk + 7) / 8 * 8;
    const size_t per_row = (size_t)nb * ld * sizeof(float);
    const size_t fit = fm_cuda_unfused_tile_bytes / per_row;
    int rows_tile = fit > (size_t)Nq ? Nq : (int)fit;
    if (rows_tile < 1)
        rows_tile = 1;

    const int32_t *dbounds = NULL;
    Scratch *sc = ctx ? static_cast<Scratch *>(ctx->scratch) : NULL;
    int own_scratch = 0;
    Workspace *w = NULL;
    float *S = NULL;
    unsigned short *P = NULL;
    size_t s_bytes = 0;
    st = fm_cuda_mask_device(ctx, mask, 0, a->stream, &dbounds, NULL);
    if (st)
        return st;
    if (ctx && ctx->scratch && ctx->scratch_free != scratch_free)
        return fm_error(ctx, FAMASK_STATUS_INTERNAL, "the context's device scratch belongs to another module");
    if (!sc) {
        sc = static_cast<Scratch *>(fm_calloc(ctx, 1, sizeof *sc));
        if (!sc)
            return FAMASK_STATUS_NO_MEMORY;
        if (ctx) {
            ctx->scratch = sc;
            ctx->scratch_free = scratch_free;
        } else {
            own_scratch = 1; /* no context to keep it in: released at the end of this call */
        }
    }
    s_bytes = ((size_t)nb * rows_tile * ld * sizeof(float) + 255) / 256 * 256;
    st = workspace_get(ctx, sc, s_bytes + (size_t)nb * rows_tile * ld * esize, &w);
    if (st)
        goto fail;
    S = (float *)w->buf;
    P = (unsigned short *)((char *)w->buf + s_bytes);
    FM_CUDA(ctx, cudaStreamWaitEvent(stream, w->done, 0));
    FM_CUBLAS(ctx, cublasSetStream(w->handle, stream));

    for (int b = 0; b < B; b++) {
        for (int outer = 0; outer < n_outer; outer++) {
            const int h0 = over_kv ? outer : outer * g; /* query head of batch item 0 */
            const int hk0 = h0 / g;
            int hm0 = 0;
            if (mask->heads_m == H)
                hm0 = h0;
            else if (mask->heads_m == Hkv)
                hm0 = hk0;
            const int bm = mask->batch_m == 1 ? 0 : b;
            const int32_t *bnd = dbounds + ((int64_t)bm * mask->heads_m + hm0) * col;
            for (int r0 = 0; r0 < Nq; r0 += rows_tile) {
                const int rows = Nq - r0 < rows_tile ? Nq - r0 : rows_tile;
                const char *qp = (const char *)a->q.data +
                                 (b * a->q.stride_batch + h0 * a->q.stride_head + r0 * a->q.stride_seq) * esize;
                const char *kp = (const char *)a->k.data + (b * a->k.stride_batch + hk0 * a->k.stride_head) * esize;
                const char *vp = (const char *)a->v.data + (b * a->v.stride_batch + hk0 * a->v.stride_head) * esize;
                char *op =
                    (char *)a->o.data + (b * a->o.stride_batch + h0 * a->o.stride_head + r0 * a->o.stride_seq) * esize;
                FM_CUBLAS(ctx, cublasGemmStridedBatchedEx(w->handle, CUBLAS_OP_T, CUBLAS_OP_N, Nk, rows, D, &one, kp,
                                                          dt, (int)a->k.stride_seq, k_bs, qp, dt, (int)a->q.stride_seq,
                                                          q_bs, &zero, S, CUDA_R_32F, (int)ld, (long long)rows * ld, nb,
                                                          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
                float *lse = a->lse ? a->lse + ((int64_t)b * H + h0) * Nq + r0 : NULL;
                dim3 grid((unsigned)rows, (unsigned)nb);
                if (a->dtype == FAMASK_DTYPE_BF16)
                    masked_softmax<__nv_bfloat16>
                        <<<grid, kThreads, 0, stream>>>(S, P, ld, rows, Nk, r0, scale_log2, bnd, m_bs, lse, lse_bs);
                else
                    masked_softmax<__half>
                        <<<grid, kThreads, 0, stream>>>(S, P, ld, rows, Nk, r0, scale_log2, bnd, m_bs, lse, lse_bs);
                FM_CUDA_LAUNCHED(ctx);
                FM_CUBLAS(ctx, cublasGemmStridedBatchedEx(w->handle, CUBLAS_OP_N, CUBLAS_OP_N, D, rows, Nk, &one, vp,
                                                          dt, (int)a->v.stride_seq, v_bs, P, dt, (int)ld,
                                                          (long long)rows * ld, &zero, op, dt, (int)a->o.stride_seq,
                                                          o_bs, nb, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
            }
        }
    }
    FM_CUDA(ctx, cudaEventRecord(w->done, stream));
    if (own_scratch)
        scratch_free(sc); /* waits for the work queued above */
    return FAMASK_STATUS_OK;
fail:
    if (w)
        (void)cudaEventRecord(w->done, stream);
    if (own_scratch)
        scratch_free(sc);
    return st;
}
