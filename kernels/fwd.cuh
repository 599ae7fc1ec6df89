/*
 * fwd.cuh: what the two forward kernels share: the launch parameters and the search for live key blocks.
 *
 * kernels/fwd.cu holds the portable kernel (mma.sync, sm_80 and later) and the host entry fm_cuda_fwd, which
 * picks the kernel; kernels/fwd-sm90.cu the Hopper kernel (wgmma, TMA, sm_90a), used on sm_90 devices for
 * head dims 64 and 128.
 */
#ifndef FAMASK_FWD_CUH
#define FAMASK_FWD_CUH

#include <cuda_runtime.h>

#include "common.cuh"
#include "kernels.h"

struct fwd_params {
    const void *q, *k, *v;
    void *o;
    float *lse;
    int64_t q_b, q_s, q_h, k_b, k_s, k_h, v_b, v_s, v_h, o_b, o_s, o_h;
    int n_head, seq_len_q, seq_len_k, group; /* group = n_head / n_head_kv */
    int batch_m, heads_m;
    float scale_log2; /* |scale| * log2(e) */
    int negate_q;     /* the scale is negative: the portable kernel computes S from -Q (see kernels/fwd.cu) */
    const int32_t *bounds;
    const fm_block_summary *summaries;
    const int32_t *ranges; /* Hopper kernel only: per query tile of 128 rows, its live key blocks [first, end)
                            * (fm_cuda_mask_ranges) */
    const fm_block_summary *coarse; /* Hopper kernel only: the summaries of FM_SM90_COARSE_K keys (next_live) */
};

/* The search for live (not skipped) key blocks of query rows [r0, r1). Each warp classifies a window of 32
 * blocks at once (one summary per lane) and keeps the result as two ballot masks, so that finding the next live
 * block costs bit operations, not a dependent global load, on all but one iteration in 32. A window with nothing
 * live is a masked run of at least 32 blocks: where the caller has coarse summaries (of 32 blocks each), the
 * search then jumps to the next coarse block that is not skipped, 1024 blocks per load, so that a long run costs
 * two or three loads instead of one per 32 blocks (at 128K a global token's block and a sliding window are up to
 * 1000 blocks apart, and each load is a wait of the whole walk). All warps of the CTA reach the same answers. */
struct live_scan {
    int base;            /* first block of the window */
    unsigned live, part; /* bit i: block base + i is live / partial */
};

/* Key blocks per coarse summary (the Hopper kernels' coarse summaries are those of FM_SM90_COARSE_K keys). */
#define FM_SCAN_WINDOW 32

/* The first block of the first coarse block at or after from / 32 that is not skipped (or from itself, when that
 * is inside it), or n_kb; coarse: the summaries of the slice's coarse blocks. */
__device__ __forceinline__ int next_coarse(const fm_block_summary *__restrict__ coarse, int from, int n_kb, int r0,
                                           int r1)
{
    const int n_cb = (n_kb + FM_SCAN_WINDOW - 1) / FM_SCAN_WINDOW;
    for (int cb = from / FM_SCAN_WINDOW; cb < n_cb; cb += 32) {
        const int c = cb + threadIdx.x % 32;
        bool live = false;
        if (c < n_cb) {
            fm_block_summary s = coarse[c];
            live = fm_tile_classify(&s, r0, r1) != FM_TILE_SKIPPED;
        }
        const unsigned m = __ballot_sync(0xffffffffu, live);
        if (m)
            return max(from, (cb + __ffs(m) - 1) * FM_SCAN_WINDOW);
    }
    return n_kb;
}

/* The first live block at or after `from`, or n_kb; *cls gets its class. coarse: NULL, or the coarse summaries
 * of the same slice as sums (blocks of FM_SCAN_WINDOW of its blocks). */
__device__ __forceinline__ int next_live(live_scan &sc, const fm_block_summary *__restrict__ sums,
                                         const fm_block_summary *__restrict__ coarse, int from, int n_kb, int r0,
                                         int r1, int *cls)
{
    while (from < n_kb) {
        if (from < sc.base || from >= sc.base + 32) {
            const int kb = from + threadIdx.x % 32;
            int c = FM_TILE_SKIPPED;
            if (kb < n_kb) {
                fm_block_summary s = sums[kb];
                c = fm_tile_classify(&s, r0, r1);
            }
            sc.base = from;
            sc.live = __ballot_sync(0xffffffffu, c != FM_TILE_SKIPPED);
            sc.part = __ballot_sync(0xffffffffu, c == FM_TILE_PARTIAL);
            if (!sc.live && coarse) {
                from = next_coarse(coarse, from + 32, n_kb, r0, r1);
                continue;
            }
        }
        const unsigned m = sc.live >> (from - sc.base);
        if (m) {
            const int k = from + __ffs(m) - 1;
            *cls = (sc.part >> (k - sc.base)) & 1u ? FM_TILE_PARTIAL : FM_TILE_UNMASKED;
            return k;
        }
        from = sc.base + 32;
    }
    *cls = FM_TILE_SKIPPED;
    return n_kb;
}

/* The Hopper forward: 1 when it ran, 0 when it does not apply (not an sm_90 device, not built for sm_90a, or a
 * head dim it does not serve: the caller then uses the portable kernel), or an error. Needs the summaries for key
 * blocks of FM_SM90_BLOCK_K. */
#define FM_SM90_BLOCK_K 128
#define FM_SM90_COARSE_K (FM_SCAN_WINDOW * FM_SM90_BLOCK_K) /* the coarse summaries' blocks (next_live) */
#define FM_SM90_BLOCK_Q 128
int fm_fwd_sm90_applies(int head_dim);
famask_status fm_fwd_sm90(famask_ctx *ctx, const fwd_params &p, int head_dim, int is_bf16, int batch,
                          cudaStream_t stream);

#endif /* FAMASK_FWD_CUH */
