/*
 * sm90.cuh: building blocks of the Hopper kernels (kernels/fwd-sm90.cu, kernels/bwd-sm90.cu), sm_90a only.
 *
 * - wgmma wrappers (m64n64k16, m64n128k16, fp32 accumulators, operands from shared memory or A from registers),
 *   with the shared-memory matrix descriptor for the 128-byte swizzle;
 * - mbarriers and the tensor-memory-access copy engine (TMA) for loads that complete on them, and TMA stores;
 * - sw128: addresses in the canonical 128-byte-swizzle tile layout: a tile of ROWS rows of D elements is stored
 *   as D / 64 atoms, each a [ROWS][64] block whose 16-byte chunk c of row r sits at chunk c ^ (r % 8); block bases
 *   are 1024-byte aligned, so that the hardware's swizzle (address bits 4-6 xor 7-9) matches. A TMA box of 64
 *   columns by ROWS rows with the 128-byte swizzle lands as one atom;
 * - make_map (host): the tensor map of a [batch, seq, heads, D] tensor for such boxes.
 * Descriptors: a K-major operand (rows of the M or N dimension, K contiguous) has its 8-row groups 1024 bytes
 * apart (SBO); k steps of 16 advance the start by 32 bytes inside the atom, then by one atom. An MN-major operand
 * (K rows, M or N contiguous) has its 8-row groups along K 1024 bytes apart (SBO) and its 64-column atoms along
 * M or N one atom block apart (LBO); k steps of 16 advance the start by 2048 bytes.
 *
 * The device part exists only in the sm_90a pass (FM_SM90_BODY): other passes (CI builds sm_80 only) compile
 * the kernels to empty bodies, which the host finds out with a probe and never launches.
 */
#ifndef FAMASK_SM90_CUH
#define FAMASK_SM90_CUH

#include <cudaTypedefs.h>

#include "common.cuh"
#include "cuda-check.cuh"

namespace fm_sm90
{

template <typename T> struct fm_is_bf16 {
    static constexpr bool value = false;
};
template <> struct fm_is_bf16<__nv_bfloat16> {
    static constexpr bool value = true;
};

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
    return (uint64_t)((addr & 0x3ffff) >> 4) | (uint64_t)(lbo >> 4) << 16 | (uint64_t)(sbo >> 4) << 32 | 1ull << 62;
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

/* mbarriers (shared memory, 8 bytes) and the tensor-memory-access copy engine. One thread arms a barrier with
 * the bytes it expects and issues the copies; every thread waits for the barrier's phase to flip. */
FM_DEV void mbar_init(uint32_t bar, int count)
{
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}

/* N consecutive barriers from bar, barrier i for counts[i] arrivals, initialised by thread 0 and made visible to
 * the async proxy; the whole CTA calls it and meets at a barrier before any use. */
template <int N> FM_DEV void mbar_init_all(uint32_t bar, const int (&counts)[N])
{
    if (threadIdx.x == 0) {
#pragma unroll
        for (int i = 0; i < N; i++)
            mbar_init(bar + 8 * i, counts[i]);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
}

FM_DEV void mbar_expect_tx(uint32_t bar, uint32_t bytes)
{
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}

FM_DEV void mbar_wait(uint32_t bar, int parity)
{
    uint32_t done = 0;
    while (!done)
        asm volatile(
            "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(done)
            : "r"(bar), "r"(parity)
            : "memory");
}

/* One box of a 4-D tensor map into shared memory at dst, completing on bar. */
FM_DEV void tma_load(uint32_t dst, const CUtensorMap *map, int c0, int c1, int c2, int c3, uint32_t bar)
{
    asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, "
                 "%5}], [%6];\n" ::"r"(dst),
                 "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
                 : "memory");
}

/* A tile of ROWS rows of D columns, rows [row0, row0 + ROWS) of head hd and batch bb, as D / 64 boxes of 64
 * columns into consecutive atoms at dst (see make_map for seq_major); issued by one thread on an armed barrier. */
template <int D>
FM_DEV void tma_tile(const CUtensorMap *map, int seq_major, uint32_t dst, int rows, int row0, int hd, int bb,
                     uint32_t bar)
{
#pragma unroll
    for (int a = 0; a < D / 64; a++) {
        if (seq_major)
            tma_load(dst + a * rows * 128, map, a * 64, row0, hd, bb, bar);
        else
            tma_load(dst + a * rows * 128, map, a * 64, hd, row0, bb, bar);
    }
}

/* One box from shared memory at src to a 4-D tensor map (a TMA store: the box's rows past the tensor's end are
 * not written), in the issuing thread's bulk group. The writers of src fence (fence_proxy_async) and meet at a
 * barrier before. */
FM_DEV void tma_store(const CUtensorMap *map, uint32_t src, int c0, int c1, int c2, int c3)
{
    asm volatile("cp.async.bulk.tensor.4d.global.shared::cta.bulk_group [%0, {%1, %2, %3, %4}], [%5];\n" ::"l"(
                     reinterpret_cast<uint64_t>(map)),
                 "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(src)
                 : "memory");
}

/* rows [row0, row0 + rows) of head hd and batch bb from shared memory at src, D / 64 atoms atom_bytes apart
 * (boxes of `rows` rows: see make_map), by TMA store, as one bulk group of the issuing thread. */
template <int D>
FM_DEV void tma_store_tile(const CUtensorMap *map, int seq_major, uint32_t src, uint32_t atom_bytes, int row0, int hd,
                           int bb)
{
#pragma unroll
    for (int a = 0; a < D / 64; a++) {
        if (seq_major)
            tma_store(map, src + a * atom_bytes, a * 64, row0, hd, bb);
        else
            tma_store(map, src + a * atom_bytes, a * 64, hd, row0, bb);
    }
    asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
}

/* Waits until this thread's bulk groups but the newest N have read their shared memory (it may be written
 * again), or, for bulk_wait, have completed. */
template <int N> FM_DEV void bulk_wait_read()
{
    asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(N) : "memory");
}
template <int N> FM_DEV void bulk_wait()
{
    asm volatile("cp.async.bulk.wait_group %0;\n" ::"n"(N) : "memory");
}

/* Accumulator operand lists: 32 or 64 fp32 registers d[0..]. */
#define FM_D4(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3])
#define FM_D16(i) FM_D4(i), FM_D4(i + 4), FM_D4(i + 8), FM_D4(i + 12)
#define FM_D32 FM_D16(0), FM_D16(16)
#define FM_D64 FM_D32, FM_D16(32), FM_D16(48)
#define FM_R32                                                                                                         \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, "       \
    "%23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define FM_R64                                                                                                         \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, "       \
    "%23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, "        \
    "%44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"

/* d (+)= A B for one k step of 16, N = 64 or 128. ss: A and B from shared memory; rs: A from registers (the
 * m16n8k16 A-fragment layout, per warp 16 rows), B from shared memory. TA, TB: 0 for a K-major operand, 1 for
 * an MN-major one (transposed by the instruction). accumulate = 0 overwrites d. */
#define FM_WGMMA_TYPE(T, TY)                                                                                           \
    template <> struct wgmma<T> {                                                                                      \
        template <int TA, int TB> static FM_DEV void ss(float (&d)[64], uint64_t a, uint64_t b, int accumulate)        \
        {                                                                                                              \
            asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                                                  \
                         "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " " FM_R64                           \
                         ", %64, %65, p, 1, 1, %67, %68;\n}\n"                                                         \
                         : FM_D64                                                                                      \
                         : "l"(a), "l"(b), "r"(accumulate), "n"(TA), "n"(TB));                                         \
        }                                                                                                              \
        template <int TA, int TB> static FM_DEV void ss(float (&d)[32], uint64_t a, uint64_t b, int accumulate)        \
        {                                                                                                              \
            asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"                                                  \
                         "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " " FM_R32                            \
                         ", %32, %33, p, 1, 1, %35, %36;\n}\n"                                                         \
                         : FM_D32                                                                                      \
                         : "l"(a), "l"(b), "r"(accumulate), "n"(TA), "n"(TB));                                         \
        }                                                                                                              \
        template <int TB> static FM_DEV void rs(float (&d)[64], const uint32_t (&a)[4], uint64_t b)                    \
        {                                                                                                              \
            asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " " FM_R64                           \
                         ", {%64, %65, %66, %67}, %68, 1, 1, 1, %69;\n"                                                \
                         : FM_D64                                                                                      \
                         : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(TB));                               \
        }                                                                                                              \
        template <int TB> static FM_DEV void rs(float (&d)[32], const uint32_t (&a)[4], uint64_t b)                    \
        {                                                                                                              \
            asm volatile("wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " " FM_R32                            \
                         ", {%32, %33, %34, %35}, %36, 1, 1, 1, %37;\n"                                                \
                         : FM_D32                                                                                      \
                         : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(TB));                               \
        }                                                                                                              \
    };

template <typename T> struct wgmma;
FM_WGMMA_TYPE(__nv_bfloat16, "bf16")
FM_WGMMA_TYPE(__half, "f16")

/* d = A B^T over k = D, both operands K-major tiles of the 128-byte layout: A's 64 rows start at a in a tile of
 * a_rows rows, B's N rows at b in a tile of b_rows rows. Issued, not committed. */
template <typename T, int D, int N>
FM_DEV void wg_gemm_kk(float (&d)[N / 2], uint32_t a, int a_rows, uint32_t b, int b_rows)
{
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++)
        wgmma<T>::template ss<0, 0>(d, desc_sw128(a + (ks / 4) * (a_rows * 128) + (ks % 4) * 32, 16, 1024),
                                    desc_sw128(b + (ks / 4) * (b_rows * 128) + (ks % 4) * 32, 16, 1024), ks > 0);
}

/* d += A B over k = K: A from registers (K / 16 fragments), B an MN-major tile of the 128-byte layout at b with
 * K rows, its N columns in atoms of 64 (b_rows rows apart: the tile's row count). Issued, not committed. */
template <typename T, int K, int N>
FM_DEV void wg_gemm_rn(float (&d)[N / 2], const uint32_t (&a)[K / 16][4], uint32_t b, int b_rows)
{
#pragma unroll
    for (int kk = 0; kk < K / 16; kk++)
        wgmma<T>::template rs<1>(d, a[kk], desc_sw128(b + kk * 16 * 128, b_rows * 128, 1024));
}

/* A fence in each writing thread, before the barrier, for shared memory written by ordinary stores that wgmma
 * reads next. */
FM_DEV void fence_proxy_async()
{
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

/* ---- shared-memory tiles ----------------------------------------------------------------------------------- */

/* Byte offset of 16-byte chunk c (of D / 8) of row r in a tile of ROWS rows in the wgmma 128-byte-swizzle
 * layout. */
template <int ROWS> FM_DEV uint32_t sw128(int r, int c)
{
    return (uint32_t)((c / 8) * ROWS * 128 + r * 128 + (((c % 8) ^ (r % 8)) << 4));
}

/* A warp's 16 rows of a warpgroup's m64nD fp32 accumulator d (wgmma's layout: element 4 n + 2 hh + e is row
 * g + 8 hh, column 8 n + 2 t + e, for lane 4 g + t), times s, as 16-bit T into the tile of ROWS rows at dst in the
 * sw128 layout, its rows from r0 on: stmatrix, four 8 x 8 blocks of 16-bit values (rows 0-7 and 8-15 of column chunks
 * n and n + 1) per instruction, lane l giving row l % 8 of block l / 8. A quarter of the instructions of 32-bit
 * stores. */
template <typename T, int D, int ROWS> FM_DEV void store_acc_sw128(uint32_t dst, int r0, const float (&d)[D / 2], float s)
{
    using dt = fm_dtype<T>;
    const int lane = threadIdx.x % 32, r8 = lane % 8;
    const uint32_t row = dst + (uint32_t)(r0 + 8 * ((lane / 8) % 2) + r8) * 128;
    const uint32_t x16 = (uint32_t)(((lane / 16) ^ r8) << 4); /* (chunk parity ^ row) within the swizzle */
#pragma unroll
    for (int n = 0; n < D / 8; n += 2) {
        /* chunk n + lane / 16 of row r8: ((n % 8 + lane / 16) ^ r8) << 4 = ((n % 8) << 4) ^ x16, n being even */
        const uint32_t a = row + (n / 8) * ROWS * 128 + ((uint32_t)((n % 8) << 4) ^ x16);
        asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(a),
                     "r"(dt::pack(d[4 * n] * s, d[4 * n + 1] * s)), "r"(dt::pack(d[4 * n + 2] * s, d[4 * n + 3] * s)),
                     "r"(dt::pack(d[4 * n + 4] * s, d[4 * n + 5] * s)), "r"(dt::pack(d[4 * n + 6] * s, d[4 * n + 7] * s))
                     : "memory");
    }
}

#endif /* FM_SM90_BODY */

/* cuTensorMapEncodeTiled from the driver, found through the runtime (no link against libcuda). */
inline PFN_cuTensorMapEncodeTiled_v12000 encode_tiled()
{
    static PFN_cuTensorMapEncodeTiled_v12000 fn = NULL;
    if (!fn) {
        void *f = NULL;
        cudaDriverEntryPointQueryResult q;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q) ==
                cudaSuccess &&
            q == cudaDriverEntryPointSuccess)
            fn = (PFN_cuTensorMapEncodeTiled_v12000)f;
    }
    return fn;
}

/* The tensor map of Q, K or V ([batch, seq_len, heads, D] through strides in elements): 4-D with D innermost,
 * then seq and head in the order of their strides (seq_major: seq first), then batch; boxes of 64 columns by
 * box_rows rows with the 128-byte swizzle, so that each box lands as one atom of the wgmma layout; rows past seq_len_k
 * are filled with zeros. A dimension of size 1 gets a nominal stride. */
inline famask_status make_map(famask_ctx *ctx, CUtensorMap *map, const void *ptr, int is_bf16, int head_dim,
                              int box_rows, int seq_len, int heads, int batch, int64_t s_seq, int64_t s_head,
                              int64_t s_batch, int seq_major)
{
    PFN_cuTensorMapEncodeTiled_v12000 fn = encode_tiled();
    if (!fn)
        return fm_error(ctx, FAMASK_STATUS_CUDA, "cuda: cuTensorMapEncodeTiled is not available from the driver");
    const int64_t nominal = (int64_t)head_dim * seq_len * heads; /* any nonzero multiple of 8 elements */
    const int64_t ss = seq_len > 1 ? s_seq : nominal, sh = heads > 1 ? s_head : nominal;
    const int64_t sb = batch > 1 ? s_batch : nominal;
    cuuint64_t dims[4] = {(cuuint64_t)head_dim, (cuuint64_t)(seq_major ? seq_len : heads),
                          (cuuint64_t)(seq_major ? heads : seq_len), (cuuint64_t)batch};
    cuuint64_t strides[3] = {(cuuint64_t)(2 * (seq_major ? ss : sh)), (cuuint64_t)(2 * (seq_major ? sh : ss)),
                             (cuuint64_t)(2 * sb)};
    cuuint32_t box[4] = {64, (cuuint32_t)(seq_major ? box_rows : 1), (cuuint32_t)(seq_major ? 1 : box_rows), 1};
    cuuint32_t estr[4] = {1, 1, 1, 1};
    CUresult r = fn(map, is_bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 4,
                    const_cast<void *>(ptr), dims, strides, box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE,
                    CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS)
        return fm_error(ctx, FAMASK_STATUS_CUDA,
                        "cuda: cuTensorMapEncodeTiled failed (%d) for a [%d, %d, %d, %d] tensor with strides %lld, "
                        "%lld, %lld",
                        (int)r, batch, seq_len, heads, head_dim, (long long)s_batch, (long long)s_seq,
                        (long long)s_head);
    return FAMASK_STATUS_OK;
}

/* Whether the device in use runs sm_90a kernel bodies: compute capability 9.0 and this library's sm_90a code
 * chosen for it (found once per device by a probe launch). */
int device_ok();

} /* namespace fm_sm90 */

#endif /* FAMASK_SM90_CUH */
