/*
 * fwd-sm90.cu: the attention forward on Hopper (sm_90a): wgmma from shared memory, FlashMask tile skipping.
 *
 * Same contract as the portable kernel in fwd.cu (shapes, strides, GQA, broadcast masks, lse, empty rows give
 * o = 0 and lse = -inf, any sign of softmax_scale); used for head dims 64 and 128 on sm_90 devices when the
 * library was built for sm_90a.
 *
 * Persistent CTAs of two warpgroups, one per multiprocessor, each walking a list of query tiles of 128 rows
 * (head, batch); warpgroup w owns rows 64w..64w+63. Key blocks of 128 columns. Q, K and V come in by the
 * tensor-memory-access engine (TMA, 128-byte swizzle, one box of 64 columns at a time, completing on
 * mbarriers), K and V in two stages each with K one block ahead of V; the next tile's Q and first blocks are
 * loaded while the current tile's last block and output are finished. Per live block each warpgroup computes
 *     S = Q K^T  as D/16 wgmma m64n128k16, both operands from shared memory (K-major),
 *     the element mask (partial blocks only), the online softmax in base 2 on the accumulator registers,
 *     O += P V  as 8 wgmma m64nDk16 with P from registers and V from shared memory (MN-major: V is stored as
 *               loaded, key rows of D elements, and the instruction transposes it),
 * software-pipelined so that the softmax of block j + 1 runs while O += P_j V_j is on the tensor cores (the
 * loop's comment has the order). Measured on an H200 (8K, B 4, H 16, bf16, full mask): 389 TFLOP/s with
 * cp.async loads and no overlap, 415 with the overlap, 518 with TMA, 528 persistent (bench/RESULTS.md).
 * Shared-memory layouts, descriptors and the wgmma and TMA wrappers: kernels/sm90.cuh.
 *
 * The tile classification, the search for live blocks and the element mask are the portable kernel's (fwd.cuh);
 * the search covers only each query tile's live range of key blocks (fm_cuda_mask_ranges).
 */
#include "fwd.cuh"
#include "sm90.cuh"

#include <stdlib.h>
#include <string.h>

namespace
{

using namespace fm_sm90;

constexpr int BR = FM_SM90_BLOCK_Q; /* query rows per CTA: two warpgroups of 64 */
constexpr int BC = FM_SM90_BLOCK_K;
constexpr int NTHREADS = 256;

template <int D> constexpr int smem_bytes()
{
    /* Q, two stages of K, two of V, the output tile, two stages of column bounds, three mbarriers, two next-tile
     * slots; 1024 for aligning the base */
    return 1024 + BR * D * 2 + 2 * 2 * BC * D * 2 + BR * D * 2 + 2 * BC * 16 + 3 * 8 + 2 * 4;
}

/* ---- the kernel -------------------------------------------------------------------------------------------- */

/* The tensor maps of Q, K and V (see make_map), each with its dimension order (kv_seq_major, q_seq_major). */
struct fwd_maps {
    CUtensorMap q, k, v;
    int q_seq_major, kv_seq_major;
    int batch;
};

/* Persistent: gridDim.x CTAs (one per multiprocessor) share the n_tiles = ceil(Nq / BR) * H * B query tiles.
 * Tile t is query tile n_qt - 1 - t % n_qt of head and batch t / n_qt: the tiles running at one time belong to
 * a few heads, whose K and V stay in L2 (ordered by head first, the tiles of 132 heads at once missed L2 and
 * ran at 434 against 518 TFLOP/s), and within a head the tiles with the most key blocks under causal-like
 * masks come first. CTA c starts with tile c and then takes the next tile from a counter (*next, zero at launch;
 * tile G + its value). A static snake order over the CTAs (c, 2G - 1 - c, 2G + c, ...) was unbalanced at 32K
 * (causal 371 against 510 TFLOP/s with the counter), where a head's 256 tiles and two rounds' 264 drift apart. */
template <typename T, int D>
__global__ void __launch_bounds__(NTHREADS, 1)
    fwd_sm90_kernel(const fwd_params p, const __grid_constant__ fwd_maps m, int *next)
{
#ifdef FM_SM90_BODY
    using dt = fm_dtype<T>;
    constexpr int NS = BC / 8; /* n8 column groups of S per thread row pair */
    constexpr int ND = D / 8;  /* n8 column groups of O */
    constexpr int TILE_K = BC * D * 2, TILE_Q = BR * D * 2;

    extern __shared__ unsigned char smem_raw[];
    const uint32_t base = (fm_smem_addr(smem_raw) + 1023u) & ~1023u;
    unsigned char *smem = smem_raw + (base - fm_smem_addr(smem_raw));
    const uint32_t sQ = base;
    const uint32_t sK = sQ + TILE_Q;     /* two stages */
    const uint32_t sV = sK + 2 * TILE_K; /* two stages */
    const uint32_t sO = sV + 2 * TILE_K; /* the output tile on its way out */
    const uint32_t sB = sO + TILE_Q;     /* two stages of BC int4 */
    const int4 *sBounds = reinterpret_cast<const int4 *>(smem + (sB - base));
    /* bar[0], bar[1]: the load groups {K_j+1, V_j}, alternating; bar[2]: a tile's {Q, K_0} */
    const uint32_t sBar = sB + 2 * BC * 16;
    volatile int *next_tile = reinterpret_cast<volatile int *>(smem + (sBar + 24 - base)); /* [2], by tile parity */

    const int tid = threadIdx.x, wg = tid / 128, warp = (tid / 32) % 4, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
    const int n_kb = (p.seq_len_k + BC - 1) / BC;
    const int n_cb = (p.seq_len_k + FM_SM90_COARSE_K - 1) / FM_SM90_COARSE_K; /* coarse summaries per slice */
    const int n_qt = (p.seq_len_q + BR - 1) / BR, n_bh = p.n_head * m.batch;
    const int n_tiles = n_qt * n_bh, G = gridDim.x;
    const float sl2 = p.negate_q ? -p.scale_log2 : p.scale_log2; /* this kernel takes the signed scale */
    const float mval = sl2 >= 0.f ? -INFINITY : INFINITY;        /* a masked raw score: scaled, it is -inf */
    const uint32_t q_wg = sQ + wg * 64 * 128;                    /* this warpgroup's Q rows */

    /* The current tile and its walk. */
    struct tile {
        int valid, b, h, hk, r0, r1, kb_lo, kb_hi; /* live key blocks lie in [kb_lo, kb_hi) */
        const fm_block_summary *sums, *coarse;
        const int32_t *gb;
    };
    auto tile_at = [&](int tt) {
        tile x;
        x.valid = tt < n_tiles;
        const int qt = n_qt - 1 - tt % n_qt, bh = tt / n_qt;
        x.h = bh % p.n_head;
        x.b = bh / p.n_head;
        x.hk = x.h / p.group;
        x.r0 = qt * BR;
        x.r1 = min(x.r0 + BR, p.seq_len_q);
        const int mb = p.batch_m == 1 ? 0 : x.b;
        const int mh = p.heads_m == 1 ? 0 : (p.heads_m == p.n_head ? x.h : x.hk);
        const int64_t mask_bh = (int64_t)mb * p.heads_m + mh;
        x.sums = p.summaries + mask_bh * n_kb;
        x.coarse = p.coarse + mask_bh * n_cb;
        x.gb = p.bounds + mask_bh * p.seq_len_k * 4;
        x.kb_lo = x.kb_hi = 0;
        if (x.valid) {
            const int2 rg = reinterpret_cast<const int2 *>(p.ranges)[mask_bh * n_qt + qt];
            x.kb_lo = rg.x;
            x.kb_hi = rg.y;
        }
        return x;
    };

    float o[D / 2];
    float row_max[2], row_sum[2];
    float s[BC / 2];         /* S of the block being softmaxed, then its P in fp32 */
    uint32_t pa[BC / 16][4]; /* P of the block in O += P V, as A fragments */
    float alpha[2];

    /* K of block kb into stage st (and its column bounds, by cp.async, when the block needs element-wise
     * masking); V of block kb into stage st. */
    auto load_k = [&](const tile &x, int kb, int cls, int st, uint32_t bar) {
        const int c0 = kb * BC;
        if (tid == 0)
            tma_tile<D>(&m.k, m.kv_seq_major, sK + st * TILE_K, BC, c0, x.hk, x.b, bar);
        if ((cls == FM_TILE_PARTIAL || c0 + BC > p.seq_len_k) && tid < BC) {
            const bool ok = c0 + tid < p.seq_len_k;
            fm_cp_async16(sB + (st * BC + tid) * 16, ok ? x.gb + 4 * (int64_t)(c0 + tid) : x.gb, ok ? 16 : 0);
        }
    };
    auto load_v = [&](const tile &x, int kb, int st, uint32_t bar) {
        if (tid == 0)
            tma_tile<D>(&m.v, m.kv_seq_major, sV + st * TILE_K, BC, kb * BC, x.hk, x.b, bar);
    };

    /* S = Q K^T of the block in K stage st, issued and committed, not waited for. */
    auto issue_s = [&](int st) {
        wg_fence();
        wg_gemm_kk<T, D, BC>(s, q_wg, BR, sK + st * TILE_K, BC);
        wg_commit();
    };
    /* O += P V of the block in V stage st, issued and committed. */
    auto issue_pv = [&](int st) {
        wg_fence();
        wg_gemm_rn<T, BC, D>(o, pa, sV + st * TILE_K, BC);
        wg_commit();
    };

    /* Element mask (partial blocks and the ragged last block) and online softmax of s, the scores of block kb
     * whose bounds are in stage st: s becomes P (fp32, not yet normalised), alpha the factor that O must be
     * rescaled by. Thread holds rows rb and rb + 8, columns 8 n + 2 t + e. */
    auto softmax = [&](const tile &x, int kb, int cls, int st) {
        const int c0 = kb * BC;
        if (cls == FM_TILE_PARTIAL || c0 + BC > p.seq_len_k) {
            const int4 *bnd = sBounds + st * BC;
            const int rb = x.r0 + wg * 64 + warp * 16 + g;
#pragma unroll
            for (int n = 0; n < NS; n++) {
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int cl = n * 8 + 2 * t + e;
                    const int4 v = bnd[cl];
                    const bool col_ok = c0 + cl < p.seq_len_k;
                    const unsigned a_lt = col_ok ? (unsigned)(rb - v.x) : 0u;
                    const unsigned n_lt = col_ok ? (unsigned)(v.y - v.x) : 0x7fffffffu;
                    const unsigned a_ut = (unsigned)(rb - v.z), n_ut = (unsigned)(v.w - v.z);
#pragma unroll
                    for (int hh = 0; hh < 2; hh++) {
                        const bool masked = a_lt + 8 * hh < n_lt || a_ut + 8 * hh < n_ut;
                        s[4 * n + 2 * hh + e] = masked ? mval : s[4 * n + 2 * hh + e];
                    }
                }
            }
        }
        /* base 2; a negative scale flips which raw score is the largest scaled one */
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            float mx;
            if (sl2 >= 0.f) {
                mx = -INFINITY;
#pragma unroll
                for (int n = 0; n < NS; n++)
                    mx = fmaxf(mx, fmaxf(s[4 * n + 2 * hh], s[4 * n + 2 * hh + 1]));
                mx = fm_quad_max(mx) * sl2;
            } else {
                mx = INFINITY;
#pragma unroll
                for (int n = 0; n < NS; n++)
                    mx = fminf(mx, fminf(s[4 * n + 2 * hh], s[4 * n + 2 * hh + 1]));
                mx = -fm_quad_max(-mx) * sl2; /* all masked: +inf times a negative scale, -inf */
            }
            const float m_old = row_max[hh];
            const float m_new = fmaxf(m_old, mx);
            const float m_use = m_new == -INFINITY ? 0.f : m_new; /* no -inf - -inf for rows empty so far */
            alpha[hh] = fm_exp2(m_old - m_use);
            row_max[hh] = m_new;
            float sum = 0.f;
#pragma unroll
            for (int n = 0; n < NS; n++) {
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const float pv = fm_exp2(fmaf(s[4 * n + 2 * hh + e], sl2, -m_use));
                    s[4 * n + 2 * hh + e] = pv;
                    sum += pv;
                }
            }
            row_sum[hh] = row_sum[hh] * alpha[hh] + sum;
        }
    };

    /* O *= alpha (skipped for a row half where no row of the warp found a larger max: alpha is 1 there), then
     * P into A fragments. Only while no product is in flight. */
    auto rescale_pack = [&]() {
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            if (__any_sync(0xffffffffu, alpha[hh] != 1.f)) {
#pragma unroll
                for (int n = 0; n < ND; n++) {
                    o[4 * n + 2 * hh] *= alpha[hh];
                    o[4 * n + 2 * hh + 1] *= alpha[hh];
                }
            }
        }
#pragma unroll
        for (int kk = 0; kk < BC / 16; kk++) {
            pa[kk][0] = dt::pack(s[8 * kk + 0], s[8 * kk + 1]);
            pa[kk][1] = dt::pack(s[8 * kk + 2], s[8 * kk + 3]);
            pa[kk][2] = dt::pack(s[8 * kk + 4], s[8 * kk + 5]);
            pa[kk][3] = dt::pack(s[8 * kk + 6], s[8 * kk + 7]);
        }
    };

    /* Running state across tiles: st, the stage of the next block to be computed (K, V and bounds of one block
     * share it); j, the count of {K_j+1, V_j} groups waited for (their barrier is bar[j % 2], its phase
     * (j / 2) % 2); nq, the count of {Q, K_0} groups (bar[2]). */
    int st = 0, j = 0, nq = 0;
    int kb0, kb1, cls0 = FM_TILE_SKIPPED, cls1 = FM_TILE_SKIPPED, cls2 = FM_TILE_SKIPPED;
    live_scan scan;

    /* The first live block of tile x at or after `from`, or n_kb: the scan covers the tile's live range only. */
    auto live_after = [&](const tile &x, int from, int *cls) {
        const int kb = next_live(scan, x.sums, x.coarse, from, x.kb_hi, x.r0, x.r1, cls);
        return kb < x.kb_hi ? kb : n_kb;
    };

    /* The first live blocks of tile x into kb0/kb1, and their loads issued: {Q, K_0} on bar[2], {K_1, V_0} on
     * bar[j % 2], with K_0 and V_0 in stage st. Needs every thread (the bounds copies). */
    auto start_tile = [&](const tile &x) {
        scan = {-64, 0u, 0u};
        kb0 = kb1 = n_kb;
        if (!x.valid)
            return;
        kb0 = live_after(x, x.kb_lo, &cls0);
        if (kb0 >= n_kb)
            return;
        kb1 = live_after(x, kb0 + 1, &cls1);
        const uint32_t bq = sBar + 16, bkv = sBar + 8 * (j & 1);
        if (tid == 0) {
            mbar_expect_tx(bq, TILE_Q + TILE_K);
            mbar_expect_tx(bkv, (kb1 < n_kb ? 2 : 1) * TILE_K);
            tma_tile<D>(&m.q, m.q_seq_major, sQ, BR, x.r0, x.h, x.b, bq);
        }
        load_k(x, kb0, cls0, st, bq);
        if (kb1 < n_kb)
            load_k(x, kb1, cls1, st ^ 1, bkv);
        load_v(x, kb0, st, bkv);
        fm_cp_async_commit();
    };

    mbar_init_all(sBar, {1, 1, 1});
    int k = 0;
    tile cur = tile_at(blockIdx.x);
    start_tile(cur);
    while (cur.valid) {
        /* The next tile's number: asked for now, stored for everyone just before the barrier of the tail (the
         * atomic's latency hides behind the walk; the slot is rewritten two tiles later). */
        int fetched = 0;
        if (tid == 0)
            fetched = atomicAdd(next, 1);
#pragma unroll
        for (int i = 0; i < D / 2; i++)
            o[i] = 0.f;
        row_max[0] = row_max[1] = -INFINITY;
        row_sum[0] = row_sum[1] = 0.f;
        const int had_blocks = kb0 < n_kb;
        if (had_blocks) {
            fm_cp_async_wait<0>();
            mbar_wait(sBar + 16, nq & 1);
            nq++;
            __syncthreads(); /* the bounds of K_0 (cp.async by other threads) */
            issue_s(st);
            wg_wait<0>();
            softmax(cur, kb0, cls0, st);
            rescale_pack();
        }
        /* The walk over live blocks is software-pipelined (block j in stage st):
         *   iteration j (P_j in registers): wait for {K_j+1, V_j} (one group, issued an iteration earlier);
         *     barrier; issue the loads of K_j+2 (into K_j's stage) and V_j+1 (into V_j-1's) as one group;
         *     issue S_j+1 = Q K_j+1, then O += P_j V_j, on the tensor cores; wait for S_j+1 only; mask and
         *     softmax S_j+1 while P_j V_j runs; wait for it; rescale O and pack P_j+1.
         * so the exponentials of one block overlap the tensor cores' work, and every load has a whole
         * iteration to land. The last block is peeled off the loop: with the products issued on every path
         * through the loop body, ptxas keeps the two products of an iteration in flight together instead of
         * serialising them. */
        while (kb1 < n_kb) {
            fm_cp_async_wait<0>();
            mbar_wait(sBar + 8 * (j & 1), (j >> 1) & 1);
            __syncthreads(); /* K_j+1, V_j landed for everyone; everyone is done with K_j and V_j-1 */
            const int kb2 = live_after(cur, kb1 + 1, &cls2);
            const uint32_t bar = sBar + 8 * ((j + 1) & 1);
            if (tid == 0)
                mbar_expect_tx(bar, (kb2 < n_kb ? 2 : 1) * TILE_K);
            if (kb2 < n_kb)
                load_k(cur, kb2, cls2, st, bar);
            load_v(cur, kb1, st ^ 1, bar);
            fm_cp_async_commit();
            issue_s(st ^ 1);
            issue_pv(st);
            wg_wait<1>();
            softmax(cur, kb1, cls1, st ^ 1);
            wg_wait<0>();
            rescale_pack();
            kb0 = kb1, cls0 = cls1;
            kb1 = kb2, cls1 = cls2;
            st ^= 1;
            j++;
        }
        /* The last block: once everyone is done with Q and the K stages, the next tile's first loads go out
         * (K_0 and V_0 into the stage the last V is not in), then O += P V of the last block and the epilogue
         * run while they land. */
        tile nxt;
        if (tid == 0)
            next_tile[k & 1] = G + fetched;
        if (had_blocks) {
            mbar_wait(sBar + 8 * (j & 1), (j >> 1) & 1);
            j++;
            __syncthreads();
            nxt = tile_at(next_tile[k & 1]);
            st ^= 1;
            start_tile(nxt);
            issue_pv(st ^ 1);
            wg_wait<0>();
        } else {
            __syncthreads(); /* the previous epilogue's reads of the output tile */
            nxt = tile_at(next_tile[k & 1]);
            start_tile(nxt);
        }
        k++;

        /* Epilogue: normalise into this warpgroup's 64 rows of the output tile, then 16-byte row chunks to
         * global. */
        const int rl = wg * 64 + warp * 16 + g; /* tile row of hh = 0 */
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            const int r = rl + 8 * hh;
            const float l = fm_quad_sum(row_sum[hh]);
            const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
            for (int n = 0; n < ND; n++)
                *reinterpret_cast<uint32_t *>(smem + (sO - base) + sw128<BR>(r, n) + 4 * t) =
                    dt::pack(o[4 * n + 2 * hh] * inv, o[4 * n + 2 * hh + 1] * inv);
            if (p.lse && t == 0 && cur.r0 + r < p.seq_len_q)
                p.lse[((int64_t)cur.b * p.n_head + cur.h) * p.seq_len_q + cur.r0 + r] =
                    l > 0.f ? (row_max[hh] + fm_log2(l)) * FM_LN2 : -INFINITY;
        }
        asm volatile("bar.sync %0, 128;\n" ::"r"(1 + wg) : "memory");
        uint16_t *go = static_cast<uint16_t *>(p.o) + cur.b * p.o_b + cur.h * p.o_h;
#pragma unroll 1
        for (int i = tid % 128; i < 64 * ND; i += 128) {
            const int r = wg * 64 + i / ND, c = i % ND;
            if (cur.r0 + r < p.seq_len_q)
                *reinterpret_cast<uint4 *>(go + (int64_t)(cur.r0 + r) * p.o_s + c * 8) =
                    *reinterpret_cast<const uint4 *>(smem + (sO - base) + sw128<BR>(r, c));
        }
        cur = nxt;
    }
    fm_cp_async_wait<0>();
#endif
}

template <typename T, int D> famask_status launch(famask_ctx *ctx, const fwd_params &p, int batch, cudaStream_t stream)
{
    famask_status st = FAMASK_STATUS_OK;
    constexpr int smem = smem_bytes<D>();
    static unsigned long long attr_done = 0; /* per device, as in fwd.cu */
    static int n_sm[64];
    int device = 0, *next = NULL;
    const int is_bf16 = fm_is_bf16<T>::value;
    const int heads_kv = p.n_head / p.group;
    fwd_maps m;
    /* seq first unless the head stride is the smaller one (as in [B, H, N, D]) */
    m.q_seq_major = !(p.q_h < p.q_s && p.n_head > 1);
    m.kv_seq_major = !(p.k_h < p.k_s && heads_kv > 1);
    m.batch = batch;
    if ((st = make_map(ctx, &m.q, p.q, is_bf16, D, BR, p.seq_len_q, p.n_head, batch, p.q_s, p.q_h, p.q_b,
                       m.q_seq_major)) ||
        (st = make_map(ctx, &m.k, p.k, is_bf16, D, BC, p.seq_len_k, heads_kv, batch, p.k_s, p.k_h, p.k_b,
                       m.kv_seq_major)) ||
        (st = make_map(ctx, &m.v, p.v, is_bf16, D, BC, p.seq_len_k, heads_kv, batch, p.v_s, p.v_h, p.v_b,
                       m.kv_seq_major)))
        return st;
    FM_CUDA(ctx, cudaGetDevice(&device));
    if (device >= 64 || !(attr_done >> device & 1ull)) {
        FM_CUDA(ctx, cudaFuncSetAttribute(fwd_sm90_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
        FM_CUDA(ctx, cudaDeviceGetAttribute(&n_sm[device < 64 ? device : 0], cudaDevAttrMultiProcessorCount, device));
        if (device < 64)
            attr_done |= 1ull << device;
    }
    {
        const int64_t n_tiles = (int64_t)((p.seq_len_q + BR - 1) / BR) * p.n_head * batch;
        const int sms = n_sm[device < 64 ? device : 0];
        const int grid = fm_cuda_persistent_ctas(n_tiles, sms);
        /* the tile counter: stream-ordered, so that launches on other streams never share one */
        FM_CUDA(ctx, cudaMallocAsync((void **)&next, sizeof(int), stream));
        FM_CUDA(ctx, cudaMemsetAsync(next, 0, sizeof(int), stream));
        fwd_sm90_kernel<T, D><<<grid, NTHREADS, smem, stream>>>(p, m, next);
        FM_CUDA_LAUNCHED(ctx);
    }
fail:
    if (next)
        cudaFreeAsync(next, stream);
    return st;
}

} /* namespace */

namespace fm_sm90
{

/* Writes 1 where this file was compiled with the sm_90a kernel bodies for the running device. */
__global__ void probe_kernel(int *out)
{
#ifdef FM_SM90_BODY
    *out = 1;
#else
    *out = 0;
#endif
}

int device_ok()
{
    static signed char cache[64]; /* 0 unknown, 1 yes, -1 no */
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= 64)
        return 0;
    if (!cache[device]) {
        cudaDeviceProp prop;
        int ok = 0, *flag = NULL;
        if (cudaGetDeviceProperties(&prop, device) == cudaSuccess && prop.major == 9 && prop.minor == 0 &&
            cudaMalloc((void **)&flag, sizeof(int)) == cudaSuccess) {
            probe_kernel<<<1, 1>>>(flag);
            if (cudaMemcpy(&ok, flag, sizeof(int), cudaMemcpyDeviceToHost) != cudaSuccess)
                ok = 0;
            cudaFree(flag);
        }
        cudaGetLastError(); /* a failed probe means "no", not an error left for the caller's next check */
        cache[device] = ok == 1 ? 1 : -1;
    }
    return cache[device] == 1;
}

} /* namespace fm_sm90 */

/* Whether the Hopper forward serves this call: head dim 64 or 128 on a device where fm_sm90::device_ok.
 * FAMASK_CUDA_FWD=sm80 in the environment forces the portable kernel (tests and benchmarks compare the two). */
int fm_fwd_sm90_applies(int head_dim)
{
    const char *force = getenv("FAMASK_CUDA_FWD");
    if (force && strcmp(force, "sm80") == 0)
        return 0;
    if (head_dim != 128 && head_dim != 64)
        return 0;
    return fm_sm90::device_ok();
}

famask_status fm_fwd_sm90(famask_ctx *ctx, const fwd_params &p, int head_dim, int is_bf16, int batch,
                          cudaStream_t stream)
{
    if (head_dim == 128)
        return is_bf16 ? launch<__nv_bfloat16, 128>(ctx, p, batch, stream) : launch<__half, 128>(ctx, p, batch, stream);
    return is_bf16 ? launch<__nv_bfloat16, 64>(ctx, p, batch, stream) : launch<__half, 64>(ctx, p, batch, stream);
}
