/*
 * bwd.cuh: what the backward kernels share (kernels/bwd.cu, the portable ones; kernels/bwd-sm90.cu, the Hopper
 * main kernel): the launch parameters, the per-row buffers' layout and the walk of a key block over its live
 * query tiles.
 */
#ifndef FAMASK_BWD_CUH
#define FAMASK_BWD_CUH

#include <cuda_runtime.h>

#include "common.cuh"
#include "kernels.h"

namespace fm_bwd
{

constexpr int NTHREADS = 256; /* 8 warps in every kernel of this file */
constexpr int BR = 64;        /* query rows per tile in the main kernel */
constexpr int QPAD = 128;     /* the per-row buffers are padded to a multiple of this many rows */

struct tensor_view {
    const void *p;
    int64_t sb, ss, sh;
};

/* The Hopper kernels' schedule (kernels/bwd-sm90.cu), one per kernel (main, dQ pass). Before them a plan puts
 * the work items whose walk is long against a pipeline's share of the work (n_ctas) at the head of the order, cut
 * into chunks when longer than the share: a chunk leaves its partial sums in fp32 workspace, and a last kernel
 * adds them up in chunk order. The other items follow in their own order (kv_item_at, q_item_at), but for the
 * last n_tail (a few waves of pipelines): these come last, in N_TIERS tiers, longest first, so that no long walk
 * starts late and runs on alone at the end. Tier t < N_TIERS - 1 holds the walks of more than share / 2^(t+2)
 * tiles (and at most share / 2^(t+1)), the last tier the rest. (Tiers for every item cost 3-8% on most masks:
 * the items that run together then come from many heads and no longer share their Q and dO, or K and V, in L2;
 * bench/RESULTS.md.) */
constexpr int TAIL_WAVES = 4; /* n_tail: this many items per pipeline */
constexpr int N_TIERS = 7;
constexpr int SCHED_COUNTS = 3 + N_TIERS; /* a schedule's counts: list entries, slots, total weight, tiers' fill */
constexpr int N_COUNTERS = 24;            /* two work counters, then each schedule's counts */
static_assert(2 + 2 * SCHED_COUNTS <= N_COUNTERS && N_COUNTERS % 4 == 0, "counters");

struct sched_entry {
    int item, begin, end; /* the item and its walk positions [begin, end) */
    int slot, first, nc;  /* its partial-sum slot (< 0: an uncut item), its item's first and its chunk count */
    int pad[2];
};

struct bwd_sched {
    int *weight;       /* [items]: the walk's length in tiles (upper bound), -1 once the item is in the list */
    sched_entry *list; /* [list_cap]: the items that go first; item < 0: unused */
    int *order;        /* the last n_tail items not in the list: tier t's at [tier_base[t], + its count) */
    float *part;       /* [slot_cap][D][NTHREADS]: chunks' partial sums, a thread's values strided by NTHREADS */
    int *count;        /* [SCHED_COUNTS]: list entries, slots and total weight taken, then each tier's items (may
                        * pass tier_cap: those beyond it went to the last tier), zeroed by the preprocess */
    int tier_base[N_TIERS], tier_cap[N_TIERS], n_tail;
    int list_cap, slot_cap, nv; /* nv: values per thread in a slot */
    int chunk, forced; /* the least chunk length in tiles; forced: the only one (FAMASK_BWD_CHUNK, for tests) */
    int n_ctas;        /* the kernel's pipelines: its CTAs times the pipelines of a CTA (one in the dQ pass) */
};

struct bwd_params {
    tensor_view q, k, v, o, d_o, dq, dk, dv;
    const float *lse;                  /* [B, H, Nq] */
    float *L;                          /* [B, H, Nqp]: lse * log2(e), +inf where lse = -inf and for padding rows */
    float *Dd;                         /* [B, H, Nqp]: rowsum(dO * O), 0 for padding rows */
    float *dq_acc;                     /* [B, H, Nqp, D] or NULL (deterministic mode) */
    int *counters;                     /* [N_COUNTERS]: work counters of the Hopper main kernel and dQ pass, then
                                        * their schedules' counts, zeroed by the preprocess */
    const int32_t *bounds;             /* [batch_m, heads_m, Nk, 4] */
    const fm_block_summary *summaries; /* for the key block of the kernel that reads them */
    const int32_t *ranges;             /* the Hopper dQ pass's: per query tile of FM_SM90_BLOCK_Q rows, its live
                                        * key blocks [first, end) (fm_cuda_mask_ranges) */
    const fm_block_summary *coarse;    /* the Hopper dQ pass's: the summaries of FM_SM90_COARSE_K keys (next_live) */
    bwd_sched sched[2];                /* the Hopper main kernel's and dQ pass's */
    const int32_t *kv_perm;            /* NULL, or the key order's [batch_m, heads_m, Nk] (Hopper kernels only): row
                                        * j of dK and dV of a slice goes to row kv_perm[j] of dk, dv */
    int batch, n_head, n_head_kv, seq_len_q, seq_len_k, seq_pad, batch_m, heads_m;
    float scale, scale_log2;
};

__device__ __forceinline__ int mask_head(const bwd_params &p, int h)
{
    if (p.heads_m == 1)
        return 0;
    return p.heads_m == p.n_head ? h : h / (p.n_head / p.n_head_kv);
}

__device__ __forceinline__ bool is_masked(int4 bd, int row)
{
    return (row >= bd.x && row < bd.y) || (row >= bd.z && row < bd.w);
}

/* The walk of a main-kernel CTA over (query head of its GQA group, query tile), with the key block's summary
 * cached in registers: it is read from global memory only when the head changes and the mask differs per query
 * head, so the walk costs a few integer operations per tile and no load latency. */
struct tile_walk {
    fm_block_summary s;
    int s_hi; /* head-in-group the cached summary belongs to; -1: none */
};

/* Next live query tile from (*hi, *t) on, before walk position end (*hi n_tiles + *t): skips every tile the
 * summary marks fully masked, jumping to the end of the masked run at once. */
template <int TILE>
__device__ bool next_query_tile(const bwd_params &p, tile_walk &wk, int n_kb, int kb, int hkv, int b, int group,
                                int *hi, int *t, int *cls, int end = INT32_MAX)
{
    const int n_tiles = (p.seq_len_q + TILE - 1) / TILE;
    const bool per_head = p.heads_m == p.n_head && group > 1;
    while (*hi < group && *hi * n_tiles + *t < end) {
        if (wk.s_hi < 0 || (per_head && wk.s_hi != *hi)) {
            const int mb = p.batch_m == 1 ? 0 : b;
            const int h = hkv * group + *hi;
            wk.s = p.summaries[((int64_t)mb * p.heads_m + mask_head(p, h)) * n_kb + kb];
            wk.s_hi = *hi;
        }
        const fm_block_summary &s = wk.s;
        const int lim = min(n_tiles, end - *hi * n_tiles);
        while (*t < lim) {
            const int r0 = *t * TILE, r1 = min(r0 + TILE, p.seq_len_q);
            const int c = fm_tile_classify(&s, r0, r1);
            if (c != FM_TILE_SKIPPED) {
                *cls = c;
                return true;
            }
            int nt = *t + 1;
#pragma unroll
            for (int x = 0; x < 2; x++)
                if (r0 >= s.smax[x] && r1 <= s.emin[x])
                    nt = max(nt, s.emin[x] / TILE);
            *t = nt;
        }
        ++*hi;
        *t = 0;
    }
    return false;
}

/* dst[0..1] += (a, b) in fp32, atomically (one 8-byte atomic on sm_90). */
__device__ __forceinline__ void add2(float *dst, float a, float b)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    atomicAdd(reinterpret_cast<float2 *>(dst), make_float2(a, b));
#else
    atomicAdd(dst, a);
    atomicAdd(dst + 1, b);
#endif
}

} /* namespace fm_bwd */

/* The Hopper main kernel (kernels/bwd-sm90.cu) in place of the portable one: whether it serves head_dim on the
 * device in use (FAMASK_CUDA_BWD=sm80 in the environment forces the portable kernel), the keys of its work items
 * (fm_bwd_sm90_block_k), and its launch, with the summaries of key blocks of that many keys in p. */
int fm_bwd_sm90_applies(int head_dim);
int fm_bwd_sm90_block_k(int head_dim);
cudaError_t fm_bwd_sm90(const fm_bwd::bwd_params &p, int head_dim, int is_bf16, cudaStream_t stream);
/* The Hopper kernels' schedules for head dim D (p->counters set): the workspace they take in *bytes, and, where
 * mem is not NULL, their arrays in it (16-byte aligned). FAMASK_BWD_CHUNK=n in the environment cuts every item
 * longer than n tiles (tests). */
cudaError_t fm_bwd_sm90_sched(fm_bwd::bwd_params *p, int head_dim, void *mem, size_t *bytes);
/* The Hopper deterministic dQ pass in place of bwd_dq_kernel, with the summaries of key blocks of 128 in p. */
cudaError_t fm_bwd_dq_sm90(const fm_bwd::bwd_params &p, int head_dim, int is_bf16, cudaStream_t stream);

#endif /* FAMASK_BWD_CUH */
