/*
 * bwd.cu: the attention backward on the GPU (FlashAttention-2's algorithm on mma.sync, sm_80 and later) with
 * FlashMask tile skipping.
 *
 * Shapes: q, o, d_o, dq [B, Nq, H, D]; k, v, dk, dv [B, Nk, H_kv, D], any strides with a contiguous last
 * dimension (so [B, N, H, D] and [B, H, N, D] both work); lse [B, H, Nq] fp32 (natural log); bf16 or fp16;
 * D in {32, 64, 96, 128, 256}; H a multiple of H_kv (GQA); the mask [batch_m, heads_m, Nk, 4] with 1 broadcasting.
 *
 * Three steps on the caller's stream:
 *  1. preprocess, one warp per query row: Dd = rowsum(dO * O) and L = lse * log2(e) (+inf for a row with no
 *     visible key, so that exp2(s - L) is exactly 0 there: such rows get zero gradients, never NaN); zeroes the
 *     fp32 dQ accumulator.
 *  2. the main kernel, one CTA per (key block of 128, kv head, batch), 8 warps, query tiles of 64. K and V of
 *     the block stay in shared memory, dK and dV in registers. The CTA walks the query tiles of every query head
 *     of its GQA group (so dK and dV sum the group without atomics), Q/dO double-buffered with cp.async:
 *         S^T = K Q^T, dP^T = V dO^T (keys are the mma rows; 32 keys x 32 queries per warp),
 *         P^T = exp2(S^T * scale*log2(e) - L), dS^T = P^T (dP^T - Dd), both to shared memory; then
 *         dV += P^T dO, dK += dS^T Q (32 keys x D/2 per warp) and dQ += dS K (added to the fp32 accumulator with
 *         atomics). Shared-memory reads per mma were the limit of a first version with 16 keys x 64 queries per
 *         warp and P in registers (204 against 230 TFLOP/s, H200, D 128); that version stays for D = 256, where
 *         each warp owns 16 keys and half the head dimension (registers) with a key block of 64.
 *     Why two kernels: the tuned one (bwd_main2_kernel) cannot serve D = 256. Its key block of 128 needs
 *     312,320 bytes of shared memory there (K, V, two Q/dO stages, P^T and dS^T), over the 232,448 an sm_90 CTA
 *     may have, and its 32 keys x D/2 per warp hold 2 x 128 fp32 dK/dV accumulators per thread, over the 255
 *     registers: instantiated for D = 256 (sm_90a, nvcc 13.0) ptxas gives 255 registers, 2,704 bytes of spill
 *     stores and 2,212 of loads. With a key block of 64 it would fit shared memory (224,256 bytes), but 8 warps
 *     over 64 keys then need another warp tiling (16 x 32 S tiles, 32 keys x D/4 of dK/dV per warp), a third
 *     kernel in all but name; bwd_main_kernel<256, 64, 2> is that kernel already (255 registers, 24 bytes of
 *     spill stores, 64 of loads).
 *     The walk uses the key block's summary: a tile inside a fully masked row run of LT or UT is skipped, and
 *     the walk jumps to the end of that run at once (so the loop is clamped to the first and last live tiles and
 *     hops over interior masked runs); only partial tiles (and the ragged last key block) apply the element mask,
 *     as a separate uniform branch with the keys' bounds brought into shared memory with the tile (an element
 *     test folded into every tile cost 15%).
 *  3. dq = scale * accumulator, converted to the output dtype.
 *
 * Any nonzero softmax_scale works, negative included: P is recomputed from the forward's lse (exp2(s * scale *
 * log2(e) - L) <= 1 for either sign) and no row max is taken here, unlike the forward.
 *
 * Deterministic mode (args->deterministic): step 2 leaves dQ out, and a query-parallel kernel (one CTA per
 * query tile and head, walking the live key blocks in order) recomputes P and dS and accumulates dQ in
 * registers. dK and dV are deterministic in both modes (no atomics), so every output is bitwise reproducible.
 * The price is the recomputation: 3 of the 5 products again, about 1.35-1.4x the default's time.
 *
 * Measured (H200, 2026-11-21, 8K, B 4, H 16, D 128, bf16, TFLOP/s counting visible pairs): full 276 and causal
 * 260, against 300 and 280 for SDPA flash's backward in the same run. On sm_90 devices, head dims 64 and 128 take
 * the Hopper kernels of kernels/bwd-sm90.cu instead (always in the split form of the deterministic mode), at 460
 * (bench/RESULTS.md).
 *
 * Shared-memory tiles are rows padded by 16 bytes (the row pitch shifts each row by four banks), which keeps
 * ldmatrix conflict-free for every head dimension, 32 and 96 included.
 */
#include "common.cuh"
#include "bwd.cuh"
#include "cuda-check.cuh"
#include "fwd.cuh" /* FM_SM90_BLOCK_Q and _K: the Hopper kernels' block sizes */

#include <math.h>
#include <string.h>
#include <type_traits>

namespace {

using namespace fm_bwd;

/* cp.async of rows [row0, row0 + rows) of two [n, D] views (a, b; row strides sa, sb elements) into shared
 * tiles with rows padded to D + 8 elements; rows at or past n_valid are zero-filled. Thread tid of nt. */
template <typename T, int D>
__device__ __forceinline__ void load_rows2(T *da, const T *ga, int64_t sa, T *db, const T *gb, int64_t sb, int rows,
                                           int row0, int n_valid, int tid, int nt)
{
    constexpr int P = D + 8;
    for (int c = tid; c < rows * (D / 8); c += nt) {
        const int r = c / (D / 8), col = (c % (D / 8)) * 8;
        const bool ok = row0 + r < n_valid;
        const int64_t rr = ok ? row0 + r : 0;
        fm_cp_async16(fm_smem_addr(da + r * P + col), ga + rr * sa + col, ok ? 16 : 0);
        fm_cp_async16(fm_smem_addr(db + r * P + col), gb + rr * sb + col, ok ? 16 : 0);
    }
}

/* cp.async of L and Dd of the BR rows from row index base of the per-row buffers. */
__device__ __forceinline__ void load_ld(float *sL, float *sD, const bwd_params &p, int64_t base, int tid)
{
    if (tid < BR / 4)
        fm_cp_async16(fm_smem_addr(sL + 4 * tid), p.L + base + 4 * tid, 16);
    else if (tid < BR / 2)
        fm_cp_async16(fm_smem_addr(sD + 4 * (tid - BR / 4)), p.Dd + base + 4 * (tid - BR / 4), 16);
}

/* ---- step 1 --------------------------------------------------------------------------------------------------- */

/* L, Dd = rowsum(dO * O) and (atomic mode) the zeroed dQ accumulator of every row of B * H * Nqp; also zeroes
 * the Hopper kernels' work counters. A block takes 2 * NTHREADS / lpr rows of one (batch, head) (blockIdx.y and
 * on, gridDim.y apart); a row is read by lpr lanes (D / 8 rounded up to a power of two), one 16-byte chunk of O
 * and of dO each, and every thread takes two rows with its four loads issued first. No 64-bit divisions: with
 * them, and one warp per row with 4-byte loads, this step took 168 us at 8K, B 4, H 16, D 128 (1.6 TB/s), 11%
 * of a causal-document backward. */
template <typename T> __global__ void __launch_bounds__(NTHREADS) bwd_pre_kernel(const bwd_params p, int D, int lpr)
{
    const int sub = threadIdx.x % lpr, d = 8 * sub, half = NTHREADS / lpr;
    const int i0 = blockIdx.x * 2 * half + threadIdx.x / lpr; /* rows i0 and i0 + half; seq_pad is a multiple */
    fm_pdl_trigger(); /* the Hopper path's plan may start: it waits for this grid before it uses the counters */
    if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x < N_COUNTERS && p.counters)
        p.counters[threadIdx.x] = 0;
    for (int bh = blockIdx.y; bh < p.batch * p.n_head; bh += gridDim.y) {
        const int b = bh / p.n_head, h = bh % p.n_head;
        const T *o = (const T *)p.o.p + b * p.o.sb + h * p.o.sh + d;
        const T *g = (const T *)p.d_o.p + b * p.d_o.sb + h * p.d_o.sh + d;
        uint4 a[2], c[2];
        float L[2];
#pragma unroll
        for (int x = 0; x < 2; x++) {
            const int i = i0 + x * half;
            a[x] = c[x] = make_uint4(0, 0, 0, 0);
            L[x] = INFINITY;
            if (i < p.seq_len_q) {
                if (d < D) { /* read once here: evict first (3.5-5 us off this step at 8K, H100) */
                    a[x] = __ldcs(reinterpret_cast<const uint4 *>(o + i * p.o.ss));
                    c[x] = __ldcs(reinterpret_cast<const uint4 *>(g + i * p.d_o.ss));
                }
                const float lse = p.lse[(int64_t)bh * p.seq_len_q + i];
                L[x] = lse == -INFINITY ? INFINITY : lse * FM_LOG2E;
            }
        }
#pragma unroll
        for (int x = 0; x < 2; x++) {
            const uint32_t aw[4] = {a[x].x, a[x].y, a[x].z, a[x].w}, cw[4] = {c[x].x, c[x].y, c[x].z, c[x].w};
            float acc = 0.f;
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const float2 u = fm_dtype<T>::unpack(aw[k]), v = fm_dtype<T>::unpack(cw[k]);
                acc += u.x * v.x + u.y * v.y;
            }
            for (int off = lpr / 2; off > 0; off >>= 1) /* the row's lanes are consecutive and aligned to lpr */
                acc += __shfl_xor_sync(0xffffffffu, acc, off);
            const int64_t row = (int64_t)bh * p.seq_pad + i0 + x * half;
            if (sub == 0) {
                p.L[row] = L[x];
                p.Dd[row] = acc;
            }
            if (p.dq_acc) {
                float4 *dq = reinterpret_cast<float4 *>(p.dq_acc + row * D);
                for (int k = sub; k < D / 4; k += lpr)
                    dq[k] = make_float4(0.f, 0.f, 0.f, 0.f);
            }
        }
    }
}

/* ---- step 2 --------------------------------------------------------------------------------------------------- */

template <int D, int BC> constexpr int main_smem_bytes()
{
    return (2 * BC * (D + 8) + 4 * BR * (D + 8) + BC * (BR + 8)) * 2 + 4 * BR * (int)sizeof(float);
}

/* BC keys per CTA; DSPLIT warps share each 16 keys, each owning D / DSPLIT columns of dK and dV. */
template <typename T, int D, int BC, int DSPLIT>
__global__ void __launch_bounds__(NTHREADS, 1) bwd_main_kernel(const bwd_params p)
{
    static_assert((BC / 16) * DSPLIT == NTHREADS / 32, "one warp per 16 keys and D slice");
    using TR = fm_dtype<T>;
    constexpr int P = D + 8, PS = BR + 8, DW = D / DSPLIT, NB = BR / 8, DQW = D / 2;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *sK = reinterpret_cast<T *>(smem_raw);
    T *sV = sK + BC * P;
    T *sQ = sV + BC * P;   /* [2][BR][P] */
    T *sdO = sQ + 2 * BR * P; /* [2][BR][P] */
    T *sdS = sdO + 2 * BR * P; /* [BC][PS]: dS^T */
    float *sL = reinterpret_cast<float *>(sdS + BC * PS); /* [2][BR] */
    float *sD = sL + 2 * BR;                                /* [2][BR] */

    const int kb = blockIdx.x, hkv = blockIdx.y, b = blockIdx.z;
    const int tid = threadIdx.x, w = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
    const int kw = w / DSPLIT, dh = w % DSPLIT;
    const int k0 = kb * BC;
    const int group = p.n_head / p.n_head_kv;
    const int n_kb = (p.seq_len_k + BC - 1) / BC;
    const bool key_tail = k0 + BC > p.seq_len_k;
    const int mb = p.batch_m == 1 ? 0 : b;
    const bool dq_atomic = p.dq_acc != nullptr;

    /* K and V of the block (zero rows past seq_len_k). */
    {
        const T *gK = (const T *)p.k.p + b * p.k.sb + hkv * p.k.sh;
        const T *gV = (const T *)p.v.p + b * p.v.sb + hkv * p.v.sh;
        load_rows2<T, D>(sK, gK, p.k.ss, sV, gV, p.v.ss, BC, k0, p.seq_len_k, tid, NTHREADS);
        fm_cp_async_commit();
    }

    auto load_tile = [&](int hi, int t, int buf) {
        const int h = hkv * group + hi, q0 = t * BR;
        const T *gQ = (const T *)p.q.p + b * p.q.sb + h * p.q.sh;
        const T *gO = (const T *)p.d_o.p + b * p.d_o.sb + h * p.d_o.sh;
        T *dQs = sQ + buf * BR * P, *dOs = sdO + buf * BR * P;
        load_rows2<T, D>(dQs, gQ, p.q.ss, dOs, gO, p.d_o.ss, BR, q0, p.seq_len_q, tid, NTHREADS);
        const int64_t base = ((int64_t)b * p.n_head + h) * p.seq_pad + q0;
        load_ld(sL + buf * BR, sD + buf * BR, p, base, tid);
    };

    float dv[DW / 8][4], dk[DW / 8][4];
#pragma unroll
    for (int i = 0; i < DW / 8; i++)
#pragma unroll
        for (int c = 0; c < 4; c++)
            dv[i][c] = dk[i][c] = 0.f;

    const int key_a = k0 + 16 * kw + g, key_b = key_a + 8;
    int hi = 0, t = 0, cls = 0, buf = 0;
    tile_walk wk;
    wk.s_hi = -1;
    bool have = next_query_tile<BR>(p, wk, n_kb, kb, hkv, blockIdx.z, group, &hi, &t, &cls);
    if (have)
        load_tile(hi, t, 0);
    fm_cp_async_commit();

    while (have) {
        int nhi = hi, nt = t + 1, ncls = 0;
        const bool nhave = next_query_tile<BR>(p, wk, n_kb, kb, hkv, blockIdx.z, group, &nhi, &nt, &ncls);
        if (nhave)
            load_tile(nhi, nt, buf ^ 1);
        fm_cp_async_commit();
        fm_cp_async_wait<1>();
        __syncthreads();

        const int h = hkv * group + hi, q0 = t * BR;
        const T *cQ = sQ + buf * BR * P, *cdO = sdO + buf * BR * P;
        const float *cL = sL + buf * BR, *cD = sD + buf * BR;

        float s[NB][4], dp[NB][4];
#pragma unroll
        for (int i = 0; i < NB; i++)
#pragma unroll
            for (int c = 0; c < 4; c++)
                s[i][c] = dp[i][c] = 0.f;

        /* S^T = K_w Q^T and dP^T = V_w dO^T: 16 keys x BR queries per warp. */
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            uint32_t ak[4], av[4];
            const int arow = 16 * kw + (lane % 8) + ((lane / 8) % 2) * 8, acol = 16 * kk + (lane / 16) * 8;
            fm_ldmatrix_x4(ak, fm_smem_addr(sK + arow * P + acol));
            fm_ldmatrix_x4(av, fm_smem_addr(sV + arow * P + acol));
#pragma unroll
            for (int np = 0; np < NB / 2; np++) {
                uint32_t bq[4], bo[4];
                const int brow = 16 * np + (lane % 8) + (lane / 16) * 8, bcol = 16 * kk + ((lane / 8) % 2) * 8;
                fm_ldmatrix_x4(bq, fm_smem_addr(cQ + brow * P + bcol));
                fm_ldmatrix_x4(bo, fm_smem_addr(cdO + brow * P + bcol));
                TR::mma(s[2 * np], ak, bq[0], bq[1]);
                TR::mma(s[2 * np + 1], ak, bq[2], bq[3]);
                TR::mma(dp[2 * np], av, bo[0], bo[1]);
                TR::mma(dp[2 * np + 1], av, bo[2], bo[3]);
            }
        }

        /* P^T and dS^T; the element mask only on partial tiles and the ragged last key block. */
        const bool partial = cls == FM_TILE_PARTIAL || key_tail;
        int4 bda = make_int4(0, 0, 0, 0), bdb = bda;
        if (partial) {
            const int4 *col = reinterpret_cast<const int4 *>(p.bounds) +
                              ((int64_t)mb * p.heads_m + mask_head(p, h)) * p.seq_len_k;
            /* a key past seq_len_k is masked for every row */
            bda = key_a < p.seq_len_k ? __ldg(col + key_a) : make_int4(0, INT32_MAX, 0, 0);
            bdb = key_b < p.seq_len_k ? __ldg(col + key_b) : make_int4(0, INT32_MAX, 0, 0);
        }
#pragma unroll
        for (int nb = 0; nb < NB; nb++) {
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const int qi = 8 * nb + 2 * t4 + (c & 1);
                float pv = fm_exp2(s[nb][c] * p.scale_log2 - cL[qi]);
                if (partial && is_masked(c < 2 ? bda : bdb, q0 + qi))
                    pv = 0.f;
                s[nb][c] = pv;
                dp[nb][c] = pv * (dp[nb][c] - cD[qi]);
            }
        }
        if (dq_atomic && dh == 0) {
#pragma unroll
            for (int nb = 0; nb < NB; nb++) {
                *reinterpret_cast<uint32_t *>(sdS + (16 * kw + g) * PS + 8 * nb + 2 * t4) =
                    TR::pack(dp[nb][0], dp[nb][1]);
                *reinterpret_cast<uint32_t *>(sdS + (16 * kw + g + 8) * PS + 8 * nb + 2 * t4) =
                    TR::pack(dp[nb][2], dp[nb][3]);
            }
        }

        /* dV += P^T dO and dK += dS^T Q over this warp's D slice. */
#pragma unroll
        for (int kk = 0; kk < BR / 16; kk++) {
            uint32_t ap[4], ad[4];
            ap[0] = TR::pack(s[2 * kk][0], s[2 * kk][1]);
            ap[1] = TR::pack(s[2 * kk][2], s[2 * kk][3]);
            ap[2] = TR::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            ap[3] = TR::pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
            ad[0] = TR::pack(dp[2 * kk][0], dp[2 * kk][1]);
            ad[1] = TR::pack(dp[2 * kk][2], dp[2 * kk][3]);
            ad[2] = TR::pack(dp[2 * kk + 1][0], dp[2 * kk + 1][1]);
            ad[3] = TR::pack(dp[2 * kk + 1][2], dp[2 * kk + 1][3]);
            const int brow = 16 * kk + (lane % 8) + ((lane / 8) % 2) * 8;
#pragma unroll
            for (int np = 0; np < DW / 16; np++) {
                const int bcol = dh * DW + 16 * np + (lane / 16) * 8;
                uint32_t bo[4], bq[4];
                fm_ldmatrix_x4_trans(bo, fm_smem_addr(cdO + brow * P + bcol));
                fm_ldmatrix_x4_trans(bq, fm_smem_addr(cQ + brow * P + bcol));
                TR::mma(dv[2 * np], ap, bo[0], bo[1]);
                TR::mma(dv[2 * np + 1], ap, bo[2], bo[3]);
                TR::mma(dk[2 * np], ad, bq[0], bq[1]);
                TR::mma(dk[2 * np + 1], ad, bq[2], bq[3]);
            }
        }

        if (dq_atomic) {
            __syncthreads(); /* dS^T complete */
            /* dQ (BR x D) = dS (BR x BC) K (BC x D): warp w takes rows 16 (w % 4), columns (w / 4) D/2. */
            const int rg = w % 4, cg = w / 4;
            float acc[DQW / 8][4];
#pragma unroll
            for (int i = 0; i < DQW / 8; i++)
#pragma unroll
                for (int c = 0; c < 4; c++)
                    acc[i][c] = 0.f;
#pragma unroll
            for (int kk = 0; kk < BC / 16; kk++) {
                uint32_t a[4];
                fm_ldmatrix_x4_trans(a, fm_smem_addr(sdS + (16 * kk + (lane % 8) + (lane / 16) * 8) * PS + 16 * rg +
                                                     ((lane / 8) % 2) * 8));
                const int brow = 16 * kk + (lane % 8) + ((lane / 8) % 2) * 8;
#pragma unroll
                for (int np = 0; np < DQW / 16; np++) {
                    uint32_t bk[4];
                    fm_ldmatrix_x4_trans(bk, fm_smem_addr(sK + brow * P + cg * DQW + 16 * np + (lane / 16) * 8));
                    TR::mma(acc[2 * np], a, bk[0], bk[1]);
                    TR::mma(acc[2 * np + 1], a, bk[2], bk[3]);
                }
            }
            float *dst = p.dq_acc + ((((int64_t)b * p.n_head + h) * p.seq_pad) + q0 + 16 * rg + g) * D + cg * DQW +
                         2 * t4;
#pragma unroll
            for (int nb = 0; nb < DQW / 8; nb++) {
                add2(dst + 8 * nb, acc[nb][0], acc[nb][1]);
                add2(dst + 8 * D + 8 * nb, acc[nb][2], acc[nb][3]);
            }
        }
        __syncthreads(); /* buffers and dS^T free for the next tile */

        hi = nhi;
        t = nt;
        cls = ncls;
        have = nhave;
        buf ^= 1;
    }
    fm_cp_async_wait<0>();

    /* dK = scale dS^T Q and dV, written once per key. */
    T *gdk = (T *)p.dk.p + b * p.dk.sb + hkv * p.dk.sh;
    T *gdv = (T *)p.dv.p + b * p.dv.sb + hkv * p.dv.sh;
#pragma unroll
    for (int nb = 0; nb < DW / 8; nb++) {
        const int col = dh * DW + 8 * nb + 2 * t4;
        if (key_a < p.seq_len_k) {
            *reinterpret_cast<uint32_t *>(gdk + key_a * p.dk.ss + col) =
                TR::pack(dk[nb][0] * p.scale, dk[nb][1] * p.scale);
            *reinterpret_cast<uint32_t *>(gdv + key_a * p.dv.ss + col) = TR::pack(dv[nb][0], dv[nb][1]);
        }
        if (key_b < p.seq_len_k) {
            *reinterpret_cast<uint32_t *>(gdk + key_b * p.dk.ss + col) =
                TR::pack(dk[nb][2] * p.scale, dk[nb][3] * p.scale);
            *reinterpret_cast<uint32_t *>(gdv + key_b * p.dv.ss + col) = TR::pack(dv[nb][2], dv[nb][3]);
        }
    }
}

/* The main kernel for D <= 128 with fewer shared-memory reads per mma (the limit of the one above): S^T and dP^T
 * in 32 keys x 32 queries per warp, P^T and dS^T staged in shared memory, dV/dK in 32 keys x D/2 per warp and
 * dQ in 32 queries x D/4 (16 x D/2 where D/4 is no multiple of 16) per warp. */
template <int D> constexpr int main2_smem_bytes()
{
    return (2 * 128 * (D + 8) + 4 * BR * (D + 8) + 2 * 128 * (BR + 8)) * 2 + 4 * BR * (int)sizeof(float) +
           2 * 128 * 16;
}

template <typename T, int D> __global__ void __launch_bounds__(NTHREADS, 1) bwd_main2_kernel(const bwd_params p)
{
    using TR = fm_dtype<T>;
    constexpr int BC = 128, P = D + 8, PS = BR + 8, DH = D / 2;
    constexpr bool DQ24 = D % 64 == 0;        /* dQ warps 2 x 4 (else 4 x 2) */
    constexpr int QM = DQ24 ? 2 : 1;           /* 16-row m-tiles per warp in dQ */
    constexpr int QN = DQ24 ? D / 4 : D / 2;   /* dQ columns per warp */
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *sK = reinterpret_cast<T *>(smem_raw);
    T *sV = sK + BC * P;
    T *sQ = sV + BC * P;       /* [2][BR][P] */
    T *sdO = sQ + 2 * BR * P;  /* [2][BR][P] */
    T *sP = sdO + 2 * BR * P;  /* [BC][PS]: P^T */
    T *sdS = sP + BC * PS;     /* [BC][PS]: dS^T */
    float *sL = reinterpret_cast<float *>(sdS + BC * PS); /* [2][BR] */
    float *sD = sL + 2 * BR;                                /* [2][BR] */
    int4 *sB = reinterpret_cast<int4 *>(sD + 2 * BR);      /* [2][BC]: mask bounds of the keys, partial tiles */

    const int kb = blockIdx.x, hkv = blockIdx.y, b = blockIdx.z;
    const int tid = threadIdx.x, w = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
    const int kw = w / 2, half = w % 2; /* S/dP: keys 32 kw.., queries 32 half..; dV/dK: keys 32 kw.., cols DH half.. */
    const int k0 = kb * BC;
    const int group = p.n_head / p.n_head_kv;
    const int n_kb = (p.seq_len_k + BC - 1) / BC;
    const bool key_tail = k0 + BC > p.seq_len_k;
    const int mb = p.batch_m == 1 ? 0 : b;
    const bool dq_atomic = p.dq_acc != nullptr;

    {
        const T *gK = (const T *)p.k.p + b * p.k.sb + hkv * p.k.sh;
        const T *gV = (const T *)p.v.p + b * p.v.sb + hkv * p.v.sh;
        load_rows2<T, D>(sK, gK, p.k.ss, sV, gV, p.v.ss, BC, k0, p.seq_len_k, tid, NTHREADS);
    }
    auto load_tile = [&](int hi, int t, int buf, int tcls) {
        const int h = hkv * group + hi, q0 = t * BR;
        if (tcls == FM_TILE_PARTIAL || key_tail) {
            /* the keys' bounds for the element mask, zero past seq_len_k (tested apart) */
            const int4 *col = reinterpret_cast<const int4 *>(p.bounds) +
                              ((int64_t)mb * p.heads_m + mask_head(p, h)) * p.seq_len_k;
            if (tid < BC) {
                const bool ok = k0 + tid < p.seq_len_k;
                fm_cp_async16(fm_smem_addr(sB + buf * BC + tid), col + (ok ? k0 + tid : 0), ok ? 16 : 0);
            }
        }
        const T *gQ = (const T *)p.q.p + b * p.q.sb + h * p.q.sh;
        const T *gO = (const T *)p.d_o.p + b * p.d_o.sb + h * p.d_o.sh;
        T *dQs = sQ + buf * BR * P, *dOs = sdO + buf * BR * P;
        load_rows2<T, D>(dQs, gQ, p.q.ss, dOs, gO, p.d_o.ss, BR, q0, p.seq_len_q, tid, NTHREADS);
        const int64_t base = ((int64_t)b * p.n_head + h) * p.seq_pad + q0;
        load_ld(sL + buf * BR, sD + buf * BR, p, base, tid);
    };

    float dv[2][DH / 8][4], dk[2][DH / 8][4];
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
        for (int i = 0; i < DH / 8; i++)
#pragma unroll
            for (int c = 0; c < 4; c++)
                dv[m][i][c] = dk[m][i][c] = 0.f;

    int hi = 0, t = 0, cls = 0, buf = 0;
    tile_walk wk;
    wk.s_hi = -1;
    bool have = next_query_tile<BR>(p, wk, n_kb, kb, hkv, blockIdx.z, group, &hi, &t, &cls);
    if (have)
        load_tile(hi, t, 0, cls);
    fm_cp_async_commit();

    while (have) {
        fm_cp_async_wait<0>();
        __syncthreads(); /* tile t landed; every warp is done with tile t-1 (its buffers, sP, sdS) */
        int nhi = hi, nt = t + 1, ncls = 0;
        const bool nhave = next_query_tile<BR>(p, wk, n_kb, kb, hkv, blockIdx.z, group, &nhi, &nt, &ncls);
        if (nhave)
            load_tile(nhi, nt, buf ^ 1, ncls);
        fm_cp_async_commit();

        const int h = hkv * group + hi, q0 = t * BR;
        const T *cQ = sQ + buf * BR * P, *cdO = sdO + buf * BR * P;
        const float *cL = sL + buf * BR, *cD = sD + buf * BR;

        {
            float s[2][4][4], dp[2][4][4];
#pragma unroll
            for (int m = 0; m < 2; m++)
#pragma unroll
                for (int i = 0; i < 4; i++)
#pragma unroll
                    for (int c = 0; c < 4; c++)
                        s[m][i][c] = dp[m][i][c] = 0.f;
            /* S^T = K Q^T, dP^T = V dO^T: keys 32 kw.. x queries 32 half.. */
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++) {
                uint32_t ak[2][4], av[2][4], bq[2][4], bo[2][4];
                const int acol = 16 * kk + (lane / 16) * 8, bcol = 16 * kk + ((lane / 8) % 2) * 8;
#pragma unroll
                for (int m = 0; m < 2; m++) {
                    const int arow = 32 * kw + 16 * m + (lane % 8) + ((lane / 8) % 2) * 8;
                    fm_ldmatrix_x4(ak[m], fm_smem_addr(sK + arow * P + acol));
                    fm_ldmatrix_x4(av[m], fm_smem_addr(sV + arow * P + acol));
                }
#pragma unroll
                for (int np = 0; np < 2; np++) {
                    const int brow = 32 * half + 16 * np + (lane % 8) + (lane / 16) * 8;
                    fm_ldmatrix_x4(bq[np], fm_smem_addr(cQ + brow * P + bcol));
                    fm_ldmatrix_x4(bo[np], fm_smem_addr(cdO + brow * P + bcol));
                }
#pragma unroll
                for (int m = 0; m < 2; m++)
#pragma unroll
                    for (int np = 0; np < 2; np++) {
                        TR::mma(s[m][2 * np], ak[m], bq[np][0], bq[np][1]);
                        TR::mma(s[m][2 * np + 1], ak[m], bq[np][2], bq[np][3]);
                        TR::mma(dp[m][2 * np], av[m], bo[np][0], bo[np][1]);
                        TR::mma(dp[m][2 * np + 1], av[m], bo[np][2], bo[np][3]);
                    }
            }
#pragma unroll
            for (int m = 0; m < 2; m++)
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const int qi = 32 * half + 8 * i + 2 * t4;
                    const float2 L2 = *reinterpret_cast<const float2 *>(cL + qi);
                    const float2 D2 = *reinterpret_cast<const float2 *>(cD + qi);
#pragma unroll
                    for (int c = 0; c < 4; c++) {
                        const float pv = fm_exp2(s[m][i][c] * p.scale_log2 - ((c & 1) ? L2.y : L2.x));
                        s[m][i][c] = pv;
                        dp[m][i][c] = pv * (dp[m][i][c] - ((c & 1) ? D2.y : D2.x));
                    }
                }
            /* The element mask only on partial tiles and the ragged last key block: a separate uniform branch, so
             * that unmasked tiles run no per-element compare. Masked elements may hold inf or NaN above; they
             * are overwritten here. */
            if (cls == FM_TILE_PARTIAL || key_tail) {
                const int4 *cB = sB + buf * BC;
#pragma unroll
                for (int m = 0; m < 2; m++) {
                    const int ka = 32 * kw + 16 * m + g, kb8 = ka + 8;
                    /* a key past seq_len_k is masked for every row */
                    const int4 bda = k0 + ka < p.seq_len_k ? cB[ka] : make_int4(0, INT32_MAX, 0, 0);
                    const int4 bdb = k0 + kb8 < p.seq_len_k ? cB[kb8] : make_int4(0, INT32_MAX, 0, 0);
#pragma unroll
                    for (int i = 0; i < 4; i++)
#pragma unroll
                        for (int c = 0; c < 4; c++)
                            if (is_masked(c < 2 ? bda : bdb, q0 + 32 * half + 8 * i + 2 * t4 + (c & 1)))
                                s[m][i][c] = dp[m][i][c] = 0.f;
                }
            }
#pragma unroll
            for (int m = 0; m < 2; m++)
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const int r = 32 * kw + 16 * m + g, qi = 32 * half + 8 * i + 2 * t4;
                    *reinterpret_cast<uint32_t *>(sP + r * PS + qi) = TR::pack(s[m][i][0], s[m][i][1]);
                    *reinterpret_cast<uint32_t *>(sP + (r + 8) * PS + qi) = TR::pack(s[m][i][2], s[m][i][3]);
                    *reinterpret_cast<uint32_t *>(sdS + r * PS + qi) = TR::pack(dp[m][i][0], dp[m][i][1]);
                    *reinterpret_cast<uint32_t *>(sdS + (r + 8) * PS + qi) = TR::pack(dp[m][i][2], dp[m][i][3]);
                }
        }
        __syncthreads(); /* P^T and dS^T complete */

        /* dV += P^T dO, dK += dS^T Q: keys 32 kw.. x columns DH half.. */
#pragma unroll
        for (int kk = 0; kk < BR / 16; kk++) {
            uint32_t ap[2][4], ad[2][4];
#pragma unroll
            for (int m = 0; m < 2; m++) {
                const int arow = 32 * kw + 16 * m + (lane % 8) + ((lane / 8) % 2) * 8, acol = 16 * kk + (lane / 16) * 8;
                fm_ldmatrix_x4(ap[m], fm_smem_addr(sP + arow * PS + acol));
                fm_ldmatrix_x4(ad[m], fm_smem_addr(sdS + arow * PS + acol));
            }
            const int brow = 16 * kk + (lane % 8) + ((lane / 8) % 2) * 8;
#pragma unroll
            for (int np = 0; np < DH / 16; np++) {
                const int bcol = half * DH + 16 * np + (lane / 16) * 8;
                uint32_t bo[4], bq[4];
                fm_ldmatrix_x4_trans(bo, fm_smem_addr(cdO + brow * P + bcol));
                fm_ldmatrix_x4_trans(bq, fm_smem_addr(cQ + brow * P + bcol));
#pragma unroll
                for (int m = 0; m < 2; m++) {
                    TR::mma(dv[m][2 * np], ap[m], bo[0], bo[1]);
                    TR::mma(dv[m][2 * np + 1], ap[m], bo[2], bo[3]);
                    TR::mma(dk[m][2 * np], ad[m], bq[0], bq[1]);
                    TR::mma(dk[m][2 * np + 1], ad[m], bq[2], bq[3]);
                }
            }
        }

        if (dq_atomic) {
            /* after dV/dK: issuing this product and its atomics first measured 9% slower (H200, D 128) */
            /* dQ = dS K: queries 16 QM rq.. x columns QN cd.. */
            const int rq = DQ24 ? w / 4 : w % 4, cd = DQ24 ? w % 4 : w / 4;
            float acc[QM][QN / 8][4];
#pragma unroll
            for (int m = 0; m < QM; m++)
#pragma unroll
                for (int i = 0; i < QN / 8; i++)
#pragma unroll
                    for (int c = 0; c < 4; c++)
                        acc[m][i][c] = 0.f;
#pragma unroll
            for (int kk = 0; kk < BC / 16; kk++) {
                uint32_t a[QM][4];
#pragma unroll
                for (int m = 0; m < QM; m++)
                    fm_ldmatrix_x4_trans(a[m], fm_smem_addr(sdS + (16 * kk + (lane % 8) + (lane / 16) * 8) * PS +
                                                            16 * QM * rq + 16 * m + ((lane / 8) % 2) * 8));
                const int brow = 16 * kk + (lane % 8) + ((lane / 8) % 2) * 8;
#pragma unroll
                for (int np = 0; np < QN / 16; np++) {
                    uint32_t bk[4];
                    fm_ldmatrix_x4_trans(bk, fm_smem_addr(sK + brow * P + cd * QN + 16 * np + (lane / 16) * 8));
#pragma unroll
                    for (int m = 0; m < QM; m++) {
                        TR::mma(acc[m][2 * np], a[m], bk[0], bk[1]);
                        TR::mma(acc[m][2 * np + 1], a[m], bk[2], bk[3]);
                    }
                }
            }
#pragma unroll
            for (int m = 0; m < QM; m++) {
                float *dst = p.dq_acc +
                             ((((int64_t)b * p.n_head + h) * p.seq_pad) + q0 + 16 * QM * rq + 16 * m + g) * D +
                             cd * QN + 2 * t4;
#pragma unroll
                for (int nb = 0; nb < QN / 8; nb++) {
                    add2(dst + 8 * nb, acc[m][nb][0], acc[m][nb][1]);
                    add2(dst + 8 * D + 8 * nb, acc[m][nb][2], acc[m][nb][3]);
                }
            }
        }

        hi = nhi;
        t = nt;
        cls = ncls;
        have = nhave;
        buf ^= 1;
    }
    fm_cp_async_wait<0>();

    T *gdk = (T *)p.dk.p + b * p.dk.sb + hkv * p.dk.sh;
    T *gdv = (T *)p.dv.p + b * p.dv.sb + hkv * p.dv.sh;
#pragma unroll
    for (int m = 0; m < 2; m++) {
        const int key_a = k0 + 32 * kw + 16 * m + g, key_b = key_a + 8;
#pragma unroll
        for (int nb = 0; nb < DH / 8; nb++) {
            const int c = half * DH + 8 * nb + 2 * t4;
            if (key_a < p.seq_len_k) {
                *reinterpret_cast<uint32_t *>(gdk + key_a * p.dk.ss + c) =
                    TR::pack(dk[m][nb][0] * p.scale, dk[m][nb][1] * p.scale);
                *reinterpret_cast<uint32_t *>(gdv + key_a * p.dv.ss + c) = TR::pack(dv[m][nb][0], dv[m][nb][1]);
            }
            if (key_b < p.seq_len_k) {
                *reinterpret_cast<uint32_t *>(gdk + key_b * p.dk.ss + c) =
                    TR::pack(dk[m][nb][2] * p.scale, dk[m][nb][3] * p.scale);
                *reinterpret_cast<uint32_t *>(gdv + key_b * p.dv.ss + c) = TR::pack(dv[m][nb][2], dv[m][nb][3]);
            }
        }
    }
}

/* ---- step 3 --------------------------------------------------------------------------------------------------- */

template <typename T> __global__ void __launch_bounds__(NTHREADS) bwd_convert_kernel(const bwd_params p, int D)
{
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t row = (int64_t)blockIdx.x * (NTHREADS / 32) + warp; /* over B * H * Nq */
    if (row >= (int64_t)p.batch * p.n_head * p.seq_len_q)
        return;
    const int i = (int)(row % p.seq_len_q);
    const int h = (int)((row / p.seq_len_q) % p.n_head);
    const int b = (int)(row / ((int64_t)p.seq_len_q * p.n_head));
    const float *src = p.dq_acc + (((int64_t)b * p.n_head + h) * p.seq_pad + i) * D;
    T *dst = (T *)p.dq.p + b * p.dq.sb + i * p.dq.ss + h * p.dq.sh;
    for (int d = 2 * lane; d < D; d += 64) {
        const float2 v = *reinterpret_cast<const float2 *>(src + d);
        *reinterpret_cast<uint32_t *>(dst + d) = fm_dtype<T>::pack(v.x * p.scale, v.y * p.scale);
    }
}

/* ---- deterministic dQ ------------------------------------------------------------------------------------------ */

/* Key columns per block of the deterministic dQ kernel: 128 (as the main kernel's, so both use one cached
 * summary), 64 for D = 256 (shared memory). */
template <int D> constexpr int dq_block() { return D == 256 ? 64 : 128; }

template <int D, int DSPLIT, int NW> constexpr int dq_smem_bytes()
{
    constexpr int BCQ = dq_block<D>();
    return (2 * (16 * (NW / DSPLIT)) * (D + 8) + 4 * BCQ * (D + 8)) * 2 + 2 * BCQ * 16;
}

/* One CTA of NW warps per (query tile of 16 * NW / DSPLIT rows, head, batch); warp w owns 16 query rows and
 * D / DSPLIT columns of dQ. The key blocks are visited in increasing order, so the sum order is fixed. (4 warps
 * with two CTAs per SM measured 3% slower than 8 warps and one CTA, H200, D 128.) */
template <typename T, int D, int DSPLIT, int NW>
__global__ void __launch_bounds__(32 * NW, 8 / NW) bwd_dq_kernel(const bwd_params p)
{
    using TR = fm_dtype<T>;
    constexpr int NT = 32 * NW;
    constexpr int BCQ = dq_block<D>();
    constexpr int RG = NW / DSPLIT, BRQ = 16 * RG, P = D + 8, DW = D / DSPLIT, NB = BCQ / 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *sQ = reinterpret_cast<T *>(smem_raw); /* [BRQ][P] */
    T *sdO = sQ + BRQ * P;                     /* [BRQ][P] */
    T *sK = sdO + BRQ * P;                     /* [2][BCQ][P] */
    T *sV = sK + 2 * BCQ * P;                  /* [2][BCQ][P] */
    int4 *sB = reinterpret_cast<int4 *>(sV + 2 * BCQ * P); /* [2][BCQ] */

    const int qt = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int tid = threadIdx.x, w = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
    const int rg = w / DSPLIT, dh = w % DSPLIT;
    const int hkv = h / (p.n_head / p.n_head_kv);
    const int q0 = qt * BRQ, r1 = min(q0 + BRQ, p.seq_len_q);
    const int n_kb = (p.seq_len_k + BCQ - 1) / BCQ;
    const int mb = p.batch_m == 1 ? 0 : b, mh = mask_head(p, h);
    const fm_block_summary *sums = p.summaries + ((int64_t)mb * p.heads_m + mh) * n_kb;
    const int4 *gB = reinterpret_cast<const int4 *>(p.bounds) + ((int64_t)mb * p.heads_m + mh) * p.seq_len_k;

    {
        const T *gQ = (const T *)p.q.p + b * p.q.sb + h * p.q.sh;
        const T *gO = (const T *)p.d_o.p + b * p.d_o.sb + h * p.d_o.sh;
        load_rows2<T, D>(sQ, gQ, p.q.ss, sdO, gO, p.d_o.ss, BRQ, q0, p.seq_len_q, tid, NT);
        fm_cp_async_commit();
    }
    const T *gK = (const T *)p.k.p + b * p.k.sb + hkv * p.k.sh;
    const T *gV = (const T *)p.v.p + b * p.v.sb + hkv * p.v.sh;
    auto load_kv = [&](int j, int buf) {
        const int k0 = j * BCQ;
        T *dK = sK + buf * BCQ * P, *dV = sV + buf * BCQ * P;
        load_rows2<T, D>(dK, gK, p.k.ss, dV, gV, p.v.ss, BCQ, k0, p.seq_len_k, tid, NT);
        if (tid < BCQ) {
            const bool ok = k0 + tid < p.seq_len_k;
            fm_cp_async16(fm_smem_addr(sB + buf * BCQ + tid), gB + (ok ? k0 + tid : 0), ok ? 16 : 0);
        }
    };
    /* The walk over key blocks; `ahead` holds the summary of block j on entry and is left loading the summary
     * of the block after the one returned, so its latency hides behind a block of math. */
    fm_block_summary ahead = sums[0];
    auto next_block = [&](int j, int *cls) {
        for (; j < n_kb; j++) {
            const fm_block_summary s = ahead;
            if (j + 1 < n_kb)
                ahead = sums[j + 1];
            const int c = fm_tile_classify(&s, q0, r1);
            if (c != FM_TILE_SKIPPED) {
                *cls = c;
                return j;
            }
        }
        return n_kb;
    };

    const int row_a = q0 + 16 * rg + g, row_b = row_a + 8;
    const int64_t lrow = ((int64_t)b * p.n_head + h) * p.seq_pad;
    const float La = p.L[lrow + row_a], Lb = p.L[lrow + row_b];
    const float Da = p.Dd[lrow + row_a], Db = p.Dd[lrow + row_b];

    float acc[DW / 8][4];
#pragma unroll
    for (int i = 0; i < DW / 8; i++)
#pragma unroll
        for (int c = 0; c < 4; c++)
            acc[i][c] = 0.f;

    int cls = 0, buf = 0;
    int j = next_block(0, &cls);
    if (j < n_kb)
        load_kv(j, 0);
    fm_cp_async_commit();
    while (j < n_kb) {
        int ncls = 0;
        const int nj = next_block(j + 1, &ncls);
        if (nj < n_kb)
            load_kv(nj, buf ^ 1);
        fm_cp_async_commit();
        fm_cp_async_wait<1>();
        __syncthreads();

        const int k0 = j * BCQ;
        const T *cK = sK + buf * BCQ * P, *cV = sV + buf * BCQ * P;
        const int4 *cB = sB + buf * BCQ;
        float s[NB][4], dp[NB][4];
#pragma unroll
        for (int i = 0; i < NB; i++)
#pragma unroll
            for (int c = 0; c < 4; c++)
                s[i][c] = dp[i][c] = 0.f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            uint32_t aq[4], ao[4];
            const int arow = 16 * rg + (lane % 8) + ((lane / 8) % 2) * 8, acol = 16 * kk + (lane / 16) * 8;
            fm_ldmatrix_x4(aq, fm_smem_addr(sQ + arow * P + acol));
            fm_ldmatrix_x4(ao, fm_smem_addr(sdO + arow * P + acol));
#pragma unroll
            for (int np = 0; np < NB / 2; np++) {
                uint32_t bk[4], bv[4];
                const int brow = 16 * np + (lane % 8) + (lane / 16) * 8, bcol = 16 * kk + ((lane / 8) % 2) * 8;
                fm_ldmatrix_x4(bk, fm_smem_addr(cK + brow * P + bcol));
                fm_ldmatrix_x4(bv, fm_smem_addr(cV + brow * P + bcol));
                TR::mma(s[2 * np], aq, bk[0], bk[1]);
                TR::mma(s[2 * np + 1], aq, bk[2], bk[3]);
                TR::mma(dp[2 * np], ao, bv[0], bv[1]);
                TR::mma(dp[2 * np + 1], ao, bv[2], bv[3]);
            }
        }
#pragma unroll
        for (int nb = 0; nb < NB; nb++)
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const float pv = fm_exp2(s[nb][c] * p.scale_log2 - (c < 2 ? La : Lb));
                dp[nb][c] = pv * (dp[nb][c] - (c < 2 ? Da : Db));
            }
        if (cls == FM_TILE_PARTIAL || k0 + BCQ > p.seq_len_k) {
#pragma unroll
            for (int nb = 0; nb < NB; nb++)
#pragma unroll
                for (int c = 0; c < 4; c++) {
                    const int kl = 8 * nb + 2 * t4 + (c & 1);
                    if (k0 + kl >= p.seq_len_k || is_masked(cB[kl], c < 2 ? row_a : row_b))
                        dp[nb][c] = 0.f;
                }
        }
        /* dQ += dS K over this warp's D slice. */
#pragma unroll
        for (int kk = 0; kk < BCQ / 16; kk++) {
            uint32_t a[4];
            a[0] = TR::pack(dp[2 * kk][0], dp[2 * kk][1]);
            a[1] = TR::pack(dp[2 * kk][2], dp[2 * kk][3]);
            a[2] = TR::pack(dp[2 * kk + 1][0], dp[2 * kk + 1][1]);
            a[3] = TR::pack(dp[2 * kk + 1][2], dp[2 * kk + 1][3]);
            const int brow = 16 * kk + (lane % 8) + ((lane / 8) % 2) * 8;
#pragma unroll
            for (int np = 0; np < DW / 16; np++) {
                uint32_t bk[4];
                fm_ldmatrix_x4_trans(bk, fm_smem_addr(cK + brow * P + dh * DW + 16 * np + (lane / 16) * 8));
                TR::mma(acc[2 * np], a, bk[0], bk[1]);
                TR::mma(acc[2 * np + 1], a, bk[2], bk[3]);
            }
        }
        __syncthreads();
        j = nj;
        cls = ncls;
        buf ^= 1;
    }
    fm_cp_async_wait<0>();

    T *gdq = (T *)p.dq.p + b * p.dq.sb + h * p.dq.sh;
#pragma unroll
    for (int nb = 0; nb < DW / 8; nb++) {
        const int col = dh * DW + 8 * nb + 2 * t4;
        if (row_a < p.seq_len_q)
            *reinterpret_cast<uint32_t *>(gdq + row_a * p.dq.ss + col) =
                TR::pack(acc[nb][0] * p.scale, acc[nb][1] * p.scale);
        if (row_b < p.seq_len_q)
            *reinterpret_cast<uint32_t *>(gdq + row_b * p.dq.ss + col) =
                TR::pack(acc[nb][2] * p.scale, acc[nb][3] * p.scale);
    }
}

/* ---- launch --------------------------------------------------------------------------------------------------- */


template <typename T, int D>
cudaError_t launch_main(const bwd_params &p, cudaStream_t stream)
{
    if constexpr (D <= 128) {
        if ((D == 64 || D == 128) && fm_bwd_sm90_applies(D))
            return fm_bwd_sm90(p, D, std::is_same<T, __nv_bfloat16>::value, stream);
        constexpr int smem2 = main2_smem_bytes<D>();
        auto kern2 = bwd_main2_kernel<T, D>;
        cudaError_t e2 = cudaFuncSetAttribute(kern2, cudaFuncAttributeMaxDynamicSharedMemorySize, smem2);
        if (e2 != cudaSuccess)
            return e2;
        dim3 grid2((p.seq_len_k + 127) / 128, p.n_head_kv, p.batch);
        kern2<<<grid2, NTHREADS, smem2, stream>>>(p);
        return cudaGetLastError();
    } else {
        constexpr int BC = 64, DSPLIT = 2; /* D = 256 */
        constexpr int smem = main_smem_bytes<D, BC>();
        auto kern = bwd_main_kernel<T, D, BC, DSPLIT>;
        cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
        if (e != cudaSuccess)
            return e;
        dim3 grid((p.seq_len_k + BC - 1) / BC, p.n_head_kv, p.batch);
        kern<<<grid, NTHREADS, smem, stream>>>(p);
        return cudaGetLastError();
    }
}

template <typename T, int D>
cudaError_t launch_dq(const bwd_params &p, cudaStream_t stream)
{
    if ((D == 64 || D == 128) && fm_bwd_sm90_applies(D))
        return fm_bwd_dq_sm90(p, D, std::is_same<T, __nv_bfloat16>::value, stream);
    constexpr int DSPLIT = D == 256 ? 2 : 1, NW = 8, BRQ = 16 * (NW / DSPLIT);
    constexpr int smem = dq_smem_bytes<D, DSPLIT, NW>();
    auto kern = bwd_dq_kernel<T, D, DSPLIT, NW>;
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e != cudaSuccess)
        return e;
    dim3 grid((p.seq_len_q + BRQ - 1) / BRQ, p.n_head, p.batch);
    kern<<<grid, 32 * NW, smem, stream>>>(p);
    return cudaGetLastError();
}

template <typename T>
cudaError_t launch_all(bwd_params p, int D, const fm_block_summary *sum_main, const fm_block_summary *sum_dq,
                       cudaStream_t stream)
{
    int lpr = 1;
    while (lpr < D / 8)
        lpr *= 2;
    const int bh = p.batch * p.n_head;
    const dim3 pre_grid((unsigned)(p.seq_pad / (2 * NTHREADS / lpr)), (unsigned)(bh < 65535 ? bh : 65535));
    bwd_pre_kernel<T><<<pre_grid, NTHREADS, 0, stream>>>(p, D, lpr);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return e;
    p.summaries = sum_main;
    switch (D) {
    case 32: e = launch_main<T, 32>(p, stream); break;
    case 64: e = launch_main<T, 64>(p, stream); break;
    case 96: e = launch_main<T, 96>(p, stream); break;
    case 128: e = launch_main<T, 128>(p, stream); break;
    default: e = launch_main<T, 256>(p, stream); break;
    }
    if (e != cudaSuccess)
        return e;
    if (p.dq_acc) {
        const int64_t rows = (int64_t)p.batch * p.n_head * p.seq_len_q;
        bwd_convert_kernel<T><<<(unsigned)((rows + 7) / 8), NTHREADS, 0, stream>>>(p, D);
        return cudaGetLastError();
    }
    p.summaries = sum_dq;
    switch (D) {
    case 32: return launch_dq<T, 32>(p, stream);
    case 64: return launch_dq<T, 64>(p, stream);
    case 96: return launch_dq<T, 96>(p, stream);
    case 128: return launch_dq<T, 128>(p, stream);
    default: return launch_dq<T, 256>(p, stream);
    }
}

/* Shared memory per block of the portable kernels that run for head dim D (the main kernel; the dQ pass too
 * when split). */
int portable_smem(int D, int split)
{
    int main = 0, dq = 0;
    switch (D) {
    case 32: main = main2_smem_bytes<32>(), dq = dq_smem_bytes<32, 1, 8>(); break;
    case 64: main = main2_smem_bytes<64>(), dq = dq_smem_bytes<64, 1, 8>(); break;
    case 96: main = main2_smem_bytes<96>(), dq = dq_smem_bytes<96, 1, 8>(); break;
    case 128: main = main2_smem_bytes<128>(), dq = dq_smem_bytes<128, 1, 8>(); break;
    default: main = main_smem_bytes<256, 64>(), dq = dq_smem_bytes<256, 2, 8>(); break;
    }
    return split && dq > main ? dq : main;
}

tensor_view view(const famask_tensor &t)
{
    tensor_view v;
    v.p = t.data;
    v.sb = t.stride_batch;
    v.ss = t.stride_seq;
    v.sh = t.stride_head;
    return v;
}

} // namespace

extern "C" int fm_cuda_bwd_takes_perm(int head_dim)
{
    return (head_dim == 64 || head_dim == 128) && fm_bwd_sm90_applies(head_dim);
}

extern "C" famask_status fm_cuda_bwd(famask_ctx *ctx, famask_mask *mask, const famask_attn_args *a)
{
    return fm_cuda_bwd_perm(ctx, mask, a, NULL);
}

extern "C" famask_status fm_cuda_bwd_perm(famask_ctx *ctx, famask_mask *mask, const famask_attn_args *a,
                                          const int32_t *kv_perm)
{
    famask_status st = FAMASK_STATUS_OK;
    cudaStream_t stream = (cudaStream_t)a->stream;
    float *ws = NULL;
    const int32_t *bounds = NULL;
    const fm_block_summary *sum_main = NULL, *sum_dq = NULL;
    int split = 0;
    const int D = a->head_dim;
    bwd_params p;

    if (a->dtype != FAMASK_DTYPE_BF16 && a->dtype != FAMASK_DTYPE_F16)
        return fm_error(ctx, FAMASK_STATUS_UNSUPPORTED,
                        "dtype %d is not supported by the cuda backward (use bf16 or f16)", (int)a->dtype);
    if (!fm_cuda_head_dim_ok(D))
        return fm_error(ctx, FAMASK_STATUS_UNSUPPORTED,
                        "head_dim %d is not supported by the cuda backward (32, 64, 96, 128 or 256)", D);
    {
        const famask_tensor *ts[] = {&a->q, &a->k, &a->v, &a->o, &a->d_o, &a->dq, &a->dk, &a->dv};
        const char *names[] = {"q", "k", "v", "o", "d_o", "dq", "dk", "dv"};
        for (int i = 0; i < 8; i++)
            if (!fm_cuda_aligned16(ts[i]))
                return fm_error(ctx, FAMASK_STATUS_UNSUPPORTED,
                                "'%s' must be 16-byte aligned with strides that are multiples of 8 elements",
                                names[i]);
    }
    if (!a->lse)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "'lse' is required by the backward");

    p.q = view(a->q);
    p.k = view(a->k);
    p.v = view(a->v);
    p.o = view(a->o);
    p.d_o = view(a->d_o);
    p.dq = view(a->dq);
    p.dk = view(a->dk);
    p.dv = view(a->dv);
    p.lse = a->lse;
    p.batch = a->batch;
    p.n_head = a->n_head;
    p.n_head_kv = a->n_head_kv;
    p.seq_len_q = a->seq_len_q;
    p.seq_len_k = a->seq_len_k;
    p.seq_pad = (a->seq_len_q + QPAD - 1) / QPAD * QPAD;
    p.batch_m = famask_mask_batch(mask);
    p.heads_m = famask_mask_heads(mask);
    p.scale = a->softmax_scale != 0.f ? a->softmax_scale : 1.f / sqrtf((float)D);
    p.scale_log2 = p.scale * FM_LOG2E;

    const bool sm90 = (D == 64 || D == 128) && fm_bwd_sm90_applies(D); /* the Hopper kernels serve this call */
    /* the main kernel's key blocks: the Hopper kernel's items, else the portable kernel's blocks */
    if ((st = fm_cuda_mask_device(ctx, mask, sm90 ? fm_bwd_sm90_block_k(D) : D == 256 ? 64 : 128, a->stream, &bounds,
                                  &sum_main)) != FAMASK_STATUS_OK)
        goto fail;
    /* The Hopper kernels always take the split path (main kernel without dQ, then the query-parallel dQ pass):
     * it measured as fast as dQ by atomics or faster (H200, 8K, D 128: full 13.73 against 13.69 ms, document
     * 2.18 against 2.40), and it is deterministic. */
    split = a->deterministic || sm90;
    if (split &&
        (st = fm_cuda_mask_device(ctx, mask, D == 256 ? 64 : 128, a->stream, NULL, &sum_dq)) != FAMASK_STATUS_OK)
        goto fail;
    p.bounds = bounds;
    p.ranges = NULL;
    p.kv_perm = kv_perm;
    if (kv_perm && !fm_cuda_bwd_takes_perm(D)) {
        st = fm_error(ctx, FAMASK_STATUS_INTERNAL, "a key order for the portable backward (head_dim %d)", D);
        goto fail;
    }
    if (sm90 && (st = fm_cuda_mask_ranges(ctx, mask, FM_SM90_BLOCK_Q, FM_SM90_BLOCK_K, a->stream, &p.ranges)) !=
            FAMASK_STATUS_OK)
        goto fail;
    p.coarse = NULL;
    if (sm90 && (st = fm_cuda_mask_device(ctx, mask, FM_SM90_COARSE_K, a->stream, NULL, &p.coarse)) !=
            FAMASK_STATUS_OK)
        goto fail;
    if (!sm90 &&
        (st = fm_cuda_check_smem(ctx, portable_smem(D, split), "backward", D)) != FAMASK_STATUS_OK)
        goto fail;
    {
        const size_t rows = (size_t)a->batch * a->n_head * p.seq_pad;
        const size_t floats = 2 * rows + (split ? 0 : rows * D) + N_COUNTERS; /* + the Hopper kernels' counters */
        size_t sched = 0; /* bytes of the Hopper kernels' schedules, after the floats */
        memset(p.sched, 0, sizeof p.sched);
        p.counters = NULL;
        if (sm90)
            FM_CUDA(ctx, fm_bwd_sm90_sched(&p, D, NULL, &sched));
        FM_CUDA(ctx, cudaMallocAsync((void **)&ws, floats * sizeof(float) + sched, stream));
        p.L = ws;
        p.Dd = ws + rows;
        p.dq_acc = split ? NULL : ws + 2 * rows;
        p.counters = reinterpret_cast<int *>(ws + floats - N_COUNTERS);
        if (sm90)
            FM_CUDA(ctx, fm_bwd_sm90_sched(&p, D, ws + floats, &sched));
    }
    if (a->dtype == FAMASK_DTYPE_BF16)
        FM_CUDA(ctx, launch_all<__nv_bfloat16>(p, D, sum_main, sum_dq, stream));
    else
        FM_CUDA(ctx, launch_all<__half>(p, D, sum_main, sum_dq, stream));
fail:
    if (ws)
        cudaFreeAsync(ws, stream);
    return st;
}
