/*
 * common.cuh: building blocks shared by the forward and backward kernels (sm_80 and later).
 *
 * - fm_dtype<T>: the two 16-bit element types (bf16, fp16): packing two floats into one 32-bit register and the
 *   matching tensor-core product mma.sync m16n8k16 with fp32 accumulation.
 * - PTX wrappers: ldmatrix x4 (plain and .trans), cp.async 16-byte .cg with zero fill, commit and wait.
 * - fm_swz: the XOR swizzle of shared-memory tiles stored as rows of 16-byte chunks. A tile row holds DS elements
 *   (DS a multiple of 64, so at least eight chunks); chunk c of row r lives at chunk (c ^ (r & 7)) within its
 *   group of eight. Eight consecutive rows read at one chunk column then hit eight different 16-byte bank groups,
 *   which keeps both the cp.async writes and the ldmatrix reads free of bank conflicts.
 * - fm_exp2: the hardware exp2 (ex2.approx.ftz); exp2(-inf) = +0, which the online softmax relies on.
 *
 * Fragment layouts (PTX ISA, mma.m16n8k16, g = lane / 4, t = lane % 4):
 *   A (16 x 16, row): a0 = (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..)
 *   B (16 x 8, col):  b0 = (k 2t..2t+1, n g), b1 = (k 2t+8.., n g)
 *   C (16 x 8):       c0, c1 = (g, 2t..2t+1), c2, c3 = (g+8, 2t..2t+1)
 */
#ifndef FAMASK_COMMON_CUH
#define FAMASK_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#define FM_DEV __device__ __forceinline__

/* ---- element types ---------------------------------------------------------------------------------------- */

template <typename T> struct fm_dtype;

template <> struct fm_dtype<__nv_bfloat16> {
    static FM_DEV uint32_t pack(float lo, float hi)
    {
        __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&v);
    }
    static FM_DEV float2 unpack(uint32_t x)
    {
        return __bfloat1622float2(*reinterpret_cast<__nv_bfloat162 *>(&x));
    }
    /* c = a * b: the zero accumulator is an immediate (RZ in SASS), so nothing is zeroed or kept live first */
    static FM_DEV void mma_zero(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
    {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                     "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                     "{0f00000000, 0f00000000, 0f00000000, 0f00000000};\n"
                     : "=f"(c[0]), "=f"(c[1]), "=f"(c[2]), "=f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    /* c += a * b */
    static FM_DEV void mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
    {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                     "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};

template <> struct fm_dtype<__half> {
    static FM_DEV uint32_t pack(float lo, float hi)
    {
        __half2 v = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&v);
    }
    static FM_DEV float2 unpack(uint32_t x)
    {
        return __half22float2(*reinterpret_cast<__half2 *>(&x));
    }
    /* c = a * b: the zero accumulator is an immediate (RZ in SASS), so nothing is zeroed or kept live first */
    static FM_DEV void mma_zero(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
    {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                     "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                     "{0f00000000, 0f00000000, 0f00000000, 0f00000000};\n"
                     : "=f"(c[0]), "=f"(c[1]), "=f"(c[2]), "=f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    static FM_DEV void mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
    {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                     "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};

/* ---- shared-memory addressing ----------------------------------------------------------------------------- */

FM_DEV uint32_t fm_smem_addr(const void *p)
{
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

/* Element offset of chunk c (8 elements, 16 bytes) of row r in a tile whose rows hold DS elements. */
template <int DS> FM_DEV int fm_swz(int r, int c)
{
    static_assert(DS % 64 == 0, "swizzled rows must hold whole groups of eight 16-byte chunks");
    return r * DS + ((c ^ (r & 7)) << 3);
}

/* Byte offset of the ldmatrix row address of a lane, split so that the loops over k need no per-step address
 * register: a lane reads row r at chunk cc + hi, where cc is an even compile-time constant and hi (0 or 1) depends
 * on the lane. With rows of DS elements (a multiple of 128 bytes), that chunk's swizzled byte offset is
 *     (lane_off ^ ((cc & 7) << 4)) + ((cc & ~7) << 4),  lane_off = 2 * r * DS + ((hi ^ (r & 7)) << 4)
 * fm_swz_lane gives lane_off once; fm_swz_step (cc even, a constant after unrolling) applies a step with an xor that
 * the compiler may not hoist (a hoisted copy per step would hold one register per k step across the main loop). */
template <int DS> FM_DEV uint32_t fm_swz_lane(int r, int hi)
{
    return (uint32_t)(2 * r * DS + ((hi ^ (r & 7)) << 4));
}

FM_DEV uint32_t fm_swz_step(uint32_t lane_off, int cc)
{
    uint32_t x;
    asm volatile("xor.b32 %0, %1, %2;\n" : "=r"(x) : "r"(lane_off), "r"((cc & 6) << 4));
    return x + ((cc & ~7) << 4);
}

/* ---- ldmatrix ---------------------------------------------------------------------------------------------- */

/* Four 8x8 b16 matrices; lane l gives the row address of matrix l / 8, row l % 8. */
FM_DEV void fm_ldmatrix_x4(uint32_t r[4], uint32_t addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

/* The same, each matrix transposed (for an operand stored k-major, such as V in O += P V). */
FM_DEV void fm_ldmatrix_x4_trans(uint32_t r[4], uint32_t addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

/* ---- cp.async ---------------------------------------------------------------------------------------------- */

/* Copies 16 bytes global -> shared, bypassing L1. src_bytes < 16 fills the rest with zeros; with src_bytes = 0
 * nothing is read (src must still be a valid address: pass the tensor's base). */
FM_DEV void fm_cp_async16(uint32_t dst, const void *src, int src_bytes)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}

FM_DEV void fm_cp_async_commit()
{
    asm volatile("cp.async.commit_group;\n" ::);
}

/* Waits until at most N of this thread's committed groups are still in flight. */
template <int N> FM_DEV void fm_cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

/* ---- math -------------------------------------------------------------------------------------------------- */

FM_DEV float fm_exp2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

FM_DEV float fm_log2(float x)
{
    float y;
    asm("lg2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

/* ---- programmatic dependent launch (sm_90 and later; nothing before) ------------------------------------------ */

/* Wait until the grids this one depends on have completed, their writes visible. A kernel launched as a programmatic
 * dependent may start before the kernel ahead of it ends, so it calls this before it reads what that one wrote. */
FM_DEV void fm_pdl_wait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

/* Let this grid's programmatic dependent start (once every CTA has called this or ended). Called after
 * fm_pdl_wait, so that a dependent's start implies that everything before this grid has completed. */
FM_DEV void fm_pdl_trigger()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

/* ---- element masks --------------------------------------------------------------------------------------- */

/* Bits [0, n) set, n clamped to [0, 32] (one funnel shift). */
FM_DEV uint32_t fm_bits_below(int n)
{
    return __funnelshift_lc(0xffffffffu, 0u, (unsigned)max(n, 0));
}

/* The masked rows among r0 .. r0 + 31 of a key column with bounds bd (LTS, LTE, UTS, UTE): bit i is row r0 + i.
 * A tile's element mask then costs one bit test per element instead of four comparisons. */
FM_DEV uint32_t fm_masked_rows32(int4 bd, int r0)
{
    return (fm_bits_below(bd.y - r0) & ~fm_bits_below(bd.x - r0)) |
           (fm_bits_below(bd.w - r0) & ~fm_bits_below(bd.z - r0));
}

#define FM_LOG2E 1.4426950408889634f
#define FM_LN2 0.6931471805599453f

/* Max and sum across the four threads of a quad (the threads that share a row of an mma fragment). */
FM_DEV float fm_quad_max(float x)
{
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
    return x;
}

FM_DEV float fm_quad_sum(float x)
{
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    x += __shfl_xor_sync(0xffffffffu, x, 2);
    return x;
}

#endif /* FAMASK_COMMON_CUH */
