/*
 * fwd-sm90.cu: the attention forward on Hopper (sm_90a): wgmma from shared memory, FlashMask tile skipping.
 *
 * Same contract as the portable kernel in fwd.cu (shapes, strides, GQA, broadcast masks, lse, empty rows give
 * o = 0 and lse = -inf); used for head dim 128 on sm_90 devices when the library was built for sm_90a
 * (the kernel also serves 64, but the portable kernel is faster there for now).
 *
 * One CTA of two warpgroups per (query tile of 128 rows, head, batch); warpgroup w owns rows 64w..64w+63. Key
 * blocks of 128 columns, K and V double-buffered in shared memory, filled with cp.async by all 256 threads while
 * the previous block is computed. Per live block each warpgroup issues
 *     S = Q K^T  as D/16 wgmma m64n128k16, both operands from shared memory (K-major, 128-byte swizzle),
 *     the element mask (partial blocks only), the online softmax in base 2 on the accumulator registers,
 *     O += P V  as 8 wgmma m64nDk16 with P from registers and V from shared memory (MN-major: V is stored as
 *               loaded, key rows of D elements, and the instruction transposes it).
 * Tiles in shared memory are stored in the canonical 128-byte-swizzle layout of wgmma: the D columns split into
 * atoms of 64 elements (128 bytes), each atom a [rows][64] block whose 16-byte chunk c of row r sits at chunk
 * c ^ (r % 8); block bases are 1024-byte aligned, so the hardware's swizzle (address bits 4-6 xor 7-9) matches.
 * Descriptors: K-major (Q, K): rows 8 apart by 1024 bytes (SBO), k steps of 16 advance the start by 32 bytes
 * inside the atom, then by one atom; MN-major (V): the 8-key groups 1024 bytes apart (SBO), the 64-column atoms
 * of D one atom block apart (LBO).
 *
 * The tile classification, the search for live blocks and the element mask are the portable kernel's (fwd.cuh).
 */
#include "cuda-check.cuh"
#include "fwd.cuh"

#include <stdlib.h>
#include <string.h>

namespace {

constexpr int BR = 128; /* query rows per CTA: two warpgroups of 64 */
constexpr int BC = FM_SM90_BLOCK_K;
constexpr int NTHREADS = 256;

template <int D> constexpr int smem_bytes()
{
    /* Q, then two stages of K, V, then two stages of column bounds; 1024 for aligning the base */
    return 1024 + BR * D * 2 + 2 * 2 * BC * D * 2 + 2 * BC * 16;
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FM_SM90_BODY 1
#endif

/* Everything below up to the kernel exists only in the sm_90a pass: other passes (CI builds sm_80 only) compile
 * the kernel to an empty body, which fm_fwd_sm90_applies finds out and never launches. */
#ifdef FM_SM90_BODY

/* ---- wgmma ------------------------------------------------------------------------------------------------- */

/* Shared-memory matrix descriptor: start address, leading and stride byte offsets (all in 16-byte units),
 * 128-byte swizzle (mode 1 in bits 62-63). */
FM_DEV uint64_t desc_sw128(uint32_t addr, uint32_t lbo, uint32_t sbo)
{
    return (uint64_t)((addr & 0x3ffff) >> 4) | (uint64_t)(lbo >> 4) << 16 | (uint64_t)(sbo >> 4) << 32 |
           1ull << 62;
}

FM_DEV void wg_fence()
{
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}

FM_DEV void wg_commit()
{
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}

template <int N> FM_DEV void wg_wait()
{
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

/* Orders this thread's earlier generic-proxy writes to shared memory (cp.async, st.shared) before later reads by
 * the async proxy (wgmma). */
FM_DEV void fence_proxy_async()
{
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

/* Accumulator operand lists: 32 or 64 fp32 registers d[0..]. */
#define FM_D4(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3])
#define FM_D16(i) FM_D4(i), FM_D4(i + 4), FM_D4(i + 8), FM_D4(i + 12)
#define FM_D32 FM_D16(0), FM_D16(16)
#define FM_D64 FM_D32, FM_D16(32), FM_D16(48)
#define FM_R32                                                                                                     \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, "   \
    "%23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define FM_R64                                                                                                     \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, "   \
    "%23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, "    \
    "%44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"

/* d (+)= A B for one k step of 16. ss: A and B from shared memory (both K-major); rs: A from registers (the
 * m16n8k16 A-fragment layout, per warp 16 rows), B from shared memory, MN-major (transposed). accumulate = 0
 * overwrites d. N is 64 or 128. */
#define FM_WGMMA_TYPE(T, TY)                                                                                       \
    template <> struct wgmma<T> {                                                                                  \
        static FM_DEV void ss128(float (&d)[64], uint64_t a, uint64_t b, int accumulate)                           \
        {                                                                                                          \
            asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                                              \
                         "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " " FM_R64                       \
                         ", %64, %65, p, 1, 1, 0, 0;\n}\n"                                                         \
                         : FM_D64                                                                                  \
                         : "l"(a), "l"(b), "r"(accumulate));                                                       \
        }                                                                                                          \
        static FM_DEV void rs128(float (&d)[64], const uint32_t (&a)[4], uint64_t b)                               \
        {                                                                                                          \
            asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " " FM_R64                       \
                         ", {%64, %65, %66, %67}, %68, 1, 1, 1, 1;\n"                                              \
                         : FM_D64                                                                                  \
                         : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));                                    \
        }                                                                                                          \
        static FM_DEV void rs64(float (&d)[32], const uint32_t (&a)[4], uint64_t b)                                \
        {                                                                                                          \
            asm volatile("wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " " FM_R32                        \
                         ", {%32, %33, %34, %35}, %36, 1, 1, 1, 1;\n"                                              \
                         : FM_D32                                                                                  \
                         : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));                                    \
        }                                                                                                          \
    };

template <typename T> struct wgmma;
FM_WGMMA_TYPE(__nv_bfloat16, "bf16")
FM_WGMMA_TYPE(__half, "f16")

/* O += P V for one k step: N = D. */
template <typename T, int D> FM_DEV void wg_pv(float (&o)[D / 2], const uint32_t (&a)[4], uint64_t b)
{
    if constexpr (D == 128)
        wgmma<T>::rs128(o, a, b);
    else
        wgmma<T>::rs64(o, a, b);
}

/* ---- shared-memory tiles ----------------------------------------------------------------------------------- */

/* Byte offset of 16-byte chunk c (of D / 8) of row r in a tile of ROWS rows in the wgmma 128-byte-swizzle
 * layout. */
template <int ROWS> FM_DEV uint32_t sw128(int r, int c)
{
    return (uint32_t)((c / 8) * ROWS * 128 + r * 128 + (((c % 8) ^ (r % 8)) << 4));
}

/* cp.async of rows [row0, row0 + ROWS) of a [n, D] view (row stride `stride` elements) into a swizzled tile;
 * rows at or past n_valid are zero-filled. 256 threads: thread t copies chunk t % (D / 8) of every
 * (256 / (D / 8))-th row, whose swizzle phase (r % 8) never changes. */
template <int D, int ROWS>
FM_DEV void load_rows(uint32_t s, const uint16_t *g, int64_t stride, int row0, int n_valid)
{
    constexpr int CH = D / 8, STEP = NTHREADS / CH;
    static_assert(STEP % 8 == 0 && ROWS % STEP == 0, "rows must split evenly over the threads");
    const int c = threadIdx.x % CH;
    int r = threadIdx.x / CH;
    const uint16_t *src = g + (int64_t)(row0 + r) * stride + c * 8;
    uint32_t dst = s + sw128<ROWS>(r, c);
#pragma unroll 1
    for (int i = 0; i < ROWS / STEP; i++) {
        fm_cp_async16(dst, row0 + r < n_valid ? src : g, row0 + r < n_valid ? 16 : 0);
        r += STEP;
        src += STEP * stride;
        dst += STEP * 128;
    }
}

#endif /* FM_SM90_BODY */

/* ---- the kernel -------------------------------------------------------------------------------------------- */

template <typename T, int D> __global__ void __launch_bounds__(NTHREADS, 1) fwd_sm90_kernel(const fwd_params p)
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
    const uint32_t sK = sQ + TILE_Q;         /* two stages */
    const uint32_t sV = sK + 2 * TILE_K;     /* two stages */
    const uint32_t sB = sV + 2 * TILE_K;     /* two stages of BC int4 */
    const int4 *sBounds = reinterpret_cast<const int4 *>(smem + (sB - base));

    const int tid = threadIdx.x, wg = tid / 128, warp = (tid / 32) % 4, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
    const int qt = gridDim.x - 1 - blockIdx.x; /* longest walks first under causal-like masks */
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

    float o[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; i++)
        o[i] = 0.f;
    float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};

    /* Loads of block kb into stage st: K with (when the block needs element-wise masking) its column bounds, and
     * V; K runs one block ahead of V (see the loop). */
    auto load_k = [&](int kb, int cls, int st) {
        const int c0 = kb * BC;
        load_rows<D, BC>(sK + st * TILE_K, gk, p.k_s, c0, p.seq_len_k);
        if ((cls == FM_TILE_PARTIAL || c0 + BC > p.seq_len_k) && tid < BC) {
            const bool ok = c0 + tid < p.seq_len_k;
            fm_cp_async16(sB + (st * BC + tid) * 16, ok ? gb + 4 * (int64_t)(c0 + tid) : gb, ok ? 16 : 0);
        }
    };
    auto load_v = [&](int kb, int st) { load_rows<D, BC>(sV + st * TILE_K, gv, p.v_s, kb * BC, p.seq_len_k); };
    const uint32_t q_wg = sQ + wg * 64 * 128; /* this warpgroup's Q rows */
    const float sl2 = p.scale_log2;
    const float mval = sl2 >= 0.f ? -INFINITY : INFINITY; /* a masked raw score: scaled, it is -inf */

    float s[BC / 2];     /* S of the block being softmaxed, then its P in fp32 */
    uint32_t pa[BC / 16][4]; /* P of the block in O += P V, as A fragments */
    float alpha[2];

    /* S = Q K^T of the block in K stage st, issued and committed, not waited for. */
    auto issue_s = [&](int st) {
        const uint32_t kst = sK + st * TILE_K;
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < D / 16; ks++) {
            const uint32_t koff = (ks / 4) * (BC * 128) + (ks % 4) * 32;
            const uint32_t qoff = (ks / 4) * (BR * 128) + (ks % 4) * 32;
            wgmma<T>::ss128(s, desc_sw128(q_wg + qoff, 16, 1024), desc_sw128(kst + koff, 16, 1024), ks > 0);
        }
        wg_commit();
    };

    /* Element mask (partial blocks and the ragged last block) and online softmax of s, the scores of block kb
     * whose bounds are in stage st: s becomes P (fp32, not yet normalised), alpha the factor that O must be
     * rescaled by. Thread holds rows rb and rb + 8, columns 8 n + 2 t + e. */
    auto softmax = [&](int kb, int cls, int st) {
        const int c0 = kb * BC;
        if (cls == FM_TILE_PARTIAL || c0 + BC > p.seq_len_k) {
            const int4 *bnd = sBounds + st * BC;
            const int rb = r0 + wg * 64 + warp * 16 + g;
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

    /* The walk over live blocks j = 0, 1, ... is software-pipelined (stage = j % 2):
     *   iteration j (P_j in registers): wait for {K_j+1, V_j} (one cp.async group, issued an iteration
     *     earlier); barrier; issue the loads of K_j+2 (into K_j's stage) and V_j+1 (into V_j-1's) as one group;
     *     issue S_j+1 = Q K_j+1, then O += P_j V_j, on the tensor cores; wait for S_j+1 only; mask and softmax
     *     S_j+1 while P_j V_j runs; wait for it; rescale O and pack P_j+1.
     * so the exponentials of one block overlap the tensor cores' work, and every load has a whole iteration to
     * land. */
    int cls0 = FM_TILE_SKIPPED, cls1 = FM_TILE_SKIPPED, cls2 = FM_TILE_SKIPPED;
    live_scan scan = {-64, 0u, 0u};
    int kb0 = next_live(scan, sums, 0, n_kb, r0, r1, &cls0);
    int kb1 = kb0 < n_kb ? next_live(scan, sums, kb0 + 1, n_kb, r0, r1, &cls1) : n_kb;
    if (kb0 < n_kb) {
        load_rows<D, BR>(sQ, gq, p.q_s, r0, p.seq_len_q);
        load_k(kb0, cls0, 0);
        fm_cp_async_commit();
        if (kb1 < n_kb)
            load_k(kb1, cls1, 1);
        load_v(kb0, 0);
        fm_cp_async_commit();
        fm_cp_async_wait<1>();
        fence_proxy_async();
        __syncthreads();
        issue_s(0);
        wg_wait<0>();
        softmax(kb0, cls0, 0);
        rescale_pack();
    }
    int st = 0;
    auto pv = [&]() { /* O += P_j V_j, issued and committed */
        const uint32_t vst = sV + st * TILE_K;
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < BC / 16; kk++)
            wg_pv<T, D>(o, pa[kk], desc_sw128(vst + kk * 16 * 128, BC * 128, 1024));
        wg_commit();
    };
    /* (The last block is peeled off the loop: with the products issued on every path through the loop body,
     * ptxas keeps the two products of an iteration in flight together instead of serialising them.) */
    while (kb1 < n_kb) {
        fm_cp_async_wait<0>();
        fence_proxy_async();
        __syncthreads(); /* K_j+1, V_j landed for everyone; everyone is done with K_j and V_j-1 */
        const int kb2 = next_live(scan, sums, kb1 + 1, n_kb, r0, r1, &cls2);
        if (kb2 < n_kb)
            load_k(kb2, cls2, st);
        load_v(kb1, st ^ 1);
        fm_cp_async_commit();
        issue_s(st ^ 1);
        pv();
        wg_wait<1>();
        softmax(kb1, cls1, st ^ 1);
        wg_wait<0>();
        rescale_pack();
        kb0 = kb1, cls0 = cls1;
        kb1 = kb2, cls1 = cls2;
        st ^= 1;
    }
    if (kb0 < n_kb) {
        fm_cp_async_wait<0>();
        fence_proxy_async();
        __syncthreads();
        pv();
        wg_wait<0>();
    }
    fm_cp_async_wait<0>();

    /* Epilogue: normalise, stage this warpgroup's 64 rows of o in its own part of the Q tile (no longer read: its
     * last wgmma has completed), then 16-byte row chunks to global. */
    const int rl = wg * 64 + warp * 16 + g; /* tile row of hh = 0 */
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        const int r = rl + 8 * hh;
        const float l = fm_quad_sum(row_sum[hh]);
        const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
        for (int n = 0; n < ND; n++)
            *reinterpret_cast<uint32_t *>(smem + sw128<BR>(r, n) + 4 * t) =
                dt::pack(o[4 * n + 2 * hh] * inv, o[4 * n + 2 * hh + 1] * inv);
        if (p.lse && t == 0 && r0 + r < p.seq_len_q)
            p.lse[((int64_t)b * p.n_head + h) * p.seq_len_q + r0 + r] =
                l > 0.f ? (row_max[hh] + fm_log2(l)) * FM_LN2 : -INFINITY;
    }
    asm volatile("bar.sync %0, 128;\n" ::"r"(1 + wg) : "memory");
    uint16_t *go = static_cast<uint16_t *>(p.o) + b * p.o_b + h * p.o_h;
#pragma unroll 1
    for (int i = tid % 128; i < 64 * ND; i += 128) {
        const int r = wg * 64 + i / ND, c = i % ND;
        if (r0 + r < p.seq_len_q)
            *reinterpret_cast<uint4 *>(go + (int64_t)(r0 + r) * p.o_s + c * 8) =
                *reinterpret_cast<const uint4 *>(smem + sw128<BR>(r, c));
    }
#endif
}

template <typename T, int D>
famask_status launch(famask_ctx *ctx, const fwd_params &p, int batch, cudaStream_t stream)
{
    famask_status st = FAMASK_STATUS_OK;
    constexpr int smem = smem_bytes<D>();
    static unsigned long long attr_done = 0; /* per device, as in fwd.cu */
    int device = 0;
    dim3 grid((p.seq_len_q + BR - 1) / BR, p.n_head, batch);
    FM_CUDA(ctx, cudaGetDevice(&device));
    if (device >= 64 || !(attr_done >> device & 1ull)) {
        FM_CUDA(ctx, cudaFuncSetAttribute(fwd_sm90_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
        if (device < 64)
            attr_done |= 1ull << device;
    }
    fwd_sm90_kernel<T, D><<<grid, NTHREADS, smem, stream>>>(p);
    FM_CUDA_LAUNCHED(ctx);
fail:
    return st;
}

} /* namespace */

namespace {
/* Writes 1 where this file was compiled with the sm_90a kernel body for the running device. */
__global__ void probe_kernel(int *out)
{
#ifdef FM_SM90_BODY
    *out = 1;
#else
    *out = 0;
#endif
}
} /* namespace */

/* Whether the current device runs the sm_90a build of the kernel: compute capability 9.0 and a binary with the
 * wgmma body chosen for it (a build for sm_80 or plain sm_90 has an empty body there), found once per device by a
 * probe launch. FAMASK_CUDA_FWD=sm80 in the environment forces the portable kernel (tests and benchmarks compare
 * the two). */
int fm_fwd_sm90_applies(int head_dim)
{
    static signed char cache[64]; /* 0 unknown, 1 yes, -1 no */
    int device = 0;
    /* Head dim 64 is left to the portable kernel, which is faster there for now (H200, 8K: 295 against 275
     * TFLOP/s on the full mask). */
    if (head_dim != 128)
        return 0;
    const char *force = getenv("FAMASK_CUDA_FWD");
    if (force && strcmp(force, "sm80") == 0)
        return 0;
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

famask_status fm_fwd_sm90(famask_ctx *ctx, const fwd_params &p, int head_dim, int is_bf16, int batch,
                          cudaStream_t stream)
{
    if (head_dim == 128)
        return is_bf16 ? launch<__nv_bfloat16, 128>(ctx, p, batch, stream) : launch<__half, 128>(ctx, p, batch, stream);
    return is_bf16 ? launch<__nv_bfloat16, 64>(ctx, p, batch, stream) : launch<__half, 64>(ctx, p, batch, stream);
}
