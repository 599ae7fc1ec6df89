/*
 * fwd.cu: the fused attention forward with FlashMask tile skipping (FlashAttention-2 style, mma.sync, sm_80+).
 *
 * Shapes: q, o [batch, seq_len_q, n_head, head_dim]; k, v [batch, seq_len_k, n_head_kv, head_dim], any strides
 * with the last dimension contiguous (so [B, N, H, D] and [B, H, N, D] both work); lse fp32 [batch, n_head,
 * seq_len_q], natural log. Mask vectors [batch_m, heads_m, seq_len_k, 4] with per-key-block summaries
 * (kernels/mask-device.cu).
 *
 * One CTA of 4 warps per (query tile of BR rows, head, batch); each warp owns BR / 4 rows (one or two m16
 * slices). Per key block of BC columns the CTA classifies the tile with fm_tile_classify on the block's summary:
 * skipped blocks are never loaded (the search for the next live block runs before the prefetch, 32 candidates
 * at a time with a warp ballot), unmasked blocks do no per-element mask work, partial blocks (and the ragged last
 * block) load their BC column bounds beside K and mask element-wise. K, V and bounds are double-buffered with
 * cp.async (the next live block streams in while the current one is computed). Online softmax in base 2 with
 * scale * log2(e) folded into one FFMA; the O rescale is skipped when no row of the warp found a larger max; a
 * row whose keys are all masked so far keeps max -inf and is guarded so that no -inf - -inf appears; such a row
 * ends with o = 0 and lse = -inf. o leaves through shared memory in 16-byte row chunks.
 *
 * GQA/MQA: query head h reads kv head h / (n_head / n_head_kv); mask head is 0 (heads_m 1), h (heads_m n_head)
 * or the kv head (heads_m n_head_kv); mask batch row 0 or b. Tiles (BR x BC): 128 x 64 for head dims 64-128,
 * 128 x 128 for 32, 64 x 64 for 256.
 *
 * softmax_scale may have either sign (0: 1 / sqrt(head_dim)). The row max is taken on the unscaled scores, which
 * is right only for a positive scale; for a negative one the host sets negate_q and passes -scale, and the CTA
 * flips the sign bits of its Q tile in shared memory once before the loop: S' = (-Q) K^T = -S exactly (bf16 and
 * fp16 negate exactly, and round-to-nearest products and sums are symmetric in sign), and (-scale) S' = scale S.
 * The positive case pays one uniform branch per CTA; no second instantiation. The Hopper kernel
 * (kernels/fwd-sm90.cu) takes the signed scale instead and, for a negative one, the row minimum.
 */
#include "cuda-check.cuh"
#include "fwd.cuh"

/* Shared-memory row width: rows are whole groups of eight 16-byte chunks (see fm_swz). */
template <int D> struct fwd_row {
    static constexpr int DS = D <= 64 ? 64 : (D <= 128 ? 128 : 256);
};

template <int D, int BR, int BC> constexpr int fwd_smem_bytes()
{
    return (BR + 4 * BC) * fwd_row<D>::DS * 2 + 2 * BC * 16;
}

/* cp.async of `rows` rows of D elements from global (row stride `stride`, rows past n_valid zero-filled) into a
 * swizzled tile. */
template <int D, int ROWS>
__device__ __forceinline__ void load_tile(uint32_t s, const uint16_t *g, int64_t stride, int row0, int n_valid)
{
    constexpr int DS = fwd_row<D>::DS, CH = D / 8;
    /* Loops are not unrolled: an unrolled copy keeps one 64-bit address per chunk live across the main loop,
     * which costs the registers the accumulators need. */
    if constexpr (128 % CH == 0 && (128 / CH) % 8 == 0) {
        /* Thread tid copies chunk tid % CH of rows tid / CH + STEP * i; the row's swizzle (r & 7) is the same for
         * every i because STEP is a multiple of 8. */
        constexpr int STEP = 128 / CH;
        static_assert(ROWS % STEP == 0 && STEP % 8 == 0, "tile rows must split evenly over 128 threads");
        const int c = threadIdx.x % CH;
        int r = threadIdx.x / CH;
        const uint16_t *src = g + (int64_t)(row0 + r) * stride + c * 8;
        uint32_t dst = s + 2 * fm_swz<DS>(r, c);
#pragma unroll 1
        for (int i = 0; i < ROWS / STEP; i++) {
            fm_cp_async16(dst, row0 + r < n_valid ? src : g, row0 + r < n_valid ? 16 : 0);
            r += STEP;
            src += STEP * stride;
            dst += STEP * DS * 2;
        }
    } else {
        static_assert((ROWS * CH) % 128 == 0, "tile chunks must split evenly over 128 threads");
#pragma unroll 1
        for (int i = threadIdx.x; i < ROWS * CH; i += 128) {
            int r = i / CH, c = i % CH;
            bool ok = row0 + r < n_valid;
            fm_cp_async16(s + 2 * fm_swz<DS>(r, c), ok ? g + (int64_t)(row0 + r) * stride + c * 8 : g, ok ? 16 : 0);
        }
    }
}

template <typename T, int D, int BR, int BC>
/* Head dim 64: capping registers at 170 for 3 CTAs per SM (a few bytes spill) measured 297 TFLOP/s against
 * 256 at 2 CTAs (H200, full mask, 8K). */
#ifndef FAMASK_FWD_D64_CTAS
#define FAMASK_FWD_D64_CTAS 3
#endif
__global__ void __launch_bounds__(128, D == 64 ? FAMASK_FWD_D64_CTAS : 1) fwd_kernel(const fwd_params p)
{
    using dt = fm_dtype<T>;
    constexpr int DS = fwd_row<D>::DS;
    constexpr int MT = BR / 64; /* m16 slices per warp */
    constexpr int NT = BC / 8;  /* n8 tiles of S */
    constexpr int DT = D / 8;   /* n8 tiles of O */
    static_assert(D % 32 == 0 && BC % 16 == 0 && (BR == 64 || BR == 128), "unsupported tile shape");

    extern __shared__ __align__(128) unsigned char smem[];
    const uint32_t sQ = fm_smem_addr(smem);
    const uint32_t sK = sQ + BR * DS * 2;
    const uint32_t sV = sK + 2 * BC * DS * 2;
    const uint32_t sB = sV + 2 * BC * DS * 2;
    const int4 *sBounds = reinterpret_cast<const int4 *>(smem + (BR + 4 * BC) * DS * 2);

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
    /* ldmatrix row addresses (see fm_swz_lane): Q rows of this warp, K rows by n tile pair, V rows by k step */
    const uint32_t q_lane = fm_swz_lane<DS>(warp * 16 * MT + lane % 16, lane / 16);
    const uint32_t k_lane = fm_swz_lane<DS>((lane / 16) * 8 + lane % 8, (lane / 8) % 2);
    const uint32_t v_lane = fm_swz_lane<DS>(((lane / 8) % 2) * 8 + lane % 8, lane / 16);
    /* Last query tiles first: under causal-like masks they have the most key blocks, so the long CTAs start
     * early and the short ones fill the tail. */
    const int qt = gridDim.x - 1 - blockIdx.x;
    const int h = blockIdx.y, b = blockIdx.z;
    const int hk = h / p.group;
    const int mb = p.batch_m == 1 ? 0 : b;
    const int mh = p.heads_m == 1 ? 0 : (p.heads_m == p.n_head ? h : hk);
    const int r0 = qt * BR, r1 = min(r0 + BR, p.seq_len_q);
    const int n_kb = (p.seq_len_k + BC - 1) / BC;

    const uint16_t *gq = static_cast<const uint16_t *>(p.q) + b * p.q_b + h * p.q_h;
    const uint16_t *gk = static_cast<const uint16_t *>(p.k) + b * p.k_b + hk * p.k_h;
    const uint16_t *gv = static_cast<const uint16_t *>(p.v) + b * p.v_b + hk * p.v_h;
    const int64_t mask_bh = (int64_t)mb * p.heads_m + mh;
    const fm_block_summary *sums = p.summaries + mask_bh * n_kb;
    const int32_t *gb = p.bounds + mask_bh * p.seq_len_k * 4;

    float acc[MT][DT][4];
    float row_max[MT][2], row_sum[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
#pragma unroll
        for (int d = 0; d < DT; d++)
            acc[mt][d][0] = acc[mt][d][1] = acc[mt][d][2] = acc[mt][d][3] = 0.f;
        row_max[mt][0] = row_max[mt][1] = -INFINITY;
        row_sum[mt][0] = row_sum[mt][1] = 0.f;
    }

    /* Loads block kb's K, V and (when it needs element-wise masking) its column bounds into stage st. */
    auto load_block = [&](int kb, int cls, int st) {
        const int c0 = kb * BC;
        load_tile<D, BC>(sK + st * BC * DS * 2, gk, p.k_s, c0, p.seq_len_k);
        load_tile<D, BC>(sV + st * BC * DS * 2, gv, p.v_s, c0, p.seq_len_k);
        if (cls == FM_TILE_PARTIAL || c0 + BC > p.seq_len_k) {
            for (int c = tid; c < BC; c += 128) {
                bool ok = c0 + c < p.seq_len_k;
                fm_cp_async16(sB + (st * BC + c) * 16, ok ? gb + 4 * (int64_t)(c0 + c) : gb, ok ? 16 : 0);
            }
        }
    };

    int cls;
    live_scan scan = {-64, 0u, 0u};
    int kb = next_live(scan, sums, NULL, 0, n_kb, r0, r1, &cls);
    if (kb < n_kb) {
        load_tile<D, BR>(sQ, gq, p.q_s, r0, p.seq_len_q);
        load_block(kb, cls, 0);
    }
    fm_cp_async_commit();
    if (p.negate_q && kb < n_kb) {
        /* Q landed (this thread's copies: wait; everyone's: barrier), then flip every sign bit. The loop's first
         * barrier orders these writes before the first ldmatrix of Q. */
        fm_cp_async_wait<0>();
        __syncthreads();
        uint4 *q4 = reinterpret_cast<uint4 *>(smem);
#pragma unroll 1
        for (int i = tid; i < BR * DS / 8; i += 128) {
            uint4 x = q4[i];
            x.x ^= 0x80008000u;
            x.y ^= 0x80008000u;
            x.z ^= 0x80008000u;
            x.w ^= 0x80008000u;
            q4[i] = x;
        }
    }

    int stage = 0;
    while (kb < n_kb) {
        const int cur_cls = cls;
        const int c0 = kb * BC;
        const int next = next_live(scan, sums, NULL, kb + 1, n_kb, r0, r1, &cls);
        if (next < n_kb)
            load_block(next, cls, stage ^ 1);
        fm_cp_async_commit();
        fm_cp_async_wait<1>();
        __syncthreads();

        /* S = Q K^T for this warp's rows */
        float s[MT][NT][4];
        const uint32_t kst = sK + stage * BC * DS * 2;
#pragma unroll
        for (int ks = 0; ks < D / 16; ks++) {
            const uint32_t ko = fm_swz_step(k_lane, 2 * ks);
            uint32_t a[MT][4];
            const uint32_t qo = fm_swz_step(q_lane, 2 * ks);
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
                fm_ldmatrix_x4(a[mt], sQ + qo + mt * 16 * DS * 2);
#pragma unroll
            for (int np = 0; np < NT / 2; np++) {
                uint32_t bk[4];
                fm_ldmatrix_x4(bk, kst + ko + np * 16 * DS * 2);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    /* the first k step writes S without reading it: no zeroing of S per block */
                    if (ks == 0) {
                        dt::mma_zero(s[mt][2 * np], a[mt], bk[0], bk[1]);
                        dt::mma_zero(s[mt][2 * np + 1], a[mt], bk[2], bk[3]);
                    } else {
                        dt::mma(s[mt][2 * np], a[mt], bk[0], bk[1]);
                        dt::mma(s[mt][2 * np + 1], a[mt], bk[2], bk[3]);
                    }
                }
            }
        }

        /* Element-wise mask: partial blocks and the ragged last block only. Branch-free: row i is in [s, e) iff
         * (unsigned)(i - s) < (unsigned)(e - s); columns past seq_len_k are masked in every row. */
        if (cur_cls == FM_TILE_PARTIAL || c0 + BC > p.seq_len_k) {
            const int4 *bnd = sBounds + stage * BC;
            const int row_base = r0 + warp * 16 * MT + g;
#pragma unroll
            for (int n = 0; n < NT; n++) {
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int cl = n * 8 + 2 * t + e;
                    const int4 v = bnd[cl];
                    const bool col_ok = c0 + cl < p.seq_len_k;
                    const unsigned a_lt = col_ok ? (unsigned)(row_base - v.x) : 0u;
                    const unsigned n_lt = col_ok ? (unsigned)(v.y - v.x) : 0x7fffffffu;
                    const unsigned a_ut = (unsigned)(row_base - v.z), n_ut = (unsigned)(v.w - v.z);
#pragma unroll
                    for (int mt = 0; mt < MT; mt++) {
#pragma unroll
                        for (int hh = 0; hh < 2; hh++) {
                            const unsigned off = mt * 16 + 8 * hh;
                            const bool masked = a_lt + off < n_lt || a_ut + off < n_ut;
                            s[mt][n][2 * hh + e] = masked ? -INFINITY : s[mt][n][2 * hh + e];
                        }
                    }
                }
            }
        }

        /* Online softmax (base 2). The O rescale (the largest part of the softmax's arithmetic) is skipped when
         * no row of the warp found a larger max, which after the first few blocks is the common case. */
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
#pragma unroll
            for (int hh = 0; hh < 2; hh++) {
                float m2[NT];
#pragma unroll
                for (int n = 0; n < NT; n++)
                    m2[n] = fmaxf(s[mt][n][2 * hh], s[mt][n][2 * hh + 1]);
#pragma unroll
                for (int w = 1; w < NT; w *= 2)
#pragma unroll
                    for (int n = 0; n + w < NT; n += 2 * w)
                        m2[n] = fmaxf(m2[n], m2[n + w]);
                const float mx = fm_quad_max(m2[0]) * p.scale_log2;
                const float m_old = row_max[mt][hh];
                const float m_new = fmaxf(m_old, mx);
                /* All keys of this row masked so far: subtract 0 instead of -inf (exp2(-inf) = 0 then). */
                const float m_use = m_new == -INFINITY ? 0.f : m_new;
                const float alpha = fm_exp2(m_old - m_use);
                row_max[mt][hh] = m_new;
                float sum = 0.f;
#pragma unroll
                for (int n = 0; n < NT; n++) {
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        float pv = fm_exp2(fmaf(s[mt][n][2 * hh + e], p.scale_log2, -m_use));
                        s[mt][n][2 * hh + e] = pv;
                        sum += pv;
                    }
                }
                row_sum[mt][hh] = row_sum[mt][hh] * alpha + sum;
                /* Rows whose max did not grow have alpha = 1 (exp2(0)); rows empty so far have acc = 0. */
                if (__any_sync(0xffffffffu, m_new > m_old)) {
#pragma unroll
                    for (int d = 0; d < DT; d++) {
                        acc[mt][d][2 * hh] *= alpha;
                        acc[mt][d][2 * hh + 1] *= alpha;
                    }
                }
            }
        }

        /* O += P V: the S accumulator is already in A-operand layout. */
        const uint32_t vst = sV + stage * BC * DS * 2;
#pragma unroll
        for (int kk = 0; kk < BC / 16; kk++) {
            uint32_t a[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                a[mt][0] = dt::pack(s[mt][2 * kk][0], s[mt][2 * kk][1]);
                a[mt][1] = dt::pack(s[mt][2 * kk][2], s[mt][2 * kk][3]);
                a[mt][2] = dt::pack(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
                a[mt][3] = dt::pack(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
            }
#pragma unroll
            for (int dp = 0; dp < DT / 2; dp++) {
                uint32_t bv[4];
                fm_ldmatrix_x4_trans(bv, vst + fm_swz_step(v_lane, 2 * dp) + kk * 16 * DS * 2);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    dt::mma(acc[mt][2 * dp], a[mt], bv[0], bv[1]);
                    dt::mma(acc[mt][2 * dp + 1], a[mt], bv[2], bv[3]);
                }
            }
        }
        /* The next iteration's prefetch overwrites this stage. */
        __syncthreads();
        stage ^= 1;
        kb = next;
    }
    fm_cp_async_wait<0>();

    /* Epilogue: normalise; o goes through shared memory (the Q tile, no longer read: the loop ended on a barrier)
     * so that global stores are whole 16-byte chunks of a row rather than 4-byte pieces; lse directly. */
    uint16_t *so = reinterpret_cast<uint16_t *>(smem);
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            const int r = warp * 16 * MT + mt * 16 + g + 8 * hh;
            const float l = fm_quad_sum(row_sum[mt][hh]);
            const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
            for (int d = 0; d < DT; d++)
                *reinterpret_cast<uint32_t *>(so + fm_swz<DS>(r, d) + 2 * t) =
                    dt::pack(acc[mt][d][2 * hh] * inv, acc[mt][d][2 * hh + 1] * inv);
            if (p.lse && t == 0 && r0 + r < p.seq_len_q)
                p.lse[((int64_t)b * p.n_head + h) * p.seq_len_q + r0 + r] =
                    l > 0.f ? (row_max[mt][hh] + fm_log2(l)) * FM_LN2 : -INFINITY;
        }
    }
    __syncthreads();
    uint16_t *go = static_cast<uint16_t *>(p.o) + b * p.o_b + h * p.o_h;
    constexpr int CH = D / 8;
#pragma unroll 1
    for (int i = tid; i < BR * CH; i += 128) {
        const int r = i / CH, c = i % CH;
        if (r0 + r < p.seq_len_q)
            *reinterpret_cast<uint4 *>(go + (int64_t)(r0 + r) * p.o_s + c * 8) =
                *reinterpret_cast<const uint4 *>(so + fm_swz<DS>(r, c));
    }
}

template <typename T, int D, int BR, int BC>
static famask_status launch(famask_ctx *ctx, const fwd_params &p, int batch, cudaStream_t stream)
{
    famask_status st = FAMASK_STATUS_OK;
    constexpr int smem = fwd_smem_bytes<D, BR, BC>();
    /* The shared-memory opt-in is per device; the bit of each device done so far (setting it twice, as two
     * threads racing here might, is harmless). */
    static unsigned long long attr_done = 0;
    int device = 0;
    dim3 grid((p.seq_len_q + BR - 1) / BR, p.n_head, batch);
    FM_CUDA(ctx, cudaGetDevice(&device));
    if (device >= 64 || !(attr_done >> device & 1ull)) {
        if ((st = fm_cuda_check_smem(ctx, smem, "forward", D)) != FAMASK_STATUS_OK)
            goto fail;
        FM_CUDA(ctx, cudaFuncSetAttribute(fwd_kernel<T, D, BR, BC>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
        if (device < 64)
            attr_done |= 1ull << device;
    }
    fwd_kernel<T, D, BR, BC><<<grid, 128, smem, stream>>>(p);
    FM_CUDA_LAUNCHED(ctx);
fail:
    return st;
}

/* Tile shapes per head dim: 128 x 64 as FlashAttention-2 for 128 (and 96, 64: at 128 x 128 the head dim 64
 * kernel spills registers); a 64-row query tile for 256, whose accumulator would not fit in registers at 128
 * rows. fwd_block_k must agree. */
template <typename T>
static famask_status dispatch(famask_ctx *ctx, const fwd_params &p, int head_dim, int batch, cudaStream_t stream)
{
    switch (head_dim) {
    case 32:
        return launch<T, 32, 128, 128>(ctx, p, batch, stream);
    case 64:
        return launch<T, 64, 128, 64>(ctx, p, batch, stream);
    case 96:
        return launch<T, 96, 128, 64>(ctx, p, batch, stream);
    case 128:
        return launch<T, 128, 128, 64>(ctx, p, batch, stream);
    case 256:
        return launch<T, 256, 64, 64>(ctx, p, batch, stream);
    default:
        return fm_error(ctx, FAMASK_STATUS_UNSUPPORTED,
                        "head_dim %d is not supported by the cuda forward (supported: 32, 64, 96, 128, 256)", head_dim);
    }
}

/* The key block size of the kernel chosen for head_dim (the summaries must match it). */
static int fwd_block_k(int head_dim)
{
    return head_dim <= 32 ? 128 : 64;
}

extern "C" famask_status fm_cuda_fwd(famask_ctx *ctx, famask_mask *mask, const famask_attn_args *a)
{
    famask_status st;
    fwd_params p;
    int block_k = fwd_block_k(a->head_dim);
    const int32_t *bounds = NULL;
    const fm_block_summary *sums = NULL;
    cudaStream_t stream = (cudaStream_t)a->stream;

    if (a->dtype != FAMASK_DTYPE_BF16 && a->dtype != FAMASK_DTYPE_F16)
        return fm_error(ctx, FAMASK_STATUS_UNSUPPORTED,
                        "dtype %d is not supported by the cuda forward "
                        "(use bf16 or f16)",
                        (int)a->dtype);
    if (!fm_cuda_aligned16(&a->q) || !fm_cuda_aligned16(&a->k) || !fm_cuda_aligned16(&a->v) ||
        !fm_cuda_aligned16(&a->o))
        return fm_error(ctx, FAMASK_STATUS_UNSUPPORTED,
                        "the cuda forward needs 16-byte aligned tensors with "
                        "strides that are multiples of 8 elements");
    if (!fm_cuda_head_dim_ok(a->head_dim))
        return fm_error(ctx, FAMASK_STATUS_UNSUPPORTED,
                        "head_dim %d is not supported by the cuda forward (supported: 32, 64, 96, 128, 256)",
                        a->head_dim);
    const int sm90 = fm_fwd_sm90_applies(a->head_dim);
    if (sm90)
        block_k = FM_SM90_BLOCK_K;
    if ((st = fm_cuda_mask_device(ctx, mask, block_k, a->stream, &bounds, &sums)) != FAMASK_STATUS_OK)
        return st;
    p.ranges = NULL;
    p.coarse = NULL;
    if (sm90 && (st = fm_cuda_mask_ranges(ctx, mask, FM_SM90_BLOCK_Q, FM_SM90_BLOCK_K, a->stream, &p.ranges)) !=
                    FAMASK_STATUS_OK)
        return st;
    if (sm90 && (st = fm_cuda_mask_device(ctx, mask, FM_SM90_COARSE_K, a->stream, NULL, &p.coarse)) !=
                    FAMASK_STATUS_OK)
        return st;

    p.q = a->q.data;
    p.k = a->k.data;
    p.v = a->v.data;
    p.o = a->o.data;
    p.lse = a->lse;
    p.q_b = a->q.stride_batch, p.q_s = a->q.stride_seq, p.q_h = a->q.stride_head;
    p.k_b = a->k.stride_batch, p.k_s = a->k.stride_seq, p.k_h = a->k.stride_head;
    p.v_b = a->v.stride_batch, p.v_s = a->v.stride_seq, p.v_h = a->v.stride_head;
    p.o_b = a->o.stride_batch, p.o_s = a->o.stride_seq, p.o_h = a->o.stride_head;
    p.n_head = a->n_head;
    p.seq_len_q = a->seq_len_q;
    p.seq_len_k = a->seq_len_k;
    p.group = a->n_head / a->n_head_kv;
    p.batch_m = mask->batch_m;
    p.heads_m = mask->heads_m;
    {
        const float scale = a->softmax_scale != 0.f ? a->softmax_scale : 1.f / sqrtf((float)a->head_dim);
        p.negate_q = scale < 0.f;
        p.scale_log2 = fabsf(scale) * FM_LOG2E;
    }
    p.bounds = bounds;
    p.summaries = sums;

    if (sm90)
        return fm_fwd_sm90(ctx, p, a->head_dim, a->dtype == FAMASK_DTYPE_BF16, a->batch, stream);
    if (a->dtype == FAMASK_DTYPE_BF16)
        return dispatch<__nv_bfloat16>(ctx, p, a->head_dim, a->batch, stream);
    return dispatch<__half>(ctx, p, a->head_dim, a->batch, stream);
}
