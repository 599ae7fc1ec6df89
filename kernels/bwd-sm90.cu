/*
 * bwd-sm90.cu: the backward on Hopper (sm_90a): wgmma and TMA, with FlashMask tile skipping.
 *
 * Takes the place of bwd_main2_kernel and bwd_dq_kernel (kernels/bwd.cu) for head dims 64 and 128 on sm_90
 * devices: the same inputs (the preprocess's L and Dd), the same walks, the same outputs, always in the split
 * form of the deterministic mode (no dQ accumulator, no atomics), which measured as fast as dQ by atomics or
 * faster.
 *
 * Both kernels are persistent and warp-specialised: one CTA of three warpgroups per multiprocessor. The first warp of
 * warpgroup 0 is the producer (the first two in the main kernel at head dim 64, one for each consumer warpgroup): it
 * takes work items from a counter, walks their live tiles and issues every load (TMA, bulk copies) into
 * shared-memory stages guarded by full and empty mbarriers, running ahead of the consumers by up to two stages (four
 * for the main kernel's Q and dO at head dim 64). Warpgroups 1 and 2 consume (setmaxnreg: 224 registers each, the
 * producer's warpgroup 56): they wait for full stages, compute, and free them; no barrier spans the
 * CTA after the start. Their outputs leave by TMA store from shared memory that the item's last products have freed.
 * The dQ pass is a programmatic dependent launch of the main kernel: it reads only the preprocess's L and Dd, so its
 * CTAs start on the multiprocessors the main kernel's CTAs leave while the others finish their last key blocks, and it
 * waits for the main kernel only before it ends. The plan's two kernels, the main kernel and bwd_sum_kernel are
 * programmatic dependents too, each waiting for the one ahead before it reads its output (pdl_launch): that hides
 * the launches between them (about 5 us of idle device per backward).
 *
 * Main kernel (dK, dV): a work item is a (key block, kv head, batch). At head dim 128 the block has 128 keys and
 * consumer warpgroup w owns keys 64w..64w+63; at 64 the CTA runs two pipelines (main_pipes), a producer warp and a
 * consumer warpgroup each with shared memory of their own, and a block has 64 keys: each warpgroup walks only the
 * tiles live for its own keys, and ends its items at its own times. K and V of the block come in once by TMA (two
 * stages: the next item's block loads while this one finishes; at head dim 64 with the keys' bounds); the producer
 * walks the live query tiles of 64 rows of every query head of its GQA group (fm_bwd::next_query_tile), Q and dO by
 * TMA into two stages (four at head dim 64), L, Dd and (for partial tiles; at 64 only where the tile's head's mask
 * differs from the item's) the keys' bounds by bulk copy. Per tile, each consumer warpgroup computes on the tensor
 * cores
 *     S^T = K Q^T, dP^T = V dO^T   (m64n64, both operands from shared memory, K-major),
 * then in registers P^T = exp2(S^T scale log2(e) - L), dS^T = P^T (dP^T - Dd), zero where masked, and
 *     dV += P^T dO, dK += dS^T Q   (m64nD, A from registers, B from shared memory MN-major).
 * dK and dV stay in registers until the item ends. (A first version also computed dQ = dS K there, from dS^T staged
 * in shared memory, added with 8-byte atomics: 13.69 ms against 13.73 for the split form at 8K full, 2.40
 * against 2.18 on document masks.)
 *
 * dQ pass: a work item is a (query tile of 128, head, batch); consumer warpgroup w owns rows 64w..64w+63. The
 * producer walks the live key blocks of 128 in order as the forward does (fwd.cuh's next_live, within the tile's
 * live range from fm_cuda_mask_ranges, jumping long masked runs by coarse summaries), K and V through TMA in two
 * stages:
 *     S = Q K^T, dP = dO V^T (m64n128 from shared memory), P = exp2(S scale log2(e) - L), dS = P (dP - Dd),
 *     dQ += dS K (m64nD, dS from registers, K MN-major),
 * then dQ times the scale to the output.
 * Schedule: before the two kernels a plan (plan_weigh_kernel, plan_list_kernel) weighs every work item of each
 * (its walk's length from the summaries or the ranges) and lists first those longer than half a pipeline's share
 * of the kernel's total (a pipeline: a CTA, or half of one in the main kernel at head dim 64); those longer than a
 * share are listed as chunks (a range of the walk each) that leave fp32 partial sums, which bwd_sum_kernel adds in
 * chunk order after the dQ pass. A global token's key block at 128K walks 3x a CTA's share: unlisted, it started
 * last and set the kernel's time. The other items follow in order, the last few waves of them in tiers of halving
 * length (bwd_sched), so that the pipelines end together.
 * Layouts, descriptors and the wgmma and TMA wrappers: kernels/sm90.cuh.
 */
#include "bwd.cuh"
#include "fwd.cuh"
#include "sm90.cuh"
#include "trace.cuh"

#include <algorithm>
#include <stdlib.h>
#include <string.h>
#include <type_traits>

namespace
{

using namespace fm_bwd;
using namespace fm_sm90;

constexpr int BN = FM_SM90_BLOCK_K; /* keys per block of the dQ pass, and per main-kernel CTA's items (main_block) */
constexpr int BM = BR;  /* query rows per tile (64) */

/* Tensor maps: the inputs Q, dO (boxes of the kernel's query rows), K and V (boxes of BN rows); the outputs
 * (boxes of 64 rows: one warpgroup's part) dK and dV for the main kernel, dQ for the dQ pass. */
struct bwd_maps {
    CUtensorMap q, d_o, k, v, out0, out1;
    int q_seq_major, do_seq_major, kv_seq_major, out0_seq_major, out1_seq_major;
};

/* Zeroes rows [0, n) of a [rows, D] view (row stride ss elements): the outputs of a work item with nothing live.
 * Thread i of `step` threads takes part. */
template <typename T, int D> __device__ __forceinline__ void zero_rows(T *dst, int64_t ss, int n, int i, int step)
{
    for (int c = i; c < n * (D / 8); c += step)
        *reinterpret_cast<uint4 *>(dst + (c / (D / 8)) * ss + (c % (D / 8)) * 8) = make_uint4(0, 0, 0, 0);
}

constexpr int QB = FM_SM90_BLOCK_Q; /* query rows per work item of the dQ kernel */

/* A work item of the main kernel: key block kb of kv head hkv in batch b. Item x is key block x % n_kb of head
 * (x / n_kb) % H_kv of batch x / (n_kb H_kv): the key blocks of a head run at the same time and share its Q and
 * dO in L2, and under causal-like masks the longest walks go first. */
struct kv_item {
    int kb, hkv, b;
    int e; /* its entry in the plan's list, or -1 */
};

/* Item x of either kernel, for the plan and the final sum. The two kernels decode their items inline: through
 * these helpers their code came out different (head dim 64: 246 -> 254 registers, 1.5-2% slower on 8K causal and
 * causal documents, H200, bench-bwd). */
__device__ __forceinline__ kv_item kv_item_at(const bwd_params &p, int x, int kblk)
{
    const int n_kb = (p.seq_len_k + kblk - 1) / kblk;
    return {x % n_kb, (x / n_kb) % p.n_head_kv, x / (n_kb * p.n_head_kv), -1};
}

/* A work item of the dQ pass: query tile qt of head h in batch b. Item x is query tile n_qt - 1 - x % n_qt of
 * head (x / n_qt) % H of batch x / (n_qt H): the tiles of a head run together and share its K and V in L2, and
 * under causal-like masks the longest walks go first. */
struct q_item {
    int r0, h, b, kb_end; /* its live key blocks lie before kb_end (and from p.ranges' first on) */
    int e;                /* the list entry of a chunk with partial sums, or -1 */
};

__device__ __forceinline__ q_item q_item_at(const bwd_params &p, int x)
{
    const int n_qt = (p.seq_len_q + QB - 1) / QB;
    return {(n_qt - 1 - x % n_qt) * QB, (x / n_qt) % p.n_head, x / (n_qt * p.n_head), 0, -1};
}

/* The (batch, head) of the mask that query head h of batch b reads. */
__device__ __forceinline__ int64_t mask_index(const bwd_params &p, int b, int h)
{
    return (int64_t)(p.batch_m == 1 ? 0 : b) * p.heads_m + mask_head(p, h);
}

/* Row `row` of head h of batch b of an output. */
template <typename T> __device__ __forceinline__ T *out_row(const tensor_view &v, int b, int h, int row)
{
    return (T *)v.p + b * v.sb + h * v.sh + (int64_t)row * v.ss;
}

/* Row r0 of dQ of head h of batch b. */
template <typename T> __device__ __forceinline__ T *out_dq(const bwd_params &p, int b, int h, int r0)
{
    return (T *)p.dq.p + b * p.dq.sb + h * p.dq.sh + (int64_t)r0 * p.dq.ss;
}

/* Row `row` of dK or dV (v) of kv head hkv of batch b: that row, or where the key order sends it. */
template <typename T>
__device__ __forceinline__ T *kv_out_row(const bwd_params &p, const tensor_view &v, int b, int hkv, int row)
{
    if (p.kv_perm)
        row =
            p.kv_perm[((int64_t)(p.batch_m == 1 ? 0 : b) * p.heads_m + (p.heads_m == 1 ? 0 : hkv)) * p.seq_len_k + row];
    return out_row<T>(v, b, hkv, row);
}

/* ---- schedule -------------------------------------------------------------------------------------------- */

/* The least chunk lengths: 32 tiles of the main kernel, 16 key blocks of the dQ pass (about 100 us each), so that a
 * chunk's partial sums (128 KB, 64 KB) cost a few percent of its time. */
constexpr int CHUNK_MIN[2] = {32, 16};

/* Tiles of `tile` rows among n (the last clipped to len rows) that lie wholly inside rows [a, b): [*lo, *hi). */
__device__ __forceinline__ void tiles_inside(int a, int b, int n, int len, int tile, int *lo, int *hi)
{
    *lo = *hi = 0;
    if (a >= b || a >= len)
        return;
    const int l = a <= 0 ? 0 : (a + tile - 1) / tile;
    const int h = b >= len ? n : b / tile;
    if (h > l)
        *lo = l, *hi = h;
}

/* A work item's walk: how many tiles (or key blocks) it visits at most, and the positions of its first and one
 * past its last. */
struct walk_span {
    int count, begin, end;
};

/* The walk of main-kernel item x over the query tiles of BM rows of its GQA group, position hi n_tiles + t, from
 * the key block's summaries: a tile is skipped when it lies inside [smax, emin) of either interval slot, as in
 * next_query_tile. */
__device__ walk_span main_span(const bwd_params &p, int x, int kblk)
{
    const int n_kb = (p.seq_len_k + kblk - 1) / kblk, n = (p.seq_len_q + BM - 1) / BM, group = p.n_head / p.n_head_kv;
    const kv_item it = kv_item_at(p, x, kblk);
    walk_span w = {0, 0, 0};
    for (int hi = 0; hi < group; hi++) {
        const fm_block_summary s = p.summaries[mask_index(p, it.b, it.hkv * group + hi) * n_kb + it.kb];
        int l[2], h[2];
        for (int i = 0; i < 2; i++)
            tiles_inside(s.smax[i], s.emin[i], n, p.seq_len_q, BM, &l[i], &h[i]);
        const int count = n - (h[0] - l[0]) - (h[1] - l[1]) + max(0, min(h[0], h[1]) - max(l[0], l[1]));
        if (count <= 0)
            continue;
        int f = 0, e = n - 1; /* first and last live tile: at most two jumps over each masked run */
        for (int r = 0; r < 2; r++)
            for (int i = 0; i < 2; i++) {
                if (f >= l[i] && f < h[i])
                    f = h[i];
                if (e >= l[i] && e < h[i])
                    e = l[i] - 1;
            }
        if (w.count == 0)
            w.begin = hi * n + f;
        w.end = hi * n + e + 1;
        w.count += count;
    }
    return w;
}

/* The walk of dQ-pass item x over key blocks: its live range (p.ranges), an upper bound on what it visits. */
__device__ walk_span dq_span(const bwd_params &p, int x)
{
    const int n_qt = (p.seq_len_q + QB - 1) / QB;
    const q_item it = q_item_at(p, x);
    const int2 rg = reinterpret_cast<const int2 *>(p.ranges)[mask_index(p, it.b, it.h) * n_qt + it.r0 / QB];
    return {max(0, rg.y - rg.x), rg.x, rg.y};
}

__device__ __forceinline__ int n_main_items(const bwd_params &p, int kblk)
{
    return (p.seq_len_k + kblk - 1) / kblk * p.n_head_kv * p.batch;
}

/* Plan, first step: thread x weighs main-kernel item x, then dQ-pass item x - n_main, and adds the weights to
 * each kernel's total. */
__global__ void __launch_bounds__(256) plan_weigh_kernel(const bwd_params p, int n_dq, int kblk)
{
    const int n_main = n_main_items(p, kblk), x = blockIdx.x * 256 + threadIdx.x;
    int w[2] = {0, 0};
    if (x < n_main)
        p.sched[0].weight[x] = w[0] = main_span(p, x, kblk).count;
    else if (x - n_main < n_dq)
        p.sched[1].weight[x - n_main] = w[1] = dq_span(p, x - n_main).count;
    /* a programmatic dependent of the preprocess, which zeroes the counters */
    fm_pdl_wait();
    fm_pdl_trigger();
    for (int k = 0; k < 2; k++) {
        const int sum = __reduce_add_sync(0xffffffffu, w[k]);
        if (threadIdx.x % 32 == 0 && sum)
            atomicAdd(p.sched[k].count + 2, sum);
    }
}

/* Item `item` of weight w (its walk's length), one of the last n_tail of n, into its tier (see bwd_sched): the
 * first tier whose bound share / 2^(t+2) it passes, else the last; the last too when its tier is full. The items
 * before the tail keep their places. */
__device__ void place_item(const bwd_sched &s, int item, int n, int w, int share)
{
    if (item < n - s.n_tail)
        return;
    int t = N_TIERS - 1;
    for (int k = 0; k < N_TIERS - 1 && w > 0; k++)
        if (((int64_t)w << (k + 2)) > share) {
            t = k;
            break;
        }
    int at = atomicAdd(s.count + 3 + t, 1);
    if (at >= s.tier_cap[t]) {
        t = N_TIERS - 1;
        at = atomicAdd(s.count + 3 + t, 1);
    }
    s.order[s.tier_base[t] + at] = item;
}

/* Plan, second step, for item x of both kernels (the main kernel's first): an item longer than half a pipeline's
 * share of its kernel's total goes into the list, in chunks of at most that share (each with a partial-sum slot) when
 * longer than it; one of the last n_tail items into its tier (place_item). Slots, list entries and places in a
 * tier are taken by atomics, so the order varies from run to run; the sums do not, since an item's chunks are
 * added in chunk order, as long as every item gets what it asks for. fm_bwd_sm90_sched sizes the slots, the list
 * and the tiers so that it does: with share >= total / n_ctas, the items longer than a share ask for at most
 * 2 n_ctas slots in all, the listed ones for fewer than 3 n_ctas entries, and tier t holds fewer than
 * 2^(t+2) n_ctas items. A forced chunk length (tests) breaks those bounds, so the plan then runs on one thread,
 * in item order: an item for which slots or entries run out stays uncut or in place, the same items on every
 * run. */
__device__ void list_item(const bwd_params &p, int n_dq, int x, int kblk)
{
    const int n_main = n_main_items(p, kblk);
    const int k = x < n_main ? 0 : 1, item = k ? x - n_main : x;
    if (k && item >= n_dq)
        return;
    const bwd_sched &s = p.sched[k];
    const int w = s.weight[item], total = s.count[2];
    const int share = s.forced ? s.chunk : max(s.chunk, (total + s.n_ctas - 1) / s.n_ctas);
    const int n = k ? n_dq : n_main;
    if (w <= 0 || 2 * w <= share) {
        place_item(s, item, n, w, share);
        return;
    }
    const walk_span sp = k ? dq_span(p, item) : main_span(p, item, kblk);
    int nc = (w + share - 1) / share, slot = -1;
    if (nc > 1) {
        slot = atomicAdd(s.count + 1, nc);
        if (slot + nc > s.slot_cap)
            nc = 1, slot = -1;
    }
    const int at = atomicAdd(s.count, nc);
    if (at + nc > s.list_cap) {
        for (int j = at; j < s.list_cap; j++)
            s.list[j].item = -1;
        place_item(s, item, n, w, share);
        return;
    }
    s.weight[item] = -1;
    const int64_t len = sp.end - sp.begin;
    for (int c = 0; c < nc; c++) {
        sched_entry e;
        e.item = item;
        e.begin = sp.begin + (int)(len * c / nc);
        e.end = sp.begin + (int)(len * (c + 1) / nc);
        e.slot = slot < 0 ? -1 : slot + c;
        e.first = slot;
        e.nc = nc;
        e.pad[0] = e.pad[1] = 0;
        s.list[at + c] = e;
    }
}

/* A thread per item of both kernels; serial (one thread, grid 1): every item in order (see list_item). */
__global__ void __launch_bounds__(256) plan_list_kernel(const bwd_params p, int n_dq, int serial, int kblk)
{
    const int n_plan = n_main_items(p, kblk) + n_dq;
    fm_pdl_wait();
    fm_pdl_trigger();
    if (serial) {
        for (int x = 0; x < n_plan; x++)
            list_item(p, n_dq, x, kblk);
    } else if (blockIdx.x * 256 + threadIdx.x < n_plan) {
        list_item(p, n_dq, blockIdx.x * 256 + threadIdx.x, kblk);
    }
}

/* The producer warp's view of a kernel's order: lane t < N_TIERS holds tier t's first number among the kernel's
 * items (after the list's entries and the items before the tail: n_before); n: the numbers in all. */
struct order_lanes {
    int first, n;
};

__device__ __forceinline__ order_lanes order_view(const bwd_sched &s, int n_before, int lane)
{
    const int c = lane < N_TIERS ? min(s.count[3 + lane], s.tier_cap[lane]) : 0;
    int inc = c; /* inclusive sum over the lanes up to this one */
#pragma unroll
    for (int d = 1; d < N_TIERS; d *= 2) {
        const int y = __shfl_up_sync(0xffffffffu, inc, d);
        if (lane >= d)
            inc += y;
    }
    return {n_before + inc - c, n_before + __shfl_sync(0xffffffffu, inc, N_TIERS - 1)};
}

/* The item at number xn of the tail (n_before <= xn < o.n), on every lane: its tier is the last whose first
 * number is at most xn (empty tiers share the next one's first). */
__device__ __forceinline__ int order_item(const bwd_sched &s, const order_lanes &o, int xn, int lane)
{
    const unsigned in = __ballot_sync(0xffffffffu, lane < N_TIERS && o.first <= xn);
    const int t = 31 - __clz(in);
    return s.order[s.tier_base[t] + xn - __shfl_sync(0xffffffffu, o.first, t)];
}

/* The item at number xn past the list's: in the kernel's own order before the tail (-1 for an item the list
 * holds), else from the tail's tiers. */
template <bool LIST>
__device__ __forceinline__ int unlisted_item(const bwd_sched &s, const order_lanes &o, int xn, int n_list,
                                             int n_before, int lane)
{
    if (xn < n_before) {
        const int xi = xn - n_list;
        return LIST && s.weight[xi] < 0 ? -1 : xi;
    }
    return order_item(s, o, xn, lane);
}

/* A chunk's N partial sums per thread (v) into its slot from value `at` on; tid: the thread's place among the
 * kernel's NTHREADS computing threads. */
template <int N>
__device__ __forceinline__ void put_part(const bwd_sched &s, const sched_entry &e, int at, const float *v, int tid)
{
    float *dst = s.part + ((int64_t)e.slot * s.nv + at) * NTHREADS + tid;
#pragma unroll
    for (int i = 0; i < N; i++)
        __stcg(dst + i * NTHREADS, v[i]);
}

/* The sum over the item's chunks, in chunk order, of this thread's values [at + i0, at + i0 + N), i0 and N even (of an
 * m64nD accumulator fragment: value 4 n + 2 hh + e is row 64 wg + 16 warp + lane / 4 + 8 hh, column
 * 8 n + 2 (lane % 4) + e), times scale, into rows [0, n_rows) of the item's output: row r at row_ptr(r). The loads of
 * four chunks are issued together. (The sum is bound by the waits for memory: with one CTA per item, adding one
 * value of every chunk after the other, a global token's items at 128K, four chunks each, took 35 us at head dim 64
 * and 70 at 128; split over four CTAs as now, 8 and 10; bench/RESULTS.md, session 21.) */
template <typename T, int N, typename RowPtr>
__device__ void store_sum(const bwd_sched &s, const sched_entry &e, int at, int i0, RowPtr row_ptr, int n_rows,
                          float scale)
{
    const int tid = threadIdx.x, lane = tid % 32, row = tid / 128 * 64 + (tid / 32) % 4 * 16 + lane / 4;
    const float *src = s.part + ((int64_t)e.first * s.nv + at + i0) * NTHREADS + tid;
    float acc[N];
#pragma unroll
    for (int i = 0; i < N; i++)
        acc[i] = 0.f;
#pragma unroll 4
    for (int c = 0; c < e.nc; c++) {
        const float *q = src + (int64_t)c * s.nv * NTHREADS;
#pragma unroll
        for (int i = 0; i < N; i++)
            acc[i] += __ldcg(q + i * NTHREADS);
    }
#pragma unroll
    for (int k = 0; k < N; k += 2) {
        const int i = i0 + k, r = row + 8 * (i / 2 % 2);
        if (r < n_rows)
            *reinterpret_cast<uint32_t *>(row_ptr(r) + 8 * (i / 4) + 2 * (lane % 4)) =
                fm_dtype<T>::pack(acc[k] * scale, acc[k + 1] * scale);
    }
}


/* The main kernel's CTA: a producer warpgroup (only its first main_pipes warps work) and two consumer warpgroups,
 * as main_pipes pipelines. A pipeline's producer finds work items and walks their live query tiles. It hands each
 * to its consumers through the pipeline's shared memory: an item's K and V (TMA) and a tile's Q, dO (TMA), L, Dd
 * and, for a partial tile or the ragged last key block, the keys' bounds (bulk copies). At head dim 64 the keys'
 * bounds come once per item instead, with K and V, and each consumer thread holds its two keys' in registers for
 * all the item's tiles (a tile brings its own only where its head's mask differs from the group's first head's):
 * read from shared memory while S and dP ran, they delayed every partial tile (1-2% off the main kernel on the
 * partial-heavy families, H100, bench/RESULTS.md session 18; at 128 the registers made ptxas spill 136 bytes
 * instead of 84 and the main kernel 2-4% slower). Each stage has a full and an empty mbarrier, and its item or
 * tile description sits beside it. Consumer warpgroup c owns keys 64c'..64c'+63 of the item's key block, c' its
 * place in the pipeline. It only waits for full stages, computes, and frees the stage.
 * (The first version had both warpgroups compute and thread 0 issue every load, with a CTA barrier per tile:
 * phase counters put the loads' issue at 700-800 cycles of a tile's 3300-4200 on the critical path, bench/RESULTS.md.)
 * A stage is freed by one arrival per consumer warp (lane 0, after __syncwarp) or per warpgroup (after its named
 * barrier), which orders the other threads' reads before it. compute-sanitizer's racecheck does not follow that
 * and reports those reads against the producer's next writes; a build where every consumer thread arrives is
 * clean but 5-7% slower (RESULTS.md). */
constexpr int WS_THREADS = 384;

struct ws_item_info {
    int kb, hkv, b, e; /* kb < 0: no more items */
};
struct ws_tile_info {
    int q0, cls, last, own; /* own (main kernel, head dim 64): the tile brings its own keys' bounds (else the
                            * item's hold); unused in the dQ pass */
};

/* A pipeline's stages of Q and dO, each with its L, Dd, keys' bounds and tile description: at head dim 128 two
 * (a third would need 233 KB); at 64 four, so that each pipeline's producer runs three tiles ahead (two pipelines
 * of four stages take 207 KB; four against three took 1.5-2% off the main kernel on every family, H200,
 * bench/RESULTS.md session 15). */
template <int D> constexpr int ws_q_stages()
{
    return D == 64 ? 4 : 2;
}

/* Pipelines per CTA: a producer warp and the consumer warpgroups it feeds, with shared memory of their own. At head
 * dim 64 each consumer warpgroup is a pipeline of its own, with work items of 64 keys (main_block): it walks only
 * the query tiles live for its own keys, and reaches its items' ends at its own times, so one warpgroup's outputs
 * overlap the other's products. At 128 the two warpgroups share items of 128 keys and every Q and dO tile: two
 * pipelines would not fit in shared memory, and reading each tile twice costs 3.5-12% there (bench/RESULTS.md,
 * session 15). */
template <int D> constexpr int main_pipes()
{
    return D == 64 ? 2 : 1;
}
template <int D> constexpr int main_block()
{
    return BN / main_pipes<D>();
}

/* A pipeline's shared memory, a multiple of 1024 bytes: two stages of K and V (at head dim 64 with their keys'
 * bounds); QS of Q and dO, of (L, Dd) and of the keys' bounds; 4 + 2 QS mbarriers; two item and QS tile
 * descriptions. */
template <int D> constexpr int ws_item_bounds_bytes()
{
    return D == 64 ? 2 * main_block<D>() * 16 : 0;
}
template <int D> constexpr int ws_pipe_bytes()
{
    constexpr int QS = ws_q_stages<D>(), KB = main_block<D>();
    return (2 * 2 * KB * D * 2 + ws_item_bounds_bytes<D>() +
            QS * (2 * BM * D * 2 + 2 * BM * 4 + KB * 16 + 2 * 8 + 16) + 4 * 8 + 2 * 16 + 1023) /
           1024 * 1024;
}

/* The main kernel's: its pipelines, and 1024 for aligning the base. */
template <int D> constexpr int ws_smem_bytes()
{
    return 1024 + main_pipes<D>() * ws_pipe_bytes<D>();
}

#ifdef FM_SM90_BODY
/* Registers per thread after setmaxnreg. The three warpgroups share what the launch gave them, 168 each
 * (65536 / 384 rounded down to 8): 128 x (56 + 2 x 224) = 128 x 3 x 168; asking for more waits forever. The
 * consumers' code at head dim 128 needs about 224 (216: 976 bytes of spills). */
constexpr int PRODUCER_REGS = 56, CONSUMER_REGS = 224;

template <int N> __device__ __forceinline__ void reg_dealloc()
{
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <int N> __device__ __forceinline__ void reg_alloc()
{
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar)
{
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
/* bytes (a multiple of 16) from global src to shared dst, both 16-byte aligned, completing on bar. */
__device__ __forceinline__ void bulk_load(uint32_t dst, const void *src, uint32_t bytes, uint32_t bar)
{
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                     dst),
                 "l"(src), "r"(bytes), "r"(bar)
                 : "memory");
}

/* Ping-pong of the dQ pass's two consumer warpgroups at head dim 128: warpgroup w waits for its turn (named
 * barrier 4 + w) before it issues a group of products and gives the turn to the other one (barrier 5 - w) after,
 * so that their products alternate on the tensor cores and each one's element-wise work runs under the other's
 * products. Both warpgroups take every block, so the turns pair up. At head dim 128 it took 3-6% off the dQ
 * pass; at 64, and in the main kernel, it changed nothing or cost time (bench/RESULTS.md, sessions 12, 13). */
template <int D> __device__ __forceinline__ void pp_turn(int w)
{
    if (D == 128)
        asm volatile("bar.sync %0, 256;\n" ::"r"(4 + w) : "memory");
}
template <int D> __device__ __forceinline__ void pp_pass(int w)
{
    if (D == 128)
        asm volatile("bar.arrive %0, 256;\n" ::"r"(5 - w) : "memory");
}

/* LIST: the plan's list is not empty (n_list entries). Compiled twice so that the usual case, no list, keeps the
 * producer's registers. The role split (setmaxnreg, then producer or consumer code) is written out here and in
 * the dQ pass: with setmaxnreg inside a helper that returns the role, ptxas lost the consumers' register budget
 * and spilled 1-3 KB per thread. */
template <typename T, int D, bool LIST>
__device__ __forceinline__ void bwd_sm90_ws_body(const bwd_params &p, const bwd_maps &m, const int n_list)
{
    using dt = fm_dtype<T>;
    constexpr int NP = main_pipes<D>(), KB = main_block<D>(), CW = 2 / NP; /* consumer warpgroups per pipeline */
    constexpr int TK = KB * D * 2, TQ = BM * D * 2;
    constexpr int QS = ws_q_stages<D>();
    constexpr int NS = BM / 8; /* n8 query groups of S^T */
    constexpr int NO = D / 8;  /* n8 column groups of dK, dV */

    extern __shared__ unsigned char smem_raw[];
    const int tid = threadIdx.x, wg = tid / 128;
    /* this thread's pipeline: the producer warp's number (the first NP warps produce), or its consumer
     * warpgroup's (with NP = 1, both share pipeline 0). Broadcast from lane 0, so that ptxas sees it is the same
     * in the whole warp and keeps the addresses made from it in uniform registers: computed per thread, they
     * took as many ordinary registers, and the pipeline's base spilled (reloaded in every tile). */
    const int pipe = NP == 1 ? 0 : __shfl_sync(0xffffffffu, wg == 0 ? tid / 32 : wg - 1, 0);
    const uint32_t base0 = (fm_smem_addr(smem_raw) + 1023u) & ~1023u;
    uint32_t base = base0 + pipe * ws_pipe_bytes<D>(); /* the pipeline's */
    asm volatile("" : "+r"(base)); /* held: left to itself, ptxas recomputed it from %cgactaid in every tile */
    unsigned char *smem = smem_raw + (base - fm_smem_addr(smem_raw));
    const uint32_t sK = base; /* stage s: K at sK + 2 s TK, V at sK + (2 s + 1) TK */
    const uint32_t sQ = sK + 4 * TK;   /* QS stages */
    const uint32_t sdO = sQ + QS * TQ; /* QS stages */
    const uint32_t sLD = sdO + QS * TQ;
    const uint32_t sBd = sLD + QS * 2 * BM * 4;
    const uint32_t sBi = sBd + QS * KB * 16; /* at head dim 64, the items' keys' bounds: two stages, with K and V */
    const uint32_t sBar = sBi + ws_item_bounds_bytes<D>(); /* kv_full[2], kv_empty[2], q_full[QS], q_empty[QS] */
    const uint32_t kv_full = sBar, kv_empty = sBar + 16, q_full = sBar + 32, q_empty = q_full + 8 * QS;
    const float *fLD = reinterpret_cast<const float *>(smem + (sLD - base)); /* [stage][L, Dd][BM] */
    const int4 *fBd = reinterpret_cast<const int4 *>(smem + (sBd - base));   /* [stage][KB] */
    const int4 *fBi = reinterpret_cast<const int4 *>(smem + (sBi - base));   /* [kv stage][KB] */
    ws_item_info *items = reinterpret_cast<ws_item_info *>(smem + (q_empty + 8 * QS - base)); /* [2] */
    ws_tile_info *tiles = reinterpret_cast<ws_tile_info *>(items + 2);                        /* [QS] */

    const int group = p.n_head / p.n_head_kv;
    const int n_kb = (p.seq_len_k + KB - 1) / KB, n_qtiles = (p.seq_len_q + BM - 1) / BM;
    const bwd_sched &sc = p.sched[0];

    /* each pipeline's barriers: full ones for one arrival (the producer's, with the bytes); empty ones for one per
     * consumer warpgroup (K, V) or consumer warp (Q, dO) of the pipeline */
    int counts[4 + 2 * QS] = {1, 1, CW, CW};
#pragma unroll
    for (int i = 0; i < QS; i++)
        counts[4 + i] = 1, counts[4 + QS + i] = 4 * CW;
#pragma unroll
    for (int i = 0; i < NP; i++)
        mbar_init_all(base0 + i * ws_pipe_bytes<D>() + (sBar - base), counts);

    if (wg == 0) {
        /* ---- producer: warp `pipe` of NP, its lanes in step; lane 0 issues ---- */
        reg_dealloc<PRODUCER_REGS>();
        if (tid >= 32 * NP)
            return;
        const int lane = tid % 32, n_pipes = gridDim.x * NP;
        /* the plan's list, the items before the tail, the tail's tiers */
        const int n_before = n_list + n_kb * p.n_head_kv * p.batch - sc.n_tail;
        const order_lanes ord = order_view(sc, n_before, lane);
        const int n_items = ord.n;
        int ks = 0, st = 0;
        unsigned kv_par = 3, q_par = (1u << QS) - 1; /* bit s: parity of the next wait on stage s's empty barrier
                                                       * (free at first) */
        int xn = blockIdx.x * NP + pipe;
        tile_walk wk;
        FM_TRACE_REC(tr, 0, 0); /* pipeline 0's producer only */
        while (xn < n_items) {
            FM_TRACE_AT(tr, tid == 0, 10);
            /* item number xn: the list's entries, then the items not in it */
            kv_item x;
            int xi, begin = 0, end = INT32_MAX, cut = 0;
            x.e = -1;
            if (LIST && xn < n_list) {
                const sched_entry en = sc.list[xn];
                xi = en.item;
                begin = en.begin;
                end = en.end;
                cut = en.slot >= 0;
                x.e = xn;
            } else {
                xi = unlisted_item<LIST>(sc, ord, xn, n_list, n_before, lane);
            }
            int next_xn = 0;
            if (lane == 0)
                next_xn = atomicAdd(p.counters, 1) + n_pipes;
            if (xi >= 0) {
                x.kb = xi % n_kb;
                x.hkv = (xi / n_kb) % p.n_head_kv;
                x.b = xi / (n_kb * p.n_head_kv);
                wk.s_hi = -1;
                int hi = begin / n_qtiles, tt = begin % n_qtiles, cls = 0;
                bool live = next_query_tile<BM>(p, wk, n_kb, x.kb, x.hkv, x.b, group, &hi, &tt, &cls, end);
                if (!live && cut) {
                    /* a chunk with nothing live must still leave its (zero) partial sums: its first tile, fully
                     * masked (with the element masks its products are exactly zero) */
                    hi = begin / n_qtiles;
                    tt = begin % n_qtiles;
                    cls = FM_TILE_PARTIAL;
                    live = true;
                    end = begin + 1;
                }
                if (!live) {
                    /* nothing to compute: dK and dV of the block are zero */
                    const int k0 = x.kb * KB, n = min(KB, p.seq_len_k - k0);
                    for (int c = lane; c < n * (D / 8); c += 32) {
                        const int r = k0 + c / (D / 8), col = (c % (D / 8)) * 8;
                        *reinterpret_cast<uint4 *>(kv_out_row<T>(p, p.dk, x.b, x.hkv, r) + col) = make_uint4(0, 0, 0, 0);
                        *reinterpret_cast<uint4 *>(kv_out_row<T>(p, p.dv, x.b, x.hkv, r) + col) = make_uint4(0, 0, 0, 0);
                    }
                } else {
                    /* K and V into stage ks once the consumers are done with its last item */
                    mbar_wait(kv_empty + 8 * ks, (kv_par >> ks) & 1);
                    kv_par ^= 1u << ks;
                    FM_TRACE_AT(tr, tid == 0, 11);
                    const int k0 = x.kb * KB;
                    const bool key_tail = k0 + KB > p.seq_len_k;
                    const int mb = p.batch_m == 1 ? 0 : x.b;
                    if (lane == 0) {
                        /* the item's keys' bounds: those of the mask of the group's first head */
                        const int mh0 = mask_head(p, x.hkv * group);
                        const uint32_t nbi = D == 64 ? (uint32_t)min(KB, p.seq_len_k - k0) * 16 : 0;
                        items[ks] = {x.kb, x.hkv, x.b, x.e};
                        mbar_expect_tx(kv_full + 8 * ks, 2 * TK + nbi);
                        tma_tile<D>(&m.k, m.kv_seq_major, sK + 2 * ks * TK, KB, x.kb * KB, x.hkv, x.b, kv_full + 8 * ks);
                        tma_tile<D>(&m.v, m.kv_seq_major, sK + (2 * ks + 1) * TK, KB, x.kb * KB, x.hkv, x.b,
                                    kv_full + 8 * ks);
                        if (D == 64)
                            bulk_load(sBi + ks * KB * 16,
                                      p.bounds + (((int64_t)mb * p.heads_m + mh0) * p.seq_len_k + k0) * 4, nbi,
                                      kv_full + 8 * ks);
                    }
                    ks ^= 1;
                    while (live) {
                        /* the tile after this one, so that this one can say whether it is the last */
                        int nhi = hi, nt = tt + 1, ncls = 0;
                        const bool more = next_query_tile<BM>(p, wk, n_kb, x.kb, x.hkv, x.b, group, &nhi, &nt,
                                                              &ncls, end);
                        FM_TRACE_AT(tr, tid == 0, 13);
                        mbar_wait(q_empty + 8 * st, (q_par >> st) & 1);
                        q_par ^= 1u << st;
                        FM_TRACE_AT(tr, tid == 0, 12);
                        if (lane == 0) {
                            const int h = x.hkv * group + hi, q0 = tt * BM;
                            /* the tile's own keys' bounds: at head dim 64 only where its head's mask is not the
                             * group's first head's (the item's) */
                            const bool own = (cls == FM_TILE_PARTIAL || key_tail) &&
                                             (D != 64 || (hi != 0 && p.heads_m == p.n_head));
                            const uint32_t bar = q_full + 8 * st;
                            tiles[st] = {q0, cls, !more, D == 64 && own};
                            const uint32_t nbd = own ? (uint32_t)min(KB, p.seq_len_k - k0) * 16 : 0;
                            mbar_expect_tx(bar, 2 * TQ + 2 * BM * 4 + nbd);
                            tma_tile<D>(&m.q, m.q_seq_major, sQ + st * TQ, BM, q0, h, x.b, bar);
                            tma_tile<D>(&m.d_o, m.do_seq_major, sdO + st * TQ, BM, q0, h, x.b, bar);
                            const int64_t rb = ((int64_t)x.b * p.n_head + h) * p.seq_pad + q0;
                            bulk_load(sLD + (st * 2) * BM * 4, p.L + rb, BM * 4, bar);
                            bulk_load(sLD + (st * 2 + 1) * BM * 4, p.Dd + rb, BM * 4, bar);
                            if (own)
                                bulk_load(sBd + st * KB * 16,
                                          p.bounds + (((int64_t)mb * p.heads_m + mask_head(p, h)) * p.seq_len_k + k0) * 4,
                                          nbd, bar);
                        }
                        st = st + 1 == QS ? 0 : st + 1;
                        hi = nhi;
                        tt = nt;
                        cls = ncls;
                        live = more;
                    }
                }
            }
            xn = __shfl_sync(0xffffffffu, next_xn, 0);
        }
        FM_TRACE_END(tr, tid == 0);
        /* no more items: tell the consumers */
        mbar_wait(kv_empty + 8 * ks, (kv_par >> ks) & 1);
        if (lane == 0) {
            items[ks] = {-1, 0, 0, -1};
            mbar_arrive(kv_full + 8 * ks);
        }
        return;
    }

    /* ---- consumers ---- */
    reg_alloc<CONSUMER_REGS>();
    const int ctid = tid - 128, cw = ctid / 128, warp = (ctid / 32) % 4, lane = ctid % 32;
    const int cs = cw % CW, ptid = ctid % (128 * CW); /* the warpgroup and the thread within the pipeline */
    const int g = lane / 4, t = lane % 4;
    const int key_a = cs * 64 + warp * 16 + g; /* key of rows hh = 0 (in the block); + 8 for hh = 1 */
    int ks = 0, st = 0;
    unsigned kv_par = 0, q_par = 0;
    int pending = -1; /* a K and V stage whose dK, dV store this thread issued and has not yet released */
    float dk[D / 2], dv[D / 2];
    FM_TRACE_REC(tr, 0, 1 + cw);
    while (true) {
        FM_TRACE_AT(tr, ctid % 128 == 0, 1);
        mbar_wait(kv_full + 8 * ks, (kv_par >> ks) & 1);
        kv_par ^= 1u << ks;
        const ws_item_info it = items[ks];
        if (it.kb < 0)
            break;
        FM_TRACE_AT(tr, ctid % 128 == 0, 2);
#pragma unroll
        for (int i = 0; i < D / 2; i++)
            dk[i] = dv[i] = 0.f;
        const int k0 = it.kb * KB;
        const bool key_tail = k0 + KB > p.seq_len_k;
        /* this thread's two keys' bounds for the item's tiles (a tile whose head's mask differs brings its own) */
        const int4 none = make_int4(0, INT32_MAX, 0, 0); /* a key past seq_len_k: masked in every row */
        int4 ibd[2] = {none, none};
        if (D == 64)
#pragma unroll
            for (int hh = 0; hh < 2; hh++)
                if (k0 + key_a + 8 * hh < p.seq_len_k)
                    ibd[hh] = fBi[ks * KB + key_a + 8 * hh];
        const uint32_t k_wg = sK + 2 * ks * TK + cs * 64 * 128, v_wg = k_wg + TK; /* this warpgroup's key rows */
        bool last = false;
        while (!last) {
            mbar_wait(q_full + 8 * st, (q_par >> st) & 1);
            q_par ^= 1u << st;
            FM_TRACE_AT(tr, ctid % 128 == 0, 3);
            const ws_tile_info ti = tiles[st];
            const int q0 = ti.q0;
            last = ti.last;
            const uint32_t qst = sQ + st * TQ, dost = sdO + st * TQ;
            float s[BM / 2], dp[BM / 2];
            wg_fence();
            wg_gemm_kk<T, D, BM>(s, k_wg, KB, qst, BM);
            wg_gemm_kk<T, D, BM>(dp, v_wg, KB, dost, BM);
            wg_commit();
            if (pending >= 0) {
                /* the store of the item before has read its stage: the producer may load into it */
                bulk_wait_read<0>();
                mbar_arrive(kv_empty + 8 * pending);
                pending = -1;
            }
            uint32_t mk[2][2];
            const bool masked_tile = ti.cls == FM_TILE_PARTIAL || key_tail;
            FM_TRACE_AT(tr, ctid % 128 == 0 && masked_tile, 16);
            if (masked_tile) {
                const int4 *cB = fBd + st * KB;
#pragma unroll
                for (int hh = 0; hh < 2; hh++) {
                    const int key = key_a + 8 * hh;
                    int4 bd = ibd[hh];
                    if ((D != 64 || ti.own) && k0 + key < p.seq_len_k)
                        bd = cB[key];
#pragma unroll
                    for (int w = 0; w < 2; w++)
                        mk[hh][w] = fm_masked_rows32(bd, q0 + 32 * w + 2 * t);
                }
            }
            const float *cL = fLD + (st * 2) * BM, *cD = fLD + (st * 2 + 1) * BM;
            wg_wait<0>();
            FM_TRACE_AT(tr, ctid % 128 == 0, 4);
            /* P^T and dS^T; element s[4 n + 2 hh + e] is key key_a + 8 hh, query q0 + 8 n + 2 t + e. On partial
             * tiles and the ragged last key block, masked elements get a scaled score of -inf before the exp2,
             * so P^T and dS^T are zero there: mk[hh][w] bit 8 m + e is query q0 + 32 w + 2 t + 8 m + e. */
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
            FM_TRACE_AT(tr, ctid % 128 == 0, 15);
            wg_fence();
            wg_gemm_rn<T, BM, D>(dv, pa, dost, BM);
            wg_gemm_rn<T, BM, D>(dk, da, qst, BM);
            wg_commit();
            wg_wait<0>();
            FM_TRACE_AT(tr, ctid % 128 == 0, 5);
            /* this warp is done with the tile's stage (the products have read it; L, Dd and the bounds were read
             * before them) */
            __syncwarp();
            if (lane == 0)
                mbar_arrive(q_empty + 8 * st);
            st = st + 1 == QS ? 0 : st + 1;
        }

        if (LIST && it.e >= 0 && sc.list[it.e].slot >= 0) { /* a chunk: its partial sums (bwd_sum_kernel adds them up) */
            const sched_entry en = sc.list[it.e];
            put_part<D / 2>(sc, en, 0, dk, ptid);
            put_part<D / 2>(sc, en, D / 2, dv, ptid);
            asm volatile("bar.sync %0, 128;\n" ::"r"(1 + cw) : "memory"); /* the warpgroup is done with K and V */
            if (ctid % 128 == 0)
                mbar_arrive(kv_empty + 8 * ks);
            FM_TRACE_AT(tr, ctid % 128 == 0, 6);
            ks ^= 1;
            continue;
        }
        /* dK (times the scale) and dV into this warpgroup's rows of the K and V stage just used (its S^T and dP^T
         * products, their only readers, are complete), then out by TMA store, whose reading of the stage the next
         * item's first tile waits for before it frees the stage. Under a key order (p.kv_perm) the rows go to
         * their places in 16-byte stores instead. */
        const uint32_t sdk = sK + 2 * ks * TK, sdv = sdk + TK;
        store_acc_sw128<T, D, KB>(sdk, cs * 64 + warp * 16, dk, p.scale);
        store_acc_sw128<T, D, KB>(sdv, cs * 64 + warp * 16, dv, 1.f);
        fence_proxy_async();
        asm volatile("bar.sync %0, 128;\n" ::"r"(1 + cw) : "memory");
        if (p.kv_perm) {
            for (int c = ctid % 128; c < 64 * NO; c += 128) {
                const int r = cs * 64 + c / NO, n = c % NO;
                if (k0 + r < p.seq_len_k) {
                    const uint32_t off = sw128<KB>(r, n);
                    *reinterpret_cast<uint4 *>(kv_out_row<T>(p, p.dk, it.b, it.hkv, k0 + r) + 8 * n) =
                        *reinterpret_cast<const uint4 *>(smem + (sdk - base) + off);
                    *reinterpret_cast<uint4 *>(kv_out_row<T>(p, p.dv, it.b, it.hkv, k0 + r) + 8 * n) =
                        *reinterpret_cast<const uint4 *>(smem + (sdv - base) + off);
                }
            }
            asm volatile("bar.sync %0, 128;\n" ::"r"(1 + cw) : "memory");
            if (ctid % 128 == 0)
                mbar_arrive(kv_empty + 8 * ks);
        } else if (ctid % 128 == 0) {
            tma_store_tile<D>(&m.out0, m.out0_seq_major, sdk + cs * 64 * 128, KB * 128, k0 + cs * 64, it.hkv, it.b);
            tma_store_tile<D>(&m.out1, m.out1_seq_major, sdv + cs * 64 * 128, KB * 128, k0 + cs * 64, it.hkv, it.b);
            pending = ks;
        }
        FM_TRACE_AT(tr, ctid % 128 == 0, 6);
        ks ^= 1;
    }
    FM_TRACE_END(tr, ctid % 128 == 0);
    if (ctid % 128 == 0)
        bulk_wait<0>();
}
#endif

template <typename T, int D>
__global__ void __launch_bounds__(WS_THREADS, 1) bwd_sm90_kernel(const bwd_params p, const __grid_constant__ bwd_maps m)
{
#ifdef FM_SM90_BODY
    /* A programmatic dependent of the plan (or of the preprocess, without one): both have completed after the
     * wait. The dQ pass, launched next as this grid's programmatic dependent, needs nothing from it: it may start
     * then, its CTAs taking the multiprocessors this grid's CTAs leave. */
    fm_pdl_wait();
    fm_pdl_trigger();
    const int n_list = min(p.sched[0].count[0], p.sched[0].list_cap);
    if (n_list > 0)
        bwd_sm90_ws_body<T, D, true>(p, m, n_list);
    else
        bwd_sm90_ws_body<T, D, false>(p, m, 0);
#endif
}

/* ---- deterministic dQ ---------------------------------------------------------------------------------- */

/* The dQ pass's CTA: laid out like the main kernel's, with the roles turned round. The producer warp finds the
 * items (query tiles of QB rows), loads an item's Q, dO (TMA), L and Dd (bulk copies) into the one Q stage, and
 * walks its live key blocks into two K/V stages (TMA; for a partial block or the ragged last one also the keys'
 * bounds). Consumer warpgroup c owns rows 64c..64c+63 of the tile. An item's first K and V go out before its Q
 * and dO, which wait until both consumer warpgroups have read the item before's last S and dP products: they
 * land during its last dQ product and epilogue. L and Dd have two stages, since the last block's dS still reads
 * the item before's. At head dim 128 a warpgroup skips the half of a partial block's keys that none of its rows
 * sees (m64n64 products over the other half, or none): with the ping-pong its products and the other
 * warpgroup's take turns on the tensor cores, so what one skips the other gains (2-4% off the dQ pass on the
 * masked families, H200; at 64 it was slower, bench/RESULTS.md, session 17). */
struct ws_q_info {
    int r0, h, b, e; /* r0 < 0: no more items; e: as q_item::e */
};

template <int D> constexpr int dq_smem_bytes()
{
    /* Q, dO; two stages of K, V, of the keys' bounds and of their row masks; two stages of L, Dd; six mbarriers,
     * an item and two block descriptions; 1024 for alignment */
    return 1024 + 2 * QB * D * 2 + 2 * 2 * BN * D * 2 + 2 * 2 * BN * 16 + 2 * 2 * QB * 4 + 6 * 8 + 16 + 2 * 16;
}

#ifdef FM_SM90_BODY
/* LIST: as in bwd_sm90_ws_body. */
template <typename T, int D, bool LIST>
__device__ __forceinline__ void bwd_dq_sm90_body(const bwd_params &p, const bwd_maps &m, const int n_list)
{
    using dt = fm_dtype<T>;
    constexpr int TQ = QB * D * 2, TK = BN * D * 2;

    extern __shared__ unsigned char smem_raw[];
    uint32_t base = (fm_smem_addr(smem_raw) + 1023u) & ~1023u;
    if (D == 64)
        asm volatile("" : "+r"(base)); /* held, as in the main kernel (at 128 that made ptxas spill 120 bytes) */
    unsigned char *smem = smem_raw + (base - fm_smem_addr(smem_raw));
    const uint32_t sQ = base, sdO = sQ + TQ;
    const uint32_t sK = sdO + TQ;     /* two stages */
    const uint32_t sV = sK + 2 * TK;  /* two stages */
    const uint32_t sBd = sV + 2 * TK; /* two stages of BN int4 */
    /* two stages of QB / 32 words per key, the masked rows of each key: [word][BN] at head dim 64, so that a
     * thread reads its two neighbouring keys' in one load (1-2.6% off the dQ pass on the partial-heavy families,
     * H100, bench/RESULTS.md session 18; at 128, 1-2.6% slower); [BN][word] at 128 */
    const uint32_t sBits = sBd + 2 * BN * 16;
    const uint32_t sLD = sBits + 2 * BN * 16; /* two stages of [L, Dd][QB] */
    const uint32_t sBar = sLD + 2 * 2 * QB * 4; /* kv_full[2], kv_empty[2], q_full, q_empty */
    const uint32_t kv_full = sBar, kv_empty = sBar + 16, q_full = sBar + 32, q_empty = sBar + 40;
    const int4 *fBd = reinterpret_cast<const int4 *>(smem + (sBd - base));
    uint32_t *fBits = reinterpret_cast<uint32_t *>(smem + (sBits - base));
    const float *fLD = reinterpret_cast<const float *>(smem + (sLD - base));
    ws_q_info *qinfo = reinterpret_cast<ws_q_info *>(smem + (sBar - base) + 48);
    ws_tile_info *blocks = reinterpret_cast<ws_tile_info *>(smem + (sBar - base) + 64); /* [2]: q0 is the block */

    const int tid = threadIdx.x, wg = tid / 128;
    const int group = p.n_head / p.n_head_kv;
    const int n_kb = (p.seq_len_k + BN - 1) / BN;
    const int n_cb = (p.seq_len_k + FM_SM90_COARSE_K - 1) / FM_SM90_COARSE_K; /* coarse summaries per slice */
    const int n_qt = (p.seq_len_q + QB - 1) / QB;
    const bwd_sched &sc = p.sched[1];

    /* full barriers: one arrival (the producer's, with the bytes); empty: one per consumer warp */
    mbar_init_all(sBar, {1, 1, 8, 8, 1, 8});

    if (wg == 0) {
        /* ---- producer: warp 0, its lanes in step; lane 0 issues ---- */
        reg_dealloc<PRODUCER_REGS>();
        if (tid >= 32)
            return;
        const int lane = tid;
        /* the plan's list, the items before the tail, the tail's tiers */
        const int n_before = n_list + n_qt * p.n_head * p.batch - sc.n_tail;
        const order_lanes ord = order_view(sc, n_before, lane);
        const int n_items = ord.n;
        int st = 0, ls = 0;
        unsigned kv_par = 3, q_par = 1; /* parities of the next waits on the empty barriers (free at first) */
        FM_TRACE_REC(tr, 1, 0);
        /* key block kb (class cls; `last` of its item) of the item at (b, h), mask slice mbh, into stage st */
        auto put_block = [&](int b, int h, int64_t mbh, int kb, int cls, bool last) {
            FM_TRACE_AT(tr, lane == 0, 13);
            mbar_wait(kv_empty + 8 * st, (kv_par >> st) & 1);
            kv_par ^= 1u << st;
            FM_TRACE_AT(tr, lane == 0, 12);
            if (lane == 0) {
                const int c0 = kb * BN;
                const uint32_t bar = kv_full + 8 * st;
                const bool masked = cls == FM_TILE_PARTIAL || c0 + BN > p.seq_len_k;
                const uint32_t nbd = masked ? (uint32_t)min(BN, p.seq_len_k - c0) * 16 : 0;
                blocks[st] = {kb, cls, last, 0};
                mbar_expect_tx(bar, 2 * TK + nbd);
                tma_tile<D>(&m.k, m.kv_seq_major, sK + st * TK, BN, c0, h / group, b, bar);
                tma_tile<D>(&m.v, m.kv_seq_major, sV + st * TK, BN, c0, h / group, b, bar);
                if (masked)
                    bulk_load(sBd + st * BN * 16, p.bounds + (mbh * p.seq_len_k + c0) * 4, nbd, bar);
            }
            st ^= 1;
        };
        int xn = blockIdx.x;
        live_scan scan;
        while (xn < n_items) {
            FM_TRACE_AT(tr, lane == 0, 10);
            int next_xn = 0;
            if (lane == 0)
                next_xn = atomicAdd(p.counters + 1, 1) + gridDim.x;
            int xi, begin = 0, kb_end = 0, e = -1;
            bool listed = false;
            if (LIST && xn < n_list) {
                const sched_entry en = sc.list[xn];
                xi = en.item;
                begin = en.begin;
                kb_end = en.end;
                e = en.slot >= 0 ? xn : -1;
                listed = true;
            } else {
                xi = unlisted_item<LIST>(sc, ord, xn, n_list, n_before, lane);
            }
            if (xi >= 0) {
                const int r0 = (n_qt - 1 - xi % n_qt) * QB, h = (xi / n_qt) % p.n_head, b = xi / (n_qt * p.n_head);
                const int r1 = min(r0 + QB, p.seq_len_q);
                const int64_t mbh = mask_index(p, b, h);
                const fm_block_summary *sums = p.summaries + mbh * n_kb, *coarse = p.coarse + mbh * n_cb;
                if (!listed) {
                    const int2 rg = reinterpret_cast<const int2 *>(p.ranges)[mbh * n_qt + r0 / QB];
                    begin = rg.x;
                    kb_end = rg.y;
                }
                scan = {-64, 0u, 0u};
                int cls = FM_TILE_SKIPPED;
                int kb = next_live(scan, sums, coarse, begin, kb_end, r0, r1, &cls);
                if (kb >= kb_end && e >= 0) {
                    /* a chunk with nothing live must still leave its (zero) partial sums: its first block, fully
                     * masked */
                    kb = begin;
                    cls = FM_TILE_PARTIAL;
                    kb_end = begin + 1;
                }
                if (kb >= kb_end) {
                    zero_rows<T, D>(out_dq<T>(p, b, h, r0), p.dq.ss, r1 - r0, lane, 32);
                } else {
                    int ncls = FM_TILE_SKIPPED;
                    int next = next_live(scan, sums, coarse, kb + 1, kb_end, r0, r1, &ncls);
                    put_block(b, h, mbh, kb, cls, next >= kb_end);
                    /* Q, dO, L and Dd once the consumers are done with the item before's */
                    mbar_wait(q_empty, q_par);
                    q_par ^= 1u;
                    FM_TRACE_AT(tr, lane == 0, 11);
                    if (lane == 0) {
                        const int64_t rb = ((int64_t)b * p.n_head + h) * p.seq_pad + r0;
                        const uint32_t ld = sLD + ls * 2 * QB * 4;
                        *qinfo = {r0, h, b, e};
                        mbar_expect_tx(q_full, 2 * TQ + 2 * QB * 4);
                        tma_tile<D>(&m.q, m.q_seq_major, sQ, QB, r0, h, b, q_full);
                        tma_tile<D>(&m.d_o, m.do_seq_major, sdO, QB, r0, h, b, q_full);
                        bulk_load(ld, p.L + rb, QB * 4, q_full);
                        bulk_load(ld + QB * 4, p.Dd + rb, QB * 4, q_full);
                    }
                    ls ^= 1;
                    while (next < kb_end) {
                        kb = next;
                        cls = ncls;
                        next = next_live(scan, sums, coarse, kb + 1, kb_end, r0, r1, &ncls);
                        put_block(b, h, mbh, kb, cls, next >= kb_end);
                    }
                }
            }
            xn = __shfl_sync(0xffffffffu, next_xn, 0);
        }
        FM_TRACE_END(tr, lane == 0);
        /* no more items: tell the consumers */
        mbar_wait(q_empty, q_par);
        if (lane == 0) {
            *qinfo = {-1, 0, 0, -1};
            mbar_arrive(q_full);
        }
        return;
    }

    /* ---- consumers ---- */
    reg_alloc<CONSUMER_REGS>();
    const int ctid = tid - 128, cw = ctid / 128, warp = (ctid / 32) % 4, lane = ctid % 32;
    const int g = lane / 4, t = lane % 4;
    const int rl = cw * 64 + warp * 16 + g; /* tile row of hh = 0; + 8 for hh = 1 */
    const uint32_t q_wg = sQ + cw * 64 * 128, do_wg = sdO + cw * 64 * 128;
    int st = 0, ls = 0;
    unsigned kv_par = 0, q_par = 0;
    int pending = -1; /* a V stage whose dQ store this thread issued and has not yet released */
    if (cw == 1)
        pp_pass<D>(1); /* warpgroup 0 takes the first turn */
    float dq[D / 2];
    FM_TRACE_REC(tr, 1, 1 + cw);
    while (true) {
        FM_TRACE_AT(tr, ctid % 128 == 0, 1);
        mbar_wait(q_full, q_par);
        q_par ^= 1u;
        const ws_q_info it = *qinfo;
        if (it.r0 < 0)
            break;
        FM_TRACE_AT(tr, ctid % 128 == 0, 2);
#pragma unroll
        for (int i = 0; i < D / 2; i++)
            dq[i] = 0.f;
        const float *fL = fLD + ls * 2 * QB, *fD = fL + QB;
        const bool chunk = LIST && it.e >= 0;
        bool last = false;
        int lst = 0;
        while (!last) {
            mbar_wait(kv_full + 8 * st, (kv_par >> st) & 1);
            kv_par ^= 1u << st;
            FM_TRACE_AT(tr, ctid % 128 == 0, 3);
            const ws_tile_info bi = blocks[st];
            const int c0 = bi.q0 * BN;
            last = bi.last;
            const uint32_t kst = sK + st * TK;
            const bool masked_tile = bi.cls == FM_TILE_PARTIAL || c0 + BN > p.seq_len_k;
            /* this warpgroup's words of the row masks of key ctid % 128 (words 2 cw, 2 cw + 1: its 64 rows); rows
             * past seq_len_q are not marked (their dQ is never stored) */
            auto mask_words = [&](uint32_t &w0, uint32_t &w1) {
                const int key = ctid % 128;
                w0 = w1 = ~0u;
                if (c0 + key < p.seq_len_k) {
                    const int4 v = fBd[st * BN + key];
                    w0 = fm_masked_rows32(v, it.r0 + 64 * cw);
                    w1 = fm_masked_rows32(v, it.r0 + 64 * cw + 32);
                }
                if (D == 64) {
                    fBits[(st * 4 + 2 * cw) * BN + key] = w0;
                    fBits[(st * 4 + 2 * cw + 1) * BN + key] = w1;
                } else {
                    *reinterpret_cast<uint2 *>(fBits + (st * BN + key) * 4 + 2 * cw) = make_uint2(w0, w1);
                }
            };
            /* At head dim 128, bit x of live: keys c0 + 64 x .. + 63 have a visible pair in this warpgroup's rows.
             * The products then skip a half that has none. The words come first, before this warpgroup's turn
             * (during the other one's products); the barrier that publishes them also counts the halves. At 64
             * (no ping-pong, where the words' latency would delay the products) every block takes both halves. */
            int live = 3;
            if (D == 128 && masked_tile) {
                uint32_t w0, w1;
                mask_words(w0, w1);
                const int ra = it.r0 + 64 * cw, key = ctid % 128;
                const bool seen = ((w0 | ~fm_bits_below(p.seq_len_q - ra)) &
                                   (w1 | ~fm_bits_below(p.seq_len_q - ra - 32))) != ~0u;
                uint32_t any0, any1;
                asm volatile("{\n.reg .pred p, q;\nsetp.ne.b32 p, %1, 0;\nbar.red.or.pred q, %2, 128, p;\n"
                             "selp.b32 %0, 1, 0, q;\n}\n"
                             : "=r"(any0)
                             : "r"((int)(seen && key < 64)), "r"(1 + cw)
                             : "memory");
                asm volatile("{\n.reg .pred p, q;\nsetp.ne.b32 p, %1, 0;\nbar.red.or.pred q, %2, 128, p;\n"
                             "selp.b32 %0, 1, 0, q;\n}\n"
                             : "=r"(any1)
                             : "r"((int)(seen && key >= 64)), "r"(1 + cw)
                             : "memory");
                live = __shfl_sync(0xffffffffu, (int)(any0 | any1 << 1), 0); /* warp-uniform to the compiler */
            }
            auto release_pending = [&]() {
                if (pending >= 0) {
                    /* the item before's dQ store has read its V stage: the producer may load into it */
                    bulk_wait_read<0>();
                    mbar_arrive(kv_empty + 8 * pending);
                    pending = -1;
                }
            };
            auto q_read = [&]() {
                if (last) {
                    /* S and dP have read Q and dO: the producer may load the next item's */
                    __syncwarp();
                    if (lane == 0)
                        mbar_arrive(q_empty);
                }
            };
            /* The block's products over N keys from c0 + x: all 128, or (N = 64) the half x / 64 that holds this
             * warpgroup's visible pairs when the other half has none. */
            auto products = [&](auto n_keys, int x) {
                constexpr int N = decltype(n_keys)::value;
                const uint32_t kx = kst + x * 128, vx = sV + st * TK + x * 128;
                float s[N / 2], dp[N / 2];
                pp_turn<D>(cw);
                wg_fence();
                wg_gemm_kk<T, D, N>(s, q_wg, QB, kx, BN);
                wg_gemm_kk<T, D, N>(dp, do_wg, QB, vx, BN);
                wg_commit();
                pp_pass<D>(cw);
                release_pending();
                FM_TRACE_AT(tr, ctid % 128 == 0 && masked_tile, 16);
                if (D == 64 && masked_tile) {
                    uint32_t w0, w1;
                    mask_words(w0, w1);
                    asm volatile("bar.sync %0, 128;\n" ::"r"(1 + cw) : "memory");
                }
                wg_wait<0>();
                FM_TRACE_AT(tr, ctid % 128 == 0, 4);
                q_read();

                /* dS = P (dP - Dd); element 4 n + 2 hh + e is row rl + 8 hh, key c0 + x + 8 n + 2 t + e. Masked
                 * elements (partial blocks, the ragged last block) get a scaled score of -inf before the exp2:
                 * word rl / 32 of a key's row masks, shifted by rl % 32, has row rl in bit 0 and row rl + 8 in bit
                 * 8. */
                const uint32_t *kbits =
                    D == 64 ? fBits + (st * 4 + rl / 32) * BN + x : fBits + (st * BN + x) * 4 + rl / 32;
                auto grads = [&](auto with_mask) {
                    uint2 kw[N / 8];
                    if (D == 64 && decltype(with_mask)::value)
#pragma unroll
                        for (int n = 0; n < N / 8; n++)
                            kw[n] = *reinterpret_cast<const uint2 *>(kbits + 8 * n + 2 * t);
#pragma unroll
                    for (int hh = 0; hh < 2; hh++) {
                        const float L = fL[rl + 8 * hh], Dd = fD[rl + 8 * hh];
#pragma unroll
                        for (int n = 0; n < N / 8; n++)
#pragma unroll
                            for (int e = 0; e < 2; e++) {
                                const int i = 4 * n + 2 * hh + e;
                                float y = s[i] * p.scale_log2 - L;
                                if (decltype(with_mask)::value &&
                                    ((D == 64 ? (e ? kw[n].y : kw[n].x) : kbits[4 * (8 * n + 2 * t + e)]) >>
                                         (rl % 32 + 8 * hh) &
                                     1u))
                                    y = -INFINITY;
                                dp[i] = fm_exp2(y) * (dp[i] - Dd);
                            }
                    }
                };
                if (masked_tile)
                    grads(std::true_type());
                else
                    grads(std::false_type());
                uint32_t da[N / 16][4];
#pragma unroll
                for (int kk = 0; kk < N / 16; kk++)
#pragma unroll
                    for (int z = 0; z < 4; z++)
                        da[kk][z] = dt::pack(dp[8 * kk + 2 * z], dp[8 * kk + 2 * z + 1]);
                FM_TRACE_AT(tr, ctid % 128 == 0, 15);
                pp_turn<D>(cw);
                wg_fence();
                wg_gemm_rn<T, N, D>(dq, da, kx, BN);
                wg_commit();
                pp_pass<D>(cw);
                wg_wait<0>();
            };
            if (live == 3) {
                products(std::integral_constant<int, BN>(), 0);
            } else if (live) {
                products(std::integral_constant<int, 64>(), live == 2 ? 64 : 0);
            } else {
                /* nothing visible in this warpgroup's rows: its turns pass (the other warpgroup's pair up) */
                pp_turn<D>(cw);
                pp_pass<D>(cw);
                release_pending();
                q_read();
                pp_turn<D>(cw);
                pp_pass<D>(cw);
            }
            FM_TRACE_AT(tr, ctid % 128 == 0, 5);
            if (!last || chunk) {
                /* this warp is done with the stage (the last block's V takes the dQ tile below) */
                __syncwarp();
                if (lane == 0)
                    mbar_arrive(kv_empty + 8 * st);
            }
            lst = st;
            st ^= 1;
        }

        if (chunk) { /* its partial sums (bwd_sum_kernel adds them up) */
            put_part<D / 2>(sc, sc.list[it.e], 0, dq, ctid);
            FM_TRACE_AT(tr, ctid % 128 == 0, 6);
            ls ^= 1;
            continue;
        }
        /* dQ times the scale into this warpgroup's rows of the V stage of the last block, then out by TMA store,
         * whose reading of the stage the next block waits for before it frees the stage. The other warpgroup's dP
         * of that block reads every row of V: both warpgroups meet first (barrier 3; both take every item). */
        asm volatile("bar.sync 3, 256;\n" ::: "memory");
        const uint32_t sdq = sV + lst * TK;
        store_acc_sw128<T, D, BN>(sdq, cw * 64 + warp * 16, dq, p.scale);
        fence_proxy_async();
        asm volatile("bar.sync %0, 128;\n" ::"r"(1 + cw) : "memory");
        if (ctid % 128 == 0) {
            tma_store_tile<D>(&m.out0, m.out0_seq_major, sdq + cw * 64 * 128, BN * 128, it.r0 + cw * 64, it.h, it.b);
            pending = lst;
        } else if (lane == 0) {
            mbar_arrive(kv_empty + 8 * lst);
        }
        FM_TRACE_AT(tr, ctid % 128 == 0, 6);
        ls ^= 1;
    }
    FM_TRACE_END(tr, ctid % 128 == 0);
    if (ctid % 128 == 0)
        bulk_wait<0>();
    /* done only when the main kernel is (its dK and dV written): what follows in the stream waits for this grid */
    fm_pdl_wait();
}
#endif

template <typename T, int D>
__global__ void __launch_bounds__(WS_THREADS, 1)
    bwd_dq_sm90_kernel(const bwd_params p, const __grid_constant__ bwd_maps m)
{
#ifdef FM_SM90_BODY
    const int n_list = min(p.sched[1].count[0], p.sched[1].list_cap);
    if (n_list > 0)
        bwd_dq_sm90_body<T, D, true>(p, m, n_list);
    else
        bwd_dq_sm90_body<T, D, false>(p, m, 0);
#endif
}

/* After both kernels, the outputs of the items cut into chunks: the sums of their chunks' partial sums, in chunk
 * order (so the same in every run). Block x of row k takes entry x of kernel k's list: the CTAs of an item's first
 * four chunks (two when it has fewer; an item cut has two or more) share its values: each thread's values of each
 * output in four slices. */
template <typename T, int D> __global__ void __launch_bounds__(NTHREADS) bwd_sum_kernel(const bwd_params p)
{
    fm_pdl_wait(); /* a programmatic dependent of the dQ pass */
    const int k = blockIdx.y;
    const bwd_sched &s = p.sched[k];
    if ((int)blockIdx.x >= min(s.count[0], s.list_cap))
        return;
    const sched_entry e = s.list[blockIdx.x];
    const int parts = e.nc >= 4 ? 4 : 2;
    if (e.item < 0 || e.slot < 0 || e.slot - e.first >= parts)
        return;
    constexpr int N = D / 8;
    for (int i0 = (e.slot - e.first) * N; i0 < D / 2; i0 += parts * N) {
        if (k == 0) {
            constexpr int KB = main_block<D>();
            const kv_item x = kv_item_at(p, e.item, KB);
            const int n = min(KB, p.seq_len_k - x.kb * KB), k0 = x.kb * KB;
            store_sum<T, N>(s, e, 0, i0, [&](int r) { return kv_out_row<T>(p, p.dk, x.b, x.hkv, k0 + r); }, n,
                            p.scale);
            store_sum<T, N>(s, e, D / 2, i0, [&](int r) { return kv_out_row<T>(p, p.dv, x.b, x.hkv, k0 + r); }, n,
                            1.f);
        } else {
            const q_item x = q_item_at(p, e.item);
            store_sum<T, N>(s, e, 0, i0, [&](int r) { return out_row<T>(p.dq, x.b, x.h, x.r0 + r); },
                            min(QB, p.seq_len_q - x.r0), p.scale);
        }
    }
}

/* The map of a [batch, seq_len, heads, D] tensor for boxes of `rows` rows (make_map), with its dimension order. */
template <int D>
bool view_map(const tensor_view &v, int is_bf16, int rows, int seq_len, int heads, int batch, CUtensorMap *map,
              int *seq_major)
{
    *seq_major = !(v.sh < v.ss && heads > 1);
    return !make_map(NULL, map, v.p, is_bf16, D, rows, seq_len, heads, batch, v.ss, v.sh, v.sb, *seq_major);
}

/* The maps of either kernel: Q and dO with boxes of q_rows rows, K and V of kv_rows; outputs dK and dV (main
 * kernel, dq = false) or dQ (dq = true). */
template <int D> bool make_maps(const bwd_params &p, int is_bf16, int q_rows, int kv_rows, bool dq, bwd_maps *m)
{
    /* V takes K's dimension order (either order describes any strides; the kernels load both with one flag) */
    return view_map<D>(p.q, is_bf16, q_rows, p.seq_len_q, p.n_head, p.batch, &m->q, &m->q_seq_major) &&
           view_map<D>(p.d_o, is_bf16, q_rows, p.seq_len_q, p.n_head, p.batch, &m->d_o, &m->do_seq_major) &&
           view_map<D>(p.k, is_bf16, kv_rows, p.seq_len_k, p.n_head_kv, p.batch, &m->k, &m->kv_seq_major) &&
           !make_map(NULL, &m->v, p.v.p, is_bf16, D, kv_rows, p.seq_len_k, p.n_head_kv, p.batch, p.v.ss, p.v.sh,
                     p.v.sb, m->kv_seq_major) &&
           (dq ? view_map<D>(p.dq, is_bf16, 64, p.seq_len_q, p.n_head, p.batch, &m->out0, &m->out0_seq_major)
               : view_map<D>(p.dk, is_bf16, 64, p.seq_len_k, p.n_head_kv, p.batch, &m->out0, &m->out0_seq_major) &&
                     view_map<D>(p.dv, is_bf16, 64, p.seq_len_k, p.n_head_kv, p.batch, &m->out1,
                                 &m->out1_seq_major));
}

/* The multiprocessor count of the device in use, asked once per device. */
cudaError_t sm_count(int *n)
{
    static int n_sm[64];
    int device = 0;
    cudaError_t e = cudaGetDevice(&device);
    if (e != cudaSuccess)
        return e;
    if (device >= 64)
        return cudaErrorInvalidValue;
    if (!n_sm[device] &&
        (e = cudaDeviceGetAttribute(&n_sm[device], cudaDevAttrMultiProcessorCount, device)) != cudaSuccess)
        return e;
    *n = n_sm[device];
    return cudaSuccess;
}

/* A launch as the programmatic dependent of the kernel ahead of it in the stream, which lets its CTAs start before
 * that one ends: the kernel calls fm_pdl_wait before it reads what that one (or any kernel before it) wrote, and
 * fm_pdl_trigger only after it, so that its own dependent's start implies the same (the dQ pass reads L and Dd
 * without a wait of its own). */
template <typename... Params, typename... Args>
cudaError_t pdl_launch(void (*kernel)(Params...), dim3 grid, int threads, int smem, cudaStream_t stream, Args... args)
{
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cfg.gridDim = grid;
    cfg.blockDim = dim3((unsigned)threads);
    cfg.dynamicSmemBytes = (size_t)smem;
    cfg.stream = stream;
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    return cudaLaunchKernelEx(&cfg, kernel, args...);
}

/* One launch of either kernel (pdl_launch): min(items, multiprocessors) persistent CTAs; the shared-memory opt-in
 * and the multiprocessor count once per device (*attr_done: a bit per device). */
cudaError_t launch_kernel(void (*kernel)(bwd_params, bwd_maps), int threads, int smem, unsigned long long *attr_done,
                          int64_t items, int pipes, const bwd_params &p, const bwd_maps &m, cudaStream_t stream)
{
    int device = 0, n_sm = 0;
    cudaError_t e = cudaGetDevice(&device);
    if (e != cudaSuccess || (e = sm_count(&n_sm)) != cudaSuccess)
        return e;
    if (!p.counters || device >= 64)
        return cudaErrorInvalidValue;
    if (!(*attr_done >> device & 1ull)) {
        if ((e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem)) != cudaSuccess)
            return e;
        *attr_done |= 1ull << device;
    }
    if (items <= 0)
        return cudaSuccess;
    return pdl_launch(kernel, dim3((unsigned)fm_cuda_persistent_ctas((items + pipes - 1) / pipes, n_sm)), threads,
                      smem, stream, p, m);
}

int n_dq_items(const bwd_params &p)
{
    return (p.seq_len_q + QB - 1) / QB * p.n_head * p.batch;
}

template <typename T, int D> cudaError_t launch(const bwd_params &p, cudaStream_t stream)
{
    static unsigned long long attr_done = 0;
    constexpr int KB = main_block<D>();
    bwd_maps m;
    if (!make_maps<D>(p, fm_is_bf16<T>::value, BM, KB, false, &m))
        return cudaErrorInvalidValue;
    /* the plan of both kernels' schedules, from the main kernel's summaries and the dQ pass's ranges */
    const int n_main = (p.seq_len_k + KB - 1) / KB * p.n_head_kv * p.batch, n_dq = n_dq_items(p);
    const int n_plan = n_main + n_dq;
    if (n_plan > 0) {
        const int serial = p.sched[0].forced;
        const dim3 grid((unsigned)(n_plan + 255) / 256);
        cudaError_t e = pdl_launch(plan_weigh_kernel, grid, 256, 0, stream, p, n_dq, KB);
        if (e != cudaSuccess || (e = pdl_launch(plan_list_kernel, serial ? dim3(1) : grid, serial ? 1 : 256, 0, stream,
                                                p, n_dq, serial, KB)) != cudaSuccess)
            return e;
    }
    return launch_kernel(bwd_sm90_kernel<T, D>, WS_THREADS, ws_smem_bytes<D>(), &attr_done, n_main, main_pipes<D>(),
                         p, m, stream);
}

template <typename T, int D> cudaError_t launch_dq(const bwd_params &p, cudaStream_t stream)
{
    static unsigned long long attr_done = 0;
    bwd_maps m;
    if (!make_maps<D>(p, fm_is_bf16<T>::value, QB, BN, true, &m))
        return cudaErrorInvalidValue;
    cudaError_t e = launch_kernel(bwd_dq_sm90_kernel<T, D>, WS_THREADS, dq_smem_bytes<D>(), &attr_done, n_dq_items(p), 1,
                                  p, m, stream);
    if (e != cudaSuccess)
        return e;
    e = pdl_launch(bwd_sum_kernel<T, D>, dim3((unsigned)max(p.sched[0].list_cap, p.sched[1].list_cap), 2), NTHREADS, 0,
                   stream, p);
    if (e == cudaSuccess)
        fm_trace::dump(stream);
    return e;
}

} /* namespace */

int fm_bwd_sm90_applies(int head_dim)
{
    const char *force = getenv("FAMASK_CUDA_BWD");
    if (force && strcmp(force, "sm80") == 0)
        return 0;
    return (head_dim == 64 || head_dim == 128) && fm_sm90::device_ok();
}

int fm_bwd_sm90_block_k(int head_dim)
{
    return head_dim == 64 ? main_block<64>() : main_block<128>();
}

cudaError_t fm_bwd_sm90(const bwd_params &p, int head_dim, int is_bf16, cudaStream_t stream)
{
    if (p.dq_acc) /* this kernel computes no dQ: the caller takes the split path */
        return cudaErrorInvalidValue;
    if (head_dim == 64)
        return is_bf16 ? launch<__nv_bfloat16, 64>(p, stream) : launch<__half, 64>(p, stream);
    return is_bf16 ? launch<__nv_bfloat16, 128>(p, stream) : launch<__half, 128>(p, stream);
}

cudaError_t fm_bwd_sm90_sched(bwd_params *p, int head_dim, void *mem, size_t *bytes)
{
    int n_sm = 0;
    cudaError_t e = sm_count(&n_sm);
    if (e != cudaSuccess)
        return e;
    const char *force = getenv("FAMASK_BWD_CHUNK");
    const int forced = force && atoi(force) > 0 ? atoi(force) : 0;
    const int kblk = fm_bwd_sm90_block_k(head_dim), pipes = head_dim == 64 ? main_pipes<64>() : main_pipes<128>();
    const int n[2] = {(p->seq_len_k + kblk - 1) / kblk * p->n_head_kv * p->batch, n_dq_items(*p)};
    size_t at = 0;
    for (int k = 0; k < 2; k++) {
        bwd_sched &s = p->sched[k];
        const int np = k ? 1 : pipes;
        s.n_ctas = np * fm_cuda_persistent_ctas((n[k] + np - 1) / np, n_sm);
        s.list_cap = 4 * s.n_ctas + 32;
        s.slot_cap = 2 * s.n_ctas + 16; /* enough for every item (see list_item) */
        s.nv = k ? head_dim / 2 : head_dim;
        s.chunk = forced ? forced : CHUNK_MIN[k];
        s.forced = forced > 0;
        unsigned char *b = (unsigned char *)mem;
        s.part = (float *)(b + at);
        at += (size_t)s.slot_cap * s.nv * NTHREADS * sizeof(float);
        s.list = (sched_entry *)(b + at);
        at += (size_t)s.list_cap * sizeof(sched_entry);
        s.weight = (int *)(b + at);
        at += ((size_t)n[k] + 3) / 4 * 4 * sizeof(int);
        /* tier t < N_TIERS - 1 holds fewer than 2^(t+2) n_ctas items (list_item); the last takes any item */
        s.n_tail = std::min<int64_t>((int64_t)TAIL_WAVES * s.n_ctas, n[k]);
        size_t order = 0;
        for (int t = 0; t < N_TIERS; t++) {
            s.tier_base[t] = (int)order;
            s.tier_cap[t] = t < N_TIERS - 1 ? std::min<int64_t>((int64_t)s.n_ctas << (t + 2), s.n_tail) : s.n_tail;
            order += (size_t)s.tier_cap[t];
        }
        s.order = (int *)(b + at);
        at += (order + 3) / 4 * 4 * sizeof(int);
        s.count = mem ? p->counters + 2 + SCHED_COUNTS * k : NULL;
    }
    *bytes = at;
    return cudaSuccess;
}

cudaError_t fm_bwd_dq_sm90(const bwd_params &p, int head_dim, int is_bf16, cudaStream_t stream)
{
    if (head_dim == 64)
        return is_bf16 ? launch_dq<__nv_bfloat16, 64>(p, stream) : launch_dq<__half, 64>(p, stream);
    return is_bf16 ? launch_dq<__nv_bfloat16, 128>(p, stream) : launch_dq<__half, 128>(p, stream);
}
