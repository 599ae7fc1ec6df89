/*
 * bwd-sm90.cu: the backward on Hopper (sm_90a): wgmma and TMA, with FlashMask tile skipping.
 *
 * Takes the place of bwd_main2_kernel and bwd_dq_kernel (kernels/bwd.cu) for head dims 64 and 128 on sm_90
 * devices: the same inputs (the preprocess's L and Dd), the same walks, the same outputs, always in the split
 * form of the deterministic mode (no dQ accumulator, no atomics), which measured as fast as dQ by atomics or
 * faster.
 *
 * Both kernels are persistent: one CTA per multiprocessor takes work items from a counter and loads the next
 * item's first tiles during the current item's last one. Their outputs leave by TMA store from shared memory that
 * the item's last products have freed. The dQ pass is a programmatic dependent launch of the main kernel: it
 * reads only the preprocess's L and Dd, so its CTAs start on the multiprocessors the main kernel's CTAs leave
 * while the others finish their last key blocks, and it waits for the main kernel only before it ends.
 *
 * Main kernel (dK, dV): a work item is a (key block of 128, kv head, batch), for a CTA of two warpgroups;
 * warpgroup w owns keys 64w..64w+63. K and V of the block come in once by TMA (two stages: the next item's
 * block loads while this one finishes); the CTA walks the live query tiles of 64 rows of every
 * query head of its GQA group (fm_bwd::next_query_tile), Q and dO by TMA into two stages, L, Dd and (for
 * partial tiles) the keys' bounds by cp.async. Per tile, each warpgroup computes on the tensor cores
 *     S^T = K Q^T, dP^T = V dO^T   (m64n64, both operands from shared memory, K-major),
 * then in registers P^T = exp2(S^T scale log2(e) - L), dS^T = P^T (dP^T - Dd), zero where masked, and
 *     dV += P^T dO, dK += dS^T Q   (m64nD, A from registers, B from shared memory MN-major).
 * dK and dV stay in registers until the item ends. (A first version also computed dQ = dS K there, from dS^T staged
 * in shared memory, added with 8-byte atomics: 13.69 ms against 13.73 for the split form at 8K full, 2.40
 * against 2.18 on document masks.)
 *
 * dQ pass: a work item is a (query tile of 128, head, batch), for a CTA of two warpgroups, walking the live key
 * blocks of 128 in order as the forward does (fwd.cuh's live_scan, within the tile's live range from
 * fm_cuda_mask_ranges), K and V through TMA in two stages:
 *     S = Q K^T, dP = dO V^T (m64n128 from shared memory), P = exp2(S scale log2(e) - L), dS = P (dP - Dd),
 *     dQ += dS K (m64nD, dS from registers, K MN-major),
 * then dQ times the scale to the output.
 * Layouts, descriptors and the wgmma and TMA wrappers: kernels/sm90.cuh.
 */
#include "bwd.cuh"
#include "fwd.cuh"
#include "sm90.cuh"

#include <stdlib.h>
#include <string.h>
#include <type_traits>

namespace
{

using namespace fm_bwd;
using namespace fm_sm90;

constexpr int BN = FM_SM90_BLOCK_K; /* keys per work item of the main kernel, per block of the dQ pass */
constexpr int BM = BR;  /* query rows per tile (64) */

/* Tensor maps: the inputs Q, dO (boxes of the kernel's query rows), K and V (boxes of BN rows); the outputs
 * (boxes of 64 rows: one warpgroup's part) dK and dV for the main kernel, dQ for the dQ pass. */
struct bwd_maps {
    CUtensorMap q, d_o, k, v, out0, out1;
    int q_seq_major, do_seq_major, kv_seq_major, out0_seq_major, out1_seq_major;
};

template <int D> constexpr int smem_bytes()
{
    /* two stages of K and V; two stages of Q and dO; two stages of (L, Dd); two stages of the keys' bounds; four
     * mbarriers and four ints; 1024 for aligning the base */
    return 1024 + 2 * 2 * BN * D * 2 + 2 * 2 * BM * D * 2 + 2 * 2 * BM * 4 + 2 * BN * 16 + 4 * 8 + 4 * 4;
}

/* Zeroes rows [0, n) of a [rows, D] view (row stride ss elements): the outputs of a work item with nothing live.
 * Every thread of the CTA takes part. */
template <typename T, int D> __device__ __forceinline__ void zero_rows(T *dst, int64_t ss, int n)
{
    for (int c = threadIdx.x; c < n * (D / 8); c += NTHREADS)
        *reinterpret_cast<uint4 *>(dst + (c / (D / 8)) * ss + (c % (D / 8)) * 8) = make_uint4(0, 0, 0, 0);
}

#ifdef FM_SM90_BODY
/* The next work item's number after an empty one: one thread takes it from the counter, the barriers hand it to
 * everyone (slot: an int in shared memory used for nothing else). */
__device__ __forceinline__ int claim_item(int *counter, volatile int *slot)
{
    __syncthreads();
    if (threadIdx.x == 0)
        *slot = atomicAdd(counter, 1) + gridDim.x;
    __syncthreads();
    return *slot;
}
#endif

/* A work item of the main kernel: key block kb of kv head hkv in batch b. Item x is key block x % n_kb of head
 * (x / n_kb) % H_kv of batch x / (n_kb H_kv): the key blocks of a head run at the same time and share its Q and
 * dO in L2, and under causal-like masks the longest walks go first. */
struct kv_item {
    int kb, hkv, b;
};

/* Persistent: min(items, multiprocessors) CTAs; CTA c starts with item c, then takes G + counters[0] (zeroed by
 * the preprocess) each time it starts an item, so that it knows its next item before its last tile: the next
 * item's K and V (the other stage) and first Q and dO tile go out during that tile, and the item's epilogue
 * overlaps them. */
template <typename T, int D>
__global__ void __launch_bounds__(NTHREADS, 1) bwd_sm90_kernel(const bwd_params p, const __grid_constant__ bwd_maps m)
{
#ifdef FM_SM90_BODY
    /* The dQ pass, launched next as this grid's programmatic dependent, needs nothing from it: it may start at
     * once, its CTAs taking the multiprocessors this grid's CTAs leave. */
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
    using dt = fm_dtype<T>;
    constexpr int TK = BN * D * 2, TQ = BM * D * 2;
    constexpr int NS = BM / 8; /* n8 query groups of S^T */
    constexpr int NO = D / 8;  /* n8 column groups of dK, dV */

    extern __shared__ unsigned char smem_raw[];
    const uint32_t base = (fm_smem_addr(smem_raw) + 1023u) & ~1023u;
    unsigned char *smem = smem_raw + (base - fm_smem_addr(smem_raw));
    const uint32_t sK = base;         /* stage s: K at sK + 2 s TK, V at sK + (2 s + 1) TK */
    const uint32_t sQ = sK + 4 * TK;  /* two stages */
    const uint32_t sdO = sQ + 2 * TQ; /* two stages */
    const uint32_t sLD = sdO + 2 * TQ;
    const uint32_t sBd = sLD + 2 * 2 * BM * 4;
    const uint32_t sBar = sBd + 2 * BN * 16; /* bar[0], bar[1]: a stage of Q and dO; bar[2], bar[3]: of K and V */
    const float *fLD = reinterpret_cast<const float *>(smem + (sLD - base)); /* [stage][L, Dd][BM] */
    const int4 *fBd = reinterpret_cast<const int4 *>(smem + (sBd - base));   /* [stage][BN] */
    volatile int *slot = reinterpret_cast<int *>(smem + (sBar - base) + 4 * 8); /* [2]: next items; [2]: claims */

    const int tid = threadIdx.x, wg = tid / 128, warp = (tid / 32) % 4, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
    const int group = p.n_head / p.n_head_kv;
    const int n_kb = (p.seq_len_k + BN - 1) / BN;
    const int n_items = n_kb * p.n_head_kv * p.batch;

    /* K and V of item x into stage ks (TMA). */
    auto load_kv = [&](const kv_item &x, int ks) {
        if (tid == 0) {
            const uint32_t bar = sBar + 8 * (2 + ks);
            mbar_expect_tx(bar, 2 * TK);
            tma_tile<D>(&m.k, m.kv_seq_major, sK + 2 * ks * TK, BN, x.kb * BN, x.hkv, x.b, bar);
            tma_tile<D>(&m.v, m.kv_seq_major, sK + (2 * ks + 1) * TK, BN, x.kb * BN, x.hkv, x.b, bar);
        }
    };
    /* Q, dO (TMA), L, Dd and, for a partial tile or the ragged last key block, the keys' bounds (cp.async) of
     * query tile tt of head-in-group hi of item x into stage st. */
    auto load_tile = [&](const kv_item &x, int hi, int tt, int st, int tcls) {
        const int h = x.hkv * group + hi, q0 = tt * BM, k0 = x.kb * BN;
        const uint32_t bar = sBar + 8 * st;
        if (tid == 0) {
            mbar_expect_tx(bar, 2 * TQ);
            tma_tile<D>(&m.q, m.q_seq_major, sQ + st * TQ, BM, q0, h, x.b, bar);
            tma_tile<D>(&m.d_o, m.do_seq_major, sdO + st * TQ, BM, q0, h, x.b, bar);
        }
        const int64_t rb = ((int64_t)x.b * p.n_head + h) * p.seq_pad + q0;
        if (tid < BM / 4)
            fm_cp_async16(sLD + (st * 2) * BM * 4 + 16 * tid, p.L + rb + 4 * tid, 16);
        else if (tid < BM / 2)
            fm_cp_async16(sLD + (st * 2 + 1) * BM * 4 + 16 * (tid - BM / 4), p.Dd + rb + 4 * (tid - BM / 4), 16);
        if ((tcls == FM_TILE_PARTIAL || k0 + BN > p.seq_len_k) && tid >= NTHREADS - BN) {
            const int key = tid - (NTHREADS - BN), mb = p.batch_m == 1 ? 0 : x.b;
            const int4 *col =
                reinterpret_cast<const int4 *>(p.bounds) + ((int64_t)mb * p.heads_m + mask_head(p, h)) * p.seq_len_k;
            const bool ok = k0 + key < p.seq_len_k;
            fm_cp_async16(sBd + (st * BN + key) * 16, col + (ok ? k0 + key : 0), ok ? 16 : 0);
        }
    };
    /* From item number xn on, the first item with a live query tile, into *x with its walk and first tile;
     * zeroes dK and dV of the empty items it passes. false when none is left. Every thread calls it alike. */
    auto find_item = [&](int xn, kv_item *x, tile_walk *w, int *hi, int *tt, int *tcls) {
        while (xn < n_items) {
            x->kb = xn % n_kb;
            x->hkv = (xn / n_kb) % p.n_head_kv;
            x->b = xn / (n_kb * p.n_head_kv);
            w->s_hi = -1;
            *hi = 0;
            *tt = 0;
            if (next_query_tile<BM>(p, *w, n_kb, x->kb, x->hkv, x->b, group, hi, tt, tcls))
                return true;
            const int k0 = x->kb * BN, n = min(BN, p.seq_len_k - k0);
            zero_rows<T, D>((T *)p.dk.p + x->b * p.dk.sb + x->hkv * p.dk.sh + k0 * p.dk.ss, p.dk.ss, n);
            zero_rows<T, D>((T *)p.dv.p + x->b * p.dv.sb + x->hkv * p.dv.sh + k0 * p.dv.ss, p.dv.ss, n);
            xn = claim_item(p.counters, slot + 2);
        }
        return false;
    };

    mbar_init_all(sBar, 4);

    kv_item it;
    tile_walk wk;
    int hi = 0, tt = 0, cls = 0, st = 0, ks = 0;
    unsigned phase = 0; /* bit s: parity of the next wait on bar[s] */
    bool have = find_item(blockIdx.x, &it, &wk, &hi, &tt, &cls);
    if (have) {
        load_kv(it, 0);
        load_tile(it, hi, tt, 0, cls);
    }
    fm_cp_async_commit();

    const int key_a = wg * 64 + warp * 16 + g; /* key of rows hh = 0 (in the block); + 8 for hh = 1 */
    float dk[D / 2], dv[D / 2];
    while (have) {
        int fetched = 0; /* the item after this one; its latency hides behind the walk */
        if (tid == 0)
            fetched = atomicAdd(p.counters, 1) + gridDim.x;
#pragma unroll
        for (int i = 0; i < D / 2; i++)
            dk[i] = dv[i] = 0.f;
        const int k0 = it.kb * BN;
        const bool key_tail = k0 + BN > p.seq_len_k;
        const uint32_t k_wg = sK + 2 * ks * TK + wg * 64 * 128, v_wg = k_wg + TK; /* this warpgroup's key rows */
        mbar_wait(sBar + 8 * (2 + ks), (phase >> (2 + ks)) & 1);
        phase ^= 1u << (2 + ks);
        kv_item nit = it;
        bool nhave = true, last = false;
        while (!last) {
            const int q0 = tt * BM;
            const uint32_t qst = sQ + st * TQ, dost = sdO + st * TQ;
            /* S^T = K Q^T and dP^T = V dO^T (keys 64 wg.. x the tile's 64 queries) start as soon as this thread
             * sees Q and dO land; the barrier and the next loads are issued while they run. */
            mbar_wait(sBar + 8 * st, (phase >> st) & 1);
            phase ^= 1u << st;
            float s[BM / 2], dp[BM / 2];
            wg_fence();
            wg_gemm_kk<T, D, BM>(s, k_wg, BN, qst, BM);
            wg_gemm_kk<T, D, BM>(dp, v_wg, BN, dost, BM);
            wg_commit();
            int nhi = hi, nt = tt + 1, ncls = 0;
            last = !next_query_tile<BM>(p, wk, n_kb, it.kb, it.hkv, it.b, group, &nhi, &nt, &ncls);
            if (last && tid == 0)
                slot[ks] = fetched;
            if (last && tid % 128 == 32)
                bulk_wait_read<0>(); /* the stores of the item before, from the K and V stage loaded next */
            fm_cp_async_wait<0>();
            __syncthreads(); /* L, Dd and bounds of tile tt landed for everyone; everyone is done with the other Q
                              * stage and the other K stage; slot[ks] is written */
            if (!last) {
                load_tile(it, nhi, nt, st ^ 1, ncls);
            } else {
                nhave = find_item(slot[ks], &nit, &wk, &nhi, &nt, &ncls);
                if (nhave) {
                    load_kv(nit, ks ^ 1);
                    load_tile(nit, nhi, nt, st ^ 1, ncls);
                }
            }
            fm_cp_async_commit();
            wg_wait<0>();

            /* P^T and dS^T; element s[4 n + 2 hh + e] is key key_a + 8 hh, query q0 + 8 n + 2 t + e. On partial
             * tiles and the ragged last key block, masked elements get a scaled score of -inf before the exp2,
             * so P^T and dS^T are zero there: mk[hh][w] bit 8 m + e is query q0 + 32 w + 2 t + 8 m + e. */
            uint32_t mk[2][2];
            const bool masked_tile = cls == FM_TILE_PARTIAL || key_tail;
            if (masked_tile) {
                const int4 *cB = fBd + st * BN;
                const int4 none = make_int4(0, INT32_MAX, 0, 0); /* a key past seq_len_k: masked in every row */
#pragma unroll
                for (int hh = 0; hh < 2; hh++) {
                    const int key = key_a + 8 * hh;
                    const int4 bd = k0 + key < p.seq_len_k ? cB[key] : none;
#pragma unroll
                    for (int w = 0; w < 2; w++)
                        mk[hh][w] = fm_masked_rows32(bd, q0 + 32 * w + 2 * t);
                }
            }
            const float *cL = fLD + (st * 2) * BM, *cD = fLD + (st * 2 + 1) * BM;
            auto grads = [&](auto with_mask) {
#pragma unroll
                for (int n = 0; n < NS; n++) {
                    const float2 L2 = *reinterpret_cast<const float2 *>(cL + 8 * n + 2 * t);
                    const float2 D2 = *reinterpret_cast<const float2 *>(cD + 8 * n + 2 * t);
#pragma unroll
                    for (int hh = 0; hh < 2; hh++) {
#pragma unroll
                        for (int e = 0; e < 2; e++) {
                            const int i = 4 * n + 2 * hh + e;
                            float x = s[i] * p.scale_log2 - (e ? L2.y : L2.x);
                            if (decltype(with_mask)::value && (mk[hh][n / 4] >> (8 * (n % 4) + e) & 1u))
                                x = -INFINITY;
                            const float pv = fm_exp2(x);
                            s[i] = pv;
                            dp[i] = pv * (dp[i] - (e ? D2.y : D2.x));
                        }
                    }
                }
            };
            if (masked_tile)
                grads(std::true_type());
            else
                grads(std::false_type());
            uint32_t pa[BM / 16][4], da[BM / 16][4];
#pragma unroll
            for (int kk = 0; kk < BM / 16; kk++) {
#pragma unroll
                for (int x = 0; x < 4; x++) {
                    pa[kk][x] = dt::pack(s[8 * kk + 2 * x], s[8 * kk + 2 * x + 1]);
                    da[kk][x] = dt::pack(dp[8 * kk + 2 * x], dp[8 * kk + 2 * x + 1]);
                }
            }
            /* dV += P^T dO, dK += dS^T Q */
            wg_fence();
            wg_gemm_rn<T, BM, D>(dv, pa, dost, BM);
            wg_gemm_rn<T, BM, D>(dk, da, qst, BM);
            wg_commit();
            wg_wait<0>();

            hi = nhi;
            tt = nt;
            cls = ncls;
            st ^= 1;
        }

        /* dK (times the scale) and dV into this warpgroup's rows of the K and V stage just used (its S^T and dP^T
         * products, their only readers, are complete), then out by TMA store while the next item's loads are in
         * flight: 64 narrow stores per thread measured 11% of this kernel's time on causal documents at 8K. */
        const uint32_t sdk = sK + 2 * ks * TK, sdv = sdk + TK;
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
#pragma unroll
            for (int n = 0; n < NO; n++) {
                const uint32_t off = sw128<BN>(key_a + 8 * hh, n) + 4 * t;
                *reinterpret_cast<uint32_t *>(smem + (sdk - base) + off) =
                    dt::pack(dk[4 * n + 2 * hh] * p.scale, dk[4 * n + 2 * hh + 1] * p.scale);
                *reinterpret_cast<uint32_t *>(smem + (sdv - base) + off) =
                    dt::pack(dv[4 * n + 2 * hh], dv[4 * n + 2 * hh + 1]);
            }
        }
        fence_proxy_async();
        asm volatile("bar.sync %0, 128;\n" ::"r"(1 + wg) : "memory");
        if (tid % 128 == 32) { /* not thread 0, whose waits would then also cover its loads */
            tma_store_tile<D>(&m.out0, m.out0_seq_major, sdk + wg * 64 * 128, BN * 128, k0 + wg * 64, it.hkv, it.b);
            tma_store_tile<D>(&m.out1, m.out1_seq_major, sdv + wg * 64 * 128, BN * 128, k0 + wg * 64, it.hkv, it.b);
        }
        it = nit;
        have = nhave;
        ks ^= 1;
    }
    fm_cp_async_wait<0>();
    if (tid % 128 == 32)
        bulk_wait<0>();
#endif
}

/* ---- deterministic dQ ---------------------------------------------------------------------------------- */

constexpr int QB = FM_SM90_BLOCK_Q; /* query rows per work item of the dQ kernel */

template <int D> constexpr int dq_smem_bytes()
{
    /* Q, dO; two stages of K, V, of the keys' bounds and of their row masks; two stages of L, Dd; three mbarriers
     * and four ints; 1024 for alignment */
    return 1024 + 2 * QB * D * 2 + 2 * 2 * BN * D * 2 + 2 * 2 * BN * 16 + 2 * 2 * QB * 4 + 3 * 8 + 4 * 4;
}

/* A work item of the dQ pass: query tile qt of head h in batch b. Item x is query tile n_qt - 1 - x % n_qt of
 * head (x / n_qt) % H of batch x / (n_qt H): the tiles of a head run together and share its K and V in L2, and
 * under causal-like masks the longest walks go first. */
struct q_item {
    int r0, h, b, kb_end; /* its live key blocks lie before kb_end (and from p.ranges' first on) */
};

/* Persistent like the main kernel (counters[1]). In the last key block of an item the next item's first K and V
 * go out into the free stage at once, and its Q and dO (single-buffered) as soon as both warpgroups are done with
 * this item's S and dP, so that they land during the last dQ product and the epilogue. */
template <typename T, int D>
__global__ void __launch_bounds__(NTHREADS, 1)
    bwd_dq_sm90_kernel(const bwd_params p, const __grid_constant__ bwd_maps m)
{
#ifdef FM_SM90_BODY
    using dt = fm_dtype<T>;
    constexpr int TQ = QB * D * 2, TK = BN * D * 2;
    constexpr int NS = BN / 8, ND = D / 8;

    extern __shared__ unsigned char smem_raw[];
    const uint32_t base = (fm_smem_addr(smem_raw) + 1023u) & ~1023u;
    unsigned char *smem = smem_raw + (base - fm_smem_addr(smem_raw));
    const uint32_t sQ = base, sdO = sQ + TQ;
    const uint32_t sK = sdO + TQ;     /* two stages */
    const uint32_t sV = sK + 2 * TK;  /* two stages */
    const uint32_t sBd = sV + 2 * TK; /* two stages of BN int4 */
    const uint32_t sBits = sBd + 2 * BN * 16; /* two stages of [BN][QB / 32] words: masked rows of each key */
    const uint32_t sLD = sBits + 2 * BN * 16; /* two stages of [L, Dd][QB] */
    const uint32_t sBar = sLD + 2 * 2 * QB * 4; /* bar[0], bar[1]: a stage's K and V; bar[2]: Q and dO */
    const int4 *fBd = reinterpret_cast<const int4 *>(smem + (sBd - base));
    uint4 *fBits = reinterpret_cast<uint4 *>(smem + (sBits - base));
    const float *fLD = reinterpret_cast<const float *>(smem + (sLD - base));
    volatile int *slot = reinterpret_cast<int *>(smem + (sBar - base) + 3 * 8); /* [2]: next items; [2]: claims */

    const int tid = threadIdx.x, wg = tid / 128, warp = (tid / 32) % 4, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
    const int group = p.n_head / p.n_head_kv;
    const int n_kb = (p.seq_len_k + BN - 1) / BN;
    const int n_qt = (p.seq_len_q + QB - 1) / QB;
    const int n_items = n_qt * p.n_head * p.batch;

    /* the (batch, head) of the mask that item x reads */
    auto mask_bh = [&](const q_item &x) {
        return (int64_t)(p.batch_m == 1 ? 0 : x.b) * p.heads_m + mask_head(p, x.h);
    };
    auto mask_sums = [&](const q_item &x) { return p.summaries + mask_bh(x) * n_kb; };
    auto load_kv = [&](const q_item &x, int kb, int cls, int st) {
        const int c0 = kb * BN;
        const uint32_t bar = sBar + 8 * st;
        if (tid == 0) {
            mbar_expect_tx(bar, 2 * TK);
            tma_tile<D>(&m.k, m.kv_seq_major, sK + st * TK, BN, c0, x.h / group, x.b, bar);
            tma_tile<D>(&m.v, m.kv_seq_major, sV + st * TK, BN, c0, x.h / group, x.b, bar);
        }
        if ((cls == FM_TILE_PARTIAL || c0 + BN > p.seq_len_k) && tid < BN) {
            const int32_t *gb = p.bounds + mask_bh(x) * p.seq_len_k * 4;
            const bool ok = c0 + tid < p.seq_len_k;
            fm_cp_async16(sBd + (st * BN + tid) * 16, ok ? gb + 4 * (int64_t)(c0 + tid) : gb, ok ? 16 : 0);
        }
    };
    /* Q and dO of item x (TMA), its L and Dd into stage ls (cp.async). */
    auto load_q = [&](const q_item &x, int ls) {
        if (tid == 0) {
            mbar_expect_tx(sBar + 16, 2 * TQ);
            tma_tile<D>(&m.q, m.q_seq_major, sQ, QB, x.r0, x.h, x.b, sBar + 16);
            tma_tile<D>(&m.d_o, m.do_seq_major, sdO, QB, x.r0, x.h, x.b, sBar + 16);
        }
        const int64_t rb = ((int64_t)x.b * p.n_head + x.h) * p.seq_pad + x.r0;
        const uint32_t ld = sLD + ls * 2 * QB * 4;
        if (tid < QB / 4)
            fm_cp_async16(ld + 16 * tid, p.L + rb + 4 * tid, 16);
        else if (tid < QB / 2)
            fm_cp_async16(ld + QB * 4 + 16 * (tid - QB / 4), p.Dd + rb + 4 * (tid - QB / 4), 16);
    };
    /* From item number xn on, the first item with a live key block, into *x with its scan and first block;
     * zeroes dQ of the empty items it passes. false when none is left. Every thread calls it alike. */
    auto find_item = [&](int xn, q_item *x, live_scan *sc, int *kb, int *kcls) {
        while (xn < n_items) {
            x->r0 = (n_qt - 1 - xn % n_qt) * QB;
            x->h = (xn / n_qt) % p.n_head;
            x->b = xn / (n_qt * p.n_head);
            const int2 rg = reinterpret_cast<const int2 *>(p.ranges)[mask_bh(*x) * n_qt + x->r0 / QB];
            x->kb_end = rg.y;
            *sc = {-64, 0u, 0u};
            *kb = next_live(*sc, mask_sums(*x), rg.x, rg.y, x->r0, min(x->r0 + QB, p.seq_len_q), kcls);
            if (*kb < rg.y)
                return true;
            zero_rows<T, D>((T *)p.dq.p + x->b * p.dq.sb + x->h * p.dq.sh + x->r0 * p.dq.ss, p.dq.ss,
                            min(QB, p.seq_len_q - x->r0));
            xn = claim_item(p.counters + 1, slot + 2);
        }
        return false;
    };

    mbar_init_all(sBar, 3);

    q_item it;
    live_scan scan;
    int kb = 0, cls = FM_TILE_SKIPPED, st = 0, ls = 0;
    unsigned phase = 0; /* bit s: parity of the next wait on bar[s] */
    bool have = find_item(blockIdx.x, &it, &scan, &kb, &cls);
    if (have) {
        load_q(it, 0);
        load_kv(it, kb, cls, 0);
    }
    fm_cp_async_commit();

    const int rl = wg * 64 + warp * 16 + g; /* tile row of hh = 0; + 8 for hh = 1 */
    const uint32_t q_wg = sQ + wg * 64 * 128, do_wg = sdO + wg * 64 * 128;
    bool stored = false; /* a dQ store from a V stage may still be reading it */
    float dq[D / 2];
    while (have) {
        int fetched = 0; /* the item after this one; its latency hides behind the walk */
        if (tid == 0)
            fetched = atomicAdd(p.counters + 1, 1) + gridDim.x;
#pragma unroll
        for (int i = 0; i < D / 2; i++)
            dq[i] = 0.f;
        const int r1 = min(it.r0 + QB, p.seq_len_q);
        const fm_block_summary *sums = mask_sums(it);
        const float *fL = fLD + ls * 2 * QB, *fD = fL + QB;
        mbar_wait(sBar + 16, (phase >> 2) & 1);
        phase ^= 1u << 2;
        q_item nit = it;
        bool nhave = true, last = false;
        while (!last) {
            const int c0 = kb * BN;
            const uint32_t kst = sK + st * TK;
            /* S and dP start as soon as this thread sees K and V land; the barrier and the next block's loads are
             * issued while they run. */
            mbar_wait(sBar + 8 * st, (phase >> st) & 1);
            phase ^= 1u << st;
            float s[BN / 2], dp[BN / 2];
            wg_fence();
            wg_gemm_kk<T, D, BN>(s, q_wg, QB, kst, BN);
            wg_gemm_kk<T, D, BN>(dp, do_wg, QB, sV + st * TK, BN);
            wg_commit();
            int ncls = FM_TILE_SKIPPED;
            int next = next_live(scan, sums, kb + 1, it.kb_end, it.r0, r1, &ncls);
            last = next >= it.kb_end;
            if (last && tid == 0)
                slot[ls] = fetched;
            if (stored && tid % 128 == 32)
                bulk_wait_read<0>(); /* the item before's dQ store, from the V stage loaded next */
            stored = false;
            fm_cp_async_wait<0>();
            const bool masked_tile = cls == FM_TILE_PARTIAL || c0 + BN > p.seq_len_k;
            if (masked_tile && tid < BN) {
                /* the row masks of the key this thread loaded the bounds of (its own copy has landed) */
                const bool ok = c0 + tid < p.seq_len_k;
                const int4 v = fBd[st * BN + tid];
                fBits[st * BN + tid] = ok ? make_uint4(fm_masked_rows32(v, it.r0), fm_masked_rows32(v, it.r0 + 32),
                                                       fm_masked_rows32(v, it.r0 + 64), fm_masked_rows32(v, it.r0 + 96))
                                          : make_uint4(~0u, ~0u, ~0u, ~0u);
            }
            __syncthreads(); /* the row masks of block kb are written; everyone is done with the other stage;
                              * slot[ls] is written */
            if (!last) {
                load_kv(it, next, ncls, st ^ 1);
            } else {
                nhave = find_item(slot[ls], &nit, &scan, &next, &ncls);
                if (nhave)
                    load_kv(nit, next, ncls, st ^ 1);
            }
            fm_cp_async_commit();
            wg_wait<0>();
            if (last) {
                /* both warpgroups are done with Q, dO and this stage's V: the next item's Q and dO go out (its L
                 * and Dd to the other stage, this item's are read below), and V takes the dQ tile below */
                asm volatile("bar.sync 1, 256;\n" ::: "memory");
                if (nhave) {
                    load_q(nit, ls ^ 1);
                    fm_cp_async_commit();
                }
            }

            /* dS = P (dP - Dd); element 4 n + 2 hh + e is row rl + 8 hh, key c0 + 8 n + 2 t + e. Masked elements
             * (partial blocks, the ragged last block) get a scaled score of -inf before the exp2: word rl / 32 of
             * a key's row masks, shifted by rl % 32, has row rl in bit 0 and row rl + 8 in bit 8. */
            const uint32_t *kbits = reinterpret_cast<const uint32_t *>(fBits + st * BN) + rl / 32;
            auto grads = [&](auto with_mask) {
#pragma unroll
                for (int hh = 0; hh < 2; hh++) {
                    const float L = fL[rl + 8 * hh], Dd = fD[rl + 8 * hh];
#pragma unroll
                    for (int n = 0; n < NS; n++)
#pragma unroll
                        for (int e = 0; e < 2; e++) {
                            const int i = 4 * n + 2 * hh + e;
                            float x = s[i] * p.scale_log2 - L;
                            if (decltype(with_mask)::value &&
                                (kbits[4 * (8 * n + 2 * t + e)] >> (rl % 32 + 8 * hh) & 1u))
                                x = -INFINITY;
                            dp[i] = fm_exp2(x) * (dp[i] - Dd);
                        }
                }
            };
            if (masked_tile)
                grads(std::true_type());
            else
                grads(std::false_type());
            uint32_t da[BN / 16][4];
#pragma unroll
            for (int kk = 0; kk < BN / 16; kk++)
#pragma unroll
                for (int x = 0; x < 4; x++)
                    da[kk][x] = dt::pack(dp[8 * kk + 2 * x], dp[8 * kk + 2 * x + 1]);
            wg_fence();
            wg_gemm_rn<T, BN, D>(dq, da, kst, BN);
            wg_commit();
            wg_wait<0>();
            kb = next;
            cls = ncls;
            st ^= 1;
        }

        /* dQ times the scale into this warpgroup's rows of the V stage of the last block, then out by TMA store
         * while the next item's loads are in flight */
        const uint32_t sdq = sV + (st ^ 1) * TK;
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
#pragma unroll
            for (int n = 0; n < ND; n++)
                *reinterpret_cast<uint32_t *>(smem + (sdq - base) + sw128<BN>(rl + 8 * hh, n) + 4 * t) =
                    dt::pack(dq[4 * n + 2 * hh] * p.scale, dq[4 * n + 2 * hh + 1] * p.scale);
        }
        fence_proxy_async();
        asm volatile("bar.sync %0, 128;\n" ::"r"(2 + wg) : "memory");
        stored = true;
        if (tid % 128 == 32) /* not thread 0, whose waits would then also cover its loads */
            tma_store_tile<D>(&m.out0, m.out0_seq_major, sdq + wg * 64 * 128, BN * 128, it.r0 + wg * 64, it.h, it.b);
        it = nit;
        have = nhave;
        ls ^= 1;
    }
    fm_cp_async_wait<0>();
    if (tid % 128 == 32)
        bulk_wait<0>();
    /* done only when the main kernel is (its dK and dV written): what follows in the stream waits for this grid */
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

/* The map of a [batch, seq_len, heads, D] tensor for boxes of `rows` rows (make_map), with its dimension order. */
template <int D>
bool view_map(const tensor_view &v, int is_bf16, int rows, int seq_len, int heads, int batch, CUtensorMap *map,
              int *seq_major)
{
    *seq_major = !(v.sh < v.ss && heads > 1);
    return !make_map(NULL, map, v.p, is_bf16, D, rows, seq_len, heads, batch, v.ss, v.sh, v.sb, *seq_major);
}

/* The maps of either kernel: Q and dO with boxes of q_rows rows; outputs dK and dV (main kernel, dq = false) or
 * dQ (dq = true). */
template <int D> bool make_maps(const bwd_params &p, int is_bf16, int q_rows, bool dq, bwd_maps *m)
{
    /* V takes K's dimension order (either order describes any strides; the kernels load both with one flag) */
    return view_map<D>(p.q, is_bf16, q_rows, p.seq_len_q, p.n_head, p.batch, &m->q, &m->q_seq_major) &&
           view_map<D>(p.d_o, is_bf16, q_rows, p.seq_len_q, p.n_head, p.batch, &m->d_o, &m->do_seq_major) &&
           view_map<D>(p.k, is_bf16, BN, p.seq_len_k, p.n_head_kv, p.batch, &m->k, &m->kv_seq_major) &&
           !make_map(NULL, &m->v, p.v.p, is_bf16, D, BN, p.seq_len_k, p.n_head_kv, p.batch, p.v.ss, p.v.sh, p.v.sb,
                     m->kv_seq_major) &&
           (dq ? view_map<D>(p.dq, is_bf16, 64, p.seq_len_q, p.n_head, p.batch, &m->out0, &m->out0_seq_major)
               : view_map<D>(p.dk, is_bf16, 64, p.seq_len_k, p.n_head_kv, p.batch, &m->out0, &m->out0_seq_major) &&
                     view_map<D>(p.dv, is_bf16, 64, p.seq_len_k, p.n_head_kv, p.batch, &m->out1,
                                 &m->out1_seq_major));
}

/* One launch of either kernel: min(items, multiprocessors) persistent CTAs; the shared-memory opt-in and the
 * multiprocessor count once per device (*attr_done: a bit per device). early: a programmatic dependent launch,
 * which may start before the kernel ahead of it in the stream has finished (see the dQ pass). */
cudaError_t launch_kernel(void (*kernel)(bwd_params, bwd_maps), int smem, unsigned long long *attr_done,
                          int64_t items, const bwd_params &p, const bwd_maps &m, bool early, cudaStream_t stream)
{
    static int n_sm[64];
    int device = 0;
    cudaError_t e = cudaGetDevice(&device);
    if (e != cudaSuccess)
        return e;
    if (!p.counters || device >= 64)
        return cudaErrorInvalidValue;
    if (!(*attr_done >> device & 1ull)) {
        if ((e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem)) != cudaSuccess ||
            (e = cudaDeviceGetAttribute(&n_sm[device], cudaDevAttrMultiProcessorCount, device)) != cudaSuccess)
            return e;
        *attr_done |= 1ull << device;
    }
    if (items <= 0)
        return cudaSuccess;
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cfg.gridDim = dim3((unsigned)fm_cuda_persistent_ctas(items, n_sm[device]));
    cfg.blockDim = dim3(NTHREADS);
    cfg.dynamicSmemBytes = (size_t)smem;
    cfg.stream = stream;
    cfg.attrs = &attr;
    cfg.numAttrs = early ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, kernel, p, m);
}

template <typename T, int D> cudaError_t launch(const bwd_params &p, cudaStream_t stream)
{
    static unsigned long long attr_done = 0;
    bwd_maps m;
    if (!make_maps<D>(p, fm_is_bf16<T>::value, BM, false, &m))
        return cudaErrorInvalidValue;
    return launch_kernel(bwd_sm90_kernel<T, D>, smem_bytes<D>(), &attr_done,
                         (int64_t)((p.seq_len_k + BN - 1) / BN) * p.n_head_kv * p.batch, p, m, false, stream);
}

template <typename T, int D> cudaError_t launch_dq(const bwd_params &p, cudaStream_t stream)
{
    static unsigned long long attr_done = 0;
    bwd_maps m;
    if (!make_maps<D>(p, fm_is_bf16<T>::value, QB, true, &m))
        return cudaErrorInvalidValue;
    return launch_kernel(bwd_dq_sm90_kernel<T, D>, dq_smem_bytes<D>(), &attr_done,
                         (int64_t)((p.seq_len_q + QB - 1) / QB) * p.n_head * p.batch, p, m, true, stream);
}

} /* namespace */

int fm_bwd_sm90_applies(int head_dim)
{
    const char *force = getenv("FAMASK_CUDA_BWD");
    if (force && strcmp(force, "sm80") == 0)
        return 0;
    return (head_dim == 64 || head_dim == 128) && fm_sm90::device_ok();
}

cudaError_t fm_bwd_sm90(const bwd_params &p, int head_dim, int is_bf16, cudaStream_t stream)
{
    if (p.dq_acc) /* this kernel computes no dQ: the caller takes the split path */
        return cudaErrorInvalidValue;
    if (head_dim == 64)
        return is_bf16 ? launch<__nv_bfloat16, 64>(p, stream) : launch<__half, 64>(p, stream);
    return is_bf16 ? launch<__nv_bfloat16, 128>(p, stream) : launch<__half, 128>(p, stream);
}

cudaError_t fm_bwd_dq_sm90(const bwd_params &p, int head_dim, int is_bf16, cudaStream_t stream)
{
    if (head_dim == 64)
        return is_bf16 ? launch_dq<__nv_bfloat16, 64>(p, stream) : launch_dq<__half, 64>(p, stream);
    return is_bf16 ? launch_dq<__nv_bfloat16, 128>(p, stream) : launch_dq<__half, 128>(p, stream);
}
