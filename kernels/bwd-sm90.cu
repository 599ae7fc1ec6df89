/*
 * bwd-sm90.cu: the backward on Hopper (sm_90a): wgmma and TMA, with FlashMask tile skipping.
 *
 * Takes the place of bwd_main2_kernel and bwd_dq_kernel (kernels/bwd.cu) for head dims 64 and 128 on sm_90
 * devices: the same inputs (the preprocess's L and Dd), the same walks, the same outputs, always in the split
 * form of the deterministic mode (no dQ accumulator, no atomics), which measured as fast as dQ by atomics or
 * faster.
 *
 * Main kernel (dK, dV): one CTA of two warpgroups per (key block of 128, kv head, batch); warpgroup w owns keys
 * 64w..64w+63. K and V of the block come in once by TMA; the CTA walks the live query tiles of 64 rows of every
 * query head of its GQA group (fm_bwd::next_query_tile), Q and dO by TMA into two stages, L, Dd and (for
 * partial tiles) the keys' bounds by cp.async. Per tile, each warpgroup computes on the tensor cores
 *     S^T = K Q^T, dP^T = V dO^T   (m64n64, both operands from shared memory, K-major),
 * then in registers P^T = exp2(S^T scale log2(e) - L), dS^T = P^T (dP^T - Dd), zero where masked, and
 *     dV += P^T dO, dK += dS^T Q   (m64nD, A from registers, B from shared memory MN-major).
 * dK and dV stay in registers until the end. (A first version also computed dQ = dS K there, from dS^T staged
 * in shared memory, added with 8-byte atomics: 13.69 ms against 13.73 for the split form at 8K full, 2.40
 * against 2.18 on document masks.)
 *
 * dQ pass: one CTA of two warpgroups per (query tile of 128, head, batch), walking the live key blocks of 128 in
 * order as the forward does (fwd.cuh's live_scan), K and V through TMA in two stages:
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

constexpr int BN = 128; /* keys per CTA */
constexpr int BM = BR;  /* query rows per tile (64) */

struct bwd_maps {
    CUtensorMap q, d_o, k, v;
    int q_seq_major, do_seq_major, kv_seq_major;
};

template <int D> constexpr int smem_bytes()
{
    /* K, V; two stages of Q and dO; two stages of (L, Dd); two stages of the keys' bounds; three mbarriers; 1024
     * for aligning the base */
    return 1024 + 2 * BN * D * 2 + 2 * 2 * BM * D * 2 + 2 * 2 * BM * 4 + 2 * BN * 16 + 3 * 8;
}

template <typename T, int D>
__global__ void __launch_bounds__(NTHREADS, 1) bwd_sm90_kernel(const bwd_params p, const __grid_constant__ bwd_maps m)
{
#ifdef FM_SM90_BODY
    using dt = fm_dtype<T>;
    constexpr int TK = BN * D * 2, TQ = BM * D * 2;
    constexpr int NS = BM / 8; /* n8 query groups of S^T */
    constexpr int NO = D / 8;  /* n8 column groups of dK, dV */

    extern __shared__ unsigned char smem_raw[];
    const uint32_t base = (fm_smem_addr(smem_raw) + 1023u) & ~1023u;
    unsigned char *smem = smem_raw + (base - fm_smem_addr(smem_raw));
    const uint32_t sK = base, sV = sK + TK;
    const uint32_t sQ = sV + TK;      /* two stages */
    const uint32_t sdO = sQ + 2 * TQ; /* two stages */
    const uint32_t sLD = sdO + 2 * TQ;
    const uint32_t sBd = sLD + 2 * 2 * BM * 4;
    const uint32_t sBar = sBd + 2 * BN * 16; /* bar[0], bar[1]: a stage's Q and dO; bar[2]: K and V */
    const float *fLD = reinterpret_cast<const float *>(smem + (sLD - base)); /* [stage][L, Dd][BM] */
    const int4 *fBd = reinterpret_cast<const int4 *>(smem + (sBd - base));   /* [stage][BN] */

    const int kb = blockIdx.x, hkv = blockIdx.y, b = blockIdx.z;
    const int tid = threadIdx.x, wg = tid / 128, warp = (tid / 32) % 4, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
    const int k0 = kb * BN;
    const int group = p.n_head / p.n_head_kv;
    const int n_kb = (p.seq_len_k + BN - 1) / BN;
    const bool key_tail = k0 + BN > p.seq_len_k;
    const int mb = p.batch_m == 1 ? 0 : b;

    /* Q, dO (TMA), L, Dd and, for a partial tile or the ragged last key block, the keys' bounds (cp.async) of
     * query tile tt of head-in-group hi into stage st. */
    auto load_tile = [&](int hi, int tt, int st, int tcls) {
        const int h = hkv * group + hi, q0 = tt * BM;
        const uint32_t bar = sBar + 8 * st;
        if (tid == 0) {
            mbar_expect_tx(bar, 2 * TQ);
            tma_tile<D>(&m.q, m.q_seq_major, sQ + st * TQ, BM, q0, h, b, bar);
            tma_tile<D>(&m.d_o, m.do_seq_major, sdO + st * TQ, BM, q0, h, b, bar);
        }
        const int64_t rb = ((int64_t)b * p.n_head + h) * p.seq_pad + q0;
        if (tid < BM / 4)
            fm_cp_async16(sLD + (st * 2) * BM * 4 + 16 * tid, p.L + rb + 4 * tid, 16);
        else if (tid < BM / 2)
            fm_cp_async16(sLD + (st * 2 + 1) * BM * 4 + 16 * (tid - BM / 4), p.Dd + rb + 4 * (tid - BM / 4), 16);
        if ((tcls == FM_TILE_PARTIAL || key_tail) && tid >= NTHREADS - BN) {
            const int key = tid - (NTHREADS - BN);
            const int4 *col =
                reinterpret_cast<const int4 *>(p.bounds) + ((int64_t)mb * p.heads_m + mask_head(p, h)) * p.seq_len_k;
            const bool ok = k0 + key < p.seq_len_k;
            fm_cp_async16(sBd + (st * BN + key) * 16, col + (ok ? k0 + key : 0), ok ? 16 : 0);
        }
    };

    if (tid == 0) {
        for (int i = 0; i < 3; i++)
            mbar_init(sBar + 8 * i, 1);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    if (tid == 0) {
        mbar_expect_tx(sBar + 16, 2 * TK);
        tma_tile<D>(&m.k, m.kv_seq_major, sK, BN, k0, hkv, b, sBar + 16);
        tma_tile<D>(&m.v, m.kv_seq_major, sV, BN, k0, hkv, b, sBar + 16);
    }

    float dk[D / 2], dv[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; i++)
        dk[i] = dv[i] = 0.f;

    int hi = 0, tt = 0, cls = 0, st = 0;
    unsigned phase = 0; /* bit s: parity of stage s's next wait */
    tile_walk wk;
    wk.s_hi = -1;
    bool have = next_query_tile<BM>(p, wk, n_kb, kb, hkv, group, &hi, &tt, &cls);
    if (have)
        load_tile(hi, tt, 0, cls);
    fm_cp_async_commit();
    mbar_wait(sBar + 16, 0);

    const uint32_t k_wg = sK + wg * 64 * 128, v_wg = sV + wg * 64 * 128; /* this warpgroup's key rows */
    const int key_a = wg * 64 + warp * 16 + g;                           /* key of rows hh = 0; + 8 for hh = 1 */
    while (have) {
        const int q0 = tt * BM;
        const uint32_t qst = sQ + st * TQ, dost = sdO + st * TQ;
        /* S^T = K Q^T and dP^T = V dO^T (keys 64 wg.. x the tile's 64 queries) start as soon as this thread sees
         * Q and dO land; the barrier and the next tile's loads are issued while they run. */
        mbar_wait(sBar + 8 * st, (phase >> st) & 1);
        phase ^= 1u << st;
        float s[BM / 2], dp[BM / 2];
        wg_fence();
        wg_gemm_kk<T, D, BM>(s, k_wg, BN, qst, BM);
        wg_gemm_kk<T, D, BM>(dp, v_wg, BN, dost, BM);
        wg_commit();
        fm_cp_async_wait<0>();
        __syncthreads(); /* L, Dd and bounds of tile tt landed for everyone; everyone is done with the other stage */
        int nhi = hi, nt = tt + 1, ncls = 0;
        const bool nhave = next_query_tile<BM>(p, wk, n_kb, kb, hkv, group, &nhi, &nt, &ncls);
        if (nhave)
            load_tile(nhi, nt, st ^ 1, ncls);
        fm_cp_async_commit();
        wg_wait<0>();

        /* P^T and dS^T; element s[4 n + 2 hh + e] is key key_a + 8 hh, query q0 + 8 n + 2 t + e */
        const float *cL = fLD + (st * 2) * BM, *cD = fLD + (st * 2 + 1) * BM;
#pragma unroll
        for (int n = 0; n < NS; n++) {
            const float2 L2 = *reinterpret_cast<const float2 *>(cL + 8 * n + 2 * t);
            const float2 D2 = *reinterpret_cast<const float2 *>(cD + 8 * n + 2 * t);
#pragma unroll
            for (int hh = 0; hh < 2; hh++) {
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int i = 4 * n + 2 * hh + e;
                    const float pv = fm_exp2(s[i] * p.scale_log2 - (e ? L2.y : L2.x));
                    s[i] = pv;
                    dp[i] = pv * (dp[i] - (e ? D2.y : D2.x));
                }
            }
        }
        /* the element mask, only on partial tiles and the ragged last key block (masked entries may hold inf or
         * NaN above; they are overwritten here) */
        if (cls == FM_TILE_PARTIAL || key_tail) {
            const int4 *cB = fBd + st * BN;
            const int4 none = make_int4(0, INT32_MAX, 0, 0); /* a key past seq_len_k: masked in every row */
            const int4 bd[2] = {k0 + key_a < p.seq_len_k ? cB[key_a] : none,
                                k0 + key_a + 8 < p.seq_len_k ? cB[key_a + 8] : none};
#pragma unroll
            for (int n = 0; n < NS; n++)
#pragma unroll
                for (int hh = 0; hh < 2; hh++)
#pragma unroll
                    for (int e = 0; e < 2; e++)
                        if (is_masked(bd[hh], q0 + 8 * n + 2 * t + e))
                            s[4 * n + 2 * hh + e] = dp[4 * n + 2 * hh + e] = 0.f;
        }
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
        have = nhave;
        st ^= 1;
    }
    fm_cp_async_wait<0>();

    /* dK (times the scale) and dV: rows key_a, key_a + 8, columns 8 n + 2 t */
    T *gdk = (T *)p.dk.p + b * p.dk.sb + hkv * p.dk.sh;
    T *gdv = (T *)p.dv.p + b * p.dv.sb + hkv * p.dv.sh;
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        const int key = k0 + key_a + 8 * hh;
        if (key < p.seq_len_k) {
#pragma unroll
            for (int n = 0; n < NO; n++) {
                const int c = 8 * n + 2 * t;
                *reinterpret_cast<uint32_t *>(gdk + key * p.dk.ss + c) =
                    dt::pack(dk[4 * n + 2 * hh] * p.scale, dk[4 * n + 2 * hh + 1] * p.scale);
                *reinterpret_cast<uint32_t *>(gdv + key * p.dv.ss + c) =
                    dt::pack(dv[4 * n + 2 * hh], dv[4 * n + 2 * hh + 1]);
            }
        }
    }
#endif
}

/* ---- deterministic dQ ---------------------------------------------------------------------------------- */

constexpr int QB = 128; /* query rows per CTA of the dQ kernel */

template <int D> constexpr int dq_smem_bytes()
{
    /* Q, dO; two stages of K, V and of the keys' bounds; L, Dd; three mbarriers; 1024 for alignment */
    return 1024 + 2 * QB * D * 2 + 2 * 2 * BN * D * 2 + 2 * BN * 16 + 2 * QB * 4 + 3 * 8;
}

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
    const uint32_t sLD = sBd + 2 * BN * 16;
    const uint32_t sBar = sLD + 2 * QB * 4; /* bar[0], bar[1]: a stage's K and V; bar[2]: Q and dO */
    const int4 *fBd = reinterpret_cast<const int4 *>(smem + (sBd - base));
    const float *fL = reinterpret_cast<const float *>(smem + (sLD - base)), *fD = fL + QB;

    const int tid = threadIdx.x, wg = tid / 128, warp = (tid / 32) % 4, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
    const int qt = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int group = p.n_head / p.n_head_kv, hk = h / group;
    const int r0 = qt * QB, r1 = min(r0 + QB, p.seq_len_q);
    const int n_kb = (p.seq_len_k + BN - 1) / BN;
    const int mb = p.batch_m == 1 ? 0 : b;
    const int64_t mask_bh = (int64_t)mb * p.heads_m + mask_head(p, h);
    const fm_block_summary *sums = p.summaries + mask_bh * n_kb;
    const int32_t *gb = p.bounds + mask_bh * p.seq_len_k * 4;

    auto load_kv = [&](int kb, int cls, int st) {
        const int c0 = kb * BN;
        const uint32_t bar = sBar + 8 * st;
        if (tid == 0) {
            mbar_expect_tx(bar, 2 * TK);
            tma_tile<D>(&m.k, m.kv_seq_major, sK + st * TK, BN, c0, hk, b, bar);
            tma_tile<D>(&m.v, m.kv_seq_major, sV + st * TK, BN, c0, hk, b, bar);
        }
        if ((cls == FM_TILE_PARTIAL || c0 + BN > p.seq_len_k) && tid < BN) {
            const bool ok = c0 + tid < p.seq_len_k;
            fm_cp_async16(sBd + (st * BN + tid) * 16, ok ? gb + 4 * (int64_t)(c0 + tid) : gb, ok ? 16 : 0);
        }
    };

    if (tid == 0) {
        for (int i = 0; i < 3; i++)
            mbar_init(sBar + 8 * i, 1);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    int cls = FM_TILE_SKIPPED, ncls = FM_TILE_SKIPPED;
    live_scan scan = {-64, 0u, 0u};
    int kb = next_live(scan, sums, 0, n_kb, r0, r1, &cls);
    if (kb < n_kb) {
        if (tid == 0) {
            mbar_expect_tx(sBar + 16, 2 * TQ);
            tma_tile<D>(&m.q, m.q_seq_major, sQ, QB, r0, h, b, sBar + 16);
            tma_tile<D>(&m.d_o, m.do_seq_major, sdO, QB, r0, h, b, sBar + 16);
        }
        const int64_t rb = ((int64_t)b * p.n_head + h) * p.seq_pad + r0;
        if (tid < QB / 4)
            fm_cp_async16(sLD + 16 * tid, p.L + rb + 4 * tid, 16);
        else if (tid < QB / 2)
            fm_cp_async16(sLD + QB * 4 + 16 * (tid - QB / 4), p.Dd + rb + 4 * (tid - QB / 4), 16);
        load_kv(kb, cls, 0);
    }
    fm_cp_async_commit();

    float dq[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; i++)
        dq[i] = 0.f;
    const int rl = wg * 64 + warp * 16 + g; /* tile row of hh = 0; + 8 for hh = 1 */
    const uint32_t q_wg = sQ + wg * 64 * 128, do_wg = sdO + wg * 64 * 128;
    if (kb < n_kb)
        mbar_wait(sBar + 16, 0);
    int st = 0;
    unsigned phase = 0;
    while (kb < n_kb) {
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
        fm_cp_async_wait<0>();
        __syncthreads(); /* the bounds of block kb landed for everyone; everyone is done with the other stage */
        const int next = next_live(scan, sums, kb + 1, n_kb, r0, r1, &ncls);
        if (next < n_kb)
            load_kv(next, ncls, st ^ 1);
        fm_cp_async_commit();
        wg_wait<0>();

        /* dS = P (dP - Dd); element 4 n + 2 hh + e is row rl + 8 hh, key c0 + 8 n + 2 t + e */
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            const float L = fL[rl + 8 * hh], Dd = fD[rl + 8 * hh];
#pragma unroll
            for (int n = 0; n < NS; n++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int i = 4 * n + 2 * hh + e;
                    dp[i] = fm_exp2(s[i] * p.scale_log2 - L) * (dp[i] - Dd);
                }
        }
        if (cls == FM_TILE_PARTIAL || c0 + BN > p.seq_len_k) {
            const int4 *bnd = fBd + st * BN;
            const int rb = r0 + rl;
#pragma unroll
            for (int n = 0; n < NS; n++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int cl = n * 8 + 2 * t + e;
                    const int4 v = bnd[cl];
                    const bool col_ok = c0 + cl < p.seq_len_k;
#pragma unroll
                    for (int hh = 0; hh < 2; hh++)
                        if (!col_ok || is_masked(v, rb + 8 * hh))
                            dp[4 * n + 2 * hh + e] = 0.f;
                }
        }
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
    fm_cp_async_wait<0>();

    T *gdq = (T *)p.dq.p + b * p.dq.sb + h * p.dq.sh;
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        const int row = r0 + rl + 8 * hh;
        if (row < p.seq_len_q) {
#pragma unroll
            for (int n = 0; n < ND; n++)
                *reinterpret_cast<uint32_t *>(gdq + (int64_t)row * p.dq.ss + 8 * n + 2 * t) =
                    dt::pack(dq[4 * n + 2 * hh] * p.scale, dq[4 * n + 2 * hh + 1] * p.scale);
        }
    }
#endif
}

/* The tensor maps of Q and dO (boxes of q_rows rows) and of K and V (boxes of BN rows). */
template <int D> bool make_maps(const bwd_params &p, int is_bf16, int q_rows, bwd_maps *m)
{
    m->q_seq_major = !(p.q.sh < p.q.ss && p.n_head > 1);
    m->do_seq_major = !(p.d_o.sh < p.d_o.ss && p.n_head > 1);
    m->kv_seq_major = !(p.k.sh < p.k.ss && p.n_head_kv > 1);
    return !make_map(NULL, &m->q, p.q.p, is_bf16, D, q_rows, p.seq_len_q, p.n_head, p.batch, p.q.ss, p.q.sh, p.q.sb,
                     m->q_seq_major) &&
           !make_map(NULL, &m->d_o, p.d_o.p, is_bf16, D, q_rows, p.seq_len_q, p.n_head, p.batch, p.d_o.ss, p.d_o.sh,
                     p.d_o.sb, m->do_seq_major) &&
           !make_map(NULL, &m->k, p.k.p, is_bf16, D, BN, p.seq_len_k, p.n_head_kv, p.batch, p.k.ss, p.k.sh, p.k.sb,
                     m->kv_seq_major) &&
           !make_map(NULL, &m->v, p.v.p, is_bf16, D, BN, p.seq_len_k, p.n_head_kv, p.batch, p.v.ss, p.v.sh, p.v.sb,
                     m->kv_seq_major);
}

/* One launch of either kernel; the shared-memory opt-in once per device (*attr_done: a bit per device). */
cudaError_t launch_kernel(void (*kernel)(bwd_params, bwd_maps), int smem, unsigned long long *attr_done, dim3 grid,
                          const bwd_params &p, const bwd_maps &m, cudaStream_t stream)
{
    int device = 0;
    cudaError_t e = cudaGetDevice(&device);
    if (e != cudaSuccess)
        return e;
    if (device >= 64 || !(*attr_done >> device & 1ull)) {
        e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
        if (e != cudaSuccess)
            return e;
        if (device < 64)
            *attr_done |= 1ull << device;
    }
    kernel<<<grid, NTHREADS, smem, stream>>>(p, m);
    return cudaGetLastError();
}

template <typename T, int D> cudaError_t launch(const bwd_params &p, cudaStream_t stream)
{
    static unsigned long long attr_done = 0;
    bwd_maps m;
    if (!make_maps<D>(p, fm_is_bf16<T>::value, BM, &m))
        return cudaErrorInvalidValue;
    return launch_kernel(bwd_sm90_kernel<T, D>, smem_bytes<D>(), &attr_done,
                         dim3((p.seq_len_k + BN - 1) / BN, p.n_head_kv, p.batch), p, m, stream);
}

template <typename T, int D> cudaError_t launch_dq(const bwd_params &p, cudaStream_t stream)
{
    static unsigned long long attr_done = 0;
    bwd_maps m;
    if (!make_maps<D>(p, fm_is_bf16<T>::value, QB, &m))
        return cudaErrorInvalidValue;
    return launch_kernel(bwd_dq_sm90_kernel<T, D>, dq_smem_bytes<D>(), &attr_done,
                         dim3((p.seq_len_q + QB - 1) / QB, p.n_head, p.batch), p, m, stream);
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
