/*
 * bwd-sm90.cu: the backward's main kernel on Hopper (sm_90a): wgmma and TMA, with FlashMask tile skipping.
 *
 * Takes the place of bwd_main2_kernel (kernels/bwd.cu) for head dim 128 on sm_90 devices: the same inputs (the
 * preprocess's L and Dd, the fp32 dQ accumulator or none in deterministic mode), the same walk, the same outputs.
 *
 * One CTA of two warpgroups per (key block of 128, kv head, batch); warpgroup w owns keys 64w..64w+63. K and V of
 * the block come in once by TMA; the CTA walks the live query tiles of 64 rows of every query head of its GQA
 * group (fm_bwd::next_query_tile), Q and dO by TMA into two stages, L, Dd and (for partial tiles) the keys'
 * bounds by cp.async. Per tile, each warpgroup computes on the tensor cores
 *     S^T = K Q^T, dP^T = V dO^T   (m64n64, both operands from shared memory, K-major),
 * then in registers P^T = exp2(S^T scale log2(e) - L), dS^T = P^T (dP^T - Dd), zero where masked, and
 *     dV += P^T dO, dK += dS^T Q   (m64nD, A from registers, B from shared memory MN-major),
 *     dQ[:, 64w..] = dS K          (m64n64 over all 128 keys, dS^T staged in shared memory; A and B MN-major),
 * the last added to the fp32 accumulator with 8-byte atomics. dK and dV stay in registers until the end.
 * Layouts and descriptors: kernels/sm90.cuh.
 */
#include "bwd.cuh"
#include "sm90.cuh"

#include <stdlib.h>
#include <string.h>
#include <type_traits>

namespace {

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
    /* K, V; two stages of Q and dO; dS^T; two stages of (L, Dd); two stages of the keys' bounds; three mbarriers;
     * 1024 for aligning the base */
    return 1024 + 2 * BN * D * 2 + 2 * 2 * BM * D * 2 + BN * BM * 2 + 2 * 2 * BM * 4 + 2 * BN * 16 + 3 * 8;
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
    const uint32_t sQ = sV + TK;       /* two stages */
    const uint32_t sdO = sQ + 2 * TQ;  /* two stages */
    const uint32_t sdS = sdO + 2 * TQ; /* [BN keys][BM queries] */
    const uint32_t sLD = sdS + BN * BM * 2;
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
    const bool dq_atomic = p.dq_acc != nullptr;

    auto tma_tile = [&](const CUtensorMap *map, int seq_major, uint32_t dst, int rows, int row0, int hd,
                        uint32_t bar) {
#pragma unroll
        for (int a = 0; a < D / 64; a++) {
            if (seq_major)
                tma_load(dst + a * rows * 128, map, a * 64, row0, hd, b, bar);
            else
                tma_load(dst + a * rows * 128, map, a * 64, hd, row0, b, bar);
        }
    };
    /* Q, dO (TMA), L, Dd and, for a partial tile or the ragged last key block, the keys' bounds (cp.async) of
     * query tile tt of head-in-group hi into stage st. */
    auto load_tile = [&](int hi, int tt, int st, int tcls) {
        const int h = hkv * group + hi, q0 = tt * BM;
        const uint32_t bar = sBar + 8 * st;
        if (tid == 0) {
            mbar_expect_tx(bar, 2 * TQ);
            tma_tile(&m.q, m.q_seq_major, sQ + st * TQ, BM, q0, h, bar);
            tma_tile(&m.d_o, m.do_seq_major, sdO + st * TQ, BM, q0, h, bar);
        }
        const int64_t rb = ((int64_t)b * p.n_head + h) * p.seq_pad + q0;
        if (tid < BM / 4)
            fm_cp_async16(sLD + (st * 2) * BM * 4 + 16 * tid, p.L + rb + 4 * tid, 16);
        else if (tid < BM / 2)
            fm_cp_async16(sLD + (st * 2 + 1) * BM * 4 + 16 * (tid - BM / 4), p.Dd + rb + 4 * (tid - BM / 4), 16);
        if ((tcls == FM_TILE_PARTIAL || key_tail) && tid >= NTHREADS - BN) {
            const int key = tid - (NTHREADS - BN);
            const int4 *col = reinterpret_cast<const int4 *>(p.bounds) +
                              ((int64_t)mb * p.heads_m + mask_head(p, h)) * p.seq_len_k;
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
        tma_tile(&m.k, m.kv_seq_major, sK, BN, k0, hkv, sBar + 16);
        tma_tile(&m.v, m.kv_seq_major, sV, BN, k0, hkv, sBar + 16);
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
    const int key_a = wg * 64 + warp * 16 + g;                            /* key of rows hh = 0; + 8 for hh = 1 */
    while (have) {
        fm_cp_async_wait<0>();
        mbar_wait(sBar + 8 * st, (phase >> st) & 1);
        phase ^= 1u << st;
        __syncthreads(); /* tile tt landed for everyone; everyone is done with the other stage and with dS^T */
        int nhi = hi, nt = tt + 1, ncls = 0;
        const bool nhave = next_query_tile<BM>(p, wk, n_kb, kb, hkv, group, &nhi, &nt, &ncls);
        if (nhave)
            load_tile(nhi, nt, st ^ 1, ncls);
        fm_cp_async_commit();

        const int h = hkv * group + hi, q0 = tt * BM;
        const uint32_t qst = sQ + st * TQ, dost = sdO + st * TQ;

        /* S^T = K Q^T and dP^T = V dO^T: keys 64 wg.. x the tile's 64 queries */
        float s[BM / 2], dp[BM / 2];
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < D / 16; ks++) {
            const uint32_t koff = (ks / 4) * (BN * 128) + (ks % 4) * 32;
            const uint32_t qoff = (ks / 4) * (BM * 128) + (ks % 4) * 32;
            wgmma<T>::template ss<0, 0>(s, desc_sw128(k_wg + koff, 16, 1024), desc_sw128(qst + qoff, 16, 1024),
                                        ks > 0);
        }
#pragma unroll
        for (int ks = 0; ks < D / 16; ks++) {
            const uint32_t koff = (ks / 4) * (BN * 128) + (ks % 4) * 32;
            const uint32_t qoff = (ks / 4) * (BM * 128) + (ks % 4) * 32;
            wgmma<T>::template ss<0, 0>(dp, desc_sw128(v_wg + koff, 16, 1024), desc_sw128(dost + qoff, 16, 1024),
                                        ks > 0);
        }
        wg_commit();
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
#pragma unroll
        for (int kk = 0; kk < BM / 16; kk++)
            wgmma<T>::template rs<1>(dv, pa[kk], desc_sw128(dost + kk * 16 * 128, BM * 128, 1024));
#pragma unroll
        for (int kk = 0; kk < BM / 16; kk++)
            wgmma<T>::template rs<1>(dk, da[kk], desc_sw128(qst + kk * 16 * 128, BM * 128, 1024));
        wg_commit();

        if (dq_atomic) {
            /* dS^T to shared memory (row = key, the 64 queries one atom wide), for dQ = dS K */
#pragma unroll
            for (int kk = 0; kk < BM / 16; kk++) {
#pragma unroll
                for (int x = 0; x < 4; x++) {
                    const int n = 2 * kk + x / 2, hh = x % 2;
                    *reinterpret_cast<uint32_t *>(smem + (sdS - base) + sw128<BN>(key_a + 8 * hh, n) + 4 * t) =
                        da[kk][x];
                }
            }
            fence_proxy_async();
            __syncthreads(); /* dS^T of both warpgroups */
            /* dQ[:, 64 wg..] = dS K: queries x 64 columns, k over the 128 keys */
            float dq[32];
            wg_fence();
#pragma unroll
            for (int kk = 0; kk < BN / 16; kk++)
                wgmma<T>::template ss<1, 1>(dq, desc_sw128(sdS + kk * 16 * 128, BN * 128, 1024),
                                            desc_sw128(sK + wg * BN * 128 + kk * 16 * 128, BN * 128, 1024), kk > 0);
            wg_commit();
            wg_wait<0>();
            float *dst = p.dq_acc + (((int64_t)b * p.n_head + h) * p.seq_pad + q0 + warp * 16 + g) * D + wg * 64 +
                         2 * t;
#pragma unroll
            for (int n = 0; n < 8; n++) {
                add2(dst + 8 * n, dq[4 * n], dq[4 * n + 1]);
                add2(dst + 8 * D + 8 * n, dq[4 * n + 2], dq[4 * n + 3]);
            }
        } else {
            wg_wait<0>();
        }

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

template <typename T, int D> cudaError_t launch(const bwd_params &p, cudaStream_t stream)
{
    constexpr int smem = smem_bytes<D>();
    static unsigned long long attr_done = 0; /* per device */
    const int is_bf16 = fm_is_bf16<T>::value;
    bwd_maps m;
    m.q_seq_major = !(p.q.sh < p.q.ss && p.n_head > 1);
    m.do_seq_major = !(p.d_o.sh < p.d_o.ss && p.n_head > 1);
    m.kv_seq_major = !(p.k.sh < p.k.ss && p.n_head_kv > 1);
    if (make_map(NULL, &m.q, p.q.p, is_bf16, D, BM, p.seq_len_q, p.n_head, p.batch, p.q.ss, p.q.sh, p.q.sb,
                 m.q_seq_major) ||
        make_map(NULL, &m.d_o, p.d_o.p, is_bf16, D, BM, p.seq_len_q, p.n_head, p.batch, p.d_o.ss, p.d_o.sh,
                 p.d_o.sb, m.do_seq_major) ||
        make_map(NULL, &m.k, p.k.p, is_bf16, D, BN, p.seq_len_k, p.n_head_kv, p.batch, p.k.ss, p.k.sh, p.k.sb,
                 m.kv_seq_major) ||
        make_map(NULL, &m.v, p.v.p, is_bf16, D, BN, p.seq_len_k, p.n_head_kv, p.batch, p.v.ss, p.v.sh, p.v.sb,
                 m.kv_seq_major))
        return cudaErrorInvalidValue;
    int device = 0;
    cudaError_t e = cudaGetDevice(&device);
    if (e != cudaSuccess)
        return e;
    if (device >= 64 || !(attr_done >> device & 1ull)) {
        e = cudaFuncSetAttribute(bwd_sm90_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
        if (e != cudaSuccess)
            return e;
        if (device < 64)
            attr_done |= 1ull << device;
    }
    dim3 grid((p.seq_len_k + BN - 1) / BN, p.n_head_kv, p.batch);
    bwd_sm90_kernel<T, D><<<grid, NTHREADS, smem, stream>>>(p, m);
    return cudaGetLastError();
}

} /* namespace */

int fm_bwd_sm90_applies(int head_dim)
{
    const char *force = getenv("FAMASK_CUDA_BWD");
    if (force && strcmp(force, "sm80") == 0)
        return 0;
    return head_dim == 128 && fm_sm90::device_ok();
}

cudaError_t fm_bwd_sm90(const bwd_params &p, int head_dim, int is_bf16, cudaStream_t stream)
{
    (void)head_dim; /* 128: see fm_bwd_sm90_applies */
    return is_bf16 ? launch<__nv_bfloat16, 128>(p, stream) : launch<__half, 128>(p, stream);
}
